"""``gmm``: a Gaussian mixture per chain, fitted by weighted EM batched over chains.

scikit-learn's ``GaussianMixture`` has neither sample weights nor a chain axis, so EM is written here:
k-means++ initialisation from the chain's rng (or a warm start), then EM with per-sample weights,
``tol`` on the change of the weighted mean log-likelihood (as scikit-learn), ``max_iter``, and
``reg_covar`` added to each covariance's diagonal. Converged chains are frozen while the others go on,
so every chain obeys its own stopping rule exactly.

Confidence is the density-quantile ``u(x) = P_model(log p(X) < log p(x))``; the distribution of
``log p(X)`` has no closed form for a mixture, so each fit fixes per-chain seeds (part of the state,
hence resumable) from which a sorted table of ``log p`` at ``confidence_samples`` draws of the fitted
model is made on first use.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

import numpy as np
from pydantic import Field

from collapselab.families.base import Family, FamilyConfig, check_keys, combine_weights
from collapselab.families.gaussian_math import LOG_2PI, empirical_cdf, inv_chol, log_det_from_chol, safe_cholesky
from collapselab.samples import SampleSet

_EPS = 10 * np.finfo(np.float64).eps  # as scikit-learn: keeps empty components finite
_SMALL_D = 8  # up to this dimension, quadratic forms are written out per coordinate (faster than einsum)


def _lse(a: np.ndarray, axis: int) -> np.ndarray:
    """log-sum-exp over a small axis (scipy's version carries array-API overhead that dominates here)."""
    m = np.max(a, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(divide="ignore"):
        return np.log(np.sum(np.exp(a - m), axis=axis)) + np.squeeze(m, axis=axis)


def _component_logpdf(x: np.ndarray, means: np.ndarray, chol_inv: np.ndarray, logdet: np.ndarray) -> np.ndarray:
    """``log N(x_n; mean_k, cov_k)`` -> ``[C, K, n]`` for ``x [C, n, d]`` (C may be 1 and broadcast)."""
    d = x.shape[-1]
    if d <= _SMALL_D:
        xt = np.moveaxis(x, -1, 1)  # [C, d, n]
        diffs = [xt[:, None, j, :] - means[:, :, j, None] for j in range(d)]
        m2 = 0.0
        for i in range(d):
            z = chol_inv[:, :, i, 0, None] * diffs[0]
            for j in range(1, i + 1):
                z += chol_inv[:, :, i, j, None] * diffs[j]
            m2 = m2 + z * z
    else:
        diff = x[:, None] - means[:, :, None]
        z = diff @ np.swapaxes(chol_inv, -1, -2)
        m2 = np.sum(z * z, axis=-1)
    return -0.5 * (m2 + logdet[..., None] + d * LOG_2PI)


def _sample(weights: np.ndarray, means: np.ndarray, chol: np.ndarray, n: int,
            rng: np.random.Generator) -> np.ndarray:
    """``n`` draws per chain: a component by its weight, then ``mean_k + L_k z``; ``[C, n, d]``."""
    c, k, d = means.shape
    cum = np.cumsum(weights, axis=1)
    u = rng.random((c, n)) * cum[:, -1:]
    comp = np.minimum((u[..., None] >= cum[:, None, :]).sum(-1), k - 1)  # [C, n]
    z = rng.standard_normal((c, n, d))
    x = np.empty_like(z)
    for j in range(k):  # per component (K is small): no per-sample gather of Cholesky factors
        xj = z @ np.swapaxes(chol[:, j], -1, -2) + means[:, j, None, :]
        np.copyto(x, xj, where=(comp == j)[..., None])
    return x


class GMMConfig(FamilyConfig):
    """Settings of the ``gmm`` family."""

    name: Literal["gmm"] = "gmm"
    components: int = Field(2, ge=1, le=64)
    covariance: Literal["full", "diag"] = "full"
    tol: float = Field(1e-3, gt=0)
    max_iter: int = Field(100, ge=1)
    reg_covar: float = Field(1e-6, ge=0)
    confidence_samples: int = Field(4096, ge=64)


class GMM(Family):
    """Mixture weights ``[C, K]``, means ``[C, K, d]``, covariances ``[C, K, d, d]``."""

    name = "gmm"
    sample_keys = ("x",)
    config: GMMConfig

    def __init__(self, config: GMMConfig, n_chains: int, spec: Mapping[str, Any]) -> None:
        super().__init__(config, n_chains, spec)
        self.weights: np.ndarray | None = None
        self.means: np.ndarray | None = None
        self.covs: np.ndarray | None = None
        self.table_seed: np.ndarray | None = None
        self._table: np.ndarray | None = None
        self.n_iter: np.ndarray | None = None
        self._chol = self._chol_inv = self._logdet = None

    @classmethod
    def from_params(cls, weights: np.ndarray, means: np.ndarray, covs: np.ndarray,
                    config: GMMConfig | None = None) -> GMM:
        """A fitted single-chain (or batched) model from explicit parameters (confidence table seed 0)."""
        weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        means = np.asarray(means, dtype=np.float64).reshape(weights.shape[0], weights.shape[1], -1)
        d = means.shape[-1]
        covs = np.asarray(covs, dtype=np.float64).reshape(weights.shape[0], weights.shape[1], d, d)
        cfg = config or GMMConfig(components=weights.shape[1])
        model = cls(cfg, weights.shape[0], {"dim": d})
        model._set(weights, means, covs)
        model.table_seed = np.zeros(weights.shape[0], dtype=np.int64)
        return model

    # -- EM ----------------------------------------------------------------------------------
    def fit(self, data: SampleSet, weights: np.ndarray | None = None, init: Family | None = None,
            rng: np.random.Generator | None = None) -> Self:
        check_keys(self, data)
        if rng is None:
            raise ValueError("gmm.fit needs an rng (k-means++ initialisation, confidence table)")
        x = data["x"]
        s = combine_weights(data, weights)
        if init is not None and getattr(init, "means", None) is not None:
            w0, m0, c0 = init.weights.copy(), init.means.copy(), init.covs.copy()
        else:
            w0, m0, c0 = self._kmeans_pp(x, s, rng)
        self._set(*self._em(x, s, w0, m0, c0))
        # the confidence table is drawn lazily (CE fits never need it) from per-chain seeds fixed here
        self.table_seed = rng.integers(0, np.iinfo(np.int64).max, size=x.shape[0], dtype=np.int64)
        self._table = None
        return self

    def _m_step(self, x: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weighted M-step: ``r [C, K, n]`` responsibilities already multiplied by sample weights."""
        nk = r.sum(axis=-1) + _EPS
        weights = nk / nk.sum(axis=-1, keepdims=True)
        means = (r @ x) / nk[..., None]
        d = x.shape[-1]
        if d <= _SMALL_D:
            xt = np.moveaxis(x, -1, 1)
            diffs = [xt[:, None, j, :] - means[:, :, j, None] for j in range(d)]
            covs = np.zeros(means.shape + (d,))
            diag = self.config.covariance == "diag"
            for i in range(d):
                rd = r * diffs[i]
                for j in range(i, i + 1 if diag else d):
                    covs[..., i, j] = covs[..., j, i] = np.sum(rd * diffs[j], axis=-1)
        else:
            diff = x[:, None] - means[:, :, None]
            covs = np.swapaxes(diff * r[..., None], -1, -2) @ diff
            if self.config.covariance == "diag":
                covs = covs * np.eye(d)
        covs /= nk[..., None, None]
        covs += self.config.reg_covar * np.eye(d)
        return weights, means, covs

    def _kmeans_pp(self, x: np.ndarray, s: np.ndarray, rng: np.random.Generator):
        """Weighted k-means++ seeding per chain, then one M-step on the hard assignment."""
        c, n, _ = x.shape
        k = self.config.components
        rows = np.arange(c)
        centers = np.empty((c, k, x.shape[-1]))
        prob = s.copy()
        dist = np.full((c, n), np.inf)
        for j in range(k):
            cdf = np.cumsum(prob, axis=1)
            total = cdf[:, -1:]
            # a chain whose remaining D^2 mass is 0 (duplicates) falls back to its weights
            cdf = np.where(total > 0, cdf, np.cumsum(s, axis=1))
            u = rng.random((c, 1)) * cdf[:, -1:]
            idx = np.minimum((cdf < u).sum(axis=1), n - 1)
            centers[:, j] = x[rows, idx]
            dist = np.minimum(dist, ((x - centers[:, j, None]) ** 2).sum(-1))
            prob = s * dist
        nearest = ((x[:, None] - centers[:, :, None]) ** 2).sum(-1).argmin(axis=1)  # [C, n]
        r = (nearest[:, None, :] == np.arange(k)[None, :, None]) * s[:, None, :]
        return self._m_step(x, r)

    def _em(self, x, s, weights, means, covs):
        c = x.shape[0]
        n_iter = np.zeros(c, dtype=np.int64)
        lower = np.full(c, -np.inf)
        active = np.arange(c)
        ssum = s.sum(axis=1)
        for it in range(1, self.config.max_iter + 1):
            xa, sa = (x, s) if active.size == c else (x[active], s[active])
            chol = safe_cholesky(covs[active])
            with np.errstate(divide="ignore"):
                logp = np.log(weights[active])[..., None] + _component_logpdf(
                    xa, means[active], inv_chol(chol), log_det_from_chol(chol))
            ll = _lse(logp, axis=1)  # [Ca, n]
            new_lower = np.einsum("cn,cn->c", sa, ll) / ssum[active]
            r = np.exp(logp - ll[:, None]) * sa[:, None, :]
            weights[active], means[active], covs[active] = self._m_step(xa, r)
            n_iter[active] = it
            done = np.abs(new_lower - lower[active]) < self.config.tol
            lower[active] = new_lower
            active = active[~done]
            if active.size == 0:
                break
        self.n_iter = n_iter
        return weights, means, covs

    def _set(self, weights, means, covs) -> None:
        self.weights, self.means, self.covs = weights, means, covs
        self._chol = safe_cholesky(covs)
        self._chol_inv = inv_chol(self._chol)
        self._logdet = log_det_from_chol(self._chol)

    # -- sampling and scoring ------------------------------------------------------------------
    def sample(self, n: int, rng: np.random.Generator) -> SampleSet:
        return SampleSet({"x": _sample(self.weights, self.means, self._chol, n, rng)})

    def log_prob(self, data: SampleSet) -> np.ndarray:
        with np.errstate(divide="ignore"):
            logp = np.log(self.weights)[..., None] + _component_logpdf(data["x"], self.means, self._chol_inv,
                                                                       self._logdet)
        return _lse(logp, axis=1)

    @property
    def table(self) -> np.ndarray:
        """Sorted ``log p`` of ``confidence_samples`` draws per chain (each chain from its own seed)."""
        if self._table is None:
            if self.table_seed is None:
                raise ValueError("gmm confidence needs a fitted model (fit fixes the quantile-table seeds)")
            s = self.config.confidence_samples
            rows = []
            for i, seed in enumerate(self.table_seed):
                sl = slice(i, i + 1)
                x = _sample(self.weights[sl], self.means[sl], self._chol[sl], s,
                            np.random.Generator(np.random.PCG64(int(seed))))
                logp = np.log(self.weights[sl])[..., None] + _component_logpdf(
                    x, self.means[sl], self._chol_inv[sl], self._logdet[sl])
                rows.append(_lse(logp, axis=1)[0])
            self._table = np.sort(np.stack(rows), axis=1)
        return self._table

    def confidence(self, data: SampleSet) -> np.ndarray:
        return empirical_cdf(self.table, self.log_prob(data))

    # -- views used by metrics ---------------------------------------------------------------
    def mixture(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Weights ``[C, K]``, means ``[C, K, d]``, covariances ``[C, K, d, d]``."""
        return self.weights, self.means, self.covs

    def moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean ``[C, d]`` and covariance ``[C, d, d]`` of the whole mixture."""
        mean = np.einsum("ck,ckd->cd", self.weights, self.means)
        second = np.einsum("ck,ckij->cij", self.weights,
                           self.covs + np.einsum("cki,ckj->ckij", self.means, self.means))
        return mean, second - np.einsum("ci,cj->cij", mean, mean)

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        if self.weights is None:
            return {}
        state = {"weights": self.weights, "means": self.means, "covs": self.covs}
        if self.table_seed is not None:
            state["table_seed"] = self.table_seed
        if self.n_iter is not None:
            state["n_iter"] = self.n_iter
        return state

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> Self:
        self._set(np.array(state["weights"], dtype=np.float64), np.array(state["means"], dtype=np.float64),
                  np.array(state["covs"], dtype=np.float64))
        self.table_seed = np.array(state["table_seed"]) if "table_seed" in state else None
        self._table = None
        self.n_iter = np.array(state["n_iter"]) if "n_iter" in state else None
        self.n_chains = self.weights.shape[0]
        return self
