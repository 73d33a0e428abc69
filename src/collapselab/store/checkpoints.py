"""Chain checkpoints: written on a background thread, a record after its files; read back only when every file
matches its sha256."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from collapselab.exhibits import from_arrays, to_arrays
from collapselab.store.files import (
    Damaged,
    _remove_tree,
    _tensors_load,
    dumps_json,
    read_verified,
    remove_temps,
    tensors_bytes,
    write_atomic,
)
from collapselab.store.layout import _CHECKPOINT_FILE, _MODEL_DIR, _RECORD, CHECKPOINT_FORMAT, KEEP_MODELS, KEEP_REGIME


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
             exhibits: Mapping[int, Mapping[str, Any]] | None = None) -> None:
        """Write checkpoint ``g`` (values of generations ``first..g``); the record is written last.

        ``exhibits`` (generation -> the family's exhibits by name, :mod:`collapselab.exhibits`) are kept in the
        checkpoint file, which is never pruned (:meth:`exhibits` reads them back).

        ``model_files`` (a family's standard export, relative path -> bytes) go to the folder ``gNNNNN.model``
        in place of the model arrays; model folders are kept for the ``KEEP_MODELS`` newest checkpoints and
        for generation ``keep_model`` (e.g. the best one so far), the older ones removed after the record.
        The arrays are serialised here (so the caller may change them afterwards); the writer writes them.
        """
        meta = {"format": CHECKPOINT_FORMAT, "generation": g, "first_generation": first}
        tensors = {f"model.{k}": v for k, v in model_state.items()}
        tensors["metrics"] = np.asarray(values, dtype=np.float64)
        for k, shown in (exhibits or {}).items():
            for name, exhibit in shown.items():
                tensors.update({f"exhibit.g{k:05d}.{name}.{f}": v for f, v in to_arrays(exhibit).items()})
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

    def exhibits(self, g: int) -> dict[int, dict[str, Any]]:
        """The exhibits saved with checkpoint ``g``: generation -> name -> exhibit (verified as they are read)."""
        main = self._read(self._load_record(g), f"g{g:05d}.safetensors")
        parts: dict[tuple[int, str], dict[str, np.ndarray]] = {}
        for key, v in main.items():
            if key.startswith("exhibit.g"):
                gen, name, field = key[len("exhibit.g"):].split(".", 2)
                parts.setdefault((int(gen), name), {})[field] = v
        out: dict[int, dict[str, Any]] = {}
        for (gen, name), arrays in sorted(parts.items()):
            out.setdefault(gen, {})[name] = from_arrays(arrays)
        return out

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
