"""What many tests do, in one place: run the CLI (in this process or as a subprocess), list a run's files, make a
small experiment, run one into a folder and finish it, and kill-and-resume it."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

from collapselab.cli import main
from collapselab.experiments.resolver import resolve
from collapselab.experiments.schema import Experiment


def cli(*args: str) -> int:
    """``collapselab ARGS`` in this process; its exit code."""
    try:
        main([str(a) for a in args])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def cli_run(*args, cwd) -> subprocess.CompletedProcess:
    """``collapselab ARGS`` as a subprocess in ``cwd`` (output captured, text)."""
    return subprocess.run([sys.executable, "-m", "collapselab", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def cli_proc(*args: str) -> subprocess.Popen:
    """``collapselab ARGS`` started as a subprocess in its own session (for signals and kills)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "collapselab", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, start_new_session=True, text=True)


#: the long run that kill-and-resume tests stop mid-way (4 arms x 3 seeds x 40 generations of ``quickstart``)
LONG = ["quickstart", "--set", "n=200", "--set", "heldout=200", "--generations", "40", "--seeds", "3", "-q"]


def long_run(tmp_path_factory) -> Path:
    """``LONG`` run uninterrupted through the CLI, once per test session: every pytest-xdist worker shares the one
    folder (the first to ask runs it under a file lock while the others wait). Under xdist each worker's base
    folder lies in the session's own one; without xdist the base folder is the session's (its parent is shared by
    every session, so a finished run there would outlive a code change)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "shared-long-run"
    root.mkdir(exist_ok=True)
    run = root / "run"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "done").exists():
            done = subprocess.run([sys.executable, "-m", "collapselab", "run", *LONG, "--out", str(run),
                                   "--overwrite"], capture_output=True, text=True, timeout=600)
            assert done.returncode == 0, done.stderr
            (root / "done").touch()
    return run


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its bytes (None for folders); the lock file's pid is left out."""
    return {p.relative_to(root).as_posix(): (p.read_bytes() if p.is_file() and p.name != ".collapselab.lock"
                                             else None)
            for p in sorted(Path(root).rglob("*"))}


def run_files(folder) -> dict[str, bytes]:
    """Every file of a run directory (but its lock) by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and p.name != ".collapselab.lock"}


def make_experiment(**overrides) -> Experiment:
    """A small valid experiment (1-D Gaussian truth) with ``overrides`` applied to the raw mapping."""
    raw = {
        "name": "t",
        "family": {"name": "gaussian"},
        "data": {"source": "gaussian", "dim": 1},
        "n": 50,
        "generations": 3,
        "seeds": 4,
        "heldout": 200,
        "metrics": ["variance_ratio", "param_error"],
    }
    raw.update(overrides)
    return resolve(raw)


def run_and_finish(exp: Experiment, folder):
    """Run ``exp`` into the run directory ``folder`` and write its outputs; returns ``(summary, values)``."""
    from collapselab.runs import assemble, create_run, execute, finish

    with create_run(exp, folder) as run:
        values = assemble(exp, execute(exp, run))
        summary = finish(exp, run, values)
    return summary, values


def killed_and_uninterrupted(exp: Experiment, tmp_path, stop_after: int = 1):
    """Run ``exp`` into ``tmp_path/full`` uninterrupted and into ``tmp_path/part`` with every arm killed after
    generation ``stop_after`` and then resumed; returns ``(full files, part files, full values)``."""
    from collapselab.chain import ChainTask, last_checkpoint, run_chain
    from collapselab.runs import assemble, create_run, execute, finish

    _, values = run_and_finish(exp, tmp_path / "full")
    with create_run(exp, tmp_path / "part") as part:
        for arm in exp.arms:
            run_chain(ChainTask(exp, arm.name, 0, str(part.root)), stop_after=stop_after)
            assert last_checkpoint(part.root / "chains" / arm.name / "b0000") == stop_after
        finish(exp, part, assemble(exp, execute(exp, part)))
    return run_files(tmp_path / "full"), run_files(tmp_path / "part"), values


#: scikit-learn's 8x8 digits as images, and a VAE small enough to train in seconds on them
DIGITS = {"source": "digits", "form": "images"}
SMALL_VAE = {"name": "vae", "hidden": 32, "latent": 4, "max_epochs": 3, "batch": 64}


def digits_images(n: int = 300, seed: int = 0):
    """``(source, n real digit images of chain batch 0)`` (100 held out)."""
    from collapselab.data import make_source
    from collapselab.seeding import SeedTree

    src = make_source(make_experiment(family=SMALL_VAE, data=DIGITS, n=n, heldout=100, metrics=["test_nelbo"]).data,
                      100)
    return src, src.take(SeedTree(seed), 0, 1, 0, n)
