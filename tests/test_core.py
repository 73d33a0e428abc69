"""Seed tree, sample sets and atomic I/O."""

from __future__ import annotations

import numpy as np
import pytest

from collapselab.io import atomic_write_json, load_arrays, read_json, save_arrays
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


def test_atomic_files_roundtrip(tmp_path):
    arrays = {"a": np.random.default_rng(0).normal(size=(3, 4)), "b": np.arange(5)}
    save_arrays(tmp_path / "x.safetensors", arrays)
    back = load_arrays(tmp_path / "x.safetensors")
    for k in arrays:
        np.testing.assert_array_equal(back[k], arrays[k])
    atomic_write_json(tmp_path / "j.json", {"v": [1.5, float("inf"), float("nan")]})
    assert read_json(tmp_path / "j.json") == {"v": [1.5, "inf", "nan"]}
    assert [p.name for p in tmp_path.iterdir()] and not list(tmp_path.glob(".*tmp"))
