"""``--backend ray`` on a local Ray instance (each CLI call starts one; few tests, to keep the suite's budget): the
same bytes as the local backend, plugins imported in Ray workers, a killed run resumed on Ray, one-line errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml

from .helpers import LONG, cli_run, long_run, run_files

ray = pytest.importorskip("ray")
#: every test here starts, joins or probes Ray: one parallel worker runs them all, in turn
pytestmark = pytest.mark.xdist_group("ray")

PLUGIN = textwrap.dedent('''
    from typing import Literal

    from collapselab.losses import ULoss, ops
    from collapselab.metrics.base import metric


    class Squared(ULoss):
        name: Literal["squared"] = "squared"

        def value(self, log_u):
            return (1 - ops(log_u).exp(log_u)) ** 2 / 2 - log_u


    @metric("first_mean", ("points",), "mean of the first coordinate of 100 model samples")
    def first_mean(model, ctx):
        return model.sample(100, ctx.rng)["x"][..., 0].mean(axis=1)
''')




def test_ray_backend_gives_the_local_bytes_with_plugins_and_after_a_kill(tmp_path):
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    doc = {"name": "r", "plugins": ["./my_plugin.py"], "family": {"name": "gaussian"},
           "data": {"source": "gaussian", "dim": 2}, "n": 60, "generations": 3, "seeds": 4, "batch_size": 2,
           "metrics": ["w1", "first_mean"], "arms": [{"name": "ce"}, {"name": "sq", "loss": {"name": "squared"}}]}
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(doc))
    assert cli_run("run", exp, "-o", tmp_path / "local", "-q", cwd=tmp_path).returncode == 0
    done = cli_run("run", exp, "-o", tmp_path / "ray", "-q", "--backend", "ray", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert run_files(tmp_path / "local") == run_files(tmp_path / "ray")  # checkpoints, tables, summary, report

    from collapselab.chain import ChainTask, run_chain
    from collapselab.experiments import load_experiment
    from collapselab.runs import create_run

    e = load_experiment(str(exp))
    with create_run(e, tmp_path / "part") as store:
        for arm in e.arms:
            run_chain(ChainTask(e, arm.name, 0, str(store.root)), stop_after=1)  # batch 1 not started at all
    done = cli_run("resume", tmp_path / "part", "-q", "--backend", "ray", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert run_files(tmp_path / "part") == run_files(tmp_path / "local")


@pytest.mark.parametrize(("argv", "message"), [
    (["--backend", "rya"], "--backend: 'rya'; allowed: local, ray"),
    (["--backend", "ray", "-w", "2"], "--workers: applies to --backend local"),
    (["--address", "auto"], "--address: only with --backend ray"),
])
def test_backend_settings_that_cannot_apply_are_one_line(tmp_path, argv, message):
    done = cli_run("run", "quickstart", "-o", tmp_path / "out", *argv, cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and message in done.stderr, done.stderr
    assert not (tmp_path / "out").exists()


def test_a_missing_ray_names_the_extra(monkeypatch):
    import builtins

    from collapselab.errors import ConfigError
    from collapselab.ray_backend import connect

    real = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(ConfigError, match=r"^--backend ray needs Ray: pip install 'collapselab\[ray\]'$"):
        connect(None)


def test_a_ray_worker_that_dies_mid_run_is_retried_to_the_same_bytes(tmp_path):
    """A plugin metric kills its own Ray worker (os._exit) at generation 2 of chain batch 0, once: Ray runs the task
    again, it continues from its last checkpoint, and the run's files equal the undisturbed local run's."""
    armed = tmp_path / "armed"
    (tmp_path / "crash.py").write_text(textwrap.dedent(f'''
        import os
        from pathlib import Path

        from collapselab.metrics.base import metric

        ARMED, CALLS = Path({str(armed)!r}), []


        @metric("mean_or_crash", ("points",), "the mean of 100 samples; kills its worker once when armed")
        def mean_or_crash(model, ctx):
            CALLS.append(1)
            if ctx.batch == 0 and len(CALLS) == 3 and ARMED.exists():
                ARMED.unlink(missing_ok=True)
                os._exit(1)
            return model.sample(100, ctx.rng)["x"][..., 0].mean(axis=1)
    '''))
    doc = {"name": "k", "plugins": ["./crash.py"], "family": {"name": "gaussian"},
           "data": {"source": "gaussian", "dim": 2}, "n": 60, "generations": 4, "seeds": 4, "batch_size": 2,
           "metrics": ["w1", "mean_or_crash"], "arms": [{"name": "ce"}]}
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(doc))
    assert cli_run("run", exp, "-o", tmp_path / "local", "-q", cwd=tmp_path).returncode == 0
    armed.write_text("")
    done = cli_run("run", exp, "-o", tmp_path / "ray", "-q", "--backend", "ray", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not armed.exists()  # the worker did die
    assert run_files(tmp_path / "ray") == run_files(tmp_path / "local")


# -- resources: pure functions of the experiment and the cluster's node records (no Ray started) -------------
def _node(cpus: float, gpus: float = 0.0) -> dict:
    return {"Alive": True, "NodeID": f"n{cpus}-{gpus}", "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}


def test_each_family_asks_for_what_its_chain_needs():
    from collapselab.experiments import load_experiment
    from collapselab.ray_backend import task_resources

    images = load_experiment("quickstart-images")  # conv VAEs, device auto
    gmm = load_experiment("quickstart")
    cpu_only, gpu_node = [_node(2)], [_node(16, 8)]
    assert {(r.num_cpus, r.num_gpus) for r in task_resources(gmm, gpu_node).values()} == {(1.0, 0.0)}
    assert {(r.num_cpus, r.num_gpus) for r in task_resources(images, gpu_node).values()} == {(1.0, 1.0)}
    assert {(r.num_cpus, r.num_gpus) for r in task_resources(images, cpu_only).values()} == {(1.0, 0.0)}
    threads = load_experiment("quickstart-images", ["family.threads=2"])
    assert {(r.num_cpus, r.num_gpus) for r in task_resources(threads, cpu_only).values()} == {(2.0, 0.0)}
    packed = load_experiment("quickstart-images", ["resources={num_gpus: 0.25}"])  # four chains on one GPU
    assert {(r.num_cpus, r.num_gpus) for r in task_resources(packed, gpu_node).values()} == {(1.0, 0.25)}
    on_cpu = load_experiment("quickstart-images", ["family.device=cpu"])
    assert {(r.num_cpus, r.num_gpus) for r in task_resources(on_cpu, gpu_node).values()} == {(1.0, 0.0)}


@pytest.mark.parametrize(("sets", "nodes", "message"), [
    (["resources={num_gpus: 1}"], [_node(2)], r"^resources: a chain task of arm 'ce' needs 1 CPU and 1 GPU but no "
                                              r"node of the Ray cluster has them \(1 node, the largest 2 CPUs and 0 "
                                              r"GPUs\)"),
    (["family.threads=8"], [_node(4), _node(2)], r"^family.threads: a chain task of arm 'ce' needs 8 CPUs"),
    (["family.device=cuda"], [_node(2)], r"^family.device: arm 'ce' trains on 'cuda' but its chain tasks ask for "
                                         r"no GPU|^family.device: a chain task of arm 'ce' needs 1 CPU and 1 GPU"),
    (["family.device=cuda", "resources={num_gpus: 0}"], [_node(2, 1)],
     r"^resources.num_gpus: arm 'ce' trains on 'cuda' but its chain tasks ask for no GPU"),
])
def test_a_request_no_node_can_grant_is_refused_in_one_line(sets, nodes, message):
    from collapselab.errors import ConfigError
    from collapselab.experiments import load_experiment
    from collapselab.ray_backend import task_resources

    with pytest.raises(ConfigError, match=message):
        task_resources(load_experiment("quickstart-images", sets), nodes)


def test_a_gpu_setting_on_a_machine_without_one_is_one_line(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    done = cli_run("run", "quickstart-images", "-o", tmp_path / "out", "--set", "family.device=cuda", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr == ("collapselab: error: family.device: arm 'ce' asks for 'cuda' but "
                                                    "this machine has no CUDA device; allowed here: auto, cpu (or "
                                                    "--backend ray on a cluster with GPUs)\n"), done.stderr
    assert not (tmp_path / "out").exists()


def test_an_address_nobody_answers_is_one_line_at_once(tmp_path):
    import time

    t0 = time.monotonic()
    done = cli_run("run", "quickstart", "-o", tmp_path / "out", "--backend", "ray", "--address", "127.0.0.1:1",
                cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "--address: cannot reach the Ray cluster at '127.0.0.1:1' (127.0.0.1:1: connection refused)" in done.stderr
    assert time.monotonic() - t0 < 30 and not (tmp_path / "out").exists()


# -- on a local Ray instance in this process --------------------------------------------------------------------
@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_the_storage_probe_passes_on_a_shared_folder_and_names_a_node_that_cannot_see_it(local_ray, tmp_path,
                                                                                        monkeypatch):
    import collapselab.ray_backend as rb
    from collapselab.errors import ConfigError

    nodes = rb._nodes()
    rb.probe_storage(tmp_path, nodes)
    assert list(tmp_path.iterdir()) == []  # the probe and the nodes' answers are removed
    elsewhere = tmp_path / "not-shared"
    elsewhere.mkdir()
    # the driver's file lands where the node does not look: what a node without the shared filesystem sees
    monkeypatch.setattr(rb, "_write_probe", lambda path, token: (elsewhere / path.name).write_text(token))
    with pytest.raises(ConfigError, match=r"^--out: Ray node \S+ \(\S+\) does not see \S+: cannot read it: No such "
                                          r"file or directory; the run directory must be on a filesystem every node "
                                          r"shares \(e.g. NFS\)$"):
        rb.probe_storage(tmp_path, nodes)
    assert list(tmp_path.iterdir()) == [elsewhere]


def test_an_interrupted_ray_driver_stops_its_tasks_and_resumes_on_ray_to_the_same_bytes(tmp_path, tmp_path_factory):
    """SIGINT to the driver mid-run: exit 130 with the resume hint, no file changes after it returned, and `resume
    --backend ray` ends in the local run's bytes."""
    import os
    import re
    import signal
    import time

    local = long_run(tmp_path_factory)  # the uninterrupted local run, shared with test_cli's kill tests
    out = tmp_path / "ray"
    proc = subprocess.Popen([sys.executable, "-m", "collapselab", "run", *LONG, "-o", str(out), "--backend", "ray"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    end = time.monotonic() + 180
    while not list(out.glob("chains/*/b0000/g00005.json")) and time.monotonic() < end and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert re.fullmatch(r"collapselab: error: interrupted after generation \d+ \(\d of 4 chain batches finished\); "
                        r"continue with `collapselab resume \S+`\n", err), err
    assert not (out / "metrics.parquet").exists()
    before = run_files(out)
    time.sleep(3)
    assert run_files(out) == before  # nothing wrote into the run after the driver returned
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # nor is any process of its session left
    done = cli_run("resume", out, "-q", "--backend", "ray", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert run_files(out) == run_files(local)


def test_an_address_that_answers_but_is_no_ray_head_is_one_line_within_30_s(tmp_path):
    """A web server at the address: Ray's join retries for minutes; a watchdog ends it with one line, exit 2."""
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        t0 = time.monotonic()
        done = cli_run("run", "quickstart", "-o", tmp_path / "out", "--backend", "ray", "--address",
                       f"127.0.0.1:{port}", cwd=tmp_path)
        assert time.monotonic() - t0 < 30
    finally:
        server.kill()
    assert done.returncode == 2 and done.stderr == (f"collapselab: error: --address: the Ray cluster at "
                                                    f"'127.0.0.1:{port}' did not answer within 20 s; is it a Ray head "
                                                    f"node's address?\n"), done.stderr
    assert not (tmp_path / "out").exists()


GATE = textwrap.dedent('''
    """A metric that holds a chain at its third generation until the file GATE exists: the run is mid-run, for sure,
    while the test stops the cluster (deterministic: no race with the chains)."""
    import os
    import time
    from pathlib import Path

    import numpy as np

    from collapselab.metrics.base import metric

    GATE = Path({gate!r})
    calls = {{"n": 0}}


    @metric("gate", ("points",), "0, after holding a chain at its third generation until the gate opens")
    def gate(model, ctx):
        calls["n"] += 1
        if calls["n"] == 3 and not GATE.exists():
            GATE.with_suffix(".reached").touch()
            while not GATE.exists():
                time.sleep(0.05)
        return np.zeros(model.n_chains)
''')


@pytest.mark.heavy
def test_a_cluster_that_dies_mid_run_is_one_line_exit_1_and_resume_gives_the_undisturbed_bytes(tmp_path):
    """A one-node `ray start` cluster stopped while the run's chains are held mid-run: within 15 s the driver ends
    with one collapselab line naming the resume command (exit 1; Ray alone hangs a minute, then logs), and `resume`
    on a new cluster ends with the bytes of the undisturbed run."""
    import os
    import re
    import time

    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    gate = tmp_path / "gate"
    (tmp_path / "gate_plugin.py").write_text(GATE.format(gate=str(gate)))
    doc = {"name": "g", "plugins": ["./gate_plugin.py"], "family": {"name": "gaussian"},
           "data": {"source": "gaussian", "dim": 1}, "n": 50, "generations": 6, "seeds": 2, "heldout": 100,
           "metrics": ["variance_ratio", "gate"], "arms": [{"name": "a"}]}
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(doc))
    gate.touch()  # the undisturbed run: the gate stands open
    assert cli_run("run", "exp.yaml", "-o", "local", "-q", cwd=tmp_path).returncode == 0
    gate.unlink()

    def start() -> None:
        done = subprocess.run([ray_bin, "start", "--head", "--num-cpus", "2", "--disable-usage-stats",
                               "--include-dashboard", "false"], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr

    start()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "collapselab", "run", "exp.yaml", "-o", "cluster", "-q",
                                 "--backend", "ray", "--address", "auto"], cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        end = time.monotonic() + 120
        while not gate.with_suffix(".reached").exists() and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        t0 = time.monotonic()
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, timeout=120)
        _, err = proc.communicate(timeout=120)
        took = time.monotonic() - t0
        assert proc.returncode == 1, err
        assert re.fullmatch(r"collapselab: error: the Ray cluster at 'auto' stopped answering mid-run \(its head \S+ "
                            r"refused connections for 6 s\); the generations its chains finished are kept; continue "
                            r"with `collapselab resume \S+/cluster --backend ray --address auto` once it is back\n",
                            err), err
        assert took < 15, took  # the bound (Ray alone: about 65 s)
        gate.touch()
        start()
        done = cli_run("resume", "cluster", "-q", "--backend", "ray", "--address", "auto", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
    finally:
        subprocess.run([ray_bin, "stop", "--force"], capture_output=True, timeout=120)
    assert run_files(tmp_path / "cluster") == run_files(tmp_path / "local")
