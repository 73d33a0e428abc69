"""Every command, Python block and experiment of README.md runs as written, and the quickstart output shown
there is what ``make run`` prints: the docs cannot drift from the code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
# ``text`` blocks are output or layout, never run; everything else must be one of these
RUNNABLE = {"bash", "python", "yaml"}


def blocks() -> list[tuple[str, str, int]]:
    """(language, text, line) of every fenced block."""
    out, lang, start, lines = [], None, 0, []
    for i, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        fence = re.match(r"^```(\w*)\s*$", line)
        if fence and lang is None:
            lang, start, lines = fence.group(1), i, []
        elif fence:
            out.append((lang, "\n".join(lines) + "\n", start))
            lang = None
        elif lang is not None:
            lines.append(line)
    assert lang is None, "unclosed code block"
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "80"}


def _is_setup(text: str) -> bool:
    return text.lstrip().startswith("make ")


ALL = blocks()
BASH = [(t, n) for lang, t, n in ALL if lang == "bash" and not _is_setup(t)]
PYTHON = [(t, n) for lang, t, n in ALL if lang == "python"]
YAML = [(t, n) for lang, t, n in ALL if lang == "yaml"]


def _bash_param(text: str, line: int) -> object:
    """A bash block as a test: Ray blocks run in the worker that runs every Ray test (they share the machine's
    cluster address), blocks that train neural models start first."""
    marks = [pytest.mark.xdist_group("ray")] if "ray " in text else []
    if "quickstart-text" in text or "quickstart-images" in text:
        marks.append(pytest.mark.heavy)
    return pytest.param(text, line, marks=marks, id=f"line-{line}")


def test_every_block_is_runnable_or_marked_as_text():
    langs = {lang for lang, _, _ in ALL}
    assert langs <= RUNNABLE | {"text"}, langs
    assert len(BASH) >= 1 and len(PYTHON) >= 3 and len(YAML) >= 2


@pytest.mark.parametrize("text, line", [_bash_param(t, n) for t, n in BASH])
def test_bash_blocks_run(text, line, tmp_path):
    if "ray " in text:
        pytest.importorskip("ray")
    try:
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", text], cwd=tmp_path, env=_env(), capture_output=True,
                              text=True, timeout=600)
    finally:
        if "ray start" in text:  # a block that failed half-way leaves no cluster behind
            subprocess.run([str(BIN / "ray"), "stop", "--force"], capture_output=True, timeout=120)
    assert done.returncode == 0, f"README line {line}:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    if "run quickstart-text --out runs/quickstart-text" in text:
        _the_text_quickstart_starts_from_a_writer_as_diverse_as_real_text(tmp_path / "runs" / "quickstart-text")


def _the_text_quickstart_starts_from_a_writer_as_diverse_as_real_text(run: Path) -> None:
    """Generation 0 of `quickstart-text` (the README's own run, not a second one) rewrites held-out windows with a
    distinct-2 within 0.5-1.5x that of the real windows themselves (the reference row), so collapse is measured from
    a working writer, not a loop; and the run reports that reference and no flag on it."""
    import json

    import polars as pl

    summary = json.loads((run / "summary.json").read_text())
    real = summary["reference"]["distinct_2"]["mean"]
    table = pl.read_parquet(run / "metrics.parquet")
    start = table.filter((pl.col("arm").cast(pl.String) == "ce") & (pl.col("generation") == 0)
                         & (pl.col("metric").cast(pl.String) == "distinct_2"))["value"].mean()
    assert 0.4 < real < 0.9 and 0.5 <= start / real <= 1.5, (start, real)
    assert summary["reference"]["perplexity"]["source"] == "pretrained base"
    assert not [f for f in summary["flags"] if "distinct_2" in f]


@pytest.mark.parametrize("text, line", PYTHON, ids=[f"line-{n}" for _, n in PYTHON])
def test_python_blocks_run(text, line, tmp_path):
    (tmp_path / "example.py").write_text(text, encoding="utf-8")
    done = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, f"README line {line}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("text, line", YAML, ids=[f"line-{n}" for _, n in YAML])
def test_yaml_experiments_run(text, line, tmp_path):
    (tmp_path / "experiment.yaml").write_text(text, encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "collapselab", "run", "experiment.yaml", "--out", "run", "-q"],
                          cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"README line {line}: {done.stderr}"
    assert (tmp_path / "run" / "report.html").is_file()


@pytest.mark.skipif(shutil.which("make") is None or not (ROOT / "Makefile").is_file(), reason="needs make and the "
                    "source tree")
def test_setup_commands_do_what_the_readme_says():
    setup = next(t for lang, t, _ in ALL if lang == "bash" and _is_setup(t))
    targets = [line.split()[1] for line in setup.splitlines() if line.startswith("make ")]
    assert targets == ["run", "test"]
    # `make test` cannot run inside the suite it starts; its recipe is checked instead (a dry run)
    dry = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True)
    assert dry.returncode == 0 and "pytest" in dry.stdout
    makefile = (ROOT / "Makefile").read_text()
    assert makefile.index("torch==2.13.0") < makefile.index('-e ".[')  # torch first and pinned


@pytest.mark.skipif(shutil.which("make") is None or not (ROOT / "Makefile").is_file(), reason="needs make and the "
                    "source tree")
@pytest.mark.heavy
def test_make_run_prints_the_quickstart_shown_in_the_readme():
    shown = next(t for lang, t, _ in ALL if lang == "text" and t.startswith("quickstart: "))
    done = subprocess.run(["make", "run"], cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    printed = "\n".join(line.rstrip() for line in done.stdout.splitlines())
    assert "\n".join(line.rstrip() for line in shown.splitlines()) in printed
    assert (ROOT / "runs" / "quickstart" / "report.html").is_file()
