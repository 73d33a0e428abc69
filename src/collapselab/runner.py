"""Runner: expands an experiment into (arm, batch) chain tasks and runs them on a backend.

Tasks are independent and picklable (:class:`collapselab.chain.ChainTask`), so a backend only has to map
``run_chain`` over them: ``InProcess`` runs them one after another, ``ProcessPool`` on local worker
processes; a distributed backend (e.g. Ray: ``ray.remote(run_chain)``) needs nothing more. Results never
depend on the backend or the number of workers.

Worker processes never outlive the parent: on Linux each asks the kernel to kill it when the parent dies
(``PR_SET_PDEATHSIG``, so SIGKILL of the parent included); elsewhere a watchdog thread exits when the
parent's pid changes. They ignore SIGINT (Ctrl-C reaches the whole process group; the parent decides), and
when the parent is interrupted or a task fails it kills them and waits for them, so nothing writes into
the run directory after the parent returns.
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import ctypes
import multiprocessing as mp
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from collapselab.chain import ChainTask, Progress, drain, run_chain
from collapselab.experiments.schema import Experiment

Results = dict[tuple[str, int], np.ndarray]  # (arm, batch) -> [generations + 1, metrics, chains]


class Backend(Protocol):
    """Where the chain tasks run: :class:`InProcess`, :class:`ProcessPool` or
    :class:`~collapselab.ray_backend.RayBackend`."""

    def check(self, exp: Experiment, run_dir: Path | None = None) -> None:
        """A one-line :class:`~collapselab.errors.ConfigError` when ``exp`` cannot run here (before anything is
        written)."""

    def run(self, tasks: Sequence[ChainTask], progress: Progress | None = None,
            done: Callable[[ChainTask, np.ndarray], None] | None = None) -> Results: ...


def make_tasks(exp: Experiment, run_dir: str | None) -> list[ChainTask]:
    """One task per (arm, chain batch), in a stable order."""
    return [ChainTask(exp, arm.name, b, run_dir) for arm in exp.arms for b in range(exp.n_batches)]


class Local:
    """What the local backends share: the check that a GPU an arm asks for is there."""

    def check(self, exp: Experiment, run_dir: Path | None = None) -> None:
        check_local(exp)


class InProcess(Local):
    """Run the tasks sequentially in this process."""

    def run(self, tasks: Sequence[ChainTask], progress: Progress | None = None,
            done: Callable[[ChainTask, np.ndarray], None] | None = None) -> Results:
        out: Results = {}
        for t in tasks:
            out[(t.arm, t.batch)] = run_chain(t, progress)
            if done:
                done(t, out[(t.arm, t.batch)])
        return out


_events = None  # the worker's progress queue (set by the initializer)


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(1, signal.SIGKILL, 0, 0, 0) == 0:  # PR_SET_PDEATHSIG
                if os.getppid() != parent:  # the parent died before prctl took effect
                    os._exit(1)
                return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def init_child(parent: int) -> None:
    """Set up a helper process: it ignores Ctrl-C (the parent decides) and dies with its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _die_with_parent(parent)


def _init_worker(events, parent: int, plugins: tuple[str, ...] = ()) -> None:
    global _events
    _events = events
    init_child(parent)
    if plugins:  # before any task arrives: its settings may be plugin classes, its metrics plugin metrics
        from collapselab.plugins import load_plugins

        load_plugins(plugins)


def _report(arm: str, batch: int, g: int) -> None:
    _events.put((arm, batch, g))


def _worker(task: ChainTask) -> np.ndarray:
    return run_chain(task, _report)


class ProcessPool(Local):
    """Run the tasks on ``workers`` local processes (spawned, so no state leaks between them)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers

    def run(self, tasks: Sequence[ChainTask], progress: Progress | None = None,
            done: Callable[[ChainTask, np.ndarray], None] | None = None) -> Results:
        ctx = mp.get_context("spawn")
        events = ctx.Queue()
        pool = cf.ProcessPoolExecutor(min(self.workers, max(1, len(tasks))), mp_context=ctx, initializer=_init_worker,
                                      initargs=(events, os.getpid(),
                                                tuple(tasks[0].experiment.plugins) if tasks else ()))
        results: Results = {}
        try:
            futures = {pool.submit(_worker, t): t for t in tasks}
            pending = set(futures)
            while pending:
                finished, pending = cf.wait(pending, timeout=0.1, return_when=cf.FIRST_COMPLETED)
                drain(events, progress)
                for f in finished:
                    t = futures[f]
                    results[(t.arm, t.batch)] = f.result()  # re-raises a chain's error here
                    if done:
                        done(t, results[(t.arm, t.batch)])
            drain(events, progress)
            pool.shutdown(wait=True)
            return results
        except BaseException:
            kill_pool(pool)
            raise
        finally:
            events.close()
            events.join_thread()


def kill_pool(pool: cf.ProcessPoolExecutor) -> None:
    """Stop a pool now: kill its workers and wait until they are gone.

    ``shutdown(cancel_futures=True)`` only cancels tasks that have not started; Python 3.11 has no public
    way to stop running workers (3.14 adds ``kill_workers``), hence the private ``_processes``.
    """
    procs = list(getattr(pool, "_processes", {}).values())
    for p in procs:
        with contextlib.suppress(Exception):
            p.kill()
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(5)
    with contextlib.suppress(Exception):
        pool.shutdown(wait=False, cancel_futures=True)


BACKENDS = ("local", "ray")


def check_local(exp: Experiment) -> None:
    """A one-line :class:`ConfigError` when an arm's family needs a GPU (``family.device: cuda``) and this machine
    has none: the local backend's counterpart of the Ray backend's resource check, run before anything is
    written."""
    from collapselab.errors import ConfigError

    for arm in exp.arms:
        if arm.family.resources(False).num_gpus:  # torch is imported only for a family that asks for a GPU
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(f"family.device: arm {arm.name!r} asks for 'cuda' but this machine has no CUDA "
                                  f"device; allowed here: auto, cpu (or --backend ray on a cluster with GPUs)")


def backend_for(workers: int, backend: str = "local", address: str | None = None) -> Backend:
    """``local``: in-process for one worker, a process pool otherwise; ``ray``: a Ray instance (``address``:
    ``None`` starts a local one)."""
    if backend == "ray":
        from collapselab.ray_backend import RayBackend

        return RayBackend(address)
    return InProcess() if workers <= 1 else ProcessPool(workers)
