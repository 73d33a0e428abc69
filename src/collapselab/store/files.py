"""Atomic, checksummed files: every write of a run directory goes through :func:`write_atomic`."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from collapselab.errors import ConfigError, StoreError
from collapselab.store.layout import _TEMP


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _mkdir(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)  # mode 0o777 & ~umask
    except OSError as e:
        raise StoreError(f"cannot create {folder}: {e.strerror}") from None


def write_atomic(path: Path, data: bytes) -> str:
    """Write ``data`` so that readers see the old file or the whole new one; returns its sha256 (hex).

    The temp file is created with ``os.open(..., 0o666)``, so the final file has the user's umask (0644
    under umask 022); ``tempfile.mkstemp`` would make it 0600.
    """
    path = Path(path)
    _mkdir(path.parent)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as e:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise StoreError(f"cannot write {path}: {e.strerror or e}") from None
    return hashlib.sha256(data).hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Damaged(Exception):
    """A stored file that cannot be trusted (missing, truncated, checksum mismatch, unreadable)."""

    def __init__(self, path: Path, why: str) -> None:
        self.path, self.why = path, why
        super().__init__(f"{path} {why}")


def read_verified(path: Path, sha256: str, size: int | None = None) -> bytes:
    """The bytes of ``path`` if they match ``sha256`` (and ``size``), else :class:`Damaged`."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise Damaged(path, "is missing") from None
    except OSError as e:
        raise Damaged(path, f"cannot be read ({e.strerror})") from None
    if size is not None and len(data) != size:
        raise Damaged(path, f"is truncated or changed ({len(data)} bytes, {size} recorded)")
    if sha256_bytes(data) != sha256:
        raise Damaged(path, "fails its sha256 check")
    return data


def read_utf8(path: Path, prefix: str = "") -> str:
    """The UTF-8 text of ``path``; a missing, unreadable or non-UTF-8 file is a :class:`ConfigError` naming it."""
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise ConfigError(f"{prefix}{path} is a directory, not a file") from None
    except OSError as e:
        raise ConfigError(f"{prefix}cannot read {path} ({e.strerror})") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{prefix}{path} is not UTF-8 text (byte {e.start})") from None


def dumps_json(obj: Any) -> str:
    """JSON text as the store writes it (non-finite floats become the strings "inf", "-inf", "nan")."""
    return json.dumps(_finite(obj), indent=1, allow_nan=False) + "\n"


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else str(obj)
    if isinstance(obj, (np.floating, np.integer)):
        return _finite(obj.item())
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def tensors_bytes(tensors: Mapping[str, np.ndarray], metadata: Mapping[str, Any]) -> bytes:
    """Safetensors bytes of ``tensors`` with ``metadata``, identical for identical inputs in every process."""
    from safetensors.numpy import save

    # one metadata key: safetensors writes its metadata map in hash order, which differs between processes
    meta = {"collapselab": json.dumps(dict(metadata), separators=(",", ":"))}
    return save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=meta)


def _tensors_load(data: bytes, path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load

    try:
        return load(data)
    except Exception as e:  # safetensors raises its own error types for malformed headers
        raise Damaged(path, f"is not a valid safetensors file ({type(e).__name__})") from None


def remove_temps(folder: Path) -> None:
    """Delete temp files that a killed process left behind in ``folder``."""
    if folder.is_dir():
        for p in folder.iterdir():
            if _TEMP.match(p.name) and p.is_file():
                p.unlink(missing_ok=True)




def _remove_tree(folder: Path) -> None:
    """Remove a model folder the store wrote (its files, then the folder; never follows symlinks)."""
    for p in sorted(folder.rglob("*"), key=lambda q: len(q.parts), reverse=True):
        if p.is_dir() and not p.is_symlink():
            with contextlib.suppress(OSError):
                p.rmdir()
        else:
            p.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        folder.rmdir()
