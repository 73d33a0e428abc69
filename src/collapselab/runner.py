"""Runner: expands an experiment into (arm, batch) chain tasks and runs them on a backend.

Tasks are independent and picklable (:class:`collapselab.chain.ChainTask`), so a backend only has to map
``run_chain`` over them: ``InProcess`` runs them one after another, ``ProcessPool`` on local worker
processes; a distributed backend (e.g. Ray: ``ray.remote(run_chain)``) needs nothing more. Results never
depend on the backend or the number of workers.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import queue
from collections.abc import Callable, Sequence

import numpy as np

from collapselab.chain import ChainTask, Progress, run_chain
from collapselab.experiments.schema import Experiment

Results = dict[tuple[str, int], np.ndarray]  # (arm, batch) -> [generations, metrics, chains]


def make_tasks(exp: Experiment, run_dir: str | None) -> list[ChainTask]:
    """One task per (arm, chain batch), in a stable order."""
    return [ChainTask(exp, arm.name, b, run_dir) for arm in exp.arms for b in range(exp.n_batches)]


class InProcess:
    """Run the tasks sequentially in this process."""

    def run(self, tasks: Sequence[ChainTask], progress: Progress | None = None) -> Results:
        return {(t.arm, t.batch): run_chain(t, progress) for t in tasks}


def _worker(task: ChainTask, events) -> np.ndarray:
    def report(arm: str, batch: int, g: int) -> None:
        events.put((arm, batch, g))

    return run_chain(task, report)


class ProcessPool:
    """Run the tasks on ``workers`` local processes (spawned, so no state leaks between them)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def run(self, tasks: Sequence[ChainTask], progress: Progress | None = None) -> Results:
        ctx = mp.get_context("spawn")
        with ctx.Manager() as manager, cf.ProcessPoolExecutor(self.workers, mp_context=ctx) as pool:
            events = manager.Queue()
            futures = {pool.submit(_worker, t, events): t for t in tasks}
            results: Results = {}
            pending = set(futures)
            while pending:
                done, pending = cf.wait(pending, timeout=0.2, return_when=cf.FIRST_COMPLETED)
                _drain(events, progress)
                for f in done:
                    t = futures[f]
                    results[(t.arm, t.batch)] = f.result()  # re-raises a chain's error here
            _drain(events, progress)
            return results


def _drain(events, progress: Callable | None) -> None:
    while True:
        try:
            item = events.get_nowait()
        except queue.Empty:
            return
        if progress:
            progress(*item)


def backend_for(workers: int) -> InProcess | ProcessPool:
    """In-process for one worker, a process pool otherwise."""
    return InProcess() if workers <= 1 else ProcessPool(workers)
