"""Reward of the model's samples under the arm's curator reward (Ferbach et al.'s objective)."""

from __future__ import annotations

import numpy as np

from collapselab.curators.rewards import SymbolValues
from collapselab.families.base import Family
from collapselab.metrics.base import MetricContext, metric


@metric("mean_reward", ("points", "tokens"), "expected reward of the model's samples under the arm's curator "
        "reward (exact for unigram categorical models, else over a model sample of held-out size)",
        better="higher",
        title="Expected reward of the model's samples", axis="mean reward",
        check=lambda ctx: None if getattr(ctx.arm.curator, "reward", None) is not None else
        f"mean_reward needs a curator with a reward; arm {ctx.arm.name!r} has {ctx.arm.curator.name!r}")
def mean_reward(model: Family, ctx: MetricContext) -> np.ndarray:
    reward = getattr(ctx.curator, "reward", None)
    if reward is None:
        raise ValueError("mean_reward needs a curator with a reward (top_k or luce_choice)")
    if isinstance(reward, SymbolValues) and hasattr(model, "distribution") and model.seq_len == 1:
        return model.distribution() @ np.asarray(reward.values, dtype=np.float64)
    own = model.resample(ctx.heldout, ctx.rng)
    return reward(own).mean(axis=1)
