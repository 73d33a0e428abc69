"""The run store: atomic checksummed files with the user's umask, checkpoint verification and fallback,
the run lock, and --overwrite that removes only what the store wrote."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from collapselab.errors import ConfigError, StoreError
from collapselab.runs import assemble, collect, create_run, execute, finish, open_run, prepare
from collapselab.store import ChainStore, RunLock, RunStore, write_atomic

from .helpers import make_experiment

EXP = {"family": {"name": "gaussian", "estimator": "unbiased"}, "n": 40, "generations": 6, "seeds": 3,
       "checkpoint_every": 2,
       "arms": [{"name": "a"}, {"name": "b", "family": {"name": "gaussian", "estimator": "mle"}}]}


def _run(tmp_path, name="run", **over):
    exp = make_experiment(**{**EXP, **over})
    with create_run(exp, tmp_path / name) as store:
        values = assemble(exp, execute(exp, store))
        finish(exp, store, values, csv=True)
    return exp, values


def test_files_get_the_umask_and_never_0600(tmp_path):
    old = os.umask(0o022)
    try:
        write_atomic(tmp_path / "sub" / "f.bin", b"x")
        _run(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "sub" / "f.bin").stat().st_mode) == 0o644
    modes = {stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").rglob("*")}
    assert modes == {0o644, 0o755}
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "g.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "g.bin").stat().st_mode) == 0o640


def test_write_errors_name_the_path(tmp_path, monkeypatch):
    import errno

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("collapselab.store.files.os.write", full)
    with pytest.raises(StoreError, match=r"cannot write .*x\.bin: No space left on device"):
        write_atomic(tmp_path / "x.bin", b"abc")
    assert list(tmp_path.iterdir()) == []  # the temp file is gone too


def test_checkpoints_record_sha256_and_metric_values_in_binary(tmp_path):
    exp, values = _run(tmp_path)
    folder = tmp_path / "run" / "chains" / "a" / "b0000"
    rec = json.loads((folder / "g00002.json").read_text())
    assert rec["first_generation"] == 1 and set(rec["files"]) == {"g00002.safetensors"}
    from safetensors.numpy import load_file

    stored = load_file(folder / "g00002.safetensors")["metrics"]
    np.testing.assert_array_equal(stored, values[0, :, 1:3].transpose(1, 2, 0))
    assert "values" not in rec  # metric values are never JSON lists of floats


@pytest.mark.parametrize("damage, why", [
    (lambda p: p.write_bytes(p.read_bytes()[:-8] + np.float64(0.5).tobytes()), "fails its sha256 check"),
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "is truncated"),
    (lambda p: p.unlink(), "is missing"),
])
def test_damaged_checkpoint_falls_back_and_resume_gives_identical_results(tmp_path, damage, why):
    exp, values = _run(tmp_path)
    damage(tmp_path / "run" / "chains" / "b" / "b0000" / "g00004.safetensors")
    warnings = []
    store, exp2 = open_run(tmp_path / "run")
    with store:
        with pytest.raises(ConfigError, match=why):
            collect(exp2, store)  # report refuses damaged data
        resumed = assemble(exp2, execute(exp2, store, warn=warnings.append))
    assert len(warnings) == 1 and "g00004.safetensors" in warnings[0] and why in warnings[0]
    assert "continues from generation 2" in warnings[0]
    np.testing.assert_array_equal(resumed, values)


def test_garbage_record_and_gap_are_detected(tmp_path):
    exp, _ = _run(tmp_path)
    chain = ChainStore(tmp_path / "run" / "chains" / "a" / "b0000", tmp_path / "run")
    (chain.folder / "g00002.json").write_text("{not json")
    scan = chain.scan(exp.metrics, 3)
    assert scan.resume == 0 and "g00002.json is not a valid checkpoint record" in str(scan.problem)
    (chain.folder / "g00002.json").unlink()
    scan = chain.scan(exp.metrics, 3)
    assert scan.resume == 0 and "g00002.json is missing" in str(scan.problem)


def test_no_verifying_checkpoint_is_an_error_naming_the_file(tmp_path):
    exp, _ = _run(tmp_path)
    (tmp_path / "run" / "chains" / "a" / "b0000" / "g00000.safetensors").write_bytes(b"garbage")
    store, exp = open_run(tmp_path / "run")
    with store, pytest.raises(ConfigError, match=r"g00000.safetensors is truncated.*no earlier checkpoint"):
        prepare(exp, store)


def test_regime_state_is_kept_for_the_two_newest_checkpoints(tmp_path):
    exp, values = _run(tmp_path, arms=[{"name": "acc", "regime": {"name": "accumulate"}}], generations=8)
    folder = tmp_path / "run" / "chains" / "acc" / "b0000"
    assert sorted(p.name for p in folder.glob("*.regime.safetensors")) == [
        "g00006.regime.safetensors", "g00008.regime.safetensors"]
    (folder / "g00008.regime.safetensors").write_bytes(b"x")
    scan = ChainStore(folder).scan(exp.metrics, 3)
    assert scan.resume == 6 and "regime" in str(scan.problem)
    store, exp = open_run(tmp_path / "run")
    with store:
        np.testing.assert_array_equal(assemble(exp, execute(exp, store, warn=lambda m: None)), values)


def test_lock_names_the_holder_and_dies_with_it(tmp_path):
    exp, _ = _run(tmp_path)
    code = ("import sys, time; from pathlib import Path; from collapselab.store import RunLock; "
            "RunLock(Path(sys.argv[1])).acquire(); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(ConfigError, match=f"in use by pid {holder.pid}"):
            open_run(tmp_path / "run")
    finally:
        holder.kill()
        holder.wait()
    store, _ = open_run(tmp_path / "run")  # the killed holder's lock is free again
    store.close()
    lock = RunLock(tmp_path / "run").acquire()
    with pytest.raises(ConfigError, match=f"in use by pid {os.getpid()}"):
        RunLock(tmp_path / "run").acquire()
    lock.release()


def test_overwrite_removes_only_store_files(tmp_path):
    exp, _ = _run(tmp_path)
    run = tmp_path / "run"
    (run / "notes.md").write_text("mine")
    (run / "figures" / "extra.png").write_bytes(b"mine")
    (run / "chains" / "a" / "b0000" / "my.txt").write_text("mine")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    with pytest.raises(ConfigError, match=r"--overwrite refused.*chains/a/b0000/my.txt, figures/extra.png, "
                                          r"notes.md"):
        create_run(exp, run, overwrite=True)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    for p in ("notes.md", "figures/extra.png", "chains/a/b0000/my.txt"):
        (run / p).unlink()
    with create_run(exp, run, overwrite=True) as store:
        assert sorted(p.name for p in store.root.iterdir()) == [".collapselab.lock", "experiment.yaml", "run.json"]


def test_symlinked_out_is_followed(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    exp, _ = _run(tmp_path, name="link")
    assert (real / "run.json").is_file() and (tmp_path / "link").is_symlink()
    with create_run(exp, tmp_path / "link", overwrite=True):
        pass
    assert (tmp_path / "link").is_symlink() and (real / "run.json").is_file()
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="is a symlink to .*nowhere, which does not exist"):
        create_run(exp, tmp_path / "dangling")


def test_experiment_changes_are_refused_except_more_generations(tmp_path):
    exp, values = _run(tmp_path)
    path = tmp_path / "run" / "experiment.yaml"
    text = path.read_text()
    path.write_text(text.replace("estimator: mle", "estimator: unbiased"))
    with pytest.raises(ConfigError, match=r"no longer matches the run \(arms.1.family.estimator changed"):
        open_run(tmp_path / "run")
    path.write_text(text.replace("generations: 6", "generations: 4"))
    with pytest.raises(ConfigError, match="generations: a run can only be extended"):
        open_run(tmp_path / "run")
    path.write_text(text)
    store, exp10 = open_run(tmp_path / "run", generations=10)
    with store:
        extended = assemble(exp10, execute(exp10, store))
        finish(exp10, store, extended)
    _, fresh = _run(tmp_path, name="fresh", generations=10)
    np.testing.assert_array_equal(extended, fresh)
    assert "generations: 10" in path.read_text()


def test_report_rebuilds_from_checkpoints_not_from_a_damaged_table(tmp_path):
    exp, values = _run(tmp_path)
    run = tmp_path / "run"
    original = {p: (run / p).read_bytes() for p in ("metrics.csv", "metrics.parquet", "summary.json")}
    lines = original["metrics.csv"].decode().splitlines()
    (run / "metrics.csv").write_text("\n".join(lines[: len(lines) // 2]) + "\n")  # cut at a row boundary
    store, exp = open_run(run)
    with store:
        finish(exp, store, collect(exp, store))
    assert {p: (run / p).read_bytes() for p in original} == original


def test_tables_hold_the_values_bit_for_bit(tmp_path):
    import polars as pl
    import pyarrow.parquet as pq

    from collapselab.tables import read_values

    exp, values = _run(tmp_path, arms=[{"name": "a,b"}, {"name": "c"}])
    run = tmp_path / "run"
    arms = [a.name for a in exp.arms]
    for name in ("metrics.csv", "metrics.parquet"):
        back = read_values(run / name, arms, exp.metrics, exp.seeds, exp.generations)
        np.testing.assert_array_equal(back, values)
    table = pq.read_table(run / "metrics.parquet")
    assert table.column_names == ["arm", "seed", "generation", "metric", "value"]
    assert table.num_rows == values.size
    assert pl.read_csv(run / "metrics.csv")["arm"][0] == "a,b"
    assert (run / "metrics.csv").read_text().splitlines()[1].startswith('"a,b",0,0,')


def test_manifest_records_outputs_and_experiment_hash(tmp_path):
    import hashlib

    _run(tmp_path)
    run = tmp_path / "run"
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["experiment_sha256"] == hashlib.sha256((run / "experiment.yaml").read_bytes()).hexdigest()
    for name, sha in manifest["outputs"].items():
        assert hashlib.sha256((run / name).read_bytes()).hexdigest() == sha
    assert {"metrics.csv", "metrics.parquet", "summary.json", "report.html"} <= set(manifest["outputs"])
    assert RunStore.foreign_files(run) == []


def test_the_stores_own_temporary_files_are_never_foreign(tmp_path, monkeypatch):
    """A writer's temporary file (present, or renamed away between the folder listing and the look at it) is the
    store's, never a user's; deterministic: the vanished file is listed by a stand-in for os.walk."""
    import collapselab.store.run as store_run
    from collapselab.store import RunStore

    _run(tmp_path)
    root = tmp_path / "run"
    chain = root / "chains" / "a" / "b0000"
    (chain / ".g00009.json.6001bdf67eec.tmp").write_bytes(b"half-written")
    assert RunStore.foreign_files(root) == []
    real_walk = os.walk

    def walk_listing_a_vanished_temp(top, *a, **k):
        for dirpath, dirnames, filenames in real_walk(top, *a, **k):
            if Path(dirpath) == chain:
                filenames = [*filenames, ".g00010.json.0123456789ab.tmp", "g00011.json"]  # renamed/removed since
            yield dirpath, dirnames, filenames

    monkeypatch.setattr(store_run.os, "walk", walk_listing_a_vanished_temp)
    assert RunStore.foreign_files(root) == []
    (root / "mine.txt").write_text("x")
    assert RunStore.foreign_files(root) == ["mine.txt"]


def test_a_run_of_an_older_format_is_refused_in_one_line_naming_it(tmp_path, capsys):
    """Format 2 changed how families draw (named sub-streams): resume and report of a format-1 run refuse it, naming
    both formats, and write nothing."""
    from collapselab.cli import main
    from collapselab.store.layout import RUN_FORMAT

    _run(tmp_path)
    manifest = tmp_path / "run" / "run.json"
    record = json.loads(manifest.read_text())
    assert record["format"] == RUN_FORMAT == "collapselab-run/2"
    manifest.write_text(json.dumps({**record, "format": "collapselab-run/1", "collapselab": "0.1.0"}))
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file() and p.suffix != ".lock"}
    for argv in (["resume", str(tmp_path / "run")], ["report", str(tmp_path / "run")]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "a run of format collapselab-run/1" in err and RUN_FORMAT in err, err
    assert {p: p.read_bytes() for p in before} == before
