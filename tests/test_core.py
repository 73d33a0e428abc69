"""Seed tree and sample sets."""

from __future__ import annotations

import numpy as np
import pytest

from collapselab.samples import SampleSet, concat
from collapselab.seeding import SeedTree


def test_streams_depend_only_on_root_and_path():
    a, b = SeedTree(7), SeedTree(7)
    x1 = a.rng("model", "ce", 0, 3, "fit").random(5)
    b.rng("other").random(100)  # asking for other streams first changes nothing
    x2 = b.rng("model", "ce", 0, 3, "fit").random(5)
    np.testing.assert_array_equal(x1, x2)
    assert not np.array_equal(x1, a.rng("model", "ce", 0, 4, "fit").random(5))
    assert not np.array_equal(x1, SeedTree(8).rng("model", "ce", 0, 3, "fit").random(5))
    assert not np.array_equal(a.rng("ab", 1).random(3), a.rng("a", "b1").random(3))
    with pytest.raises(ValueError):
        SeedTree(-1)


def test_sampleset_take_concat_flat():
    x = np.arange(24.0).reshape(2, 4, 3)
    s = SampleSet({"x": x, "y": x[..., 0]})
    t = s.take(np.array([[3, 0], [1, 1]]))
    np.testing.assert_array_equal(t["x"][0], x[0, [3, 0]])
    np.testing.assert_array_equal(t["y"][1], x[1, [1, 1], 0])
    c = concat([s, t])
    assert c.n == 6 and c.n_chains == 2
    back = SampleSet.from_flat(c.to_flat("p."), "p.")
    np.testing.assert_array_equal(back["x"], c["x"])
    np.testing.assert_array_equal(back.weight, c.weight)
    with pytest.raises(ValueError):
        SampleSet({"x": x, "y": np.zeros((2, 5))})
    with pytest.raises(ValueError):
        concat([s, SampleSet({"x": x})])
