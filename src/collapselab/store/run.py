"""The run directory: created, locked, its experiment and manifest recorded, its outputs written."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import stat
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from collapselab import __version__
from collapselab.errors import ConfigError
from collapselab.store.checkpoints import ChainStore
from collapselab.store.files import _mkdir, dumps_json, read_utf8, remove_temps, sha256_bytes, write_atomic
from collapselab.store.layout import (
    _BATCH,
    _CHECKPOINT_FILE,
    _MODEL_DIR,
    _TEMP,
    CHAINS,
    EXPERIMENT,
    FIGURES,
    LOCK,
    MANIFEST,
    RUN_FORMAT,
    chain_folder,
)
from collapselab.store.lock import RunLock


def _sorted_listing(paths: list[str], limit: int = 5) -> str:
    shown = ", ".join(paths[:limit])
    return shown + (f" (and {len(paths) - limit} more)" if len(paths) > limit else "")


class RunStore:
    """A run directory held by this process (see the module docstring)."""

    def __init__(self, root: Path, lock: RunLock, manifest: dict[str, Any]) -> None:
        self.root, self._lock, self.manifest = root, lock, manifest

    # -- opening ------------------------------------------------------------------------------
    @staticmethod
    def is_run_dir(path: Path) -> bool:
        return (path / MANIFEST).is_file()

    @staticmethod
    def _real(out: Path, what: str) -> Path:
        """``out`` with symlinks resolved (a symlink to a directory is followed; a dangling one refused)."""
        if out.is_symlink() and not out.exists():
            raise ConfigError(f"{what} {out}: is a symlink to {os.readlink(out)}, which does not exist")
        return out.resolve()

    @classmethod
    def check_new(cls, out: Path, overwrite: bool) -> Path:
        """Raise :class:`ConfigError` unless a new run can be written at ``out``; returns its real path.

        Nothing is created.
        """
        real = cls._real(out, "--out")
        if real.exists():
            if not real.is_dir():
                raise ConfigError(f"--out {out}: exists and is not a directory")
            RunLock(real).check_free()  # before anything else looks at the folder: a live writer changes it
            if any(real.iterdir()):
                if not cls.is_run_dir(real):
                    raise ConfigError(f"--out {out}: exists, is not empty and is not a collapselab run directory "
                                      f"(no {MANIFEST}); choose another --out")
                if not overwrite:
                    raise ConfigError(f"--out {out}: already holds a run; continue it with "
                                      f"`collapselab resume {out}` or pass --overwrite")
                foreign = cls.foreign_files(real)
                if foreign:
                    raise ConfigError(f"--out {out}: --overwrite refused, the folder holds files collapselab did "
                                      f"not write: {_sorted_listing(foreign)}")
        ancestor = real
        while not ancestor.exists():
            ancestor = ancestor.parent
        if not ancestor.is_dir():
            raise ConfigError(f"--out {out}: {ancestor} is a file, not a directory")
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise ConfigError(f"--out {out}: not writable ({ancestor})")
        try:  # os.access cannot see read-only mounts; a probe can
            probe = ancestor / f".collapselab-probe-{secrets.token_hex(6)}"
            probe.mkdir()
            probe.rmdir()
        except OSError as e:
            raise ConfigError(f"--out {out}: not writable ({e.strerror})") from None
        return real

    @classmethod
    def create(cls, out: Path, experiment_yaml: str, experiment: dict[str, Any], overwrite: bool = False,
               plugins: list[dict[str, str]] | None = None, data: dict[str, Any] | None = None) -> RunStore:
        """Create (or, with ``overwrite``, empty and reuse) the run directory at ``out`` and store the experiment
        (``plugins`` and ``data``: the pinned plugins and user data it depends on, recorded in the manifest)."""
        real = cls.check_new(out, overwrite)
        _mkdir(real)
        lock = RunLock(real).acquire()
        try:
            if overwrite and cls.is_run_dir(real):
                foreign = cls.foreign_files(real)  # again, now that we hold the lock
                if foreign:
                    raise ConfigError(f"--out {out}: --overwrite refused, the folder holds files collapselab did "
                                      f"not write: {_sorted_listing(foreign)}")
                cls._remove_store_files(real)
            elif cls.is_run_dir(real):
                raise ConfigError(f"--out {out}: already holds a run; continue it with "
                                  f"`collapselab resume {out}` or pass --overwrite")
            store = cls(real, lock, {"plugins": plugins or [], "data": data})
            store._write_experiment(experiment_yaml, experiment, new=True)
            return store
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open(cls, run_dir: Path) -> RunStore:
        """Lock an existing run directory and read its manifest."""
        real = cls._real(run_dir, "run directory")
        if not cls.is_run_dir(real):
            why = f"no {MANIFEST}" if real.is_dir() else "no such directory"
            raise ConfigError(f"{run_dir}: not a collapselab run directory ({why})")
        lock = RunLock(real).acquire()
        try:
            try:
                manifest = json.loads((real / MANIFEST).read_bytes())
                fmt = manifest.get("format") if isinstance(manifest, dict) else None
                if isinstance(fmt, str) and fmt.startswith("collapselab-run/") and fmt != RUN_FORMAT:
                    by = manifest.get("collapselab", "?")
                    raise ConfigError(f"{run_dir}: a run of format {fmt} (written by collapselab {by}); this "
                                      f"collapselab reads {RUN_FORMAT}, whose results differ: rerun the experiment, "
                                      f"or use the version that wrote it")
                if not (fmt == RUN_FORMAT and isinstance(manifest.get("experiment"), dict)):
                    raise ValueError
            except ConfigError:
                raise
            except (OSError, ValueError):
                raise ConfigError(f"{run_dir / MANIFEST}: damaged or not a collapselab run manifest") from None
            remove_temps(real)
            remove_temps(real / FIGURES)
            return cls(real, lock, manifest)
        except BaseException:
            lock.release()
            raise

    def close(self) -> None:
        self._lock.release()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the experiment -------------------------------------------------------------------------
    def read_experiment_text(self) -> tuple[str, bool]:
        """``experiment.yaml``'s text and whether it is the one recorded in the manifest."""
        text = read_utf8(self.root / EXPERIMENT)
        return text, sha256_bytes(text.encode("utf-8")) == self.manifest.get("experiment_sha256")

    @property
    def recorded_experiment(self) -> dict[str, Any]:
        return self.manifest["experiment"]

    def _write_experiment(self, text: str, experiment: dict[str, Any], new: bool = False) -> None:
        sha = write_atomic(self.root / EXPERIMENT, text.encode("utf-8"))
        manifest = {"format": RUN_FORMAT, "collapselab": __version__, "experiment_sha256": sha,
                    "experiment": experiment, "outputs": {} if new else self.manifest.get("outputs", {})}
        for key in ("plugins", "plugin_changes", "data"):
            if self.manifest.get(key):
                manifest[key] = self.manifest[key]
        self._write_manifest(manifest)

    def update_experiment(self, text: str, experiment: dict[str, Any]) -> None:
        """Record an accepted change of the experiment (e.g. more generations)."""
        self._write_experiment(text, experiment)

    @property
    def recorded_plugins(self) -> list[dict[str, str]]:
        """The pinned plugins the run was made with (see :func:`collapselab.plugins.plugin_record`)."""
        return list(self.manifest.get("plugins") or [])

    def accept_plugins(self, plugins: list[dict[str, str]], note: str) -> None:
        """Record plugins that changed since the run began (``resume --allow-plugin-change``), with a note."""
        changes = [*self.manifest.get("plugin_changes", []), note]
        self._write_manifest({**self.manifest, "plugins": plugins, "plugin_changes": changes})

    def _write_manifest(self, manifest: dict[str, Any]) -> None:
        write_atomic(self.root / MANIFEST, dumps_json(manifest).encode())
        self.manifest = manifest

    # -- chains ---------------------------------------------------------------------------------
    def chain(self, arm: str, batch: int) -> ChainStore:
        return ChainStore(chain_folder(self.root, arm, batch), self.root)

    # -- outputs ----------------------------------------------------------------------------------
    def write_outputs(self, files: Mapping[str, bytes]) -> None:
        """Write the run's outputs (paths relative to the run directory); see :meth:`outputs`."""
        with self.outputs(list(files)) as sink:
            for name, data in files.items():
                sink.write(name, data)

    @contextlib.contextmanager
    def outputs(self, names: list[str]) -> Iterator[OutputSink]:
        """Write the outputs ``names`` through the yielded sink (``sink.write(name, data)``, callable from
        several threads).

        The names are recorded in the manifest before anything is written (so ``--overwrite`` can always
        tell them from a user's files), their sha256 after all are written; outputs of an earlier report
        that are no longer produced (e.g. a figure) are removed.
        """
        old = dict(self.manifest.get("outputs", {}))
        self._write_manifest({**self.manifest, "outputs": {**old, **{name: None for name in names}}})
        sink = OutputSink(self.root, names)
        yield sink
        missing = [n for n in names if n not in sink.done]
        if missing:
            raise RuntimeError(f"outputs announced but not written: {missing}")
        for name in old:
            if name not in sink.done:
                (self.root / name).unlink(missing_ok=True)
        self._write_manifest({**self.manifest, "outputs": {n: sink.done[n] for n in names}})

    # -- what the store wrote -----------------------------------------------------------------------
    @classmethod
    def _walk(cls, root: Path) -> Iterator[tuple[Path, bool]]:
        """(path, is_store_file) for every entry under ``root`` (symlinks are never followed)."""
        try:
            manifest = json.loads((root / MANIFEST).read_bytes())
            outputs = set(manifest.get("outputs", {})) if isinstance(manifest, dict) else set()
        except (OSError, ValueError, AttributeError):
            outputs = set()
        top = {MANIFEST, EXPERIMENT, LOCK}
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            rel = here.relative_to(root)
            parts = rel.parts
            for d in list(dirnames):
                p = here / d
                if p.is_symlink():
                    dirnames.remove(d)
                    yield p, False
                    continue
                sub = (*parts, d)
                ok = (sub == (CHAINS,) or sub == (FIGURES,) or (len(sub) == 2 and sub[0] == CHAINS)
                      or (len(sub) == 3 and sub[0] == CHAINS and _BATCH.match(d))
                      or (len(sub) == 4 and sub[0] == CHAINS and _MODEL_DIR.match(d)))
                if not ok:
                    dirnames.remove(d)
                    yield p, False
            for f in filenames:
                p = here / f
                relf = (rel / f).as_posix()
                try:
                    mode = os.lstat(p).st_mode
                except FileNotFoundError:  # gone since the listing (a writer renamed its temporary file)
                    continue
                if stat.S_ISLNK(mode) or not stat.S_ISREG(mode):
                    yield p, False
                elif _TEMP.match(f):  # the store's own temporary file (write_atomic's name), never foreign
                    yield p, True
                elif not parts:
                    yield p, f in top or relf in outputs
                elif parts[0] == FIGURES:
                    yield p, relf in outputs
                elif parts[0] == CHAINS and len(parts) == 3:
                    yield p, bool(_CHECKPOINT_FILE.match(f))
                elif parts[0] == CHAINS and len(parts) == 4:
                    yield p, True  # inside a model folder the store wrote
                else:
                    yield p, False

    @classmethod
    def foreign_files(cls, root: Path) -> list[str]:
        """Entries under ``root`` that the store did not write (relative paths, sorted)."""
        return sorted(p.relative_to(root).as_posix() for p, mine in cls._walk(root) if not mine)

    @classmethod
    def _remove_store_files(cls, root: Path) -> None:
        files = [p for p, mine in cls._walk(root) if mine]
        for p in sorted(files, key=lambda p: p.name != MANIFEST and not p.name.endswith(".json")):
            if p.name != LOCK:  # the manifest first: a half-emptied folder is no longer a run
                p.unlink(missing_ok=True)
        for sub in sorted({p.parent for p in files}, key=lambda p: len(p.parts), reverse=True):
            while sub != root:
                with contextlib.suppress(OSError):
                    sub.rmdir()  # only empty folders
                sub = sub.parent


class OutputSink:
    """Writes announced outputs of a run (see :meth:`RunStore.outputs`)."""

    def __init__(self, root: Path, names: list[str]) -> None:
        self.root, self.names, self.done = root, set(names), {}
        self._lock = threading.Lock()

    def write(self, name: str, data: bytes) -> None:
        if name not in self.names:
            raise ValueError(f"output {name!r} was not announced")
        sha = write_atomic(self.root / name, data)
        with self._lock:
            self.done[name] = sha
