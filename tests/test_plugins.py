"""Plugins: the three ways in (entry points, ``plugins:`` / ``--plugin``, ``module:Object``), their runs on worker
processes and across a kill and resume, the run record's pins, the loss properties, and the one-line errors."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from collapselab.experiments.resolver import resolve
from collapselab.losses.ulosses import LOSSES, get_uloss

from .helpers import cli_run, run_files

PLUGIN = textwrap.dedent('''
    """A user's plugin file: a loss (only its value), TCE written as a plugin, and a metric."""
    from typing import Literal

    import numpy as np
    from pydantic import Field

    from collapselab.losses import ULoss, ops
    from collapselab.metrics.base import metric


    class Squared(ULoss):
        name: Literal["squared"] = "squared"
        a: float = Field(1.0, gt=0)

        def value(self, log_u):
            return self.a * (1 - ops(log_u).exp(log_u)) ** 2 / 2 - log_u


    class PluginTCE(ULoss):
        name: Literal["plugin_tce"] = "plugin_tce"
        gamma: float = Field(0.9, gt=0, le=1)

        def value(self, log_u):
            return ops(log_u).where(-log_u >= -np.log(self.gamma), -log_u, log_u * 0)


    @metric("first_coordinate_mean", ("points",), "mean of the first coordinate of 200 model samples")
    def first_coordinate_mean(model, ctx):
        return model.sample(200, ctx.rng)["x"][..., 0].mean(axis=1)
