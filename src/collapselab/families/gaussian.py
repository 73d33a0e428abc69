"""``gaussian``: a d-dimensional Gaussian per chain (Shumailov et al.'s collapse chain)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

import numpy as np

from collapselab.families.base import FAMILIES, Family, FamilyConfig, all_unit, check_keys, combine_weights
from collapselab.families.closed_form import ClosedFormFamily
from collapselab.families.gaussian_math import chi2_sf, gaussian_logpdf, mahalanobis_sq, safe_cholesky
from collapselab.samples import SampleSet


def _moments_1d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and centred sum of squares of each row of ``x [C, n]``.

    One pass (sum and sum of squares) where it is exact to ~1e-12 relative, i.e. where the squared mean
    is below 1e4 times the variance; the other rows (a collapsed chain far from 0) are centred first.
    """
    n = x.shape[1]
    mean = x.sum(axis=1) / n
    ss = np.einsum("cn,cn->c", x, x) - n * mean * mean
    risky = ~(ss > 1e-4 * n * mean * mean)
    if risky.any():
        xc = x[risky] - mean[risky, None]
        ss[risky] = np.einsum("cn,cn->c", xc, xc)
    return mean, ss


class GaussianConfig(FamilyConfig):
    """Settings of the ``gaussian`` family.

    ``covariance``: ``full``, ``diag`` or ``isotropic`` (a multiple of the identity).
    ``estimator``: ``mle`` (divide by the weight sum) or ``unbiased`` (reliability-weighted
    ``sum w - sum w^2 / sum w``, i.e. ``n - 1`` for unit weights; Shumailov's chain).
    """

    name: Literal["gaussian"] = "gaussian"
    covariance: Literal["full", "diag", "isotropic"] = "full"
    estimator: Literal["mle", "unbiased"] = "mle"


@FAMILIES.register
class Gaussian(ClosedFormFamily):
    """Per-chain mean ``[C, d]`` and covariance ``[C, d, d]``; weighted closed-form fit."""
    config_class = GaussianConfig

    name = "gaussian"
    sample_keys = ("x",)
    kind = "points"
    config: GaussianConfig

    def __init__(self, config: GaussianConfig, n_chains: int, spec: Mapping[str, Any]) -> None:
        super().__init__(config, n_chains, spec)
        self.mean: np.ndarray | None = None
        self.cov: np.ndarray | None = None
        self._chol: np.ndarray | None = None

    @classmethod
    def from_params(cls, mean: np.ndarray, cov: np.ndarray, config: GaussianConfig | None = None) -> Gaussian:
        """A fitted model from explicit parameters (``mean [C, d]``, ``cov [C, d, d]``)."""
        mean = np.atleast_2d(np.asarray(mean, dtype=np.float64))
        cov = np.asarray(cov, dtype=np.float64).reshape(mean.shape[0], mean.shape[1], mean.shape[1])
        return cls(config or GaussianConfig(), mean.shape[0], {"dim": mean.shape[1]}).load_state_dict(
            {"mean": mean, "cov": cov})

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, data: SampleSet, weights: np.ndarray | None = None, init: Family | None = None,
            rng: np.random.Generator | None = None) -> Self:
        check_keys(self, data)
        x = data["x"]
        c, n, d = x.shape
        unbiased = self.config.estimator == "unbiased"
        if all_unit(data, weights):
            if d == 1:  # the hot path of long 1-D chains: 2-D arrays, one pass over the data
                mean, ss = _moments_1d(x[..., 0])
                mean, ss = mean[:, None], ss[:, None, None]
            else:
                mean = x.sum(axis=1) / n
                xc = x - mean[:, None, :]
                ss = np.einsum("cni,cnj->cij", xc, xc)
            denom = np.full(c, n - 1.0 if unbiased else float(n))
        else:
            w = combine_weights(data, weights)
            wsum = w.sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.einsum("cn,cnd->cd", w, x) / wsum[:, None]
                xc = x - mean[:, None, :]
                ss = np.einsum("cn,cni,cnj->cij", w, xc, xc)
                denom = wsum - np.einsum("cn,cn->c", w, w) / wsum if unbiased else wsum
        with np.errstate(invalid="ignore", divide="ignore"):
            cov = ss / denom[:, None, None]
        self._set(mean, self._constrain(cov))
        return self

    def _constrain(self, cov: np.ndarray) -> np.ndarray:
        d = cov.shape[-1]
        if d == 1 or self.config.covariance == "full":
            return cov
        eye = np.eye(d)
        if self.config.covariance == "diag":
            return cov * eye
        return (np.trace(cov, axis1=1, axis2=2) / d)[:, None, None] * eye

    def _set(self, mean: np.ndarray, cov: np.ndarray) -> None:
        self.mean, self.cov, self._chol = mean, cov, None

    @property
    def chol(self) -> np.ndarray:
        if self._chol is None:
            if self.cov.shape[-1] == 1:
                self._chol = np.sqrt(self.cov)
            else:
                self._chol = safe_cholesky(self.cov)
        return self._chol

    # -- sampling and scoring ------------------------------------------------------------------
    def sample(self, n: int, rng: np.random.Generator) -> SampleSet:
        c, d = self.mean.shape
        if d == 1:  # 2-D arithmetic: a trailing axis of length 1 makes numpy's inner loops crawl
            z = rng.standard_normal((c, n))
            z *= self.chol[:, 0, 0][:, None]
            z += self.mean[:, 0][:, None]
            return SampleSet({"x": z[..., None]})
        z = np.einsum("cnd,ced->cne", rng.standard_normal((c, n, d)), self.chol)
        z += self.mean[:, None, :]
        return SampleSet({"x": z})

    def log_prob(self, data: SampleSet) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return gaussian_logpdf(data["x"], self.mean, self.chol)

    def confidence(self, data: SampleSet) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            m2 = mahalanobis_sq(data["x"], self.mean, self.chol)
        return chi2_sf(m2, self.mean.shape[-1])

    # -- views used by metrics ---------------------------------------------------------------
    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``[C, d]`` and covariance ``[C, d, d]``."""
        return self.mean, self.cov

    def mixture(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """As a one-component mixture: weights ``[C, 1]``, means ``[C, 1, d]``, covs ``[C, 1, d, d]``."""
        return np.ones((self.n_chains, 1)), self.mean[:, None], self.cov[:, None]

    def parameter(self) -> np.ndarray:
        """The mean vector, compared with the truth by ``param_error``."""
        return self.mean

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        return {} if self.mean is None else {"mean": self.mean, "cov": self.cov}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> Self:
        self._set(np.array(state["mean"], dtype=np.float64), np.array(state["cov"], dtype=np.float64))
        self.n_chains = self.mean.shape[0]
        return self
