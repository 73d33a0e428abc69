"""Family categorical: lost symbols and n-gram counts."""

from __future__ import annotations

import numpy as np

from collapselab.families import (
    GMM,
    Categorical,
    CategoricalConfig,
)
from collapselab.samples import SampleSet

TRUE_GMM = GMM.from_params([[0.3, 0.7]], [[[-3.0, 0.0], [2.0, 1.0]]], [[np.eye(2) * 0.5, [[1.0, 0.3], [0.3, 0.8]]]])


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


