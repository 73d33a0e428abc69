"""Run directories: creation (after every check passes), resume, and the final files.

A run directory holds ``experiment.yaml`` (resolved), ``chains/`` (checkpoints), and, once all chains
are done, ``metrics.csv`` (tidy ``arm,seed,generation,metric,value``), ``summary.json``, ``report.html``
and ``figures/``. Nothing is created before the experiment and the output path have been validated.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

import numpy as np

from collapselab.chain import Progress
from collapselab.errors import ConfigError
from collapselab.experiments.loader import dump_experiment, parse_resolved
from collapselab.experiments.schema import Experiment
from collapselab.io import atomic_write_text, remove_stale_temps
from collapselab.runner import Results, backend_for, make_tasks

CSV_HEADER = ("arm", "seed", "generation", "metric", "value")


def is_run_dir(path: Path) -> bool:
    return (path / "experiment.yaml").is_file()


def check_out_dir(out: Path, overwrite: bool = False) -> None:
    """Raise :class:`ConfigError` unless a new run can be written at ``out``."""
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"--out {out}: exists and is not a directory")
        if any(out.iterdir()):
            if not is_run_dir(out):
                raise ConfigError(f"--out {out}: exists, is not empty and is not a run directory")
            if not overwrite:
                raise ConfigError(f"--out {out}: already holds a run; continue it with "
                                  f"`collapselab resume {out}` or pass --overwrite")
    ancestor = out
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ConfigError(f"--out {out}: {ancestor} is a file, not a directory")
    try:  # the only reliable test (root ignores permission bits; read-only mounts do not)
        Path(tempfile.mkdtemp(prefix=".collapselab-probe-", dir=ancestor)).rmdir()
    except OSError as e:
        raise ConfigError(f"--out {out}: not writable ({e.strerror})") from None


def create_run(exp: Experiment, out: Path, overwrite: bool = False) -> Path:
    """Create the run directory for ``exp`` (validated first) and store the resolved experiment."""
    check_out_dir(out, overwrite)
    if overwrite and out.exists() and is_run_dir(out):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "experiment.yaml", dump_experiment(exp))
    return out


def open_run(run_dir: Path) -> Experiment:
    """The experiment of an existing run directory."""
    if not is_run_dir(run_dir):
        raise ConfigError(f"{run_dir}: not a run directory (no experiment.yaml)")
    for folder in (run_dir, run_dir / "figures"):
        remove_stale_temps(folder)
    return parse_resolved((run_dir / "experiment.yaml").read_text(encoding="utf-8"))


def execute(exp: Experiment, run_dir: Path | None, workers: int = 1, progress: Progress | None = None) -> Results:
    """Run (or resume) every chain of ``exp``; returns the rows per (arm, batch)."""
    tasks = make_tasks(exp, None if run_dir is None else str(run_dir))
    return backend_for(workers).run(tasks, progress)


def assemble(exp: Experiment, results: Results) -> np.ndarray:
    """All metric values as one array ``[arms, seeds, generations + 1, metrics]`` (NaN where missing)."""
    out = np.full((len(exp.arms), exp.seeds, exp.generations + 1, len(exp.metrics)), np.nan)
    for a, arm in enumerate(exp.arms):
        for b in range(exp.n_batches):
            block = results.get((arm.name, b))
            if block is not None and block.size:
                seeds = exp.batch_seeds(b)
                out[a, seeds[0]:seeds[-1] + 1, : block.shape[0]] = np.transpose(block, (2, 0, 1))
    return out


def metrics_csv(exp: Experiment, values: np.ndarray) -> str:
    """Tidy CSV text in the order arm, seed, generation, metric; values are written with ``repr`` so they read
    back bit for bit."""
    lines = [",".join(CSV_HEADER)]
    metrics = exp.metrics
    for a, arm in enumerate(exp.arms):
        name = _csv_field(arm.name)  # grid arm names hold commas
        for s in range(values.shape[1]):
            for g in range(values.shape[2]):
                row = values[a, s, g].tolist()  # Python floats: repr is the shortest exact form
                lines.extend(f"{name},{s},{g},{m},{row[k]!r}" for k, m in enumerate(metrics))
    return "\n".join(lines) + "\n"


def _csv_field(text: str) -> str:
    """``text`` quoted as the csv module would (QUOTE_MINIMAL), written by hand for speed."""
    if any(ch in text for ch in ',"\n\r'):
        return '"' + text.replace('"', '""') + '"'
    return text


def read_metrics_csv(path: Path, exp: Experiment) -> np.ndarray:
    """The values array of a ``metrics.csv`` written for ``exp``."""
    arm_pos = {a.name: i for i, a in enumerate(exp.arms)}
    met_pos = {m: i for i, m in enumerate(exp.metrics)}
    out = np.full((len(exp.arms), exp.seeds, exp.generations + 1, len(exp.metrics)), np.nan)
    with open(path, encoding="utf-8", newline="") as f:
        r = csv.reader(f)
        header = tuple(next(r, ()))
        if header != CSV_HEADER:
            raise ConfigError(f"{path}: not a collapselab metrics.csv (header {header})")
        try:
            for arm, s, g, m, v in r:
                out[arm_pos[arm], int(s), int(g), met_pos[m]] = float(v)
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(f"{path}: does not match experiment.yaml ({e})") from None
    return out


def finish(exp: Experiment, run_dir: Path, values: np.ndarray) -> dict:
    """Write ``metrics.csv``, ``summary.json``, figures and ``report.html``; returns the summary."""
    from collapselab.report import write_report

    atomic_write_text(run_dir / "metrics.csv", metrics_csv(exp, values))
    return write_report(exp, values, run_dir)
