"""Runs: an experiment executed into a run directory, resumed, and reported; every write goes through
:mod:`collapselab.store`.

- :func:`create_run` validates the output folder, locks it and records the resolved experiment (nothing is
  created before every check has passed).
- :func:`open_run` locks an existing run and checks that ``experiment.yaml`` still describes it: the only
  changes allowed are more ``generations`` (and the description).
- :func:`preflight` runs every guard a run passes before anything is written, once: the data can serve it
  (:mod:`collapselab.experiments.capacity`) and the backend can run it (a GPU the machine lacks; a cluster's
  resources and storage). The CLI calls it before it creates the run directory; :func:`execute` calls it itself
  unless told the run was checked.
- :func:`execute` verifies the checkpoints of every chain (falling back, with a warning, to the newest one
  that verifies), then runs the chains on a backend; without a run directory everything stays in memory.
- :func:`finish` writes the tidy tables, ``summary.json``, the figures and ``report.html``
  (:mod:`collapselab.report.outputs`); :func:`collect` rebuilds the values from the verified checkpoints
  (``collapselab report``), so a damaged or edited table can never produce a wrong summary.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from collapselab.chain import Progress
from collapselab.errors import ConfigError
from collapselab.experiments.capacity import check_data
from collapselab.experiments.loader import changed_fields, dump_experiment, parse_resolved, resolve_dump
from collapselab.experiments.schema import Experiment
from collapselab.report.outputs import Outputs, finish
from collapselab.runner import Backend, Results, backend_for, make_tasks
from collapselab.store import RunStore

__all__ = ["Outputs", "assemble", "collect", "create_run", "execute", "finish", "open_run", "preflight", "prepare"]

Warn = Callable[[str], None]
#: experiment fields that may change between a run and its resume.
RESUMABLE_CHANGES = ("generations", "description")


def experiment_record(exp: Experiment) -> dict[str, Any]:
    """The resolved experiment as the manifest records it (JSON types)."""
    return exp.model_dump(mode="json", exclude_none=True)


def create_run(exp: Experiment, out: Path | str, overwrite: bool = False) -> RunStore:
    """Create and lock the run directory for ``exp`` at ``out`` (validated first; see :class:`RunStore`)."""
    from collapselab.plugins import plugin_record

    return RunStore.create(Path(out), dump_experiment(exp), experiment_record(exp), overwrite, plugin_record(exp),
                           data_record(exp))


def data_record(exp: Experiment) -> dict[str, Any] | None:
    """The pin of a user's data (a source with a ``path``): its files and the sha256 of their names and contents;
    ``None`` for the built-in data sets."""
    import hashlib

    from collapselab.data.files import pinned_files

    path = getattr(exp.data, "path", None)
    if not isinstance(path, str):
        return None
    files = pinned_files(path)
    h = hashlib.sha256()
    for f in files:
        h.update(str(f).encode() + b"\0")
        with open(f, "rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return {"path": path, "files": len(files), "sha256": h.hexdigest()}


def plugin_changes(store: RunStore, exp: Experiment, allow_change: bool = False) -> str | None:
    """What changed in the plugins since the run began (a note for ``run.json``), or ``None``; a change is a
    :class:`ConfigError` naming the plugin unless ``allow_change`` (a missing plugin fails to import before this).
    The user's data must be the same files, unchanged (no override: a run on other data is another run)."""
    from collapselab.plugins import plugin_record

    data_before, data_now = store.manifest.get("data"), data_record(exp)
    if data_before and data_before != data_now:
        now = f"{data_now['files']} files, sha256 {data_now['sha256'][:12]}" if data_now else "gone"
        raise ConfigError(f"data.path: {data_before['path']!r} changed since the run began ({data_before['files']} "
                          f"files, sha256 {data_before['sha256'][:12]}; now {now}); restore it or start a new run")
    before = {p["spec"]: p for p in store.recorded_plugins}
    now = {p["spec"]: p for p in plugin_record(exp)}
    changed = [spec for spec in {**before, **now} if before.get(spec) != now.get(spec)]
    if not changed:
        return None
    spec = changed[0]
    old, new = before.get(spec, {}), now.get(spec, {})
    what = (f"plugin {spec!r} changed ({_pin(old)} when the run began, {_pin(new)} now)" if old and new else
            f"plugin {spec!r} is {'new' if new else 'no longer used'}")
    if not allow_change:
        more = f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""
        raise ConfigError(f"{store.root}: {what}{more}; restore it, or pass --allow-plugin-change to continue with "
                          f"it (recorded in run.json)")
    return f"continued with changed plugins: {', '.join(changed)}"


def _pin(p: dict[str, str]) -> str:
    return p.get("version") or f"sha256 {p.get('sha256', '?')[:12]}"


