"""Yi et al.'s verifier for linear data: the knowledge ball around a centre near the true parameter."""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
from pydantic import Field

from collapselab.curators.base import CURATORS, CurationError, CuratorConfig, SettingContext, draw
from collapselab.samples import SampleSet


@CURATORS.register
class KnowledgeBall(CuratorConfig):
    """Yi et al.'s verifier for linear data: accept (x, y) iff ``abs(y - x.theta_c) <= radius*norm(x) + sigma_c``.

    ``theta_c = theta* + delta * u`` (``u`` = ``direction`` normalised, default the first axis);
    ``sigma_c = sigma * sqrt(2/pi)`` with sigma the true noise level. ``quota``: redraw each rejected
    sample at the same x until accepted (at most ``max_rounds`` rounds); ``filter``: weight 0.
    """

    name: Literal["knowledge_ball"] = "knowledge_ball"
    delta: float = Field(0.0, ge=0)
    radius: float = Field(0.1, ge=0)
    direction: list[float] | None = None
    mode: Literal["quota", "filter"] = "quota"

    max_rounds: int = Field(10_000, ge=1)

    def check(self, ctx: SettingContext) -> str | None:
        if ctx.family.name != "linear" or not ctx.source.has_truth:
            return "curator knowledge_ball needs the linear family and the linear source"
        return None

    def center(self, theta_star: np.ndarray) -> np.ndarray:
        """``theta_c = theta* + delta * u``."""
        u = np.zeros_like(theta_star)
        if self.direction is None:
            u[0] = 1.0
        else:
            if len(self.direction) != len(theta_star):
                raise ValueError(f"knowledge_ball.direction needs {len(theta_star)} entries")
            u = np.asarray(self.direction, dtype=np.float64)
            if not np.linalg.norm(u) > 0:
                raise ValueError("knowledge_ball.direction must be non-zero")
            u = u / np.linalg.norm(u)
        return theta_star + self.delta * u

    def accept(self, data: SampleSet, theta_c: np.ndarray, sigma: float) -> np.ndarray:
        x = data["x"]
        resid = np.abs(data["y"] - x @ theta_c)
        return resid <= self.radius * np.linalg.norm(x, axis=-1) + sigma * math.sqrt(2.0 / math.pi)

    def curate(self, model, request, rng, ctx):
        truth = ctx.source.truth
        if truth is None or not hasattr(truth, "theta"):
            raise CurationError("knowledge_ball needs a linear data source with a known truth")
        theta_c = self.center(truth.theta[0])
        sigma = float(np.sqrt(truth.sigma2[0]))
        cand = draw(model, request, rng)
        ok = self.accept(cand, theta_c, sigma)
        if self.mode == "filter":
            return cand.with_weight(cand.weight * ok)
        arrays = {k: v.copy() for k, v in cand.arrays.items()}
        for _ in range(self.max_rounds):
            pending = ~ok
            width = int(pending.sum(axis=1).max())
            if width == 0:
                return SampleSet(arrays, cand.w)
            # redraw only the rejected slots: [C, width] positions (rows with fewer repeat a slot)
            idx = np.argsort(~pending, axis=1, kind="stable")[:, :width]
            valid = np.take_along_axis(pending, idx, axis=1)
            current = SampleSet(arrays, cand.w).take(idx)
            new = model.resample(current, rng)
            fill = valid & self.accept(new, theta_c, sigma)
            rows, cols = np.nonzero(fill)
            for k, v in arrays.items():
                v[rows, idx[rows, cols]] = new[k][rows, cols]
            ok[rows, idx[rows, cols]] = True
        raise CurationError(f"knowledge_ball: {int((~ok).sum())} samples still rejected after "
                            f"{self.max_rounds} rounds (acceptance too low)")
