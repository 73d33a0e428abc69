"""Shared helpers for the test suite."""

from __future__ import annotations

import numpy as np
import pytest

from collapselab.experiments.schema import Experiment, resolve


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


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)
