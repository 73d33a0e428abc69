"""``--backend ray``: the chain tasks on a Ray instance, local or a cluster.

Each (arm, chain batch) task is ``ray.remote(run_chain)``: the same picklable :class:`~collapselab.chain.ChainTask`
the local backends run, so results never depend on the backend. Without an address a local Ray instance sized to
the machine is started (and stopped after the run); ``--address auto`` or ``ray://host:port`` joins a running
cluster, whose nodes must see the run directory (a shared filesystem). A task imports the experiment's plugins
before it runs (installed packages as they are, ``plugins:`` files by their absolute path), reports each finished
generation to the driver through a Ray queue, uses one CPU and that many torch threads, and is retried when its
worker dies: it continues from its own last verified checkpoint, so the run ends with the same bytes. Ctrl-C or
SIGTERM cancels every task before the driver returns.
"""

from __future__ import annotations

import contextlib
import os
import pickle
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from collapselab.chain import ChainTask, Progress, run_chain
from collapselab.errors import ConfigError
from collapselab.runner import drain  # ray.util.queue.Empty is a queue.Empty

RAY_HINT = "--backend ray needs Ray: pip install 'collapselab[ray]'"
#: how often a task whose worker died is run again (from its last checkpoint)
RETRIES = 3


def _remote_chain(blob: bytes, plugins: tuple[str, ...], events: Any, threads: int) -> np.ndarray:
    """What a Ray worker runs: the plugins first (the task, pickled, may hold their classes: it is unpickled only
    after), then the chain, reporting each generation."""
    os.environ["COLLAPSELAB_THREADS"] = str(threads)
    if plugins:
        from collapselab.plugins import load_plugins

        load_plugins(plugins)
    task = pickle.loads(blob)  # our own bytes, made by the driver of this run
    return run_chain(task, lambda arm, batch, g: events.put((arm, batch, g)))


def connect(address: str | None) -> None:
    """Start (no address) or join (``auto``, ``ray://host:port``) Ray now, before anything is written; a missing
    Ray or an unreachable address is a one-line :class:`ConfigError`. Ray stops when the process exits."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_HINT) from None
    if ray.is_initialized():
        return
    try:
        ray.init(address=address, ignore_reinit_error=True, include_dashboard=False, log_to_driver=False,
                 logging_level="ERROR")
    except Exception as e:  # an unreachable or refused address: one line
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--address: cannot join the Ray cluster at {address!r}: {first}") from None


class RayBackend:
    """Run the tasks on Ray (``address``: ``None`` for a local instance, ``auto`` or ``ray://host:port``)."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address

    def run(self, tasks: Sequence[ChainTask], progress: Progress | None = None,
            done: Callable[[ChainTask, np.ndarray], None] | None = None) -> dict[tuple[str, int], np.ndarray]:
        started = False
        try:
            import ray
            from ray.util.queue import Queue
        except ImportError:
            raise ConfigError(RAY_HINT) from None
        if not ray.is_initialized():  # the API without the CLI's connect(): a Ray of this run's own
            connect(self.address)
            started = True
        results: dict[tuple[str, int], np.ndarray] = {}
        refs: dict[Any, ChainTask] = {}
        try:
            events = Queue()
            remote = ray.remote(num_cpus=1, max_retries=RETRIES, retry_exceptions=False)(_remote_chain)
            plugins = tuple(tasks[0].experiment.plugins) if tasks else ()
            refs = {remote.remote(pickle.dumps(t), plugins, events, 1): t for t in tasks}
            pending = list(refs)
            while pending:
                ready, pending = ray.wait(pending, num_returns=1, timeout=0.2)
                drain(events, progress)
                for ref in ready:
                    t = refs[ref]
                    try:
                        results[(t.arm, t.batch)] = ray.get(ref)
                    except ray.exceptions.RayTaskError as e:  # a chain's own error, as the local backends raise it
                        raise (e.cause if isinstance(e.cause, Exception) else e) from None
                    if done:
                        done(t, results[(t.arm, t.batch)])
            drain(events, progress)
            return results
        except BaseException:
            for ref in refs:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=True)
            for ref in refs:  # wait until every task has stopped: nothing writes after the driver returns
                with contextlib.suppress(Exception):
                    ray.get(ref)
            raise
        finally:
            if started:
                ray.shutdown()
