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

from collapselab.families.base import FAMILIES, Family, FamilyConfig, check_keys, combine_weights
from collapselab.families.closed_form import ClosedFormFamily
from collapselab.families.gaussian_math import LOG_2PI, empirical_cdf, inv_chol, log_det_from_chol, safe_cholesky
from collapselab.samples import SampleSet

_EPS = 10 * np.finfo(np.float64).eps  # as scikit-learn: keeps empty components finite
_SMALL_D = 8  # up to this dimension, quadratic forms are written out per coordinate (faster than einsum)


def _normalize(logp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Responsibilities ``softmax(logp)`` over components and the log-likelihood ``logsumexp(logp)``,
    sharing one ``exp`` pass (``logp [C, K, n]``)."""
    m = logp.max(axis=1)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(logp - m[:, None])
    total = e.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return e / total[:, None], np.log(total) + m


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


def _features(x: np.ndarray) -> np.ndarray:
    """Per-sample features ``[x_i x_j (i <= j), x, 1]`` -> ``[C, n, F]``: every E-step log-density and every
    M-step sufficient statistic of a Gaussian mixture is linear in them (small d)."""
    iu, ju = np.triu_indices(x.shape[-1])
    return np.concatenate([x[..., iu] * x[..., ju], x, np.ones(x.shape[:-1] + (1,))], axis=-1)


def _log_coefficients(weights: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """``A [C, K, F]`` with ``log w_k + log N(x; mean_k, cov_k) = A_k . features(x)``."""
    d = means.shape[-1]
    chol = safe_cholesky(covs)
    li = inv_chol(chol)
    prec = np.swapaxes(li, -1, -2) @ li
    iu, ju = np.triu_indices(d)
    quad = -0.5 * prec[..., iu, ju] * np.where(iu == ju, 1.0, 2.0)
    lin = (prec @ means[..., None])[..., 0]
    with np.errstate(divide="ignore"):
        const = (np.log(weights) - 0.5 * np.einsum("cki,cki->ck", lin, means)
                 - 0.5 * log_det_from_chol(chol) - 0.5 * d * LOG_2PI)
    return np.concatenate([quad, lin, const[..., None]], axis=-1)


def _from_statistics(stats: np.ndarray, d: int, reg: float, diag: bool):
    """Mixture parameters from ``stats = r @ features`` (``[C, K, F]``: sums of r x x^T, r x and r)."""
    nk = stats[..., -1] + _EPS
    weights = nk / nk.sum(axis=-1, keepdims=True)
    means = stats[..., -1 - d:-1] / nk[..., None]
    iu, ju = np.triu_indices(d)
    second = np.empty(stats.shape[:-1] + (d, d))
    second[..., iu, ju] = stats[..., : len(iu)]
    second[..., ju, iu] = stats[..., : len(iu)]
    covs = second / nk[..., None, None] - means[..., :, None] * means[..., None, :]
    if diag:
        covs = covs * np.eye(d)
    covs += reg * np.eye(d)
    return weights, means, covs


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


@FAMILIES.register
class GMM(ClosedFormFamily):
    """Mixture weights ``[C, K]``, means ``[C, K, d]``, covariances ``[C, K, d, d]``."""
    config_class = GMMConfig

    name = "gmm"
    sample_keys = ("x",)
    kind = "points"
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
        # EM runs on data centred per chain: the expanded quadratic forms of the small-d path stay
        # well-conditioned, and the fitted means are shifted back at the end
        shift = data["x"].mean(axis=1)
        x = data["x"] - shift[:, None, :]
        s = combine_weights(data, weights)
        phi = _features(x) if x.shape[-1] <= _SMALL_D else None
        if init is not None and getattr(init, "means", None) is not None:
            w0, m0, c0 = init.weights.copy(), init.means - shift[:, None, :], init.covs.copy()
        else:
            w0, m0, c0 = self._kmeans_pp(x, s, phi, rng)
        w, m, cv = self._em(x, s, phi, w0, m0, c0)
        self._set(w, m + shift[:, None, :], cv)
        # the confidence table is drawn lazily (CE fits never need it) from per-chain seeds fixed here
        self.table_seed = rng.integers(0, np.iinfo(np.int64).max, size=x.shape[0], dtype=np.int64)
        self._table = None
        return self

    def _m_step(self, x: np.ndarray, r: np.ndarray, phi: np.ndarray | None):
        """Weighted M-step: ``r [C, K, n]`` responsibilities already multiplied by sample weights."""
        if phi is not None:
            return _from_statistics(r @ phi, x.shape[-1], self.config.reg_covar,
                                    self.config.covariance == "diag")
        nk = r.sum(axis=-1) + _EPS
        weights = nk / nk.sum(axis=-1, keepdims=True)
        means = (r @ x) / nk[..., None]
        d = x.shape[-1]
        diff = x[:, None] - means[:, :, None]
        covs = np.swapaxes(diff * r[..., None], -1, -2) @ diff
        if self.config.covariance == "diag":
            covs = covs * np.eye(d)
        covs /= nk[..., None, None]
        covs += self.config.reg_covar * np.eye(d)
        return weights, means, covs

    def _kmeans_pp(self, x: np.ndarray, s: np.ndarray, phi: np.ndarray | None, rng: np.random.Generator):
        """Greedy weighted k-means++ seeding per chain, then one M-step on the hard assignment.

        Greedy as in scikit-learn: each new centre is the best (lowest weighted potential) of
        ``2 + floor(log K)`` candidates drawn with probability proportional to ``weight * D^2``.
        """
        c, n, _ = x.shape
        k = self.config.components
        trials = 2 + int(np.log(k))
        rows = np.arange(c)[:, None]
        sq = np.einsum("cnd,cnd->cn", x, x)

        def sq_dist(points: np.ndarray) -> np.ndarray:  # [C, T, d] -> [C, T, n]
            cross = points @ np.swapaxes(x, 1, 2)
            return np.maximum(sq[:, None, :] - 2 * cross + np.einsum("ctd,ctd->ct", points, points)[..., None], 0.0)

        def draw(prob: np.ndarray, m: int) -> np.ndarray:  # m indices per chain, probability ~ prob
            cdf = np.cumsum(prob, axis=1)
            cdf = np.where(cdf[:, -1:] > 0, cdf, np.cumsum(s, axis=1))  # all mass on chosen points: fall back
            u = rng.random((c, m)) * cdf[:, -1:]
            return np.minimum((cdf[:, None, :] < u[..., None]).sum(axis=2), n - 1)

        centers = np.empty((c, k, x.shape[-1]))
        first = draw(s, 1)
        centers[:, 0] = x[rows, first][:, 0]
        closest = sq_dist(centers[:, :1])[:, 0]
        for j in range(1, k):
            cand = draw(s * closest, trials)  # [C, T]
            new = np.minimum(closest[:, None, :], sq_dist(x[rows, cand]))  # [C, T, n]
            best = np.einsum("cn,ctn->ct", s, new).argmin(axis=1)
            centers[:, j] = x[rows[:, 0], cand[rows[:, 0], best]]
            closest = new[rows[:, 0], best]
        nearest = sq_dist(centers).argmin(axis=1)  # [C, n]
        r = (nearest[:, None, :] == np.arange(k)[None, :, None]) * s[:, None, :]
        return self._m_step(x, r, phi)

    def _em(self, x, s, phi, weights, means, covs):
        c = x.shape[0]
        n_iter = np.zeros(c, dtype=np.int64)
        lower = np.full(c, -np.inf)
        active = np.arange(c)
        ssum = s.sum(axis=1)
        phi_t = None if phi is None else np.ascontiguousarray(np.swapaxes(phi, 1, 2))
        for it in range(1, self.config.max_iter + 1):
            full = active.size == c
            xa, sa = (x, s) if full else (x[active], s[active])
            if phi is None:
                chol = safe_cholesky(covs[active])
                with np.errstate(divide="ignore"):
                    logp = np.log(weights[active])[..., None] + _component_logpdf(
                        xa, means[active], inv_chol(chol), log_det_from_chol(chol))
                pa = None
            else:  # one batched product gives every component's log-density at every sample
                pa = phi if full else phi[active]
                logp = _log_coefficients(weights[active], means[active], covs[active]) @ (
                    phi_t if full else phi_t[active])
            r, ll = _normalize(logp)  # [Ca, K, n], [Ca, n]
            new_lower = np.einsum("cn,cn->c", sa, ll) / ssum[active]
            r *= sa[:, None, :]
            weights[active], means[active], covs[active] = self._m_step(xa, r, pa)
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
        x = data["x"]
        if x.shape[-1] <= _SMALL_D:  # centred per chain, then one batched product (as in EM)
            shift = np.einsum("ck,ckd->cd", self.weights, self.means)
            phi_t = np.swapaxes(_features(x - shift[:, None, :]), 1, 2)
            coef = _log_coefficients(self.weights, self.means - shift[:, None, :], self.covs)
            return _lse(coef @ phi_t, axis=1)
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
