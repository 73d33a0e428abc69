"""The curators that filter the model's own samples by likelihood, by a reward or by chance."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from collapselab.curators.base import (
    CURATORS,
    CuratorConfig,
    SettingContext,
    draw,
    keep_best,
    kept_count,
    per_sample_total,
    request_size,
)
from collapselab.curators.rewards import RewardSettings


@CURATORS.register
class NoCurator(CuratorConfig):
    """Keep every sample."""

    name: Literal["none"] = "none"

    def curate(self, model, request, rng, ctx):
        return draw(model, request, rng)


@CURATORS.register
class LikelihoodTruncation(CuratorConfig):
    """Drop the most likely ``q`` fraction (draws ``n / (1 - q)`` candidates, keeps the n least likely)."""

    name: Literal["likelihood_truncation"] = "likelihood_truncation"
    q: float = Field(0.1, ge=0, lt=1)

    def curate(self, model, request, rng, ctx):
        cand = draw(model, request, rng, 1.0 / (1.0 - self.q))
        return keep_best(cand, -per_sample_total(model.log_prob(cand)), request_size(request))


@CURATORS.register
class TopK(CuratorConfig):
    """Keep the best ``fraction`` by a reward (draws ``n / fraction`` candidates, keeps the n best)."""

    name: Literal["top_k"] = "top_k"
    reward: RewardSettings
    fraction: float = Field(0.5, gt=0, le=1)

    def check(self, ctx: SettingContext) -> str | None:
        return self.reward.check(ctx.kind)

    def curate(self, model, request, rng, ctx):
        cand = draw(model, request, rng, 1.0 / self.fraction)
        return keep_best(cand, self.reward(cand), request_size(request))


@CURATORS.register
class LuceChoice(CuratorConfig):
    """Ferbach et al.'s K-choice curation: of each K candidates keep one with probability
    ``exp(r_i) / sum_j exp(r_j)`` (Bradley-Terry / Luce), sampled exactly by the Gumbel-max trick."""

    name: Literal["luce_choice"] = "luce_choice"
    K: int = Field(2, ge=1, le=1024)
    reward: RewardSettings

    def check(self, ctx: SettingContext) -> str | None:
        return self.reward.check(ctx.kind)

    def curate(self, model, request, rng, ctx):
        count = request_size(request)
        cand = draw(model, request, rng, float(self.K))
        c = cand.n_chains
        r = self.reward(cand)[:, : count * self.K].reshape(c, count, self.K)
        choice = np.argmax(r + rng.gumbel(size=r.shape), axis=2)  # [C, count]
        return cand.take(np.arange(count)[None, :] * self.K + choice)


@CURATORS.register
class Subsample(CuratorConfig):
    """Keep a uniformly random ``keep`` share of the previous model's samples (no verifier): the unfiltered arm
    of a verifier experiment, the same size as what the verifier keeps."""

    name: Literal["subsample"] = "subsample"
    keep: float = Field(0.125, gt=0, le=1)

    def curate(self, model, request, rng, ctx):
        cand = draw(model, request, rng)
        count = kept_count(self.keep, cand.n)
        idx = np.stack([np.sort(rng.permutation(cand.n)[:count]) for _ in range(cand.n_chains)])
        return cand.take(idx)
