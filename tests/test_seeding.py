"""The seed tree: streams addressed by path, named sub-streams, never by draw order."""

from __future__ import annotations

import numpy as np
import pytest

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




def test_a_substream_depends_on_its_names_never_on_what_was_drawn_before():
    """A family's named sub-streams: the same whatever the parent stream gave out already, different for other
    names, and for a seed-tree stream the stream at the extended path itself."""
    from collapselab.seeding import substream

    tree = SeedTree(3)
    fresh = tree.lazy_rng("model", 0, 1, "fit")
    used = tree.lazy_rng("model", 0, 1, "fit")
    used.random(1000)  # a draw for another purpose first
    a = substream(fresh, "chain", 0, "order").random(4)
    np.testing.assert_array_equal(a, substream(used, "chain", 0, "order").random(4))
    np.testing.assert_array_equal(a, tree.rng("model", 0, 1, "fit", "chain", 0, "order").random(4))
    assert not np.array_equal(a, substream(fresh, "chain", 1, "order").random(4))
    assert not np.array_equal(a, substream(fresh, "chain", 0, "masks").random(4))
    plain, drawn = np.random.default_rng(5), np.random.default_rng(5)
    drawn.normal(size=77)  # a plain Generator: children of its SeedSequence, by name, too
    np.testing.assert_array_equal(substream(plain, "x").random(3), substream(drawn, "x").random(3))
    assert not np.array_equal(substream(plain, "x").random(3), substream(np.random.default_rng(6), "x").random(3))