def open_run(run_dir: Path | str, generations: int | None = None,
             allow_plugin_change: bool | None = False,
             check: Callable[[Experiment], None] | None = None) -> tuple[RunStore, Experiment]:
    """Lock an existing run; returns it with its experiment (``generations`` extends the run; the plugins must be
    those the run began with unless ``allow_plugin_change``; ``None``: not checked, for reading a finished run).
    ``check(exp)`` (e.g. the backend's resource check) runs after the run's own checks, before anything is
    written."""
    store = RunStore.open(Path(run_dir))
    try:
        text, unchanged = store.read_experiment_text()
        exp = parse_resolved(text, where=str(Path(run_dir) / "experiment.yaml"))
        note = plugin_changes(store, exp, allow_plugin_change) if allow_plugin_change is not None else None
        if generations is not None:
            exp = resolve_dump({**experiment_record(exp), "generations": generations})
        recorded, current = store.recorded_experiment, experiment_record(exp)
        changes = changed_fields(recorded, current)
        bad = [c for c in changes if c not in RESUMABLE_CHANGES]
        if bad:
            raise ConfigError(f"{Path(run_dir) / 'experiment.yaml'}: no longer matches the run ({', '.join(bad)} "
                              f"changed; only generations may grow); undo the change or start a new run")
        if current["generations"] < recorded["generations"]:
            raise ConfigError(f"generations: a run can only be extended (it has {recorded['generations']}, "
                              f"{current['generations']} asked)")
        if check is not None:
            check(exp)
        if note is not None:  # only now that every check has passed: nothing is written on an exit-2 path
            from collapselab.plugins import plugin_record

            store.accept_plugins(plugin_record(exp), note)
        if changes or not unchanged:
            store.update_experiment(dump_experiment(exp), current)
        return store, exp
    except BaseException:
        store.close()
        raise


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def prepare(exp: Experiment, store: RunStore, warn: Warn | None = None) -> None:
    """Verify every chain's checkpoints and remove what cannot be used, before any chain runs.

    A chain whose newest checkpoint is damaged continues from the newest one that verifies (one warning
    naming the bad file); a chain with checkpoints of which none verifies is an error (exit 2).
    """
    warn = warn or _warn
    for arm in exp.arms:
        for b in range(exp.n_batches):
            chain = store.chain(arm.name, b)
            seeds = exp.chain_indices(b)
            who = f"arm {arm.name!r}, seeds {seeds[0]}-{seeds[-1]}"
            scan = chain.scan(exp.metrics, len(seeds), last=exp.generations)
            if scan.problem is not None:
                if scan.resume is None:
                    raise ConfigError(f"{scan.problem}, and no earlier checkpoint of {who} verifies; delete "
                                      f"{chain.folder.relative_to(store.root)} to recompute that chain")
                warn(f"{scan.problem}; {who} continues from generation {scan.resume}")
            chain.prune(scan.resume)


def preflight(exp: Experiment, backend: str | Backend = "local", address: str | None = None,
              run_dir: Path | str | None = None, workers: int = 1) -> Backend:
    """Every guard a run passes before anything is written, once, each a one-line :class:`ConfigError`: the data
    can serve it (:func:`~collapselab.experiments.capacity.check_data`), and the backend can run it (``local``: a GPU an
    arm asks for is there; ``ray``: Ray started or joined, a request some node can grant, and, on a cluster joined by
    address, every node sees the nearest existing folder of ``run_dir``). Returns the backend to run on."""
    check_data(exp)
    chosen = backend_for(workers, backend, address) if isinstance(backend, str) else backend
    chosen.check(exp, None if run_dir is None else Path(run_dir))
    return chosen


def execute(exp: Experiment, run: RunStore | None = None, workers: int = 1, progress: Progress | None = None,
            warn: Warn | None = None, prepared: bool = False, outputs: Outputs | None = None,
            backend: str | Backend = "local", address: str | None = None, checked: bool = False) -> Results:
    """Run (or resume) every chain of ``exp``; returns the values per (arm, batch).

    With ``run`` (a :class:`RunStore` from :func:`create_run` / :func:`open_run`) chains checkpoint into it
    and continue from what it holds (after :func:`prepare`, unless ``prepared``); with ``None`` everything
    stays in memory. ``outputs`` (an :class:`Outputs`) starts on each arm's outputs as soon as its chains
    are done. ``backend``: ``local`` (``workers`` processes), ``ray`` (``address``: a cluster; default a local
    Ray instance) or the backend :func:`preflight` returned; the results do not depend on it. :func:`preflight` runs
    first unless ``checked`` (the caller ran it).
    """
    if checked:
        chosen = backend_for(workers, backend, address) if isinstance(backend, str) else backend
    else:
        chosen = preflight(exp, backend, address, None if run is None else run.root, workers)
    if run is not None and not prepared:
        prepare(exp, run, warn)
    tasks = make_tasks(exp, None if run is None else str(run.root))
    return chosen.run(tasks, progress, None if outputs is None else outputs.task_done)


def assemble(exp: Experiment, results: Results) -> np.ndarray:
    """All metric values as one array ``[arms, seeds, generations + 1, metrics]`` (NaN where missing)."""
    out = np.full((len(exp.arms), exp.seeds, exp.generations + 1, len(exp.metrics)), np.nan)
    for a, arm in enumerate(exp.arms):
        for b in range(exp.n_batches):
            block = results.get((arm.name, b))
            if block is not None and block.size:
                seeds = exp.chain_indices(b)
                out[a, seeds[0]:seeds[-1] + 1, : block.shape[0]] = np.transpose(block, (2, 0, 1))
    return out


def collect(exp: Experiment, store: RunStore) -> np.ndarray:
    """The values of a finished run, rebuilt from its verified checkpoints (:class:`ConfigError` if the run
    is unfinished or a checkpoint fails verification)."""
    results: Results = {}
    for arm in exp.arms:
        for b in range(exp.n_batches):
            seeds = exp.chain_indices(b)
            scan = store.chain(arm.name, b).scan(exp.metrics, len(seeds), last=exp.generations)
            if scan.problem is not None:
                start = 0 if scan.resume is None else scan.resume + 1
                raise ConfigError(f"{scan.problem}; `collapselab resume {store.root}` recomputes arm "
                                  f"{arm.name!r} from generation {start}")
            if scan.resume != exp.generations:
                have = "no generation" if scan.resume is None else f"generations 0-{scan.resume}"
                raise ConfigError(f"{store.root}: the run is not finished (arm {arm.name!r}, seeds "
                                  f"{seeds[0]}-{seeds[-1]} has {have} of 0-{exp.generations}); continue it with "
                                  f"`collapselab resume {store.root}`")
            results[(arm.name, b)] = scan.values
    return assemble(exp, results)
