"""Family linear: weighted least squares, block designs, resampling, confidence."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from collapselab.families import (
    GMM,
    Linear,
    LinearConfig,
)
from collapselab.samples import SampleSet

TRUE_GMM = GMM.from_params([[0.3, 0.7]], [[[-3.0, 0.0], [2.0, 1.0]]], [[np.eye(2) * 0.5, [[1.0, 0.3], [0.3, 0.8]]]])


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


