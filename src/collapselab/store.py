"""The run store: the one module that writes (and verifies) a run directory.

Layout of a run directory::

    run.json               manifest: format, the resolved experiment and its sha256, the outputs' sha256
    experiment.yaml        the resolved experiment (edit ``generations`` and ``resume`` to extend a run)
    .collapselab.lock      held (fcntl) by the process using the run; holds its pid
    chains/<arm>/bNNNN/    one folder per chain batch; per checkpoint at generation g:
        gNNNNN.safetensors         model state (``model.*``) + the metric values of the generations since
                                   the previous checkpoint (``metrics [k, metrics, chains]``, float64)
        gNNNNN.regime.safetensors  the regime's state (kept for the newest two checkpoints)
        gNNNNN.json                the commit record, written last: generation, first generation and the
                                   sha256 and size of each file above
    metrics.parquet, metrics.csv, summary.json, report.html, figures/

Rules: every write is atomic (temp file in the same folder, fsync, rename, fsync of the folder) and creates
files with the user's umask; a checkpoint exists once its record exists, and is used only after every file
it lists matches its sha256; ``--overwrite`` removes only files this module wrote and refuses a folder that
holds anything else; one process at a time holds a run (``flock``; a killed holder's lock is free again).
No pickle is ever loaded.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import queue
import re
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from collapselab import __version__
from collapselab.errors import ConfigError, StoreError

RUN_FORMAT = "collapselab-run/1"
CHECKPOINT_FORMAT = "collapselab-checkpoint/1"
MANIFEST = "run.json"
EXPERIMENT = "experiment.yaml"
LOCK = ".collapselab.lock"
CHAINS = "chains"
FIGURES = "figures"
#: regime-state files are kept for this many of the newest checkpoints (so resume can fall back one).
KEEP_REGIME = 2

#: model folders (a family's standard export, e.g. a Hugging Face folder) kept besides the newest checkpoints.
KEEP_MODELS = 2

_RECORD = re.compile(r"^g(\d{5,})\.json$")
_CHECKPOINT_FILE = re.compile(r"^g(\d{5,})(\.regime)?\.(safetensors|json)$")
_MODEL_DIR = re.compile(r"^g(\d{5,})\.model$")
_TEMP = re.compile(r"^\..+\.[0-9a-f]+\.tmp$")
_BATCH = re.compile(r"^b\d{4,}$")


# -- atomic, checksummed files -------------------------------------------------------------------
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


# -- the lock -------------------------------------------------------------------------------------
class RunLock:
    """An exclusive ``flock`` on ``<run>/.collapselab.lock`` holding the owner's pid.

    Hand-written on fcntl rather than ``filelock``: the message must name the holder's pid, and a flock
    dies with its process, so a killed run never leaves a lock that blocks ``resume``.
    """

    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / LOCK
        self.fd: int | None = None

    def acquire(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                raise ConfigError(f"{self.path.parent}: the run directory is not writable ({e.strerror})") from None
            raise StoreError(f"cannot create {self.path}: {e.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise ConfigError(f"{self.path.parent}: in use by pid {holder} (a run, resume or report holds it; "
                              f"wait for it or stop it)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


# -- chain checkpoints ----------------------------------------------------------------------------
@dataclass
class ChainScan:
    """What a chain batch folder holds, verified.

    ``resume``: the newest generation a chain can continue from (``None``: start at generation 0);
    ``values``: the metric values ``[resume + 1, metrics, chains]`` of generations 0..resume;
    ``problem``: the first damaged file met (the checkpoints after it are not used);
    ``newest``: the newest checkpoint record present (damaged or not).
    """

    resume: int | None = None
    values: np.ndarray | None = None
    problem: Damaged | None = None
    newest: int | None = None
    records: list[int] = field(default_factory=list)


class Writer:
    """Runs writes in submission order on one background thread, so checkpoint I/O (sha256, write, fsync)
    overlaps the chain's computation. An error is raised by the next :meth:`submit` or by :meth:`close`,
    which waits for every pending write; a checkpoint's record is submitted after its files, so a process
    killed with writes pending leaves the previous checkpoint as the newest complete one."""

    def __init__(self, depth: int = 4) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop, name="collapselab-writer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while (job := self._queue.get()) is not None:
            if self._error is None:
                try:
                    job()
                except BaseException as e:  # surfaced in the submitting thread
                    self._error = e

    def _raise(self) -> None:
        if self._error is not None:
            err, self._error = self._error, None
            raise err

    def submit(self, job: Callable[[], Any]) -> None:
        self._raise()
        self._queue.put(job)

    def close(self) -> None:
        """Wait for the pending writes; re-raise the first error."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        self._raise()


