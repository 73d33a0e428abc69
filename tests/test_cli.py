"""The command line: runs, list/show, and the fault table (one line, the documented exit code, and exactly
what is or is not on disk), signals, kills and workers that never outlive the parent."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collapselab.cli import main

from .helpers import LONG, cli, cli_proc, long_run, run_files, tree

SMALL = ["--set", "n=60", "--set", "heldout=100", "--generations", "3", "--seeds", "2", "-q"]




def test_run_writes_a_complete_run_directory(tmp_path, capsys):
    out = tmp_path / "qs"
    assert cli("run", "quickstart", "--out", str(out), *SMALL) == 0
    text = capsys.readouterr().out
    again = tmp_path / "eight"  # 8 seeds: enough values for numpy's sums to depend on their memory layout
    assert cli("run", "quickstart", "--out", str(again), "--seeds", "8", "--generations", "10", "-q") == 0
    first, shown = tree(again), capsys.readouterr().out
    assert cli("report", str(again)) == 0  # rebuilt from the checkpoints: the run's outputs exactly, to the bit
    assert tree(again) == first and capsys.readouterr().out == shown
    assert "time to failure" in text and "tce-0.99" in text and "report.html" in text
    assert max(len(line) for line in text.splitlines() if not line.startswith(("report:", "tables:"))) <= 80
    names = {p.name for p in out.iterdir()}
    assert {"run.json", "experiment.yaml", "metrics.parquet", "summary.json", "report.html",
            "figures", "chains"} <= names
    assert "metrics.csv" not in names and "metrics.csv" not in text  # the CSV is opt-in
    assert cli("report", str(out), "--csv") == 0
    assert str(out / "metrics.csv") in capsys.readouterr().out
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0] == "arm,seed,generation,metric,value"
    assert len(lines) == 1 + 4 * 2 * 4 * 4  # arms x seeds x generations x metrics
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["arms"]) == {"ce", "tce-0.99", "random-drop-0.01", "accumulate"}
    assert {p.name for p in (out / "figures").iterdir()} == {f"{m}.png" for m in (
        "tail_mass", "heldout_nll", "variance_ratio", "w1", "time_to_failure")}
    before = tree(out)
    assert cli("report", str(out)) == 0
    assert tree(out) == before  # a report keeps the CSV it was once asked for
    assert cli("run", "quickstart", "--out", str(out), *SMALL) == 2  # an existing run is not overwritten
    assert "already holds a run" in capsys.readouterr().err
    assert cli("run", str(out / "experiment.yaml"), "--out", str(out), "--overwrite", "-q", "--csv") == 0
    assert tree(out) == before  # re-running a run from its own resolved experiment gives the same files


def test_list_show_and_help_are_quick_and_plain(capsys):
    assert cli("list") == 0
    listing = capsys.readouterr().out
    for name in ("quickstart", "shumailov-gaussian", "yi-linear-one-round", "fortifai-gmm", "ferbach-curation"):
        assert name in listing
    assert cli("show", "quickstart") == 0
    assert "name: quickstart" in capsys.readouterr().out
    assert cli("show", "quickstart", "--resolved") == 0
    assert "tce-0.99" in capsys.readouterr().out
    assert cli("run", "--help") == 0
    text = capsys.readouterr().out
    assert "<bool>" not in text and "--overwrite" in text and "KEY=VALUE" in text
    for args in (["--help"], ["list"]):  # no heavy imports, so these answer at once (no timed assertion)
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "collapselab", *args], capture_output=True,
                              text=True)
        assert done.returncode == 0
        imported = {line.split("|")[-1].strip() for line in done.stderr.splitlines()}
        assert not imported & {"numpy", "scipy", "matplotlib", "torch", "polars", "sklearn"}


# -- the fault table ---------------------------------------------------------------------------------
def _file(name: str, data: bytes) -> callable:
    def make(tmp: Path) -> None:
        (tmp / name).write_bytes(data)
    return make


def _finished_run(tmp: Path) -> None:
    assert cli("run", "quickstart", "--out", str(tmp / "run"), *SMALL) == 0


def _edit_run(old: str, new: str) -> callable:
    def make(tmp: Path) -> None:
        _finished_run(tmp)
        path = tmp / "run" / "experiment.yaml"
        path.write_text(path.read_text().replace(old, new))
    return make


def _damage(name: str, how: str) -> callable:
    def make(tmp: Path) -> None:
        _finished_run(tmp)
        for folder in (tmp / "run" / "chains").glob("*/b0000"):
            p = folder / name
            if how == "garbage":
                p.write_bytes(b"\x00garbage")
            elif how == "float":
                p.write_bytes(p.read_bytes()[:-8] + b"\x00\x00\x00\x00\x00\x00\xe0?")
            break
    return make


def _unfinished_run(tmp: Path) -> None:
    from collapselab.chain import ChainTask, run_chain
    from collapselab.experiments import load_experiment
    from collapselab.runs import create_run

    exp = load_experiment("quickstart", ["n=60", "heldout=100"], 2, 3)
    with create_run(exp, tmp / "run") as store:
        run_chain(ChainTask(exp, "ce", 0, str(store.root)), stop_after=1)


def _with_user_file(tmp: Path) -> None:
    _finished_run(tmp)
    (tmp / "run" / "my-notes.md").write_text("keep me")


def _nothing(tmp: Path) -> None:
    pass


def _model_folder(tmp: Path) -> None:
    (tmp / "m").mkdir()
    (tmp / "m" / "config.json").write_text("{}")
    (tmp / "m" / "tokenizer_config.json").write_text("{}")
    (tmp / "bad.txt").write_bytes(b"ok \xff\xfe")


def _no_tokenizer(tmp: Path) -> None:
    (tmp / "m").mkdir()
    (tmp / "m" / "config.json").write_text('{"model_type": "gpt2"}')


def _bad_config(tmp: Path) -> None:
    (tmp / "m").mkdir()
    (tmp / "m" / "config.json").write_text('{"model_type": "gpt2",')
    (tmp / "m" / "tokenizer.json").write_text("{}")


def _no_eos(tmp: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({"a": 0, "b": 1, "[UNK]": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    (tmp / "m").mkdir()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(str(tmp / "m"))
    (tmp / "m" / "config.json").write_text('{"model_type": "gpt2"}')


def _model_and_file(tmp: Path) -> None:
    _model_folder(tmp)
    (tmp / "afile").write_text("not a folder")


ONE_LINE_EXIT_2 = [  # (id, setup, argv, message); the tree under tmp must be unchanged
    ("unknown-experiment", _nothing, ["run", "nosuch"], "unknown experiment 'nosuch'; built-in: "),
    ("unknown-key", _nothing, ["run", "quickstart", "--set", "colour=red"],
     "unknown key 'colour'; allowed: name, description, family"),
    ("misspelled-family-key", _nothing, ["run", "quickstart", "--set", "family.compnents=3"],
     "family: unknown key 'compnents'; allowed: name, components"),
    ("not-an-int", _nothing, ["run", "quickstart", "--set", "n=many"], "n: Input should be a valid integer"),
    ("bool-for-int", _nothing, ["run", "quickstart", "--set", "seeds=true"], "seeds: Input should be a valid integer"),
    ("float-for-int", _nothing, ["run", "quickstart", "--set", "generations=1.5"],
     "generations: Input should be a valid integer"),
    ("gamma-above-1", _nothing, ["run", "quickstart", "--set", "arms.1.loss.gamma=1.5"],
     "arms.1.loss.gamma: must be in (0, 1], {quantile: q} or {dynamic: k}; got 1.5"),
    ("gamma-0", _nothing, ["run", "quickstart", "--set", "loss={name: tce, gamma: 0}"],
     "loss.gamma: must be in (0, 1], {quantile: q} or {dynamic: k}; got 0.0"),
    ("negative-seeds", _nothing, ["run", "quickstart", "--seeds", "-3"],
     "seeds: Input should be greater than or equal to 1 (got -3)"),
    ("n-0", _nothing, ["run", "quickstart", "--set", "n=0"], "n: Input should be greater than or equal to 1 (got 0)"),
    ("unknown-family", _nothing, ["run", "quickstart", "--set", "family.name=vea"],
     "family.name: unknown family 'vea'; allowed: categorical, causal_lm, gaussian, gmm, linear, vae"),
    ("metric-needs-truth", _nothing, ["run", "quickstart", "--set", "metrics=[kl_to_truth]"], "needs a known truth"),
    ("unknown-metric", _nothing, ["run", "quickstart", "--set", "metrics=[fid]"], "unknown metric 'fid'; allowed:"),
    ("failure-metric", _nothing, ["run", "quickstart", "--set", "failure.metric=w2"],
     "failure.metric: 'w2' must be one of the metrics"),
    ("reference-arm", _nothing, ["run", "quickstart", "--set", "reference_arm=nobody"],
     "reference_arm: 'nobody' is not an arm"),
    ("duplicate-arms", _nothing, ["run", "quickstart", "--set", "arms=[{name: a}, {name: a}]"],
     "arms: duplicate arm names ['a']"),
    ("pool-too-small", _nothing, ["run", "quickstart", "--set", "n=5000"],
     "n: the real pool of 'digits' holds 1397 training samples"),
    ("heldout-too-large", _nothing, ["run", "quickstart", "--set", "heldout=5000"],
     "heldout: 5000 held-out samples leave none of the 1797 samples of 'digits' to train on; allowed: 1 to 1796"),
    ("seeds-not-a-number", _nothing, ["run", "quickstart", "--seeds", "abc"], "Invalid value for '--seeds'"),
    ("workers-0", _nothing, ["run", "quickstart", "--workers", "0"], "Invalid value for '--workers'"),
    ("set-without-equals", _nothing, ["run", "quickstart", "--set", "seeds"], "--set: 'seeds' is not key=value"),
    ("yaml-not-utf8", _file("e.yaml", b"name: caf\xe9\n"), ["run", "e.yaml"], "e.yaml is not UTF-8 text"),
    ("yaml-syntax", _file("e.yaml", b"name: [unclosed\n"), ["run", "e.yaml"], "experiment: not valid YAML line"),
    ("yaml-not-mapping", _file("e.yaml", b"- a\n- b\n"), ["run", "e.yaml"], "must hold a mapping of settings"),
    ("yaml-is-a-directory", lambda t: (t / "d.yaml").mkdir(), ["run", "d.yaml"], "d.yaml is a directory, not a file"),
    ("out-not-writable", _nothing, ["run", "quickstart", "--out", "/proc/collapselab-run"], "not writable"),
    ("out-is-a-file", _file("f", b"x"), ["run", "quickstart", "--out", "f"], "--out f: exists and is not a directory"),
    ("out-under-a-file", _file("f", b"x"), ["run", "quickstart", "--out", "f/run"], "is a file, not a directory"),
    ("out-not-a-run", _file("keep.txt", b"x"), ["run", "quickstart", "--out", "."],
     "exists, is not empty and is not a collapselab run directory"),
    ("out-dangling-symlink", lambda t: (t / "l").symlink_to(t / "gone"), ["run", "quickstart", "--out", "l"],
     "is a symlink to"),
    ("out-holds-a-run", _finished_run, ["run", "quickstart", "--out", "run"], "already holds a run; continue it"),
    ("overwrite-user-files", _with_user_file, ["run", "quickstart", "--out", "run", "--overwrite"],
     "--overwrite refused, the folder holds files collapselab did not write: my-notes.md"),
    ("resume-not-a-run", _nothing, ["resume", "."], "not a collapselab run directory"),
    ("report-missing-dir", _nothing, ["report", "nonexistent-dir"], "not a collapselab run directory"),
    ("resume-edited-regime", _edit_run("regime:\n    name: accumulate", "regime:\n    name: replace"),
     ["resume", "run"], "no longer matches the run (arms.3.regime.name, arms.3.regime.rewrite changed"),
    ("resume-fewer-generations", _finished_run, ["resume", "run", "--generations", "1"],
     "generations: a run can only be extended (it has 3, 1 asked)"),
    ("resume-broken-yaml", _edit_run("generations: 3", "generations: [3"), ["resume", "run"], "not valid YAML"),
    ("report-unfinished", _unfinished_run, ["report", "run"], "the run is not finished (arm 'ce', seeds 0-1 has "
                                                             "generations 0-1 of 0-3)"),
    ("report-damaged-checkpoint", _damage("g00002.safetensors", "float"), ["report", "run"],
     "g00002.safetensors fails its sha256 check; `collapselab resume"),
    ("resume-nothing-verifies", _damage("g00000.safetensors", "garbage"), ["resume", "run"],
     "g00000.safetensors is truncated or changed"),
    ("damaged-manifest", lambda t: (_finished_run(t), (t / "run" / "run.json").write_text("{")), ["report", "run"],
     "run.json: damaged or not a collapselab run manifest"),
    ("device-cuda-1", _nothing, ["run", "quickstart-images", "--set", "family.device=cuda:1"],
     "family.device: 'cuda:1' is not allowed; allowed: auto, cpu, cuda\n"),  # once, not once per arm
    ("resources-a-list", _nothing, ["run", "quickstart-images", "--set", "resources=[1]"],
     "resources: must be a mapping of num_cpus, num_gpus; got [1]\n"),
    ("vae-unknown-arch", _nothing, ["run", "quickstart-images", "--set", "family.arch=resnet"],
     "family.arch: 'resnet' is not allowed; allowed: mlp, conv"),
    ("vae-latent-0", _nothing, ["run", "quickstart-images", "--set", "family.latent=0"],
     "family.latent: Input should be greater than or equal to 1 (got 0)"),
    ("keep-0", _nothing, ["run", "quickstart-images", "--set", "arms.4.curator.keep=0"],
     "arms.4.curator.keep: Input should be greater than 0 (got 0)"),
    ("keep-above-1", _nothing, ["run", "quickstart-images", "--set", "arms.4.curator.keep=1.5"],
     "arms.4.curator.keep: Input should be less than or equal to 1 (got 1.5)"),
    ("discriminator-needs-images", _nothing, ["run", "quickstart", "--set", "curator={name: discriminator}"],
     "curator discriminator needs image data; source 'digits'"),
    ("unknown-scale", _nothing, ["run", "yi-vae", "--set", "scale=huge"],
     "scale: 'huge' is not one of the experiment's scales (paper)"),
    ("lm-missing-model-folder", _nothing, ["run", "quickstart-text", "--set", "family.model=/no/such/model"],
     "family.model: '/no/such/model' is neither a built-in model (tiny, smollm2) nor an existing folder"),
    ("lm-context-exceeds-window", _nothing, ["run", "quickstart-text", "--set", "family.context_tokens=300"],
     "family.context_tokens: 300 context + 32 new tokens (data.window) exceed the model's window of 256; "
     "allowed: 0 to 224"),
    ("lm-unknown-decoding", _nothing, ["run", "quickstart-text", "--set", "family.decoding.mode=nucleus"],
     "family.decoding.mode: 'nucleus' is not allowed; allowed: greedy, sample, beam, beam_sample"),
    ("rouge-needs-a-rewrite", _nothing, ["run", "quickstart-text", "--set", "regime={name: replace}", "--set",
                                         "curator={name: rouge_oracle}"],
     "curator rouge_oracle needs text data and a rewriting regime (fortifai, or replace with rewrite: true); got "
     "'wikipedia' and 'replace'"),
    ("audit-missing-model", _nothing, ["audit", "/no/such/model"],
     "MODEL: '/no/such/model' is neither a built-in model (tiny, smollm2) nor an existing folder"),
    ("audit-tiny", _nothing, ["audit", "tiny"], "MODEL: tiny is built per experiment; pass one of its saved"),
    ("audit-decoding", _nothing, ["audit", "/no/such/model", "--decoding", "beam"],
     "--decoding: 'beam'; allowed: greedy, sample"),
    ("audit-corpus", _model_folder, ["audit", "m", "--corpus", "news"], "--corpus: 'news'; allowed: wikipedia, plays"),
    ("audit-missing-text", _model_folder, ["audit", "m", "--text", "none.txt"], "--text: none.txt does not exist"),
    ("audit-not-utf8", _model_folder, ["audit", "m", "--text", "bad.txt"],
     "--text: bad.txt is not UTF-8 text (byte 3)"),
    ("audit-drop", _model_folder, ["audit", "m", "--drop", "1"], "--drop: 1; allowed: 0 < SHARE < 1"),
    ("audit-no-tokenizer", _no_tokenizer, ["audit", "m"],
     "MODEL: 'm' has no tokenizer (tokenizer.json or tokenizer_config.json); save one beside the model"),
    ("audit-bad-config", _bad_config, ["audit", "m"], "MODEL: 'm': its config.json is not valid JSON (line 1)"),
    ("audit-out-file", _model_and_file, ["audit", "m", "--out", "afile"],
     "--out: afile is a file; give a folder for the audit"),
    ("audit-no-eos", _no_eos, ["audit", "m", "--corpus", "plays"],
     "m: its tokenizer has no end-of-text token (eos_token)"),
]


@pytest.mark.parametrize("setup, argv, message", [c[1:] for c in ONE_LINE_EXIT_2],
                         ids=[c[0] for c in ONE_LINE_EXIT_2])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(setup, argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    setup(tmp_path)
    _assert_one_line_exit_2(argv, message, capsys, tmp_path)


def test_missing_fashion_mnist_is_one_line_exit_2(capsys, tmp_path, monkeypatch):
    from collapselab.data import images

    monkeypatch.setattr(images, "FASHION_DIR", tmp_path / "no-such-package")
    images.load_fashion_mnist.cache_clear()
    monkeypatch.chdir(tmp_path)
    try:
        _assert_one_line_exit_2(["run", "quickstart-images", "--set", "data={source: fashion_mnist}"],
                                "data: Fashion-MNIST is not installed: install the Debian package", capsys, tmp_path)
    finally:
        images.load_fashion_mnist.cache_clear()


def _assert_one_line_exit_2(argv, message, capsys, tmp_path):
    capsys.readouterr()
    before = tree(tmp_path)
    assert cli(*argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and captured.err.startswith("collapselab: error: "), captured.err
    assert message in captured.err, captured.err
    assert tree(tmp_path) == before  # nothing written, nothing removed (default --out is ./runs/<name>)


FAULTS = [  # (id, argv, exit code, message); runtime faults and numerical failures
    ("gmm-singular-covariance", ["run", "quickstart", "--set", "family.reg_covar=0", "--set", "n=5",
                                 "--set", "heldout=100", "--generations", "3", "-q", "--out", "run"],
     1, "arm 'ce', seeds 0-7, generation 0: the fit failed (LinAlgError"),
    ("tce-drops-everything", ["run", "quickstart", "--set", "arms.1.loss.gamma=1e-9", *SMALL, "--out", "run"],
     1, "arm 'tce-0.99', seed 0, generation 0: the fit failed (the loss tce(gamma=1e-09) gives every training "
        "sample weight 0"),
]


@pytest.mark.parametrize("argv, code, message", [c[1:] for c in FAULTS], ids=[c[0] for c in FAULTS])
def test_numerical_failures_take_the_chain_error_path(argv, code, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli(*argv) == code
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and message in captured.err, captured.err
    assert "finished generations are kept" in captured.err
    assert not (tmp_path / "run" / "summary.json").exists()


def test_a_collapsed_gaussian_has_infinite_kl_not_a_crash(capsys, tmp_path):
    out = tmp_path / "run"
    assert cli("run", "shumailov-gaussian", "--set", "n=1", "--set", "arms=[{name: mle, family: {name: gaussian, "
               "estimator: mle}}]", "--generations", "2", "--seeds", "3", "-q", "--out", str(out)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arms"]["mle"]["final"]["kl_to_truth"]["mean"] == "inf"
    assert summary["arms"]["mle"]["final"]["variance_ratio"]["mean"] == 0.0


def test_a_reference_failing_at_generation_0_gives_an_undefined_ratio(capsys, tmp_path):
    out = tmp_path / "run"
    assert cli("run", "quickstart", "--set", "failure.threshold=0.0", *SMALL, "--out", str(out)) == 0
    text = capsys.readouterr().out
    assert "undefined" in text and "(ref. fails at g0)" in text
    ratio = json.loads((out / "summary.json").read_text())["arms"]["tce-0.99"]["fidelity_ratio"]
    assert ratio["defined"] is False and "fails at generation 0" in ratio["note"]
    assert cli("report", str(out)) == 0 and cli("resume", str(out), "-q") == 0


def test_a_full_disk_is_one_line_exit_1_naming_the_file_and_keeps_finished_generations(capsys, tmp_path,
                                                                                           monkeypatch):
    real_write = os.write
    calls = {"n": 0}

    def write(fd, data):
        calls["n"] += 1
        if calls["n"] > 12:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr("collapselab.store.files.os.write", write)
    out = tmp_path / "run"
    assert cli("run", "quickstart", *SMALL, "--out", str(out)) == 1
    err = capsys.readouterr().err
    assert re.fullmatch(r"collapselab: error: cannot write \S+/chains/\S+: No space left on device\n", err), err
    assert not list(out.rglob("*.tmp"))
    monkeypatch.undo()
    assert cli("resume", str(out), "-q") == 0  # the generations written before the disk filled up are kept
    full = tmp_path / "full"
    assert cli("run", "quickstart", *SMALL, "--out", str(full)) == 0
    assert (out / "metrics.parquet").read_bytes() == (full / "metrics.parquet").read_bytes()


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(capsys, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyError("surprise")

    monkeypatch.setattr("collapselab.runs.finish", boom)
    assert cli("run", "quickstart", *SMALL, "--out", str(tmp_path / "a")) == 1
    err = capsys.readouterr().err
    assert err == "collapselab: error: internal error (KeyError: 'surprise'); rerun with --debug for the traceback\n"
    with pytest.raises(KeyError):
        main(["--debug", "run", "quickstart", *SMALL, "--out", str(tmp_path / "b")])


# -- processes: kills, signals, locks, read-only runs ---------------------------------------------------
def _wait_for(folder: Path, pattern: str, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if list(folder.glob(pattern)):
            return
        time.sleep(0.02)
    raise AssertionError(f"{pattern} never appeared")


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    return long_run(tmp_path_factory)


@pytest.mark.parametrize("sig, code", [(signal.SIGKILL, -9), (signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_stopped_runs_resume_to_the_samerun_files(full_run, tmp_path, sig, code):
    killed = tmp_path / "killed"
    proc = cli_proc("run", *LONG, "--out", str(killed))
    _wait_for(killed / "chains", "*/b0000/g00010.json")
    os.killpg(proc.pid, sig) if sig == signal.SIGKILL else proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    if sig != signal.SIGKILL:
        assert re.fullmatch(r"collapselab: error: interrupted after generation \d+ \(\d of 4 chain batches "
                            r"finished\); continue with `collapselab resume \S+`\n", err), err
    assert not (killed / "metrics.parquet").exists()
    done = subprocess.run([sys.executable, "-m", "collapselab", "resume", str(killed), "-q"], capture_output=True)
    assert done.returncode == 0, done.stderr
    assert run_files(killed) == run_files(full_run)


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_never_outlive_the_parent(tmp_path, sig):
    out = tmp_path / "run"
    proc = cli_proc("run", *LONG, "--workers", "2", "--out", str(out))
    _wait_for(out / "chains", "*/b0000/g00003.json")
    workers = [p for p in _children(proc.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
    assert workers
    proc.send_signal(sig)
    proc.wait(timeout=30)
    end = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < end:
        time.sleep(0.05)
    assert not any(_alive(p) for p in workers)
    snapshot = run_files(out)
    time.sleep(1.0)
    assert run_files(out) == snapshot  # nothing writes into the run after the parent is gone


HOLD = """
import sys
from pathlib import Path
from collapselab.store.lock import RunLock
run = Path(sys.argv[1])
lock = RunLock(run).acquire()
# what a writer holds mid-write: a temporary file of its own, and (to prove the lock is looked at first) a file
# that collapselab did not write
(run / "chains" / "ce" / "b0000" / ".g00008.json.6001bdf67eec.tmp").write_bytes(b"half")
(run / "notes.txt").write_text("mine")
print("holding", flush=True)
sys.stdin.read()
"""


def test_a_run_directory_in_use_is_refused_for_that_reason_first(tmp_path, capsys):
    """A process holding the run's lock mid-write (its temporary file and a foreign file in the folder): every
    command that would use the folder names the holder, not the files it finds; deterministic, no timing."""
    out = tmp_path / "run"
    assert cli("run", "quickstart", *SMALL, "--out", str(out)) == 0
    capsys.readouterr()
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline() == "holding\n"
        for argv in (["run", "quickstart", *SMALL, "--out", str(out), "--overwrite"],
                     ["run", "quickstart", *SMALL, "--out", str(out)], ["resume", str(out)], ["report", str(out)]):
            assert cli(*argv) == 2
            err = capsys.readouterr().err
            assert f"in use by pid {holder.pid}" in err and err.count("\n") == 1, (argv, err)
    finally:
        holder.stdin.close()
        holder.wait(30)
    (out / "chains" / "ce" / "b0000" / ".g00008.json.6001bdf67eec.tmp").unlink()
    assert cli("resume", str(out), "-q") == 0  # the holder's lock is gone with it
    assert cli("run", "quickstart", *SMALL, "--out", str(out), "--overwrite") == 2
    assert "did not write: notes.txt" in capsys.readouterr().err  # now the foreign file is the reason


def _can_drop_privileges() -> bool:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    probe = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c",
                            "import collapselab"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _can_drop_privileges(), reason="needs root, setpriv and a Python the user nobody can run")
def test_a_read_only_run_is_one_line_exit_2(tmp_path_factory):
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="collapselab-ro-", dir="/tmp"))
    try:
        base.chmod(0o755)
        assert cli("run", "quickstart", *SMALL, "--out", str(base / "run")) == 0
        before = tree(base)
        for argv in (["resume", str(base / "run")], ["report", str(base / "run")]):
            done = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                                   "-m", "collapselab", *argv], capture_output=True, text=True)
            assert done.returncode == 2 and done.stdout == ""
            assert re.fullmatch(r"collapselab: error: \S+/run: the run directory is not writable \(Permission "
                                r"denied\)\n", done.stderr), done.stderr
        assert tree(base) == before
    finally:
        shutil.rmtree(base)


def test_audit_reads_and_tokenises_only_the_text_it_needs():
    """A long one-line text is read in growing prefixes until it holds the windows asked for (18 MB of text are
    not tokenised to use 64 tokens), and the windows equal those of the whole text."""
    from collapselab.audit import string_reader, text_windows

    def tokenizer(text, add_special_tokens=False):
        return {"input_ids": [len(w) for w in text.split(" ")]}  # one token per word

    text = " ".join(["word", "longerword", "x"] * 3_000_000)  # ~53 MB on one line
    asked = []

    def read(n):
        asked.append(n)
        return string_reader(text)(n)

    ids = text_windows(tokenizer, read, windows=8, window=4, context=10)
    whole = [len(w) for w in text.split(" ")][:10 + 8 * 4]
    assert ids.tolist() == whole and max(asked) <= 1 << 16


def test_list_keeps_names_and_descriptions_in_their_columns(capsys):
    """Every name stands alone before its description (the longest name included), and a description is cut at
    the end of its first sentence, not at an abbreviation ("Yi et al. ...")."""
    from collapselab.experiments.catalog import catalog_names, first_sentence

    assert cli("list") == 0
    lines = capsys.readouterr().out.splitlines()
    names = catalog_names()
    width = max(map(len, names)) + 2
    assert len(lines) == len(names)
    for name, line in zip(names, lines, strict=True):
        assert line.startswith(name + " ") and line[width - 2:width] == "  " and line[width] != " ", line
    assert "Yi et al. (" in next(line for line in lines if line.startswith("yi-vae "))
    assert first_sentence("Yi et al. (2025) show it. Then more.") == "Yi et al. (2025) show it"
    assert first_sentence("A first look at it. The rest") == "A first look at it"


def test_doctor_reports_what_is_here_and_how_to_get_what_is_not(capsys, monkeypatch, tmp_path):
    """`collapselab doctor`: exit 0 when the catalog has what it needs (one line per check); a missing data set
    is a MISSING line with how to get it, and exit 1."""
    from collapselab.data import images
    from collapselab.doctor import run_checks

    complete = all(c.ok for c in run_checks() if c.needed)  # this machine may lack a data set the catalog reads
    assert cli("doctor") == (0 if complete else 1)
    out = capsys.readouterr().out
    for name in ("python", "torch", "data: digits", "cache", "plugin loss soft_tce"):
        assert any(line.startswith("ok") and name in line for line in out.splitlines()), name
    monkeypatch.setattr(images, "FASHION_DIR", tmp_path)
    assert cli("doctor") == 1
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if "data: fashion_mnist" in line)
    assert line.startswith("MISSING") and "apt-get install dataset-fashion-mnist" in line
    last = out.splitlines()[-1]
    assert "needed piece(s) missing: " in last and "data: fashion_mnist" in last
    pytest.importorskip("ray")
    assert cli("doctor", "--address", "127.0.0.1:1") == 2  # a cluster nobody answers: bad input, as for `run`
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--address: cannot reach the Ray cluster at '127.0.0.1:1'" in err


def test_long_stages_report_elapsed_time_a_readable_rate_and_an_eta():
    """A slow step reads in seconds per step (not "0/s"), and what is left has an ETA."""
    from collapselab.families.lm import progress_line

    assert progress_line(154, 444, 185.0, "steps") == "154/444 steps, 3m05s, 1.2 s/step, ETA 5m48s"
    assert progress_line(5000, 20000, 2.0, "tokens") == "5000/20000 tokens, 2s, 2,500.0 tokens/s, ETA 6s"
    assert progress_line(444, 444, 4000.0, "steps") == "444/444 steps, 1h06m, 9.0 s/step"
