"""Fitting a family with a u-loss: weighted refits to the loss's fixed point.

A u-loss ``l(u)`` has the gradient of CE re-weighted by ``w(u) = -u dl/du`` (detached). For closed-form
families this is realised as weighted maximum likelihood with ``w`` computed from the model's own
confidence on its training data, iterated: fit with CE (or start from the warm-start model), then
``steps`` times: ``u = model.confidence(data)``, refit with weights ``w(u)``. A fixed point satisfies
``sum_i w(u_i) grad log p(x_i) = 0``, the stationarity condition of the loss with detached weights.
For TCE on a continuous family this drops the most typical ``1 - gamma`` fraction of the training set.
"""

from __future__ import annotations

import numpy as np

from collapselab.families.base import Family
from collapselab.losses.ulosses import ULoss
from collapselab.samples import SampleSet


def fit_with_loss(model: Family, data: SampleSet, loss: ULoss, rng: np.random.Generator,
                  init: Family | None = None, steps: int = 3) -> Family:
    """Fit ``model`` (in place) to ``data`` under ``loss``; returns the model."""
    if loss.is_ce:
        return model.fit(data, None, init=init, rng=rng)
    if init is not None and init.is_fitted:
        u = init.confidence(data)
    else:
        model.fit(data, None, init=None, rng=rng)
        u = model.confidence(data)
        init = model
    for _ in range(max(1, steps)):
        model.fit(data, loss.weight_u(u), init=init, rng=rng)
        init = model
        u = model.confidence(data)
    return model
