"""Curators: subsampling without replacement, likelihood truncation, top-k, Luce choice, the knowledge ball."""

from __future__ import annotations

import numpy as np
import pytest

from collapselab.curators import (
    CurationError,
    CuratorContext,
    KnowledgeBall,
    LikelihoodTruncation,
    LuceChoice,
    NoCurator,
    TopK,
)
from collapselab.curators.rewards import Coordinate, SymbolValues
from collapselab.data import make_source
from collapselab.data.truth import GaussianTruthConfig, LinearTruthConfig
from collapselab.families import Categorical, Gaussian, Linear, LinearConfig
from collapselab.samples import SampleSet
from collapselab.seeding import SeedTree


def test_subsample_curator_draws_without_replacement_and_uniformly():
    """``subsample(keep)`` keeps distinct positions, and each position is kept with probability ``keep`` (within
    4 standard errors over 400 draws)."""
    from collapselab.curators import CuratorContext, Subsample

    class Ids:  # a "model" whose samples are their positions
        n_chains, sample_keys = 2, ("x",)

        def sample(self, n, rng):
            return SampleSet({"x": np.tile(np.arange(n, dtype=np.float64)[None, :, None], (2, 1, 1))})

    hits, draws = np.zeros(40), 400
    for i in range(draws):
        out = Subsample(keep=0.25).curate(Ids(), 40, np.random.default_rng(i), CuratorContext(None))
        for c in range(2):
            picked = out["x"][c, :, 0].astype(int)
            assert out.n == 10 and len(set(picked.tolist())) == 10
            hits[picked] += 1
    share = hits / (2 * draws)
    assert np.abs(share - 0.25).max() < 4 * np.sqrt(0.25 * 0.75 / (2 * draws))


def test_likelihood_truncation_and_top_k_keep_the_right_samples(rng):
    model = Gaussian.from_params([[0.0]], [[[1.0]]]).tile(3)
    ctx = CuratorContext(make_source(GaussianTruthConfig(dim=1), 10))
    kept = LikelihoodTruncation(q=0.2).curate(model, 400, rng, ctx)
    assert kept.n == 400
    # the kept samples are the least likely: |x| is large; a 20%-truncated N(0,1) has E x^2 > 1
    assert np.mean(kept["x"] ** 2) > 1.15
    top = TopK(reward=Coordinate(index=0), fraction=0.25).curate(model, 300, rng, ctx)
    assert top.n == 300 and top["x"].mean() > 1.0  # the top quarter of N(0,1) has mean 1.27


def test_luce_choice_matches_the_exact_k_choice_law(rng):
    """For one K-choice, P(kept = x) = p(x) * E[K e^r(x) / (e^r(x) + sum_{j<K} e^r(X_j))] (Ferbach et al.)."""
    from collapselab.theory.curation import curate_step

    p = np.array([0.1, 0.2, 0.3, 0.4])
    values = [0.0, 1.0, 2.0, -1.0]
    model = Categorical.from_probs(p[None]).tile(4)
    cur = LuceChoice(K=3, reward=SymbolValues(values=values))
    kept = cur.curate(model, 50_000, rng, CuratorContext(make_source(GaussianTruthConfig(), 10)))
    freq = np.bincount(kept["x"].ravel(), minlength=4) / kept["x"].size
    np.testing.assert_allclose(freq, curate_step(p, np.array(values), 3), atol=0.004)  # > 5 binomial SE


def test_knowledge_ball_quota_filter_and_failure(rng):
    src = make_source(LinearTruthConfig(dim=2, design="gaussian"), 50)
    ctx = CuratorContext(src)
    model = Linear(LinearConfig(design="block", sigma=1.0), 3, {"dim": 2})
    model.fit(src.pool(SeedTree(0), 0, 3).take(0, 50))
    kb = KnowledgeBall(delta=0.5, radius=0.1)
    theta_c = kb.center(np.ones(2))
    out = kb.curate(model, 40, rng, ctx)
    assert out.n == 40 and np.all(kb.accept(out, theta_c, 1.0))
    np.testing.assert_array_equal(out["x"], model.sample(40, rng)["x"])  # quota keeps the block design
    filt = KnowledgeBall(delta=0.5, radius=0.1, mode="filter").curate(model, 400, rng, ctx)
    ok = kb.accept(filt, theta_c, 1.0)
    np.testing.assert_array_equal(filt.weight, ok.astype(float))
    assert 0.2 < ok.mean() < 0.95
    far = KnowledgeBall(delta=50.0, radius=0.0, max_rounds=3)
    with pytest.raises(CurationError, match="still rejected"):
        far.curate(model, 40, rng, ctx)
    assert NoCurator().curate(model, 40, rng, ctx).n == 40


