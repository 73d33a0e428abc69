"""Family gmm: EM against the truth and scikit-learn, integer weights, confidence, per-chain tolerance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from collapselab.families import (
    GMM,
    GMMConfig,
)
from collapselab.samples import SampleSet

TRUE_GMM = GMM.from_params([[0.3, 0.7]], [[[-3.0, 0.0], [2.0, 1.0]]], [[np.eye(2) * 0.5, [[1.0, 0.3], [0.3, 0.8]]]])


def test_gmm_em_recovers_truth_and_matches_sklearn(rng):
    from sklearn.mixture import GaussianMixture

    data = TRUE_GMM.tile(4).sample(3000, rng)
    m = GMM(GMMConfig(components=2, tol=1e-6, max_iter=500), 4, {"dim": 2}).fit(data, rng=rng)
    order = np.argsort(m.means[0, :, 0])
    np.testing.assert_allclose(m.weights[0, order], [0.3, 0.7], atol=0.03)
    np.testing.assert_allclose(m.means[0, order], TRUE_GMM.means[0], atol=0.1)
    for c in range(4):
        sk = GaussianMixture(2, tol=1e-6, max_iter=500, random_state=c).fit(data["x"][c])
        assert m.log_prob(data)[c].mean() == pytest.approx(sk.score(data["x"][c]), rel=1e-4)
    np.testing.assert_allclose(m.log_prob(data)[0, :20],
                               np.log(sum(m.weights[0, k] * stats.multivariate_normal(m.means[0, k], m.covs[0, k])
                                          .pdf(data["x"][0, :20]) for k in range(2))), rtol=1e-10)


def test_gmm_integer_weights_equal_duplicated_data(rng):
    """EM with weight 2 on a sample equals EM on data holding it twice (same warm start)."""
    x = TRUE_GMM.sample(200, rng)["x"]
    w = rng.integers(1, 3, size=(1, 200)).astype(float)
    dup = np.repeat(x, w[0].astype(int), axis=1)
    cfg = GMMConfig(components=2, tol=1e-10, max_iter=50)
    a = GMM(cfg, 1, {"dim": 2}).fit(SampleSet({"x": x}), w, init=TRUE_GMM, rng=rng)
    b = GMM(cfg, 1, {"dim": 2}).fit(SampleSet({"x": dup}), init=TRUE_GMM, rng=rng)
    np.testing.assert_allclose(a.means, b.means, rtol=1e-9)
    np.testing.assert_allclose(a.covs, b.covs, rtol=1e-9)
    np.testing.assert_allclose(a.weights, b.weights, rtol=1e-9)


def test_gmm_confidence_is_uniform_under_the_model(rng):
    x = TRUE_GMM.sample(5000, rng)
    u = TRUE_GMM.confidence(x)[0]
    assert stats.kstest(u, "uniform").pvalue > 1e-3


def test_gmm_chains_stop_on_their_own_tolerance(rng):
    """A batch's chains stop at their own iteration: warm-started from the same point, a chain fitted
    inside a batch equals the same chain fitted alone."""
    data = TRUE_GMM.tile(6).sample(500, rng)
    init = GMM.from_params(np.tile([[0.5, 0.5]], (6, 1)), np.tile([[[-1.0, 0.0], [1.0, 0.0]]], (6, 1, 1)),
                           np.tile(np.eye(2), (6, 2, 1, 1)))
    m = GMM(GMMConfig(components=2, tol=1e-3), 6, {"dim": 2}).fit(data, init=init, rng=rng)
    assert len(set(m.n_iter.tolist())) > 1
    for c in range(6):
        alone = GMM(GMMConfig(components=2, tol=1e-3), 1, {"dim": 2})
        alone.fit(data.chains(slice(c, c + 1)), init=init.chains([c]), rng=rng)
        assert alone.n_iter[0] == m.n_iter[c]
        np.testing.assert_allclose(alone.means[0], m.means[c], rtol=1e-12)


