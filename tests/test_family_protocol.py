"""The Family protocol every closed-form family keeps: state round trips and chain broadcasting."""

from __future__ import annotations

import numpy as np
import pytest

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


