"""A likelihood-band verifier: keep what the model finds neither too typical nor too unlikely."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from collapselab.curators import CuratorConfig, draw, per_sample_total, request_size


class LikelihoodBand(CuratorConfig):
    """Draws ``n / (1 - low - high)`` candidates and keeps ``n`` of them: the ``high`` share the model finds most
    likely (its most typical samples) and the ``low`` share it finds least likely are dropped."""

    name: Literal["likelihood_band"] = "likelihood_band"
    low: float = Field(0.05, ge=0.0, lt=0.5)
    high: float = Field(0.2, ge=0.0, lt=0.5)

    @model_validator(mode="after")
    def _band(self) -> LikelihoodBand:
        if self.low + self.high >= 0.9:
            raise ValueError("low + high must leave at least a tenth of the candidates")
        return self

    def curate(self, model, request, rng, ctx):
        count = request_size(request)
        cand = draw(model, request, rng, 1.0 / (1.0 - self.low - self.high))
        ll = per_sample_total(model.log_prob(cand))
        order = np.argsort(ll, axis=1, kind="stable")  # least likely first
        start = int(round(self.low * cand.n))
        keep = np.sort(order[:, start:start + count], axis=1)
        return cand.take(keep)
