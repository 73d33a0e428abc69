"""Yi et al.'s verifier for text: the rewrites most like the real text they rewrote, by ROUGE-1."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from collapselab.curators.base import (
    CURATORS,
    CurationError,
    CuratorConfig,
    SettingContext,
    draw,
    keep_best,
    kept_count,
)
from collapselab.data.base import Source


@CURATORS.register
class RougeOracle(CuratorConfig):
    """Yi et al.'s text verifier (their XSUM experiment keeps the top 12.5%): the previous model rewrites the
    requested real windows, and the ``keep`` share of rewrites with the highest ROUGE-1 F1 (``rouge-score``,
    Porter stemming) against the real window each one rewrote is kept. Needs a rewriting regime (``fortifai``,
    or ``replace`` with ``rewrite: true``) and text data; the training set shrinks to that share."""

    name: Literal["rouge_oracle"] = "rouge_oracle"
    keep: float = Field(0.125, gt=0, le=1)

    def check(self, ctx: SettingContext) -> str | None:
        if ctx.kind != "text" or not ctx.arm.regime.rewrites:
            return (f"curator rouge_oracle needs text data and a rewriting regime (fortifai, or replace with "
                    f"rewrite: true); got {ctx.data.source!r} and {ctx.arm.regime.name!r}")
        return None

    def curate(self, model, request, rng, ctx):
        if isinstance(request, int):
            raise CurationError("rouge_oracle needs a rewrite of real text (regime fortifai, or replace with "
                                "rewrite: true)")
        cand = draw(model, request, rng)
        score = rouge1(ctx.source, cand["x"], request["x"])
        return keep_best(cand, score, kept_count(self.keep, request.n))


def rouge1(source: Source, rewrites: np.ndarray, real: np.ndarray) -> np.ndarray:
    """ROUGE-1 F1 of each rewritten window ``[C, n, W]`` against the real window it rewrote (``[C or 1, n, W]``),
    both decoded to text by ``source``; ``[C, n]``."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rouge1"], use_stemmer=True)
    out = np.empty(rewrites.shape[:2])
    for c in range(rewrites.shape[0]):
        refs, hyps = source.decode(real[c % real.shape[0]]), source.decode(rewrites[c])
        out[c] = [scorer.score(r, h)["rouge1"].fmeasure for r, h in zip(refs, hyps, strict=True)]
    return out
