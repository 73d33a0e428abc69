"""Diversity metrics of categorical (token) models."""

from __future__ import annotations

import numpy as np

from collapselab.families.base import Family
from collapselab.metrics.base import MetricContext, metric


def _real_support(ctx: MetricContext, vocab: int) -> np.ndarray:
    if ctx.truth is not None:
        return ctx.truth.distribution()[0] > 0
    return np.bincount(ctx.heldout["x"].ravel(), minlength=vocab) > 0


@metric("support_fraction", ("tokens",), "fraction of the real support (true symbols, or symbols seen in "
        "held-out text) to which the model gives positive probability", better="higher", needs="distribution",
        title="Share of the real support the model still covers", axis="share of real symbols with p > 0")
def support_fraction(model: Family, ctx: MetricContext) -> np.ndarray:
    support = _real_support(ctx, model.vocab)
    return ((model.distribution() > 0) & support).sum(axis=1) / support.sum()


@metric("entropy", ("tokens",), "entropy (nats) of the model's next-symbol distribution, averaged over the "
        "contexts of held-out real text (order 1: the entropy of the distribution)", better="higher",
        needs="distribution",
        title="Entropy of the model's next-symbol distribution", axis="entropy (nats)")
def entropy(model: Family, ctx: MetricContext) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(model.probs > 0, model.probs * np.log(model.probs), 0.0).sum(axis=2)  # [C, contexts]
    ctxs = model.contexts(np.asarray(ctx.heldout["x"], dtype=np.int64))[0].ravel()
    return h[:, ctxs].mean(axis=1)
