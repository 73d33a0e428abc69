"""ClosedFormFamily: the weighted-refit template of the closed-form families (gaussian, gmm, linear, categorical).

A u-loss ``l(u)`` has the gradient of CE re-weighted by ``w(u) = -u dl/du`` (detached). For closed-form
families this is realised as weighted maximum likelihood with ``w`` computed from the model's own
confidence on its training data, iterated: fit with CE (or start from the warm-start model), then
``steps`` times: ``u = model.confidence(data)``, refit with weights ``w(u)`` (an adaptive gamma resolved per chain
from these u; a random-drop loss's mask drawn once). A fixed point satisfies
``sum_i w(u_i) grad log p(x_i) = 0``, the stationarity condition of the loss with detached weights.
For TCE on a continuous family this drops the most typical ``1 - gamma`` fraction of the training set.
The gradient-trained families (:class:`collapselab.families.gradient.GradientFamily`) apply the loss inside every
training step instead.
"""

from __future__ import annotations

from typing import Self

import numpy as np

from collapselab.errors import NumericalError
from collapselab.families.base import Family, per_sample
from collapselab.losses.training import AppliedLoss, LossRecord
from collapselab.losses.ulosses import ULoss
from collapselab.samples import SampleSet
from collapselab.seeding import substream


class ClosedFormFamily(Family):
    """A family fitted in closed form by weighted maximum likelihood: ``fit_loss`` refits with ``w(u)``."""

    def fit_loss(self, data: SampleSet, loss: ULoss, rng: np.random.Generator, init: Family | None = None,
                 steps: int = 3) -> Self:
        """Fit (in place) under ``loss`` by ``steps`` weighted refits towards its fixed point; returns ``self``."""
        self.loss_records = fit_with_loss(self, data, loss, rng, init=init, steps=steps)
        return self


def fit_with_loss(model: Family, data: SampleSet, loss: ULoss, rng: np.random.Generator,
                  init: Family | None = None, steps: int = 3) -> list[LossRecord]:
    """Fit ``model`` (in place) to ``data`` under ``loss``; returns what the loss did on each chain (its last refit)."""
    if loss.is_ce:
        model.fit(data, None, init=init, rng=rng)
        return [LossRecord.unweighted(loss)] * model.n_chains
    if init is not None and init.is_fitted:
        u = init.confidence(data)
    else:
        model.fit(data, None, init=None, rng=rng)
        u = model.confidence(data)
        init = model
    # a loss that drops targets at random (random_drop) keeps one mask for all refits, from its own sub-stream
    applied = AppliedLoss(loss, generator=substream(rng, "masks"), chains=model.n_chains, fixed_mask=True)
    for _ in range(max(1, steps)):
        weights = applied.chain_weights(u)
        _check_mass(weights, data, loss)
        model.fit(data, weights, init=init, rng=rng)
        init = model
        u = model.confidence(data)
    return applied.records()


def _check_mass(weights: np.ndarray, data: SampleSet, loss: ULoss) -> None:
    """Raise :class:`NumericalError` when the loss gives a chain's whole training set weight 0."""
    total = (per_sample(np.asarray(weights, dtype=np.float64)) * data.weight).sum(axis=1)
    empty = ~(total > 0)
    if empty.any():
        settings = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                             for k, v in loss.model_dump(exclude={"name"}).items())
        raise NumericalError(f"the loss {loss.name}({settings}) gives every training sample weight 0 (it "
                             f"drops all of them); choose a setting that keeps some", chain=int(np.argmax(empty)))