''')

BASE = {"name": "plug", "family": {"name": "gaussian"}, "data": {"source": "gaussian", "dim": 2}, "n": 60,
        "generations": 3, "seeds": 4, "batch_size": 2, "metrics": ["w1", "first_coordinate_mean"]}


@pytest.fixture(autouse=True)
def _fresh_registries():
    from collapselab.plugins import reset_plugins

    reset_plugins()
    yield
    reset_plugins()


@pytest.fixture
def plugin_dir(tmp_path):
    (tmp_path / "my_plugin.py").write_text(PLUGIN)
    return tmp_path


def _write(folder: Path, file: str = "exp.yaml", **doc) -> Path:
    path = folder / file
    path.write_text(yaml.safe_dump({**BASE, **doc}, sort_keys=False))
    return path




RESULTS = ("metrics.parquet", "summary.json")


def _kill_and_resume(exp: Path, cwd: Path, part: Path) -> dict[str, bytes]:
    """Every chain of ``exp`` stopped after generation 1 (as a kill would leave it), then `collapselab resume`
    with two workers in a fresh process; the run's files."""
    from collapselab.chain import ChainTask, run_chain
    from collapselab.experiments import load_experiment
    from collapselab.runs import create_run

    e = load_experiment(str(exp))
    with create_run(e, part) as store:
        for arm in e.arms:
            for b in range(e.n_batches):
                run_chain(ChainTask(e, arm.name, b, str(store.root)), stop_after=1)
    done = cli_run("resume", part, "-q", "-w", "2", cwd=cwd)
    assert done.returncode == 0, done.stderr
    return run_files(part)


@pytest.mark.heavy
def test_plugins_file_runs_on_workers_and_resumes_byte_identical(plugin_dir):
    """``plugins: [./my_plugin.py]`` (relative to the experiment file): a plugin loss and metric run with
    ``--workers 2`` as with one worker; a run killed after generation 1 and resumed with two workers writes the
    same files; the run record pins the file by sha256; a changed plugin stops ``resume`` (exit 2) unless
    ``--allow-plugin-change``, which run.json then records."""
    exp = _write(plugin_dir, plugins=["./my_plugin.py"],
                 arms=[{"name": "ce"}, {"name": "squared", "loss": {"name": "squared", "a": 2.0}}])
    one, two = plugin_dir / "one", plugin_dir / "two"
    assert cli_run("run", exp, "-o", one, "-q", cwd=plugin_dir).returncode == 0
    done = cli_run("run", exp, "-o", two, "-q", "-w", "2", cwd=plugin_dir)
    assert done.returncode == 0, done.stderr
    a, b = run_files(one), run_files(two)
    assert all(a[f] == b[f] for f in RESULTS)

    c = _kill_and_resume(exp, plugin_dir, plugin_dir / "part")
    assert all(a[f] == c[f] for f in RESULTS)

    record = json.loads((one / "run.json").read_text())
    (pin,) = record["plugins"]
    assert pin["spec"] == str(plugin_dir / "my_plugin.py") and len(pin["sha256"]) == 64
    (plugin_dir / "my_plugin.py").write_text(PLUGIN + "\n# edited\n")
    refused = cli_run("resume", one, "-q", cwd=plugin_dir)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "my_plugin.py' changed" in refused.stderr and "--allow-plugin-change" in refused.stderr
    assert cli_run("resume", one, "-q", "--allow-plugin-change", cwd=plugin_dir).returncode == 0
    assert "continued with changed plugins" in json.loads((one / "run.json").read_text())["plugin_changes"][0]


@pytest.mark.heavy
def test_entry_point_plugins_run_on_workers_like_one_worker(tmp_path):
    """The example package's loss and curator, found through their entry points, with --workers 2 equal to one
    worker, and killed after generation 1 then resumed; the run record pins the distribution's version."""
    exp = _write(tmp_path, arms=[{"name": "soft", "loss": {"name": "soft_tce", "gamma": 0.9, "tau": 0.05}},
                                 {"name": "band", "curator": {"name": "likelihood_band", "low": 0.1, "high": 0.2}}],
                 metrics=["w1", "variance_ratio"])
    assert cli_run("run", exp, "-o", tmp_path / "one", "-q", cwd=tmp_path).returncode == 0
    done = cli_run("run", exp, "-o", tmp_path / "two", "-q", "-w", "2", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    a, b = run_files(tmp_path / "one"), run_files(tmp_path / "two")
    assert all(a[f] == b[f] for f in RESULTS)
    c = _kill_and_resume(exp, tmp_path, tmp_path / "part")
    assert all(a[f] == c[f] for f in RESULTS)
    pins = {p["spec"]: p["version"] for p in json.loads(a["run.json"])["plugins"]}
    assert pins == {"loss:soft_tce": "collapselab_example_plugin.losses:SoftTruncation (collapselab-example-plugin "
                                     "0.1.0)",
                    "curator:likelihood_band": "collapselab_example_plugin.curators:LikelihoodBand "
                                               "(collapselab-example-plugin 0.1.0)"}


@pytest.mark.heavy
def test_module_object_names_and_the_plugin_option(plugin_dir):
    """``name: "<file>:<Class>"`` works where a name does and joins ``plugins``; ``--plugin`` imports a file for
    a run whose experiment names its loss; both run with two workers, and a killed run resumes to the same."""
    ref = f"{plugin_dir / 'my_plugin.py'}:Squared"
    exp = _write(plugin_dir, metrics=["w1"], arms=[{"name": "sq", "loss": {"name": ref, "a": 2.0}}])
    e = resolve(yaml.safe_load(exp.read_text()))
    assert e.arms[0].loss.name == "squared" and e.plugins == [ref]
    done = cli_run("run", exp, "-o", plugin_dir / "ref", "-q", "-w", "2", cwd=plugin_dir)
    assert done.returncode == 0, done.stderr
    exp2 = _write(plugin_dir, "exp2.yaml", metrics=["w1"],
                  arms=[{"name": "sq", "loss": {"name": "squared", "a": 2.0}}])
    done = cli_run("run", exp2, "-o", plugin_dir / "opt", "-q", "-w", "2", "--plugin", "my_plugin.py", cwd=plugin_dir)
    assert done.returncode == 0, done.stderr
    assert run_files(plugin_dir / "ref")["metrics.parquet"] == run_files(plugin_dir / "opt")["metrics.parquet"]
    c = _kill_and_resume(exp, plugin_dir, plugin_dir / "part")
    assert c["metrics.parquet"] == run_files(plugin_dir / "ref")["metrics.parquet"]


def test_a_plugin_tce_gives_the_builtin_results(plugin_dir):
    """TCE written as a plugin (value only) gives the built-in's numbers: bitwise on the closed-form families
    (the autograd weight is exactly 0 or 1), to float tolerance in torch's cross-entropy form."""
    import torch

    from collapselab.losses.functional import uloss, weigh_for
    from collapselab.runs import assemble, execute

    raw = {**BASE, "plugins": [str(plugin_dir / "my_plugin.py")], "metrics": ["w1", "variance_ratio"],
           "family": {"name": "gmm", "components": 2}, "data": {"source": "gmm"},
           "arms": [{"name": "builtin", "loss": {"name": "tce", "gamma": 0.9}},
                    {"name": "plugin", "loss": {"name": "plugin_tce", "gamma": 0.9}}]}
    e = resolve(raw)
    v = assemble(e, execute(e, None))
    np.testing.assert_allclose(v[1], v[0], rtol=1e-12, atol=1e-12)
    plugin = get_uloss("plugin_tce", gamma=0.9)
    g = torch.Generator().manual_seed(0)
    z = torch.randn(512, 50, generator=g) * 3
    t = torch.randint(0, 50, (512,), generator=g)
    grads = []
    for loss in (get_uloss("tce", gamma=0.9), plugin):
        x = z.clone().requires_grad_(True)
        out = uloss(x, t, weigh_for(loss))
        out.backward()
        grads.append((out.detach(), x.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0])
    torch.testing.assert_close(grads[1][1], grads[0][1])


# -- loss properties ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "params", "ratio"), [
    ("ce", {}, math.inf), ("gce", {"q": 0.7}, math.inf), ("gce", {"q": 1.0}, 1.0),  # q = 1: MAE
    ("ael", {"a": 2.5}, math.exp(1 / 2.5)), ("ael", {"a": 0.5}, math.exp(2.0)),
    ("vce", {"a": 0.5}, 1.5 / 0.5), ("vce", {"a": 2.0}, 3.0 / 2.0), ("tce", {"gamma": 0.9}, math.inf),
])
def test_variation_ratio_matches_its_closed_form(name, params, ratio):
    """Wang et al.'s variation ratio sup|l'| / inf|l'| over (0, 1], computed numerically from the definition."""
    got = get_uloss(name, **params).properties()["variation_ratio"]
    assert got == ratio if math.isinf(ratio) else got == pytest.approx(ratio, rel=1e-9)


def test_loss_properties_name_what_is_down_weighted():
    props = {n: get_uloss(n).properties() for n in LOSSES.names(builtin_only=True)}
    assert props["ce"]["down_weights"] == "none" and props["tce"]["down_weights"] == "confident"
    assert props["gce"]["down_weights"] == "unconfident" and props["random_drop"]["down_weights"] == "random"
    assert (props["tce"]["w_min"], props["tce"]["w_max"]) == (0.0, 1.0)
    assert props["focal"]["w_max"] > 1.0  # focal's weight rises a little before it falls (module docstring)


# -- bad input: one line, exit 2, nothing written ---------------------------------------------------------
NEGATIVE = textwrap.dedent('''
    from typing import Literal
    from collapselab.losses import ULoss, ops

    class Rising(ULoss):
        name: Literal["rising"] = "rising"

        def value(self, log_u):
            return ops(log_u).exp(log_u)