class _Inline:
    """The :class:`Writer` interface, writing at once (no thread)."""

    @staticmethod
    def submit(job: Callable[[], Any]) -> None:
        job()

    @staticmethod
    def close() -> None:
        pass


class ChainStore:
    """The checkpoints of one chain batch (``chains/<arm>/bNNNN``); ``writer`` runs the writes (default:
    at once, in the calling thread)."""

    def __init__(self, folder: Path, run_dir: Path | None = None, writer: Writer | None = None) -> None:
        self.folder = Path(folder)
        self.run_dir = run_dir
        self.writer = writer or _Inline()

    def _rel(self, name: str) -> Path:
        p = self.folder / name
        return p.relative_to(self.run_dir) if self.run_dir is not None else p

    def record_generations(self) -> list[int]:
        if not self.folder.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.folder.iterdir() if (m := _RECORD.match(p.name)))

    def save(self, g: int, first: int, model_state: Mapping[str, np.ndarray], values: np.ndarray,
             regime_state: Mapping[str, np.ndarray] | None, info: Mapping[str, Any],
             model_files: Mapping[str, bytes] | None = None, keep_model: int | None = None,
             passages: Mapping[int, np.ndarray] | None = None) -> None:
        """Write checkpoint ``g`` (values of generations ``first..g``); the record is written last.

        ``passages`` (generation -> a text family's rewrite of the report's real passage, token ids) are kept in
        the checkpoint file, which is never pruned (:meth:`passages` reads them back).

        ``model_files`` (a family's standard export, relative path -> bytes) go to the folder ``gNNNNN.model``
        in place of the model arrays; model folders are kept for the ``KEEP_MODELS`` newest checkpoints and
        for generation ``keep_model`` (e.g. the best one so far), the older ones removed after the record.
        The arrays are serialised here (so the caller may change them afterwards); the writer writes them.
        """
        meta = {"format": CHECKPOINT_FORMAT, "generation": g, "first_generation": first}
        tensors = {f"model.{k}": v for k, v in model_state.items()}
        tensors["metrics"] = np.asarray(values, dtype=np.float64)
        tensors.update({f"passages.g{k:05d}": np.asarray(v) for k, v in (passages or {}).items()})
        blobs = {f"g{g:05d}.safetensors": tensors_bytes(tensors, meta)}
        if regime_state:
            blobs[f"g{g:05d}.regime.safetensors"] = tensors_bytes(regime_state, meta)
        for name, data in (model_files or {}).items():
            blobs[f"g{g:05d}.model/{name}"] = bytes(data)
        record = {"format": CHECKPOINT_FORMAT, "generation": g, "first_generation": first, **info}

        def write() -> None:
            files = {name: {"sha256": write_atomic(self.folder / name, data), "bytes": len(data)}
                     for name, data in blobs.items()}
            write_atomic(self.folder / f"g{g:05d}.json", dumps_json({**record, "files": files}).encode())
            gens = self.record_generations()
            keep = gens[-KEEP_REGIME:]
            for p in self.folder.glob("g*.regime.safetensors"):
                if int(p.name[1:].split(".")[0]) not in keep:
                    p.unlink(missing_ok=True)
            keep_models = {*gens[-KEEP_MODELS:], keep_model}
            for p in self.folder.iterdir():
                m = _MODEL_DIR.match(p.name)
                if m and int(m.group(1)) not in keep_models:
                    _remove_tree(p)

        self.writer.submit(write)

    def model_files(self, g: int) -> dict[str, bytes]:
        """The model folder of checkpoint ``g`` (verified as it is read); ``{}`` when it has none."""
        rec = self._load_record(g)
        prefix = f"g{g:05d}.model/"
        out = {}
        for name, entry in rec["files"].items():
            if name.startswith(prefix):
                try:
                    sha, size = str(entry["sha256"]), int(entry["bytes"])
                except (KeyError, TypeError, ValueError):
                    raise Damaged(self._rel(f"g{g:05d}.json"), "is not a valid checkpoint record") from None
                out[name[len(prefix):]] = read_verified(self.folder / name, sha, size)
        return out

    def _load_record(self, g: int) -> dict[str, Any]:
        path = self.folder / f"g{g:05d}.json"
        try:
            rec = json.loads(path.read_bytes())
        except (OSError, ValueError):
            raise Damaged(self._rel(path.name), "is not a valid checkpoint record") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("files"), dict):
            raise Damaged(self._rel(path.name), "is not a valid checkpoint record")
        return rec

    def _record(self, g: int, expect_first: int, metrics: list[str], n_chains: int) -> dict[str, Any]:
        path = self.folder / f"g{g:05d}.json"
        try:
            rec = json.loads(path.read_bytes())
            ok = (isinstance(rec, dict) and rec.get("format") == CHECKPOINT_FORMAT and rec.get("generation") == g
                  and isinstance(rec.get("files"), dict) and f"g{g:05d}.safetensors" in rec["files"])
        except (OSError, ValueError):
            ok = False
        if not ok:
            raise Damaged(self._rel(path.name), "is not a valid checkpoint record")
        first = rec.get("first_generation")
        if first != expect_first:
            if isinstance(first, int) and expect_first < first <= g:  # the checkpoint before this one is gone
                raise Damaged(self._rel(f"g{first - 1:05d}.json"), "is missing (the checkpoints before and after "
                                                                   "it exist)")
            raise Damaged(self._rel(path.name), "is not a valid checkpoint record")
        if rec.get("metrics") != list(metrics) or rec.get("n_chains") != n_chains:
            raise Damaged(self._rel(path.name), "belongs to another experiment (metrics or chains differ)")
        return rec

    def _read(self, rec: dict[str, Any], name: str) -> dict[str, np.ndarray]:
        entry = rec["files"][name]
        try:
            sha, size = str(entry["sha256"]), int(entry["bytes"])
        except (KeyError, TypeError, ValueError):
            raise Damaged(self._rel(f"g{rec['generation']:05d}.json"), "is not a valid checkpoint record") from None
        return _tensors_load(read_verified(self.folder / name, sha, size), self._rel(name))

    def scan(self, metrics: list[str], n_chains: int, last: int | None = None) -> ChainScan:
        """Verify the checkpoints (oldest first) and find where the chain can continue from.

        Only checkpoints up to generation ``last`` (default: all) are considered.
        """
        out = ChainScan()
        gens = [g for g in self.record_generations() if last is None or g <= last]
        out.records = gens
        out.newest = gens[-1] if gens else None
        values: list[np.ndarray] = []
        usable: list[tuple[int, dict[str, Any]]] = []
        first = 0
        for g in gens:
            try:
                rec = self._record(g, first, metrics, n_chains)
                vals = self._read(rec, f"g{g:05d}.safetensors").get("metrics")
                if vals is None or vals.shape != (g - first + 1, len(metrics), n_chains):
                    raise Damaged(self._rel(f"g{g:05d}.safetensors"), "holds metric values of the wrong shape")
            except Damaged as e:
                out.problem = e
                break
            values.append(vals)
            usable.append((g, rec))
            first = g + 1
        for i in range(len(usable) - 1, -1, -1):  # newest first: regime state and model folder must verify too
            g, rec = usable[i]
            name = f"g{g:05d}.regime.safetensors"
            try:
                if name in rec["files"]:
                    self._read(rec, name)
                self.model_files(g)
            except Damaged as e:
                if i >= len(usable) - min(KEEP_REGIME, KEEP_MODELS) and out.problem is None:
                    out.problem = e  # an older one was pruned on purpose
                continue
            out.resume = g
            out.values = np.concatenate(values[: i + 1]) if values else None
            break
        return out

    def load(self, g: int, regime: bool = True) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Model state and regime state of checkpoint ``g`` (verified again as they are read); with
        ``regime=False`` only the model (older regime states are pruned on purpose)."""
        rec = self._load_record(g)
        main = self._read(rec, f"g{g:05d}.safetensors")
        model = {k[6:]: v for k, v in main.items() if k.startswith("model.")}
        name = f"g{g:05d}.regime.safetensors"
        return model, (self._read(rec, name) if regime and name in rec["files"] else {})

    def passages(self, g: int) -> dict[int, np.ndarray]:
        """The passages saved with checkpoint ``g`` (generation -> token ids; verified as they are read)."""
        main = self._read(self._load_record(g), f"g{g:05d}.safetensors")
        return {int(k[len("passages.g"):]): v for k, v in main.items() if k.startswith("passages.g")}

    def prune(self, keep_until: int | None) -> None:
        """Remove every checkpoint after ``keep_until`` (all if ``None``), orphans and temp files."""
        if not self.folder.is_dir():
            return
        remove_temps(self.folder)
        files = [(p, _CHECKPOINT_FILE.match(p.name)) for p in self.folder.iterdir()]
        recorded = set(self.record_generations())
        for p in self.folder.iterdir():
            m = _MODEL_DIR.match(p.name)
            if m and ((keep_until is None or int(m.group(1)) > keep_until) or int(m.group(1)) not in recorded):
                _remove_tree(p)
        # records go first, so an interruption never leaves a record whose files are gone
        for p, m in sorted(files, key=lambda t: not (t[1] and t[0].suffix == ".json")):
            if not m:
                continue
            g = int(m.group(1))
            if (keep_until is None or g > keep_until) or g not in recorded:
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


# -- the run directory ----------------------------------------------------------------------------
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
               plugins: list[dict[str, str]] | None = None) -> RunStore:
        """Create (or, with ``overwrite``, empty and reuse) the run directory at ``out`` and store the experiment
        (``plugins``: the pinned plugins it depends on, recorded in the manifest)."""
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
            store = cls(real, lock, {"plugins": plugins or []})
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
                if not (isinstance(manifest, dict) and manifest.get("format") == RUN_FORMAT
                        and isinstance(manifest.get("experiment"), dict)):
                    raise ValueError
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
        for key in ("plugins", "plugin_changes"):
            if self.manifest.get(key):
                manifest[key] = self.manifest[key]
        self._write_manifest(manifest)

    def update_experiment(self, text: str, experiment: dict[str, Any]) -> None:
        """Record an accepted change of the experiment (e.g. more generations)."""
        self._write_experiment(text, experiment)

    @property
    def recorded_plugins(self) -> list[dict[str, str]]:
        """The pinned plugins the run was made with (see :func:`collapselab.registry.plugin_record`)."""
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
                if p.is_symlink() or not p.is_file():
                    yield p, False
                elif _TEMP.match(f):
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


def chain_folder(run_dir: Path, arm: str, batch: int) -> Path:
    """Where the checkpoints of ``arm``'s chain batch ``batch`` live."""
    return Path(run_dir) / CHAINS / arm / f"b{batch:04d}"
