"""Exhibits: what a family shows in the report, saved with its checkpoints and read back as they were made."""

from __future__ import annotations

import numpy as np

from collapselab.exhibits import ImageGrid, Passage, from_arrays, to_arrays


def test_exhibits_round_trip_through_their_arrays():
    grid = ImageGrid(np.random.default_rng(0).random((10, 8, 8)).astype(np.float32), None, np.arange(10))
    back = from_arrays(to_arrays(grid))
    assert isinstance(back, ImageGrid) and back.means is None
    np.testing.assert_array_equal(back.draws, grid.draws)
    np.testing.assert_array_equal(back.labels, grid.labels)
    text = Passage("Où est la gare ? — «ici»", "Zoë wrote: ærø")
    assert from_arrays(to_arrays(text)) == text
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in to_arrays(text).values())


def test_a_checkpoint_keeps_the_exhibits_of_every_generation_since_the_last(tmp_path):
    from collapselab.store import ChainStore

    store = ChainStore(tmp_path / "b0000")
    shown = {3: {"rewrites": Passage("real", "three")}, 4: {"rewrites": Passage("real", "four")}}
    store.save(4, 3, {"w": np.zeros((1, 2))}, np.zeros((2, 1, 1)), None, {}, exhibits=shown)
    assert store.exhibits(4) == shown