''')


@pytest.mark.parametrize(("setup", "doc", "message"), [
    (None, {"arms": [{"name": "x", "loss": {"name": "squard"}}]},
     "arms.0.loss.name: unknown loss 'squard'; allowed: ce, tce,"),
    (None, {"plugins": ["./missing.py"]}, "plugins: "),
    (None, {"plugins": ["no_such_module_here"]}, "cannot import module 'no_such_module_here': ModuleNotFoundError"),
    ("raise RuntimeError('boom')\n", {"plugins": ["./broken.py"]}, "broken.py': cannot import: RuntimeError: boom"),
    (PLUGIN, {"plugins": ["./broken.py"], "arms": [{"name": "x", "loss": {"name": "squared", "a": -1}}]},
     "arms.0.loss.a: Input should be greater than 0"),
    (NEGATIVE, {"plugins": ["./broken.py"], "arms": [{"name": "x", "loss": {"name": "rising"}}]},
     "arms (x): loss 'rising': w(u) = -"),
    ("from collapselab.losses import ULoss\nfrom typing import Literal\nclass C(ULoss):\n"
     "    name: Literal['tce'] = 'tce'\n", {"plugins": ["./broken.py"]},
     "loss 'tce' (plugin "),
    (None, {"arms": [{"name": "x", "loss": {"name": "os:getcwd"}}]}, "is not a loss"),
])
def test_plugin_errors_are_one_line_exit_2_and_write_nothing(tmp_path, setup, doc, message):
    if setup is not None:
        (tmp_path / "broken.py").write_text(setup)
    exp = _write(tmp_path, **{"metrics": ["w1"], **doc})
    before = sorted(p.name for p in tmp_path.iterdir())
    done = cli_run("run", exp, "-o", tmp_path / "out", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert message in done.stderr, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == before


def test_list_shows_plugins_with_their_origin(plugin_dir):
    done = cli_run("list", "losses", "--plugin", "my_plugin.py", cwd=plugin_dir)
    assert done.returncode == 0, done.stderr
    lines = {line.split()[0]: line for line in done.stdout.splitlines()[1:]}
    assert "built-in; down-weights confident" in lines["tce"]
    assert "entry point collapselab_example_plugin.losses:SoftTruncation" in lines["soft_tce"]
    assert f"plugin {plugin_dir / 'my_plugin.py'}" in lines["squared"] and "variation ratio" in lines["squared"]


@pytest.mark.heavy
def test_relative_references_resolve_against_the_experiment_file_and_the_run_reopens(plugin_dir):
    """``name: "my_plugin.py:Squared"`` in an experiment file is relative to that file (run from another folder),
    recorded absolute, and the run can be reported and resumed; a resume that fails after
    ``--allow-plugin-change`` writes nothing."""
    sub = plugin_dir / "exp"
    sub.mkdir()
    (sub / "my_plugin.py").write_text(PLUGIN)
    exp = _write(sub, metrics=["w1"], arms=[{"name": "sq", "loss": {"name": "my_plugin.py:Squared", "a": 2.0}}])
    run = plugin_dir / "run"
    assert cli_run("run", exp, "-o", run, "-q", cwd=plugin_dir).returncode == 0
    assert cli_run("report", run, cwd="/").returncode == 0
    done = cli_run("resume", run, "-q", "--generations", "4", cwd="/")
    assert done.returncode == 0, done.stderr
    (sub / "my_plugin.py").write_text(PLUGIN + "\n# edited\n")
    before = (run / "run.json").read_bytes()
    done = cli_run("resume", run, "-q", "--generations", "2", "--allow-plugin-change", cwd="/")
    assert done.returncode == 2 and "can only be extended" in done.stderr
    assert (run / "run.json").read_bytes() == before


def test_changed_user_data_stops_resume(tmp_path):
    rows = np.random.default_rng(0).normal(size=(400, 2))
    np.save(tmp_path / "rows.npy", rows)
    exp = _write(tmp_path, data={"source": "array_file", "path": "rows.npy"}, metrics=["w1"], heldout=100)
    assert cli_run("run", exp, "-o", tmp_path / "run", "-q", cwd=tmp_path).returncode == 0
    np.save(tmp_path / "rows.npy", rows * 3 + 5)
    done = cli_run("resume", tmp_path / "run", "-q", "--generations", "4", cwd=tmp_path)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"data.path: '{tmp_path / 'rows.npy'}' changed since the run began" in done.stderr


def test_module_plugins_metric_references_and_bad_metrics(plugin_dir):
    """A module plugin beside the user imports from the installed command too; a @metric function works as
    ``file.py:function``; a metric of the wrong shape is a runtime fault naming it (exit 1)."""
    command = str(Path(sys.executable).parent / "collapselab")
    exp = _write(plugin_dir, plugins=["my_plugin"], metrics=["w1", "first_coordinate_mean"])
    done = subprocess.run([command, "run", str(exp), "-o", str(plugin_dir / "m"), "-q"], cwd=plugin_dir,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    exp = _write(plugin_dir, metrics=["w1", f"{plugin_dir / 'my_plugin.py'}:first_coordinate_mean"])
    done = cli_run("run", exp, "-o", plugin_dir / "ref", "-q", cwd=plugin_dir)
    assert done.returncode == 0, done.stderr
    (plugin_dir / "bad_metric.py").write_text(textwrap.dedent('''
        from collapselab.metrics.base import metric

        @metric("scalar", ("points",), "one number for all chains: a bug")
        def scalar(model, ctx):
            return 1.0
    '''))
    exp = _write(plugin_dir, plugins=["./bad_metric.py"], metrics=["w1", "scalar"])
    done = cli_run("run", exp, "-o", plugin_dir / "bad", "-q", cwd=plugin_dir)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "metric 'scalar' gave 1 value(s) of shape (); a metric gives one number per chain (2)" in done.stderr


def test_a_plugin_loss_through_get_loss_and_the_hugging_face_adapter(plugin_dir):
    """The plugin TCE by name through ``get_loss`` (a module) and ``causal_lm_loss`` (a Trainer's
    compute_loss_func) gives the built-in TCE's loss and gradients."""
    import torch

    from collapselab.losses.hf import causal_lm_loss
    from collapselab.losses.modules import get_loss
    from collapselab.plugins import load_plugin

    load_plugin(str(plugin_dir / "my_plugin.py"))
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 9, 30, generator=g) * 3
    labels = torch.randint(0, 30, (2, 9), generator=g)
    labels[0, :3] = -100
    outs = []
    for name in ("tce", "plugin_tce"):
        for make in (lambda n: get_loss(n, gamma=0.9, class_dim=-1), lambda n: causal_lm_loss(n, gamma=0.9)):
            z = logits.clone().requires_grad_(True)
            make(name)(z, labels).backward()  # the module scores every position; the adapter shifts the labels
            outs.append((make(name)(z.detach(), labels), z.grad))
    for (a, ga), (b, gb) in ((outs[0], outs[2]), (outs[1], outs[3])):
        torch.testing.assert_close(b, a)
        torch.testing.assert_close(gb, ga)


def test_a_plugin_loss_in_the_bernoulli_pixel_form(plugin_dir):
    """The VAE's per-pixel loss (``binary_uloss``) with the plugin TCE equals the built-in's, value and gradient."""
    import torch

    from collapselab.losses.binary import binary_uloss
    from collapselab.plugins import load_plugin

    load_plugin(str(plugin_dir / "my_plugin.py"))
    g = torch.Generator().manual_seed(2)
    logits, target = torch.randn(16, 64, generator=g) * 4, (torch.rand(16, 64, generator=g) > 0.5).float()
    res = []
    for loss in (get_uloss("tce", gamma=0.9), get_uloss("plugin_tce", gamma=0.9)):
        z = logits.clone().requires_grad_(True)
        out = binary_uloss(z, target, loss)
        out.backward()
        res.append((out.detach(), z.grad))
    torch.testing.assert_close(res[1][0], res[0][0])
    torch.testing.assert_close(res[1][1], res[0][1])
