"""Curators: what filters the previous model's samples before they are trained on.

| curator | keeps |
|---|---|
| none | every sample |
| likelihood_truncation(q) | draws n/(1-q), drops the most likely q fraction under the model |
| knowledge_ball(delta, radius) | (x, y) with abs(y - x.theta_c) <= radius*norm(x) + sigma_c (Yi et al.) |
| top_k(reward, fraction) | draws n/fraction, keeps the n best by reward |
| luce_choice(K, reward) | one of K candidates with probability proportional to exp(reward) (Ferbach et al.) |
| discriminator(keep) | images: the best-scored ``keep`` share of each class by a real-vs-synthetic MLP (Yi et al.) |
| rouge_oracle(keep) | text rewrites: the ``keep`` share with the highest ROUGE-1 against the real text they rewrote |
| subsample(keep) | a uniformly random ``keep`` share (the unfiltered arm beside a verifier that keeps a share) |

- :mod:`~collapselab.curators.base`: the base class, the registry and shared helpers;
- :mod:`~collapselab.curators.sampling`: the filters by likelihood, reward or chance;
- :mod:`~collapselab.curators.rewards`: the rewards of the reward-based curators;
- :mod:`~collapselab.curators.knowledge_ball`, :mod:`~collapselab.curators.discriminator`,
  :mod:`~collapselab.curators.rouge`: Yi et al.'s verifiers for linear data, images and text.
"""

from __future__ import annotations

from collapselab.curators.base import (
    CURATORS,
    CurationError,
    CuratorConfig,
    CuratorContext,
    draw,
    keep_best,
    kept_count,
    per_sample_total,
    request_size,
)
from collapselab.curators.sampling import LikelihoodTruncation, LuceChoice, NoCurator, Subsample, TopK

# isort: split
# (the filters first: `collapselab list curators` shows the built-ins in the order they are imported)
from collapselab.curators.discriminator import Discriminator
from collapselab.curators.knowledge_ball import KnowledgeBall
from collapselab.curators.rouge import RougeOracle, rouge1

#: an experiment's ``curator:`` setting: any registered curator by ``name``
CuratorSettings = CURATORS.field()

__all__ = ["CURATORS", "CurationError", "CuratorConfig", "CuratorContext", "CuratorSettings", "Discriminator",
           "KnowledgeBall", "LikelihoodTruncation", "LuceChoice", "NoCurator", "RougeOracle", "Subsample", "TopK",
           "draw", "keep_best", "kept_count", "per_sample_total", "request_size", "rouge1"]
