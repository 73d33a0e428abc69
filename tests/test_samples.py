"""SampleSet: the one data type the engine moves (take, concat, flat arrays)."""

from __future__ import annotations

import numpy as np
import pytest

from collapselab.samples import SampleSet, concat


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


