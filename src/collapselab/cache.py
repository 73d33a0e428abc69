"""The user cache: things built once from offline data and reused by every run (reference networks, the
tiny LM's tokenizer and pretrained weights, converted SmolLM2 checkpoints).

Location: ``$COLLAPSELAB_CACHE``, else ``$XDG_CACHE_HOME/collapselab``, else ``~/.cache/collapselab``. Entries are
named by the sha256 of everything they are built from, built under a file lock (concurrent runs build once),
written to a temporary folder and renamed into place, and verified against their recorded sha256 on use: a
damaged or half-written entry is rebuilt, never used.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

MANIFEST = "collapselab-manifest.json"


def cache_dir() -> Path:
    """The cache root (see the module docstring)."""
    root = os.environ.get("COLLAPSELAB_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "collapselab")
    return Path(root)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` + ``.lock`` (creating its folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def key_of(*parts: Any) -> str:
    """A short content key: the sha256 of the JSON of ``parts`` (bytes are hashed as they are)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else json.dumps(p, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _verified(folder: Path) -> bool:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        return all(_file_sha(folder / name) == sha for name, sha in manifest["files"].items())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def cached_folder(name: str, key: str, build: Callable[[Path], None], what: str = "", quiet: bool = False) -> Path:
    """The cache folder ``name-key``, built by ``build(tmp_folder)`` when absent or damaged (see module doc); the
    build is announced on stderr unless ``quiet`` (for builds of a few seconds)."""
    folder = cache_dir() / f"{name}-{key}"
    with locked(folder):
        if folder.is_dir() and _verified(folder):
            return folder
        if not quiet:
            print(f"collapselab: building {what or name} once (cached in {folder})", file=sys.stderr, flush=True)
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        try:
            build(tmp)
            files = {str(p.relative_to(tmp)): _file_sha(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
            (tmp / MANIFEST).write_text(json.dumps({"files": files}, indent=1))
            for p in tmp.rglob("*"):
                if p.is_file():
                    with open(p, "rb") as fh:
                        os.fsync(fh.fileno())
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder


def cached_state_dict(name: str, source: Any, recipe: dict, train: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The torch state dict in the cache for (name, the source's data, recipe), trained (``train()``, torch seeded
    with ``recipe["seed"]``) when absent or damaged; ``source`` has ``content_hash()`` and ``config.source``."""
    import torch
    from safetensors.torch import load, save

    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode() + source.content_hash().encode()).hexdigest()
    path = cache_dir() / f"{source.config.source}-{name}-{key[:16]}.safetensors"
    with locked(path):
        if path.is_file():
            raw = path.read_bytes()
            meta = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")]).get("__metadata__", {})
            state = load(raw)
            digest = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()
            if meta.get("sha256") == digest:
                return state
        print(f"collapselab: training the {name} on real {source.config.source} once (cached in {path.parent})",
              file=sys.stderr, flush=True)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(recipe["seed"])
            state = {k: v.detach().contiguous().clone() for k, v in train().items()}
        digest = hashlib.sha256(b"".join(state[k].numpy().tobytes() for k in sorted(state))).hexdigest()
        from collapselab.store import write_atomic

        write_atomic(path, save(state, metadata={"sha256": digest, "recipe": json.dumps(recipe)}))
        return state
