"""The command line: runs, one-line errors with exit code 2, kill and resume, report, list, show."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collapselab.cli import main

SMALL = ["--set", "n=60", "--set", "heldout=100", "--generations", "3", "--seeds", "2", "-q"]


def cli(*args: str) -> int:
    try:
        main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_run_writes_a_complete_run_directory(tmp_path, capsys):
    out = tmp_path / "qs"
    assert cli("run", "quickstart", "--out", str(out), *SMALL) == 0
    text = capsys.readouterr().out
    assert "time to failure" in text and "tce-0.99" in text and "report.html" in text
    names = {p.name for p in out.iterdir()}
    assert {"experiment.yaml", "metrics.csv", "summary.json", "report.html", "figures", "chains"} <= names
    lines = (out / "metrics.csv").read_text().splitlines()
    assert lines[0] == "arm,seed,generation,metric,value"
    assert len(lines) == 1 + 3 * 2 * 4 * 4  # arms x seeds x generations x metrics
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["arms"]) == {"ce", "tce-0.99", "accumulate"}
    assert {p.name for p in (out / "figures").iterdir()} == {f"{m}.png" for m in
                                                           ("tail_mass", "heldout_nll", "variance_ratio", "w1")}
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert cli("report", str(out)) == 0
    assert before == {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert cli("run", "quickstart", "--out", str(out), *SMALL) == 2  # an existing run is not overwritten
    assert "already holds a run" in capsys.readouterr().err
    assert cli("run", "quickstart", "--out", str(out), "--overwrite", *SMALL) == 0


@pytest.mark.parametrize("args, message", [
    (["run", "nosuch"], "unknown experiment 'nosuch'; built-in: "),
    (["run", "quickstart", "--set", "colour=red"], "unknown key 'colour'; allowed: name, description, family"),
    (["run", "quickstart", "--set", "family.compnents=3"],
     "family: unknown key 'compnents'; allowed: name, components"),
    (["run", "quickstart", "--set", "n=many"], "n: Input should be a valid integer"),
    (["run", "quickstart", "--set", "arms.1.loss.gamma=1.5"], "arms.1.loss.gamma: Input should be less than or equal"),
    (["run", "quickstart", "--set", "loss={name: tce, gamma: 0}"], "loss.gamma: Input should be greater than 0"),
    (["run", "quickstart", "--seeds", "-3"], "seeds: Input should be greater than or equal to 1 (got -3)"),
    (["run", "quickstart", "--set", "n=0"], "n: Input should be greater than or equal to 1 (got 0)"),
    (["run", "quickstart", "--set", "family.name=vae"], "family: Input tag 'vae' found using 'name' does not match"),
    (["run", "quickstart", "--set", "metrics=[kl_to_truth]"], "needs a known truth"),
    (["run", "quickstart", "--set", "n=5000"], "n: the real pool of 'digits' holds 1397 training samples"),
    (["run", "quickstart", "--seeds", "abc"], "Invalid value for '--seeds'"),
    (["run", "quickstart", "--out", "/proc/collapselab-run"], "not writable"),
    (["resume", "."], "not a run directory"),
    (["report", "/nonexistent-dir"], "not a run directory"),
])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli(*args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("collapselab: error: "), err
    assert message in err, err
    assert not any(tmp_path.iterdir())  # no partial run directory (default --out is under ./runs)


def test_unwritable_parent_and_file_in_the_way(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli("run", "quickstart", "--out", str(blocker / "run"), *SMALL) == 2
    assert "is a file" in capsys.readouterr().err
    assert cli("run", "quickstart", "--out", str(blocker), *SMALL) == 2
    assert "not a directory" in capsys.readouterr().err


def test_list_and_show(capsys):
    assert cli("list") == 0
    listing = capsys.readouterr().out
    for name in ("quickstart", "shumailov-gaussian", "yi-linear-one-round", "fortifai-gmm", "ferbach-curation"):
        assert name in listing
    assert cli("show", "quickstart") == 0
    assert "name: quickstart" in capsys.readouterr().out
    assert cli("show", "quickstart", "--resolved") == 0
    assert "tce-0.99" in capsys.readouterr().out


def _cli_proc(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "collapselab", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, start_new_session=True)


def _wait_for(path_glob: Path, pattern: str, timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if list(path_glob.glob(pattern)):
            return
        time.sleep(0.02)
    raise AssertionError(f"{pattern} never appeared")


def test_sigkilled_run_resumes_to_the_same_files(tmp_path):
    args = ["quickstart", "--set", "n=200", "--set", "heldout=200", "--generations", "40", "--seeds", "3", "-q"]
    full = tmp_path / "full"
    assert subprocess.run([sys.executable, "-m", "collapselab", "run", *args, "--out", str(full)],
                          capture_output=True).returncode == 0
    killed = tmp_path / "killed"
    proc = _cli_proc("run", *args, "--out", str(killed))
    _wait_for(killed / "chains", "*/b0000/g00010.json")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / "metrics.csv").exists()
    done = subprocess.run([sys.executable, "-m", "collapselab", "resume", str(killed), "-q"], capture_output=True)
    assert done.returncode == 0, done.stderr
    files = sorted(p.relative_to(full) for p in full.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(killed) for p in killed.rglob("*") if p.is_file())
    for rel in files:
        assert (full / rel).read_bytes() == (killed / rel).read_bytes(), rel


def test_grid_runs_report_heat_maps_and_reread_their_csv(tmp_path, capsys):
    out = tmp_path / "yi"
    assert cli("run", "yi-linear-one-round", "--out", str(out), "--seeds", "20", "-q",
               "--set", "grid={curator.delta: [0.0, 0.5], curator.radius: [0.1, 0.5]}") == 0
    assert '"delta=0,radius=0.1",0,1,param_error,' in (out / "metrics.csv").read_text()
    assert (out / "figures" / "heatmap_param_error.png").is_file()
    summary = (out / "summary.json").read_bytes()
    assert cli("report", str(out)) == 0
    assert (out / "summary.json").read_bytes() == summary
