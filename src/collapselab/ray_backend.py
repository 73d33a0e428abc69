"""``--backend ray``: the chain tasks on a Ray instance, local or a cluster.

Each (arm, chain batch) task is ``ray.remote(run_chain)``: the same picklable :class:`~collapselab.chain.ChainTask`
the local backends run, so results never depend on the backend. Without an address a local Ray instance sized to
the machine is started (and stopped after the run); ``--address auto`` or ``ray://host:port`` joins a running
cluster, whose nodes must see the run directory (a shared filesystem). A task imports the experiment's plugins
before it runs (installed packages as they are, ``plugins:`` files by their absolute path), reports each finished
generation to the driver through a Ray queue, asks for what its family needs (below), and is retried when its
worker dies: it continues from its own last verified checkpoint, so the run ends with the same bytes. Ctrl-C or
SIGTERM cancels every task before the driver returns.

Before anything is written, :func:`preflight` asks the cluster for what each arm's chain task needs (its family's
:meth:`~collapselab.families.base.FamilyConfig.resources`, or the experiment's ``resources:``) and refuses a
request no node can ever grant (it would wait forever), and checks with a probe file that every node able to run a
task reads and writes the run directory's folder (a node that cannot: one line, nothing runs). A torch family's
task asks for ``family.threads`` CPUs (default 1), the threads it uses on every backend; a GPU task sees only the
GPU Ray assigned it (``CUDA_VISIBLE_DEVICES``), so ``cuda`` is that GPU, never another task's on a node with
several.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import secrets
import socket
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from collapselab.chain import ChainTask, Progress, drain, run_chain  # ray.util.queue.Empty is a queue.Empty
from collapselab.errors import ConfigError, Interrupted, first_line
from collapselab.experiments.schema import Experiment
from collapselab.families.base import Resources

RAY_HINT = "--backend ray needs Ray: pip install 'collapselab[ray]'"
#: how often a task whose worker died is run again (from its last checkpoint)
RETRIES = 3
#: seconds to reach a cluster's address (a TCP connection) before Ray is asked to join it
CONNECT_TIMEOUT = 10.0
#: seconds Ray has to join a cluster that accepted the connection (then the process ends with one line, exit 2)
JOIN_TIMEOUT = 20.0
#: seconds every node has to answer the storage probe
PROBE_TIMEOUT = 60.0
#: a joined cluster whose head refuses connections this many seconds in a row is lost (Ray itself waits 60 s)
LOST_AFTER = 6.0


def _remote_chain(blob: bytes, plugins: tuple[str, ...], events: Any) -> np.ndarray:
    """What a Ray worker runs: the plugins first (the task, pickled, may hold their classes: it is unpickled only
    after), then the chain, reporting each generation."""
    if plugins:
        from collapselab.plugins import load_plugins

        load_plugins(plugins)
    task = pickle.loads(blob)  # our own bytes, made by the driver of this run
    return run_chain(task, None if events is None else lambda arm, batch, g: events.put((arm, batch, g)))


def _reachable(address: str) -> None:
    """A one-line :class:`ConfigError` unless a TCP connection to ``address``'s host and port opens within
    :data:`CONNECT_TIMEOUT` (Ray itself waits minutes on an address nobody answers)."""
    target = address.removeprefix("ray://")
    if address == "auto":
        from ray._private.services import canonicalize_bootstrap_address  # what ray.init(address="auto") joins

        try:
            target = canonicalize_bootstrap_address("auto") or ""
        except Exception:  # no running cluster: ray.init says so itself, at once
            return
        if not target:
            return
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--address: {address!r}; allowed: auto, host:port or ray://host:port")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT).close()
    except OSError as e:
        why = (f"no answer within {CONNECT_TIMEOUT:g} s" if isinstance(e, TimeoutError)
               else (e.strerror or type(e).__name__).lower())
        raise ConfigError(f"--address: cannot reach the Ray cluster at {address!r} ({target}: {why}); is "
                          f"`ray start --head` running there?") from None


@contextlib.contextmanager
def _joining(address: str | None) -> Iterator[None]:
    """While joining a cluster: file descriptor 2 goes to a temporary file (Ray's C++ client logs its retries there,
    ``gcs_client.cc ... Failed to get cluster ID``, which would turn a one-line error into many; Python's own
    ``sys.stderr`` is untouched), and a watchdog ends the process with a one-line error after
    :data:`JOIN_TIMEOUT` seconds: an address that accepts connections but is no Ray head (a web server, a
    client-server port that never answers) keeps ``ray.init`` retrying for minutes, and nothing has been written
    yet that an exit could leave half-done."""
    if address is None:
        yield
        return
    import sys
    import tempfile
    import threading

    sys.stderr.flush()
    saved = os.dup(2)

    def give_up() -> None:
        os.write(saved, f"collapselab: error: --address: the Ray cluster at {address!r} did not answer within "
                        f"{JOIN_TIMEOUT:g} s; is it a Ray head node's address?\n".encode())
        os._exit(2)

    watchdog = threading.Timer(JOIN_TIMEOUT, give_up)
    watchdog.daemon = True
    with tempfile.TemporaryFile() as aside:
        os.dup2(aside.fileno(), 2)
        watchdog.start()
        try:
            yield
        finally:
            watchdog.cancel()
            os.dup2(saved, 2)
            os.close(saved)


def connect(address: str | None) -> None:
    """Start (no address) or join (``auto``, ``host:port``, ``ray://host:port``) Ray now, before anything is
    written; a missing Ray or an address that does not answer within :data:`CONNECT_TIMEOUT` is a one-line
    :class:`ConfigError`. Ray stops when the process exits."""
    try:
        import ray
    except ImportError:
        raise ConfigError(RAY_HINT) from None
    if ray.is_initialized():
        return
    if address is not None:
        _reachable(address)
        # Ray's C++ client logs to this process's stderr (e.g. a line per task when a cluster dies): errors only,
        # so a failure reads as collapselab's one line (a user's own setting wins)
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    try:
        with _joining(address):
            # "local": a new instance even when `ray start` runs on this machine (ray.init() alone would join it)
            ray.init(address=address or "local", ignore_reinit_error=True, include_dashboard=False,
                     log_to_driver=False, logging_level="ERROR")
    except Exception as e:  # an unreachable or refused address: one line
        first = first_line(e)
        raise ConfigError(f"--address: cannot join the Ray cluster at {address!r}: {first}") from None


class _ClusterWatch:
    """While a run's tasks are on a joined cluster: a thread connects to the head's GCS port every second, and when
    it has refused connections for :data:`LOST_AFTER` seconds in a row, ends the process with one line saying how to
    go on (exit 1). It cannot raise in the driver's thread instead: that thread may be inside Ray's C++ client,
    which waits a minute for the head and then ends the process with its own log lines. Nothing of the run is
    half-written by this: the driver writes only after every task is done, and a task's checkpoints are atomic
    (``resume`` continues from the newest that verifies)."""

    def __init__(self, address: str, run_dir: str | None) -> None:
        import threading

        import ray

        try:
            head = ray.get_runtime_context().gcs_address or ""
        except Exception:  # a ray:// client has no GCS address of its own: watch the address it joined
            head = ""
        self.head = head or address.removeprefix("ray://")
        self.address, self.run_dir = address, run_dir
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="collapselab-cluster-watch", daemon=True)

    def __enter__(self) -> _ClusterWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()

    def _answers(self) -> bool:
        host, _, port = self.head.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=1.0).close()
            return True
        except (OSError, ValueError):
            return False

    def _watch(self) -> None:
        import time

        down_since: float | None = None
        while not self._stop.wait(1.0):
            if self._answers():
                down_since = None
                continue
            now = time.monotonic()
            down_since = now if down_since is None else down_since
            if now - down_since >= LOST_AFTER and not self._stop.is_set():
                hint = (f"; continue with `collapselab resume {self.run_dir} --backend ray --address {self.address}` "
                        f"once it is back" if self.run_dir else "")
                os.write(2, f"collapselab: error: the Ray cluster at {self.address!r} stopped answering mid-run "
                            f"(its head {self.head} refused connections for {LOST_AFTER:g} s); the generations its "
                            f"chains finished are kept{hint}\n".encode())
                os._exit(1)


def _nodes() -> list[dict[str, Any]]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def _fits(node: dict[str, Any], need: Resources) -> bool:
    have = node.get("Resources", {})
    return have.get("CPU", 0.0) >= (need.num_cpus or 0.0) and have.get("GPU", 0.0) >= (need.num_gpus or 0.0)


def _count(x: float, unit: str) -> str:
    return f"{x:g} {unit}{'s' * (x != 1)}"


def task_resources(exp: Experiment, nodes: list[dict[str, Any]] | None = None) -> dict[str, Resources]:
    """Per arm, what its chain tasks ask the cluster for: the family's own request on this cluster (GPUs or not),
    with the experiment's ``resources:`` over it. A request no node can grant, or a ``cuda`` device without a
    GPU, is a one-line :class:`ConfigError` (Ray would leave such a task pending forever)."""
    nodes = _nodes() if nodes is None else nodes
    gpus = any(n.get("Resources", {}).get("GPU", 0.0) > 0 for n in nodes)
    out: dict[str, Resources] = {}
    for arm in exp.arms:
        need = arm.family.resources(gpus)
        field = "family.device" if need.num_gpus else "family.threads"
        if exp.resources is not None:
            need, field = exp.resources.over(need), "resources"
        if getattr(arm.family, "device", None) == "cuda" and not need.num_gpus:
            raise ConfigError(f"{'resources.num_gpus' if field == 'resources' else field}: arm "
                              f"{arm.name!r} trains on 'cuda' but its chain tasks ask for no GPU"
                              + ("" if gpus else " (the Ray cluster has none)") + "; allowed: a GPU request, or "
                              "family.device: cpu or auto")
        if not any(_fits(n, need) for n in nodes):
            most_cpu = max((n.get("Resources", {}).get("CPU", 0.0) for n in nodes), default=0.0)
            most_gpu = max((n.get("Resources", {}).get("GPU", 0.0) for n in nodes), default=0.0)
            raise ConfigError(
                f"{field}: a chain task of arm {arm.name!r} needs {_count(need.num_cpus or 0, 'CPU')} and "
                f"{_count(need.num_gpus or 0, 'GPU')} but no node of the Ray cluster has them ({len(nodes)} "
                f"node{'s' * (len(nodes) != 1)}, the largest {_count(most_cpu, 'CPU')} and "
                f"{_count(most_gpu, 'GPU')}); set resources.num_cpus / resources.num_gpus, family.threads or "
                f"family.device")
        out[arm.name] = need
    return out


def _write_probe(path: Path, token: str) -> None:
    path.write_text(token)


def _answer_probe(path: str, token: str) -> str | None:
    """On a node: ``None`` if it reads the driver's probe and can write beside it (its answer), else why not."""
    try:
        seen = Path(path).read_text()
    except OSError as e:
        return f"cannot read it: {e.strerror or type(e).__name__}"
    if seen != token:
        return "it reads another file there (a folder of the same name that is not shared)"
    try:
        Path(f"{path}.{socket.gethostname()}.{os.getpid()}").write_text(token)
    except OSError as e:
        return f"cannot write there: {e.strerror or type(e).__name__}"
    return None


def probe_storage(folder: Path, nodes: list[dict[str, Any]]) -> None:
    """Check from each of ``nodes`` (Ray node records) that it reads and writes ``folder`` (where the run directory
    goes): the driver writes a probe file, a zero-CPU task pinned to each node reads it and writes its answer
    beside it, and the driver reads the answers. A node that cannot is a one-line :class:`ConfigError`; the probe
    files are removed either way."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(16)
    probe = folder / f".collapselab-probe-{token[:12]}"
    try:
        _write_probe(probe, token)
        answer = ray.remote(num_cpus=0, max_retries=0)(_answer_probe)
        refs = {answer.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
                .remote(str(probe), token): n for n in nodes}
        ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=PROBE_TIMEOUT)
        for ref in late:
            ray.cancel(ref, force=True)
        problems = [(refs[r], f"no answer within {PROBE_TIMEOUT:g} s") for r in late]
        for r in ready:
            try:
                why = ray.get(r)
            except Exception as e:  # the node could not run the probe at all
                why = f"the probe failed ({type(e).__name__})"
            problems += [(refs[r], why)] if why else []
        if problems:
            node, why = problems[0]
            more = f" (and {len(problems) - 1} more node(s))" if len(problems) > 1 else ""
            raise ConfigError(f"--out: Ray node {node.get('NodeManagerHostname', node['NodeID'])} "
                              f"({node.get('NodeManagerAddress', '?')}) does not see {folder}: {why}{more}; the run "
                              f"directory must be on a filesystem every node shares (e.g. NFS)")
    finally:
        for p in folder.glob(f"{probe.name}*"):
            with contextlib.suppress(OSError):
                p.unlink()


_checked: dict[tuple[str, str], dict[str, Resources]] = {}


def preflight(exp: Experiment, run_dir: Path, probe: bool = True) -> dict[str, Resources]:
    """Before anything is written: each arm's task resources (:func:`task_resources`) and, with ``probe`` (a
    cluster joined by address; a local instance shares this machine's files), the storage probe
    (:func:`probe_storage`) of the nearest existing folder of ``run_dir`` from every node able to run a task.
    Done once per run directory and experiment in a process."""
    root = Path(run_dir).absolute()
    key = (str(root), exp.model_dump_json())
    if key not in _checked:
        nodes = _nodes()
        need = task_resources(exp, nodes)
        if probe:
            folder = next(p for p in (root, *root.parents) if p.is_dir())
            probe_storage(folder, [n for n in nodes if any(_fits(n, r) for r in need.values())])
        _checked[key] = need
    return _checked[key]


@contextlib.contextmanager
def _signals_deferred() -> Iterator[list[int]]:
    """SIGINT / SIGTERM only recorded (in the yielded list) while Ray's client code runs: an exception raised by a
    signal handler inside its Cython calls comes out as a ``SystemError``. The wait loop raises
    :class:`Interrupted` itself between calls; a second signal during the clean-up is only recorded too."""
    import signal
    import threading

    caught: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def record(signum: int, frame: Any) -> None:
        caught.append(signum)

    previous = {s: signal.signal(s, record) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield caught
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class RayBackend:
    """Run the tasks on Ray (``address``: ``None`` for a local instance, ``auto`` or ``ray://host:port``)."""

    def __init__(self, address: str | None = None) -> None:
        self.address = address
        self._started = False  # this backend started (or joined) Ray, so it stops it after the run

    def _connect(self) -> None:
        try:
            import ray
        except ImportError:
            raise ConfigError(RAY_HINT) from None
        if not ray.is_initialized():  # the API without the CLI's connect(): a Ray of this run's own
            connect(self.address)
            self._started = True

    def check(self, exp: Experiment, run_dir: Path | None = None) -> None:
        """Ray started or joined, each arm's task resources granted by some node and, on a cluster joined by
        address, the storage probe of ``run_dir`` (:func:`preflight`)."""
        self._connect()
        if run_dir is not None:
            preflight(exp, run_dir, probe=self.address is not None)
        else:
            task_resources(exp)

    def run(self, tasks: Sequence[ChainTask], progress: Progress | None = None,
            done: Callable[[ChainTask, np.ndarray], None] | None = None) -> dict[tuple[str, int], np.ndarray]:
        self._connect()
        import ray

        started = self._started
        results: dict[tuple[str, int], np.ndarray] = {}
        refs: dict[Any, ChainTask] = {}
        try:
            with _signals_deferred() as caught:
                try:
                    if tasks:
                        self._run(tasks, progress, done, results, refs, caught)
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
                self._started = False

    def _run(self, tasks: Sequence[ChainTask], progress: Progress | None,
             done: Callable[[ChainTask, np.ndarray], None] | None, results: dict, refs: dict,
             caught: list[int]) -> None:
        import ray
        from ray.util.queue import Queue

        def check() -> None:
            if caught:
                raise Interrupted(caught[0])

        exp = tasks[0].experiment
        need = (preflight(exp, Path(tasks[0].run_dir), probe=self.address is not None) if tasks[0].run_dir is not None
                else task_resources(exp))
        check()
        events = Queue() if progress is not None else None  # an actor: only when someone shows the progress
        remote = ray.remote(max_retries=RETRIES, retry_exceptions=False)(_remote_chain)
        plugins = tuple(exp.plugins)
        watch = (_ClusterWatch(self.address, tasks[0].run_dir) if self.address is not None
                 else contextlib.nullcontext())
        with watch:
            refs.update({remote.options(num_cpus=need[t.arm].num_cpus, num_gpus=need[t.arm].num_gpus)
                         .remote(pickle.dumps(t), plugins, events): t
                         for t in tasks})
            self._wait(refs, progress, done, results, events, check)

    @staticmethod
    def _wait(refs: dict, progress: Progress | None, done: Callable[[ChainTask, np.ndarray], None] | None,
              results: dict, events: Any, check: Callable[[], None]) -> None:
        import ray

        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=0.2)
            check()
            if events is not None:
                drain(events, progress)
            for ref in ready:
                t = refs[ref]
                try:
                    results[(t.arm, t.batch)] = ray.get(ref)
                except ray.exceptions.RayTaskError as e:  # a chain's own error, as the local backends raise it
                    raise (e.cause if isinstance(e.cause, Exception) else e) from None
                if done:
                    done(t, results[(t.arm, t.batch)])
        if events is not None:
            drain(events, progress)
