"""Fixtures and collection hooks of the suite (shared helpers: :mod:`tests.helpers`)."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``heavy`` first (stable order otherwise), so the parallel workers finish at about the same time."""
    items.sort(key=lambda item: item.get_closest_marker("heavy") is None)
