"""``--backend ray`` on a local Ray instance (each CLI call starts one; few tests, to keep the suite's budget): the
same bytes as the local backend, plugins imported in Ray workers, a killed run resumed on Ray, one-line errors."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import yaml

from .conftest import run_files

ray = pytest.importorskip("ray")

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


def _cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collapselab", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def test_ray_backend_gives_the_local_bytes_with_plugins_and_after_a_kill(tmp_path):
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    doc = {"name": "r", "plugins": ["./my_plugin.py"], "family": {"name": "gaussian"},
           "data": {"source": "gaussian", "dim": 2}, "n": 60, "generations": 3, "seeds": 4, "batch_size": 2,
           "metrics": ["w1", "first_mean"], "arms": [{"name": "ce"}, {"name": "sq", "loss": {"name": "squared"}}]}
    exp = tmp_path / "exp.yaml"
    exp.write_text(yaml.safe_dump(doc))
    assert _cli("run", exp, "-o", tmp_path / "local", "-q", cwd=tmp_path).returncode == 0
    done = _cli("run", exp, "-o", tmp_path / "ray", "-q", "--backend", "ray", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert run_files(tmp_path / "local") == run_files(tmp_path / "ray")  # checkpoints, tables, summary, report

    from collapselab.chain import ChainTask, run_chain
    from collapselab.experiments import load_experiment
    from collapselab.runs import create_run

    e = load_experiment(str(exp))
    with create_run(e, tmp_path / "part") as store:
        for arm in e.arms:
            run_chain(ChainTask(e, arm.name, 0, str(store.root)), stop_after=1)  # batch 1 not started at all
    done = _cli("resume", tmp_path / "part", "-q", "--backend", "ray", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert run_files(tmp_path / "part") == run_files(tmp_path / "local")


@pytest.mark.parametrize(("argv", "message"), [
    (["--backend", "rya"], "--backend: 'rya'; allowed: local, ray"),
    (["--backend", "ray", "-w", "2"], "--workers: applies to --backend local"),
    (["--address", "auto"], "--address: only with --backend ray"),
])
def test_backend_settings_that_cannot_apply_are_one_line(tmp_path, argv, message):
    done = _cli("run", "quickstart", "-o", tmp_path / "out", *argv, cwd=tmp_path)
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
    assert _cli("run", exp, "-o", tmp_path / "local", "-q", cwd=tmp_path).returncode == 0
    armed.write_text("")
    done = _cli("run", exp, "-o", tmp_path / "ray", "-q", "--backend", "ray", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert not armed.exists()  # the worker did die
    assert run_files(tmp_path / "ray") == run_files(tmp_path / "local")
