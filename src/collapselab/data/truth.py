"""Known-truth sources: real data are draws from a model whose parameters are known exactly."""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from collapselab.data.base import SOURCES, SourceConfig, TruthSource
from collapselab.families.categorical import Categorical
from collapselab.families.gaussian import Gaussian
from collapselab.families.gmm import GMM
from collapselab.families.linear import Linear
from collapselab.samples import SampleSet
from collapselab.seeding import SeedTree


class GaussianTruthConfig(SourceConfig):
    """``N(mean, std^2 I)`` in ``dim`` dimensions."""

    source: Literal["gaussian"] = "gaussian"
    dim: int = Field(1, ge=1, le=256)
    mean: float = 0.0
    std: float = Field(1.0, gt=0)


@SOURCES.register
class GaussianTruth(TruthSource):
    name = "gaussian"
    config_class = GaussianTruthConfig
    kind = "points"
    config: GaussianTruthConfig

    @property
    def spec(self) -> dict[str, Any]:
        return {"dim": self.config.dim}

    @cached_property
    def truth(self) -> Gaussian:
        d = self.config.dim
        return Gaussian.from_params(np.full((1, d), self.config.mean), (self.config.std**2 * np.eye(d))[None])


class GMMTruthConfig(SourceConfig):
    """A Gaussian mixture with isotropic components: ``weights``, ``means`` (K x d), ``stds`` (K)."""

    source: Literal["gmm"] = "gmm"
    weights: list[float] = Field(default_factory=lambda: [0.5, 0.3, 0.2])
    means: list[list[float]] = Field(default_factory=lambda: [[-3.0, 0.0], [2.0, 2.0], [2.0, -2.5]])
    stds: list[float] = Field(default_factory=lambda: [1.0, 0.7, 0.5])

    @model_validator(mode="after")
    def _shapes(self) -> GMMTruthConfig:
        k = len(self.weights)
        if len(self.means) != k or len(self.stds) != k:
            raise ValueError("weights, means and stds must have one entry per component")
        if len({len(m) for m in self.means}) != 1:
            raise ValueError("all means must have the same dimension")
        if any(w <= 0 for w in self.weights) or any(s <= 0 for s in self.stds):
            raise ValueError("weights and stds must be > 0")
        return self


@SOURCES.register
class GMMTruth(TruthSource):
    name = "gmm"
    config_class = GMMTruthConfig
    kind = "points"
    config: GMMTruthConfig

    @property
    def spec(self) -> dict[str, Any]:
        return {"dim": len(self.config.means[0])}

    @cached_property
    def truth(self) -> GMM:
        w = np.asarray(self.config.weights, dtype=np.float64)
        means = np.asarray(self.config.means, dtype=np.float64)
        d = means.shape[1]
        covs = np.asarray(self.config.stds)[:, None, None] ** 2 * np.eye(d)
        return GMM.from_params((w / w.sum())[None], means[None], covs[None])


class LinearTruthConfig(SourceConfig):
    """``y = x . theta + N(0, sigma^2)``.

    ``design``: ``gaussian`` (x ~ N(0, I) for every chain and draw), ``fixed_gaussian`` (one design
    ``default_rng(design_seed).normal(size=(rows, dim))`` shared by all chains; labels differ) or
    ``orthogonal`` (``sqrt(rows) [I; 0]``, so ``X0^T X0 = rows * I``).
    ``theta``: a list of ``dim`` values, or ``ones``.
    """

    source: Literal["linear"] = "linear"
    dim: int = Field(8, ge=1, le=512)
    theta: list[float] | Literal["ones"] = "ones"
    sigma: float = Field(1.0, gt=0)
    design: Literal["gaussian", "fixed_gaussian", "orthogonal"] = "gaussian"
    design_seed: int = Field(12345, ge=0)

    @model_validator(mode="after")
    def _theta(self) -> LinearTruthConfig:
        if isinstance(self.theta, list) and len(self.theta) != self.dim:
            raise ValueError(f"theta must have dim = {self.dim} entries")
        return self


@SOURCES.register
class LinearTruth(TruthSource):
    name = "linear"
    config_class = LinearTruthConfig
    kind = "regression"
    config: LinearTruthConfig

    @property
    def spec(self) -> dict[str, Any]:
        return {"dim": self.config.dim}

    @cached_property
    def theta(self) -> np.ndarray:
        t = self.config.theta
        return np.ones(self.config.dim) if t == "ones" else np.asarray(t, dtype=np.float64)

    @cached_property
    def truth(self) -> Linear:
        return Linear.from_params(self.theta[None], self.config.sigma)

    def design_rows(self, offset: int, count: int, n_chains: int, rng: np.random.Generator) -> np.ndarray:
        """Covariates of real positions ``[offset, offset + count)``, ``[C, count, p]``."""
        p, mode = self.config.dim, self.config.design
        if mode == "gaussian":
            return rng.standard_normal((n_chains, count, p))
        rows = offset + count
        if mode == "fixed_gaussian":
            full = np.random.default_rng(self.config.design_seed).normal(size=(rows, p))
        else:
            if rows < p:
                raise ValueError(f"orthogonal design needs at least dim = {p} rows")
            full = np.sqrt(rows) * np.vstack([np.eye(p), np.zeros((rows - p, p))])
        return np.broadcast_to(full[offset:], (n_chains, count, p)).copy()

    def take(self, tree: SeedTree, batch: int, n_chains: int, offset: int, count: int) -> SampleSet:
        rng = tree.rng("data", batch, "real", offset)
        x = self.design_rows(offset, count, n_chains, rng)
        truth = self.truth.tile(n_chains)
        return SampleSet({"x": x, "y": truth.label(x, rng)})

    def heldout(self, tree: SeedTree, batch: int = 0) -> SampleSet:
        rng = tree.rng("data", "heldout")
        x = rng.standard_normal((1, self.heldout_size, self.config.dim))
        return SampleSet({"x": x, "y": self.truth.label(x, rng)})


class CategoricalTruthConfig(SourceConfig):
    """A distribution over ``vocab`` symbols: Zipf with exponent ``zipf`` or explicit ``probs``."""

    source: Literal["categorical"] = "categorical"
    vocab: int = Field(50, ge=2, le=100_000)
    zipf: float = Field(1.1, ge=0)
    probs: list[float] | None = None

    @model_validator(mode="after")
    def _probs(self) -> CategoricalTruthConfig:
        if self.probs is not None:
            if len(self.probs) != self.vocab:
                raise ValueError(f"probs must have vocab = {self.vocab} entries")
            if any(p < 0 for p in self.probs) or sum(self.probs) <= 0:
                raise ValueError("probs must be >= 0 with a positive sum")
        return self


@SOURCES.register
class CategoricalTruth(TruthSource):
    name = "categorical"
    config_class = CategoricalTruthConfig
    kind = "tokens"
    config: CategoricalTruthConfig

    @property
    def spec(self) -> dict[str, Any]:
        return {"vocab": self.config.vocab, "seq_len": 1}

    @cached_property
    def truth(self) -> Categorical:
        if self.config.probs is not None:
            p = np.asarray(self.config.probs, dtype=np.float64)
        else:
            p = np.arange(1, self.config.vocab + 1, dtype=np.float64) ** -self.config.zipf
        return Categorical.from_probs(p[None])
