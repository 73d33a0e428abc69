"""Family gaussian: weighted fits against their formulas, density confidence, sampling."""

from __future__ import annotations

import numpy as np
from scipy import stats

from collapselab.families import (
    GMM,
    Gaussian,
    GaussianConfig,
)
from collapselab.samples import SampleSet

TRUE_GMM = GMM.from_params([[0.3, 0.7]], [[[-3.0, 0.0], [2.0, 1.0]]], [[np.eye(2) * 0.5, [[1.0, 0.3], [0.3, 0.8]]]])


def test_gaussian_weighted_fit_matches_formulas(rng):
    x = rng.normal(size=(3, 40, 2)) @ np.array([[1.0, 0.5], [0.0, 2.0]])
    w = rng.random((3, 40))
    m = Gaussian(GaussianConfig(), 3, {"dim": 2}).fit(SampleSet({"x": x}), w)
    for c in range(3):
        np.testing.assert_allclose(m.mean[c], np.average(x[c], axis=0, weights=w[c]), rtol=1e-12)
        np.testing.assert_allclose(m.cov[c], np.cov(x[c], rowvar=False, aweights=w[c], bias=True), rtol=1e-10)
    u = Gaussian(GaussianConfig(estimator="unbiased"), 3, {"dim": 2}).fit(SampleSet({"x": x}), w)
    for c in range(3):  # numpy's aweights unbiased = reliability weights
        np.testing.assert_allclose(u.cov[c], np.cov(x[c], rowvar=False, aweights=w[c]), rtol=1e-10)
    plain = Gaussian(GaussianConfig(estimator="unbiased"), 3, {"dim": 2}).fit(SampleSet({"x": x}))
    np.testing.assert_allclose(plain.cov[1], np.cov(x[1], rowvar=False), rtol=1e-12)
    iso = Gaussian(GaussianConfig(covariance="isotropic"), 3, {"dim": 2}).fit(SampleSet({"x": x}))
    np.testing.assert_allclose(iso.cov[0], np.eye(2) * np.trace(np.cov(x[0], rowvar=False, bias=True)) / 2)
    diag = Gaussian(GaussianConfig(covariance="diag"), 3, {"dim": 2}).fit(SampleSet({"x": x}))
    assert diag.cov[0, 0, 1] == 0.0


def test_gaussian_density_confidence_and_sampling(rng):
    cov = np.array([[2.0, 0.6], [0.6, 1.0]])
    g = Gaussian.from_params([[1.0, -1.0]], cov[None])
    x = g.sample(20000, rng)
    np.testing.assert_allclose(x["x"][0].mean(0), [1.0, -1.0], atol=0.05)
    np.testing.assert_allclose(np.cov(x["x"][0], rowvar=False), cov, atol=0.06)
    np.testing.assert_allclose(g.log_prob(x)[0, :50], stats.multivariate_normal([1, -1], cov).logpdf(x["x"][0, :50]),
                               rtol=1e-12)
    u = g.confidence(x)[0]
    assert stats.kstest(u, "uniform").pvalue > 1e-3  # u ~ U(0, 1) under the model


def test_one_pass_variance_falls_back_when_it_would_cancel(rng):
    """Rows with mean 1e3 and sd 1e-3 (a collapsed chain) still get the variance to 1e-9 relative."""
    from collapselab.families.gaussian import _moments_1d

    x = np.stack([rng.normal(0.0, 1.0, 100), 1e3 + rng.normal(0.0, 1e-3, 100), np.full(100, 7.0)])
    mean, ss = _moments_1d(x)
    np.testing.assert_allclose(mean, x.mean(axis=1), rtol=1e-14)
    np.testing.assert_allclose(ss[:2] / 100, x.var(axis=1)[:2], rtol=1e-9)
    assert ss[2] == 0.0


