"""Shared helpers for the test suite."""

from __future__ import annotations

import numpy as np
import pytest

from collapselab.experiments.resolver import resolve
from collapselab.experiments.schema import Experiment


def make_experiment(**overrides) -> Experiment:
    """A small valid experiment (2-D GMM truth) with ``overrides`` applied to the raw mapping."""
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


def run_files(folder) -> dict[str, bytes]:
    """Every file of a run directory (but its lock) by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".collapselab.lock"}


def killed_and_uninterrupted(exp: Experiment, tmp_path, stop_after: int = 1):
    """Run ``exp`` into ``tmp_path/full`` uninterrupted and into ``tmp_path/part`` with every arm killed after
    generation ``stop_after`` and then resumed; returns ``(full files, part files, full values)``."""
    from collapselab.chain import ChainTask, last_checkpoint, run_chain
    from collapselab.runs import assemble, create_run, execute, finish

    with create_run(exp, tmp_path / "full") as full:
        values = assemble(exp, execute(exp, full))
        finish(exp, full, values)
    with create_run(exp, tmp_path / "part") as part:
        for arm in exp.arms:
            run_chain(ChainTask(exp, arm.name, 0, str(part.root)), stop_after=stop_after)
            assert last_checkpoint(part.root / "chains" / arm.name / "b0000") == stop_after
        finish(exp, part, assemble(exp, execute(exp, part)))
    return run_files(tmp_path / "full"), run_files(tmp_path / "part"), values


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``heavy`` first (stable order otherwise), so the parallel workers finish at about the same time."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)
