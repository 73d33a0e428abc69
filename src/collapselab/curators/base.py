"""Curators: what filters the previous model's samples before they are trained on (the base every curator, built-in
or plugin, subclasses, the registry of curators, and the helpers they share).

A curator draws its candidates from the model itself, so it decides how many it needs: the count-based
ones oversample and keep exactly the requested number per chain (training sizes stay as the regime
says); ``knowledge_ball`` in ``quota`` mode redraws each rejected sample (at the same covariates) until
it is accepted, as the authors' code does; in ``filter`` mode it keeps a variable number per chain by
giving rejected samples weight 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from pydantic import BaseModel, ConfigDict

from collapselab.data.base import Source
from collapselab.families.base import Family
from collapselab.regimes import Request
from collapselab.registry import SettingRegistry
from collapselab.samples import SampleSet, concat
from collapselab.settings import SettingContext


class CurationError(RuntimeError):
    """A curator could not produce its samples (e.g. a verifier that accepts almost nothing)."""


@dataclass
class CuratorContext:
    """What a curator may know besides the model: the data source (and so the truth, if known).

    ``state``: arrays a curator keeps across generations (saved in the chain's checkpoints, restored on
    resume); ``cache``: objects rebuilt from them in this process.
    """

    source: Source
    state: dict[str, np.ndarray] = field(default_factory=dict)
    cache: dict = field(default_factory=dict)


def draw(model: Family, request: Request, rng: np.random.Generator, factor: float = 1.0) -> SampleSet:
    """Candidates from ``model``: ``ceil(count * factor)`` samples, or a rewrite of a template set
    tiled ``ceil(factor)`` times."""
    if isinstance(request, int):
        return model.sample(math.ceil(request * factor - 1e-9), rng)
    reps = math.ceil(factor - 1e-9)
    return model.resample(request if reps == 1 else concat([request] * reps), rng)


def request_size(request: Request) -> int:
    return request if isinstance(request, int) else request.n


def keep_best(cand: SampleSet, score: np.ndarray, count: int) -> SampleSet:
    """The ``count`` candidates with the highest score per chain (kept in their drawn order)."""
    idx = np.argsort(-score, axis=1, kind="stable")[:, :count]
    return cand.take(np.sort(idx, axis=1))


def per_sample_total(values: np.ndarray) -> np.ndarray:
    """Sum per-token values over a sample's tokens: ``[C, n, ...]`` -> ``[C, n]``."""
    return values if values.ndim == 2 else values.reshape(values.shape[0], values.shape[1], -1).sum(-1)


class CuratorConfig(BaseModel):
    """Base of all curators (``name`` selects one)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    name: str

    def curate(self, model: Family, request: Request, rng: np.random.Generator,
               ctx: CuratorContext) -> SampleSet:
        """The curated samples for ``request`` (a count, or a set to rewrite), drawn from ``model``."""
        raise NotImplementedError

    def check(self, ctx: SettingContext) -> str | None:
        """Why this curator cannot serve the arm of ``ctx`` (one line), or ``None``; checked at validation."""
        return None


#: every curator by name: the built-ins below, plugins (entry points ``collapselab.curators``, ``plugins:``)
CURATORS = SettingRegistry("curator", CuratorConfig)


def kept_count(keep: float, size: int) -> int:
    """How many of ``size`` samples a ``keep`` share is (at least one)."""
    return max(1, round(keep * size))
