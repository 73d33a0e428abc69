"""Runs: an experiment executed into a run directory, resumed, and reported; every write goes through
:mod:`collapselab.store`.

- :func:`create_run` validates the output folder, locks it and records the resolved experiment (nothing is
  created before every check has passed).
- :func:`open_run` locks an existing run and checks that ``experiment.yaml`` still describes it: the only
  changes allowed are more ``generations`` (and the description).
- :func:`execute` verifies the checkpoints of every chain (falling back, with a warning, to the newest one
  that verifies), then runs the chains on a backend; without a run directory everything stays in memory.
- :func:`finish` writes the tidy tables, ``summary.json``, the figures and ``report.html``;
  :func:`collect` rebuilds the values from the verified checkpoints (``collapselab report``), so a damaged
  or edited table can never produce a wrong summary.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from collapselab.chain import Progress
from collapselab.errors import ConfigError
from collapselab.experiments.loader import changed_fields, dump_experiment, parse_resolved, resolve_dump
from collapselab.experiments.schema import Experiment
from collapselab.runner import Results, backend_for, make_tasks
from collapselab.store import RunStore

Warn = Callable[[str], None]
TABLES = ("metrics.parquet",)
CSV = "metrics.csv"  # opt-in: `--csv` (54 of the 73 MB of a 2 x 1,000 x 200 Gaussian run; parquet holds the same)
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
            seeds = exp.batch_seeds(b)
            who = f"arm {arm.name!r}, seeds {seeds[0]}-{seeds[-1]}"
            scan = chain.scan(exp.metrics, len(seeds), last=exp.generations)
            if scan.problem is not None:
                if scan.resume is None:
                    raise ConfigError(f"{scan.problem}, and no earlier checkpoint of {who} verifies; delete "
                                      f"{chain.folder.relative_to(store.root)} to recompute that chain")
                warn(f"{scan.problem}; {who} continues from generation {scan.resume}")
            chain.prune(scan.resume)


def check_data(exp: Experiment) -> None:
    """Raise :class:`ConfigError` (one line naming the field) when the data cannot serve the run: a finite real
    data set too small for the held-out set or for what an arm's regime consumes over all generations, or some
    seed's real pool too small (sources whose pool depends on the seed, e.g. whole-article text chunks). The
    first step that reads data; run before anything is written."""
    try:
        _check_data(exp)
    except ConfigError:
        raise
    except (OSError, ValueError) as e:  # a source that cannot read its data: one line naming the field
        msg = " ".join(str(e).split())
        raise ConfigError(msg if msg.startswith(("data", "heldout", "n:")) else f"data: {msg}") from None


def _check_data(exp: Experiment) -> None:
    from collapselab.data import FiniteSource
    from collapselab.seeding import SeedTree

    source = exp.make_source()
    if isinstance(source, FiniteSource):
        available = source.pool_size
        why = source.check_heldout()
        if why:
            raise ConfigError(why)
        if available < 1:
            total = available + exp.heldout
            raise ConfigError(f"heldout: {exp.heldout} held-out samples leave none of the {total} samples of "
                              f"{exp.data.source!r} to train on; allowed: 1 to {total - 1}")
        for arm in exp.arms:
            need = arm.regime.real_needed(exp.n, exp.generations)
            if need > available:
                raise ConfigError(f"n: the real pool of {exp.data.source!r} holds {available} training samples "
                                  f"(after {exp.heldout} held out) but arm {arm.name!r} ({arm.regime.name}) needs "
                                  f"{need}")
    need = max(arm.regime.real_needed(exp.n, exp.generations) for arm in exp.arms)
    why = source.check_capacity(SeedTree(exp.seed), exp.n_batches, need)
    if why:
        raise ConfigError(why)


def execute(exp: Experiment, run: RunStore | None = None, workers: int = 1, progress: Progress | None = None,
            warn: Warn | None = None, prepared: bool = False, outputs: Outputs | None = None,
            backend: str = "local", address: str | None = None) -> Results:
    """Run (or resume) every chain of ``exp``; returns the values per (arm, batch).

    With ``run`` (a :class:`RunStore` from :func:`create_run` / :func:`open_run`) chains checkpoint into it
    and continue from what it holds (after :func:`prepare`, unless ``prepared``); with ``None`` everything
    stays in memory. ``outputs`` (an :class:`Outputs`) starts on each arm's outputs as soon as its chains
    are done. ``backend``: ``local`` (``workers`` processes) or ``ray`` (``address``: a cluster; default a local
    Ray instance); the results do not depend on it.
    """
    if backend != "ray":
        from collapselab.runner import check_local

        check_local(exp)
    if run is None:
        check_data(exp)
    elif not prepared:
        prepare(exp, run, warn)
    tasks = make_tasks(exp, None if run is None else str(run.root))
    return backend_for(workers, backend, address).run(tasks, progress,
                                                      None if outputs is None else outputs.task_done)


def assemble(exp: Experiment, results: Results) -> np.ndarray:
    """All metric values as one array ``[arms, seeds, generations + 1, metrics]`` (NaN where missing)."""
    out = np.full((len(exp.arms), exp.seeds, exp.generations + 1, len(exp.metrics)), np.nan)
    for a, arm in enumerate(exp.arms):
        for b in range(exp.n_batches):
            block = results.get((arm.name, b))
            if block is not None and block.size:
                seeds = exp.batch_seeds(b)
                out[a, seeds[0]:seeds[-1] + 1, : block.shape[0]] = np.transpose(block, (2, 0, 1))
    return out


def collect(exp: Experiment, store: RunStore) -> np.ndarray:
    """The values of a finished run, rebuilt from its verified checkpoints (:class:`ConfigError` if the run
    is unfinished or a checkpoint fails verification)."""
    results: Results = {}
    for arm in exp.arms:
        for b in range(exp.n_batches):
            seeds = exp.batch_seeds(b)
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


def wants_csv(store: RunStore, asked: bool) -> bool:
    """Whether the run writes ``metrics.csv``: when asked (``--csv``), and always once a run has one, so a
    resume or report keeps it up to date."""
    return asked or CSV in store.manifest.get("outputs", {})


def finish(exp: Experiment, store: RunStore, values: np.ndarray, outputs: Outputs | None = None,
           csv: bool = False) -> dict[str, Any]:
    """Write ``metrics.parquet`` (and ``metrics.csv`` with ``csv``), ``summary.json``, the figures and
    ``report.html``; returns the summary. ``outputs`` holds the parts already computed while the chains ran.
    A run that has a ``metrics.csv`` keeps it (:func:`wants_csv`)."""
    own = outputs is None
    outputs = outputs or Outputs(exp, csv=wants_csv(store, csv))
    try:
        return outputs.write(store, values)
    finally:
        if own:
            outputs.close()


class Outputs:
    """The run's outputs, built while its chains run.

    As soon as every chain batch of an arm is done (:meth:`task_done`, the backends' completion callback),
    that arm's share of the outputs (its rows of the tidy tables, its bootstrap bands and time to failure)
    is computed on a background thread; numpy and polars release the GIL, so this overlaps the chains of
    the arms still running. :meth:`write` completes the rest (fidelity ratios, figures, report) and writes
    everything through the store. The files are the same as those of a run computed all at the end.
    """

    def __init__(self, exp: Experiment, csv: bool = False) -> None:
        from collapselab.report import report_weights, theory_curves

        self.exp = exp
        self.csv = csv
        self.theory = theory_curves(exp)
        self.weights = report_weights(exp)
        self._blocks: Results = {}
        self._stats: dict[int, Future] = {}
        self._tables: dict[int, Future] = {}
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="collapselab-outputs")

    def task_done(self, task: Any, block: np.ndarray) -> None:
        """Record a finished chain batch; start on its arm when the arm is complete."""
        exp = self.exp
        self._blocks[(task.arm, task.batch)] = block
        if all((task.arm, b) in self._blocks for b in range(exp.n_batches)):
            a = next(i for i, arm in enumerate(exp.arms) if arm.name == task.arm)
            self._start(a, np.concatenate([np.transpose(self._blocks.pop((task.arm, b)), (2, 0, 1))
                                           for b in range(exp.n_batches)]))

    def _start(self, a: int, values: np.ndarray) -> None:
        from collapselab.report import arm_stats

        self._stats[a] = self._pool.submit(arm_stats, self.exp, a, values, self.weights, self.theory)
        self._tables[a] = self._pool.submit(self._table, a, values)

    def _table(self, a: int, values: np.ndarray) -> tuple[Any, bytes]:
        from collapselab.tables import csv_bytes, tidy_frame

        exp = self.exp
        frame = tidy_frame([arm.name for arm in exp.arms], exp.metrics, values[None], first_arm=a)
        return frame, csv_bytes(frame, header=a == 0) if self.csv else b""

    def _all_tables(self) -> dict[str, bytes]:
        import polars as pl

        from collapselab.tables import parquet_bytes

        parts = [self._tables[a].result() for a in range(len(self.exp.arms))]
        tables = {"metrics.parquet": parquet_bytes(pl.concat([frame for frame, _ in parts]))}
        if self.csv:
            tables[CSV] = b"".join(csv for _, csv in parts)
        return tables

    def write(self, store: RunStore, values: np.ndarray) -> dict[str, Any]:
        """Complete and write every output; returns the summary."""
        from collapselab.report import build_report, collect_exhibits, report_names

        for a in range(len(self.exp.arms)):
            if a not in self._stats:  # arms whose chains were not reported (e.g. a resume with nothing to do)
                self._start(a, values[a])
        with store.outputs(list(TABLES) + [CSV] * self.csv + report_names(self.exp)) as sink:
            # the last arms' rows are formatted and the tables written (fsync waits on the disk) while the
            # figures render on this thread
            tables = self._pool.submit(lambda: [sink.write(n, b) for n, b in self._all_tables().items()])
            stats = [self._stats[a].result() for a in range(len(self.exp.arms))]
            summary, files = build_report(self.exp, None, stats, self.theory, collect_exhibits(self.exp, store))
            for name, data in files.items():
                sink.write(name, data)
            tables.result()
        return summary

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
