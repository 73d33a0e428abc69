"""The run's outputs: the tidy tables, ``summary.json``, the figures and ``report.html``, built while the chains run
(:class:`Outputs`) and written through the run store (:func:`finish`)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from collapselab.experiments.schema import Experiment
from collapselab.store import RunStore

TABLES = ("metrics.parquet",)
CSV = "metrics.csv"  # opt-in: `--csv` (most of a large closed-form run's bytes; metrics.parquet holds the same)
#: (arm, batch) -> [generations + 1, metrics, chains]
Results = dict[tuple[str, int], np.ndarray]


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
        from collapselab.report.aggregate import report_weights, theory_curves

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
        from collapselab.report.aggregate import arm_stats

        # one memory layout whatever the values came from (a chain's blocks or the checkpoints): numpy's sums
        # depend on it in the last bit, and a report must rebuild the run's summary exactly
        values = np.ascontiguousarray(values)

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
            summary, files = build_report(self.exp, None, stats, self.theory, collect_exhibits(self.exp, store),
                                          parallel=True)
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
