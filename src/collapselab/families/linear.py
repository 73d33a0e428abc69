"""``linear``: y = x . theta + N(0, sigma^2), fitted by weighted least squares (optionally ridge).

The model is the conditional ``p(y | x)``; sampling labels a design:

- ``fresh``: new covariates ``x ~ N(0, I_p)`` at every draw;
- ``fixed``: the covariates of the first fit (the real design X0), cycled (Gerstgrasser, Dohmatob);
- ``block``: Yi et al.'s design: the right singular vectors ``v_j`` of X0, each repeated ``n / p`` times
  (``n`` must be a multiple of ``p``).

The design is fixed at the first fit (on real data) and kept for the chain's life (it is part of the
state). ``resample(like)`` relabels ``like``'s covariates, which is how verifier quotas redraw a rejected
sample at the same x. ``noise``: ``estimated`` uses the weighted residual variance (``sum w - p`` dof);
``fixed`` samples with the configured ``sigma`` (the setting of the closed-form results).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

import numpy as np
from pydantic import Field

from collapselab.families.base import FAMILIES, Family, FamilyConfig, check_keys, combine_weights, per_sample
from collapselab.families.closed_form import ClosedFormFamily
from collapselab.families.gaussian_math import LOG_2PI
from collapselab.samples import SampleSet


def predict(x: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """``x . theta`` for ``x [C or 1, n, p]`` and ``theta [C, p]`` -> ``[C, n]``."""
    return (x @ theta[..., None])[..., 0]


class LinearConfig(FamilyConfig):
    """Settings of the ``linear`` family."""

    name: Literal["linear"] = "linear"
    design: Literal["fresh", "fixed", "block"] = "fixed"
    noise: Literal["estimated", "fixed"] = "fixed"
    sigma: float = Field(1.0, gt=0)
    ridge: float = Field(0.0, ge=0)

    def check(self, ctx: Any) -> str | None:
        dim = getattr(ctx.data, "dim", 1)
        if self.design == "block" and any(m % dim for m in ctx.sizes):
            return f"the block design needs n_synthetic ({sorted(ctx.sizes)}) to be a multiple of data.dim ({dim})"
        return None


@FAMILIES.register
class Linear(ClosedFormFamily):
    """Per-chain ``theta [C, p]``, noise variance ``sigma2 [C]`` and the kept design."""
    config_class = LinearConfig

    name = "linear"
    sample_keys = ("x", "y")
    kind = "regression"
    config: LinearConfig

    def __init__(self, config: LinearConfig, n_chains: int, spec: Mapping[str, Any]) -> None:
        super().__init__(config, n_chains, spec)
        self.theta: np.ndarray | None = None
        self.sigma2: np.ndarray | None = None
        self.design: np.ndarray | None = None  # [C, m, p] real covariates of the first fit
        self.directions: np.ndarray | None = None  # [C, p, p] rows v_j (block design)

    @classmethod
    def from_params(cls, theta: np.ndarray, sigma: float) -> Linear:
        """A fitted model from explicit parameters (``theta [C, p]``); used for the known truth."""
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        model = cls(LinearConfig(design="fresh", sigma=sigma), theta.shape[0], {"dim": theta.shape[1]})
        return model.load_state_dict({"theta": theta, "sigma2": np.full(theta.shape[0], sigma**2)})

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, data: SampleSet, weights: np.ndarray | None = None, init: Family | None = None,
            rng: np.random.Generator | None = None) -> Self:
        check_keys(self, data)
        x, y = data["x"], data["y"]
        c, n, p = x.shape
        w = per_sample(combine_weights(data, weights))
        xw = x * w[..., None]
        gram = np.swapaxes(xw, 1, 2) @ x
        if self.config.ridge:
            gram = gram + self.config.ridge * np.eye(p)
        rhs = np.einsum("cnp,cn->cp", xw, y)
        theta = np.linalg.solve(gram, rhs[..., None])[..., 0]
        if self.config.noise == "fixed":
            sigma2 = np.full(c, self.config.sigma**2)
        else:
            resid = y - predict(x, theta)
            with np.errstate(divide="ignore", invalid="ignore"):
                sigma2 = np.einsum("cn,cn->c", w, resid**2) / (w.sum(axis=1) - p)
        self.theta, self.sigma2 = theta, sigma2
        if self.design is None:
            self.design = np.array(x)
            if self.config.design == "block":
                self.directions = np.linalg.svd(x, full_matrices=False)[2]
        return self

    # -- sampling and scoring ------------------------------------------------------------------
    def covariates(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` covariate rows per chain under the configured design, ``[C, n, p]``."""
        c, p = self.theta.shape
        mode = self.config.design
        if mode == "fresh":
            return rng.standard_normal((c, n, p))
        if self.design is None:
            raise ValueError(f"linear design {mode!r} needs a first fit on real data")
        if mode == "fixed":
            return self.design[:, np.arange(n) % self.design.shape[1]]
        if n % p:
            raise ValueError(f"linear block design: synthetic n ({n}) must be a multiple of p ({p})")
        return np.repeat(self.directions, n // p, axis=1)

    def label(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Labels ``y = x . theta + sigma * eps`` for covariates ``x [C, n, p]``."""
        y = predict(x, self.theta)
        y += np.sqrt(self.sigma2)[:, None] * rng.standard_normal(y.shape)
        return y

    def sample(self, n: int, rng: np.random.Generator) -> SampleSet:
        x = self.covariates(n, rng)
        return SampleSet({"x": x, "y": self.label(x, rng)})

    def resample(self, like: SampleSet, rng: np.random.Generator) -> SampleSet:
        x = np.broadcast_to(like["x"], (self.n_chains,) + like["x"].shape[1:])
        return SampleSet({"x": x, "y": self.label(x, rng)})

    def _z(self, data: SampleSet) -> np.ndarray:
        resid = data["y"] - predict(data["x"], self.theta)
        with np.errstate(divide="ignore", invalid="ignore"):
            return resid / np.sqrt(self.sigma2)[:, None]

    def log_prob(self, data: SampleSet) -> np.ndarray:
        z = self._z(data)
        return -0.5 * (z**2 + np.log(self.sigma2)[:, None] + LOG_2PI)

    def confidence(self, data: SampleSet) -> np.ndarray:
        """``P(|Y - x theta| > |y - x theta|) = erfc(|z| / sqrt 2)``."""
        from scipy import special  # here, not at the top: scipy.special costs every process a third of a second

        return special.erfc(np.abs(self._z(data)) / np.sqrt(2.0))

    # -- views used by metrics ---------------------------------------------------------------
    def parameter(self) -> np.ndarray:
        """``theta``, compared with the truth by ``param_error``."""
        return self.theta

    def noise_variance(self) -> np.ndarray:
        """``sigma^2`` per chain."""
        return self.sigma2

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        if self.theta is None:
            return {}
        state = {"theta": self.theta, "sigma2": self.sigma2}
        if self.design is not None:
            state["design"] = self.design
        if self.directions is not None:
            state["directions"] = self.directions
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> Self:
        self.theta = np.array(state["theta"], dtype=np.float64)
        self.sigma2 = np.array(state["sigma2"], dtype=np.float64)
        self.design = np.array(state["design"]) if "design" in state else None
        self.directions = np.array(state["directions"]) if "directions" in state else None
        self.n_chains = self.theta.shape[0]
        return self
