"""A smooth truncated cross entropy: what a plugin loss needs is a name, its settings and ``value``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from collapselab.losses import ULoss, ops


class SoftTruncation(ULoss):
    """``l(u) = sigmoid((gamma - u) / tau) (-log u)``: cross entropy faded out over the targets the model is more
    sure of than ``gamma`` (TCE as ``tau -> 0``); ``w(u)`` is derived by autograd."""

    name: Literal["soft_tce"] = "soft_tce"
    gamma: float = Field(0.9, gt=0.0, le=1.0)
    tau: float = Field(0.05, gt=0.0, le=1.0)

    def value(self, log_u):
        xp = ops(log_u)
        return xp.sigmoid((self.gamma - xp.exp(log_u)) / self.tau) * -log_u
