"""Data sources: real data sets load offline, splits are disjoint, pools are sampled without replacement."""

from __future__ import annotations

import numpy as np

from collapselab.data import make_source
from collapselab.data.digits import DigitsConfig
from collapselab.data.shakespeare import ShakespeareConfig, spoken_text
from collapselab.data.truth import LinearTruthConfig
from collapselab.seeding import SeedTree


def test_digits_projection_and_split():
    src = make_source(DigitsConfig(dims=3), 297)
    tree = SeedTree(0)
    held = src.heldout(tree)["x"][0]
    train = src._split(tree)[0]["x"]
    assert held.shape == (297, 3) and train.shape == (1500, 3) and src.pool_size == 1500
    np.testing.assert_allclose(np.mean(train.var(axis=0)), 1.0)
    np.testing.assert_allclose(train.mean(axis=0), 0.0, atol=1e-12)
    draws = src.pool(tree, 0, 4).take(0, 1500)["x"]
    for c in range(4):  # each chain's stream is a permutation of the pool
        assert {tuple(r) for r in draws[c]} == {tuple(r) for r in train}
    assert not np.array_equal(draws[0], draws[1])


def test_shakespeare_tokens_and_held_out_plays():
    src = make_source(ShakespeareConfig(vocab=200, seq_len=4), 500)
    tree = SeedTree(0)
    assert src.symbols[:3] == ["the", "and", "i"] and src.symbols[-1] == "<unk>" and len(src.symbols) == 200
    held = src.heldout(tree)["x"]
    assert held.shape == (1, 500, 4) and held.max() < 200
    assert src.pool_size > 150_000
    x = src.pool(tree, 0, 2).take(0, 100)["x"]
    assert x.shape == (2, 100, 4) and x.dtype == np.int64
    md = "# Play\n\n## ACT I\n\n**HAMLET**  \nTo be, _aside_ or not\n\n_Exit_\n"
    assert spoken_text(md) == "To be,   or not"


def test_linear_designs():
    src = make_source(LinearTruthConfig(dim=8, design="fixed_gaussian", design_seed=12345), 10)
    x = src.pool(SeedTree(0), 0, 3).take(0, 100)["x"]
    np.testing.assert_array_equal(x[2], np.random.default_rng(12345).normal(size=(100, 8)))
    ortho = make_source(LinearTruthConfig(dim=8, design="orthogonal"), 10).pool(SeedTree(0), 0, 1).take(0, 100)
    np.testing.assert_allclose(ortho["x"][0].T @ ortho["x"][0], 100 * np.eye(8))
    fresh = make_source(LinearTruthConfig(dim=2), 10).pool(SeedTree(0), 0, 2).take(0, 5)
    assert not np.array_equal(fresh["x"][0], fresh["x"][1])


def test_the_wikipedia_articles_read_back_from_the_cache_equal_a_fresh_parse(tmp_path, monkeypatch):
    """The clean articles are parsed once per machine and read back after that: the same documents, in dump order;
    a damaged cache entry is parsed again, never used."""
    import pytest

    pytest.importorskip("gensim")
    from collapselab.data import corpora

    parsed = tuple(corpora.parse_wikipedia(corpora.wikipedia_dump()))
    monkeypatch.setenv("COLLAPSELAB_CACHE", str(tmp_path))
    corpora.wikipedia_articles.cache_clear()
    try:
        assert corpora.wikipedia_articles() == parsed and len(parsed) == 103  # built, then read back
        (entry,) = tmp_path.glob("wikipedia-articles-*/articles.json")
        corpora.wikipedia_articles.cache_clear()
        assert corpora.wikipedia_articles() == parsed  # read back
        entry.write_text("[]")
        corpora.wikipedia_articles.cache_clear()
        assert corpora.wikipedia_articles() == parsed  # damaged: parsed again
    finally:
        corpora.wikipedia_articles.cache_clear()
