"""Families: fits against independent references, sampling, confidence, state round trips."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from collapselab.families import (
    GMM,
    Categorical,
    CategoricalConfig,
    Gaussian,
    GaussianConfig,
    GMMConfig,
    Linear,
    LinearConfig,
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


def test_linear_wls_block_design_and_resample(rng):
    x = rng.normal(size=(2, 60, 3))
    y = x @ np.array([1.0, -2.0, 0.5]) + rng.normal(size=(2, 60))
    w = rng.random((2, 60))
    m = Linear(LinearConfig(design="block", noise="estimated"), 2, {"dim": 3}).fit(SampleSet({"x": x, "y": y}), w)
    sw = np.sqrt(w[1])
    ref = np.linalg.lstsq(x[1] * sw[:, None], y[1] * sw, rcond=None)[0]
    np.testing.assert_allclose(m.theta[1], ref, rtol=1e-10)
    s = m.sample(9, rng)  # 3 per direction
    v = np.linalg.svd(x[0], full_matrices=False)[2]
    np.testing.assert_allclose(s["x"][0], np.repeat(v, 3, axis=0))
    with pytest.raises(ValueError, match="multiple of p"):
        m.sample(10, rng)
    r = m.resample(s, rng)
    np.testing.assert_array_equal(r["x"], s["x"])
    assert not np.array_equal(r["y"], s["y"])
    fixed = Linear(LinearConfig(design="fixed"), 2, {"dim": 3}).fit(SampleSet({"x": x, "y": y}))
    fixed.fit(fixed.sample(60, rng))  # the design of the first fit is kept
    np.testing.assert_array_equal(fixed.sample(60, rng)["x"], x)


def test_linear_confidence_uniform(rng):
    t = Linear.from_params(np.array([[0.5, 1.0]]), 2.0)
    x = rng.normal(size=(1, 5000, 2))
    s = SampleSet({"x": x, "y": t.label(x, rng)})
    assert stats.kstest(t.confidence(s)[0], "uniform").pvalue > 1e-3
    np.testing.assert_allclose(t.log_prob(s)[0, :10], stats.norm(x[0, :10] @ [0.5, 1.0], 2.0).logpdf(s["y"][0, :10]))


def test_categorical_counts_lost_symbols_and_ngram(rng):
    m = Categorical.from_probs([[0.5, 0.3, 0.2, 0.0]])
    draws = m.sample(200_000, rng)["x"]
    assert not (draws == 3).any()  # a symbol of probability 0 is never drawn
    np.testing.assert_allclose(np.bincount(draws.ravel(), minlength=4) / draws.size, [0.5, 0.3, 0.2, 0], atol=0.005)
    x = np.array([[[0], [0], [1], [2]]])
    fit = Categorical(CategoricalConfig(), 1, {"vocab": 4}).fit(SampleSet({"x": x}), np.array([[1.0, 1.0, 2.0, 0.0]]))
    np.testing.assert_allclose(fit.distribution()[0], [0.5, 0.5, 0.0, 0.0])
    smooth = Categorical(CategoricalConfig(smoothing=1.0), 1, {"vocab": 4}).fit(SampleSet({"x": x}))
    np.testing.assert_allclose(smooth.distribution()[0], np.array([3, 2, 2, 1]) / 8)
    # order 2: sampled transitions follow the fitted conditional table
    seqs = rng.integers(0, 3, size=(1, 3000, 6))
    seqs[..., 1::2] = (seqs[..., ::2] + 1) % 3  # strong dependence: odd positions follow the previous token
    bi = Categorical(CategoricalConfig(order=2), 1, {"vocab": 3, "seq_len": 6}).fit(SampleSet({"x": seqs}))
    gen = bi.sample(20000, rng)["x"][0]
    pairs = gen[:, :-1] * 3 + gen[:, 1:]
    freq = np.bincount(pairs.ravel(), minlength=9).reshape(3, 3)
    cond = freq / freq.sum(1, keepdims=True)
    np.testing.assert_allclose(cond, bi.probs[0, :3], atol=0.02)
    lp = bi.log_prob(SampleSet({"x": gen[None, :5]}))
    assert lp.shape == (1, 5, 6)
    np.testing.assert_allclose(np.exp(lp), bi.confidence(SampleSet({"x": gen[None, :5]})))


FAMILY_CASES = [
    (Gaussian(GaussianConfig(), 3, {"dim": 2}), lambda r: SampleSet({"x": r.normal(size=(3, 50, 2))})),
    (GMM(GMMConfig(components=2), 3, {"dim": 2}), lambda r: TRUE_GMM.tile(3).sample(80, r)),
    (Linear(LinearConfig(), 3, {"dim": 2}),
     lambda r: SampleSet({"x": r.normal(size=(3, 50, 2)), "y": r.normal(size=(3, 50))})),
    (Categorical(CategoricalConfig(order=2), 3, {"vocab": 5, "seq_len": 3}),
     lambda r: SampleSet({"x": r.integers(0, 5, size=(3, 50, 3))})),
]


@pytest.mark.parametrize("model, make", FAMILY_CASES, ids=lambda v: getattr(v, "name", ""))
def test_protocol_roundtrip_and_broadcast(model, make, rng):
    data = make(rng)
    model.fit(data, rng=rng)
    clone = type(model)(model.config, 3, model.spec).load_state_dict(
        {k: v.copy() for k, v in model.state_dict().items()})
    s1 = model.sample(7, np.random.default_rng(5))
    s2 = clone.sample(7, np.random.default_rng(5))
    for k in s1.arrays:
        np.testing.assert_array_equal(s1[k], s2[k])
    np.testing.assert_array_equal(model.confidence(data), clone.confidence(data))
    shared = data.chains(slice(0, 1))  # a chain axis of 1 broadcasts against the model's chains
    lp = model.log_prob(shared)
    assert lp.shape[0] == 3 and np.all(np.isfinite(lp))
    np.testing.assert_array_equal(lp[0], model.log_prob(data)[0])
    u = model.confidence(data)
    assert u.min() >= 0 and u.max() <= 1
    assert model.finite_chains().all()
    one = model.chains([1])
    np.testing.assert_array_equal(one.log_prob(data.chains(slice(1, 2))), model.log_prob(data)[1:2])


def test_one_pass_variance_falls_back_when_it_would_cancel(rng):
    """Rows with mean 1e3 and sd 1e-3 (a collapsed chain) still get the variance to 1e-9 relative."""
    from collapselab.families.gaussian import _moments_1d

    x = np.stack([rng.normal(0.0, 1.0, 100), 1e3 + rng.normal(0.0, 1e-3, 100), np.full(100, 7.0)])
    mean, ss = _moments_1d(x)
    np.testing.assert_allclose(mean, x.mean(axis=1), rtol=1e-14)
    np.testing.assert_allclose(ss[:2] / 100, x.var(axis=1)[:2], rtol=1e-9)
    assert ss[2] == 0.0
