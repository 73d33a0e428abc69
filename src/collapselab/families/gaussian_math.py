"""Batched Gaussian helpers shared by the ``gaussian`` and ``gmm`` families and their metrics.

Every function takes a leading batch of parameter sets (chains, components) and broadcasts.
"""

from __future__ import annotations

import numpy as np

LOG_2PI = float(np.log(2.0 * np.pi))


def safe_cholesky(cov: np.ndarray) -> np.ndarray:
    """Lower Cholesky factor of a batch of PSD matrices ``[..., d, d]``.

    Falls back to a symmetric eigen square root (then QR) for the matrices that are only
    semi-definite (a collapsed chain), so sampling never fails on a degenerate covariance.
    """
    try:
        return np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        pass
    out = np.empty_like(cov)
    flat_cov, flat_out = cov.reshape(-1, *cov.shape[-2:]), out.reshape(-1, *cov.shape[-2:])
    for i, c in enumerate(flat_cov):
        try:
            flat_out[i] = np.linalg.cholesky(c)
        except np.linalg.LinAlgError:
            vals, vecs = np.linalg.eigh((c + c.T) / 2)
            root = vecs * np.sqrt(np.clip(vals, 0.0, None))  # root @ root.T == c
            # QR of root.T gives a lower-triangular factor with the same outer product
            r = np.linalg.qr(root.T, mode="r")
            low = r.T
            low *= np.where(np.diag(low) < 0, -1.0, 1.0)
            flat_out[i] = low
    return out


def inv_chol(chol: np.ndarray) -> np.ndarray:
    """Inverse of a batch of lower Cholesky factors (small d: batched ``inv`` beats triangular solves)."""
    if chol.shape[-1] == 1:
        with np.errstate(divide="ignore"):
            return 1.0 / chol
    return np.linalg.inv(chol)


def mahalanobis_sq(x: np.ndarray, mean: np.ndarray, chol: np.ndarray,
                   chol_inv: np.ndarray | None = None) -> np.ndarray:
    """Squared Mahalanobis distance. ``x [..., n, d]``, ``mean [..., d]``, ``chol [..., d, d]`` -> ``[..., n]``."""
    diff = x - mean[..., None, :]
    if x.shape[-1] == 1:
        return (diff[..., 0] / chol[..., 0, 0][..., None]) ** 2
    li = inv_chol(chol) if chol_inv is None else chol_inv
    z = np.einsum("...ij,...nj->...ni", li, diff)
    return np.einsum("...ni,...ni->...n", z, z)


def log_det_from_chol(chol: np.ndarray) -> np.ndarray:
    """``log det(L L^T)`` from a batch of Cholesky factors."""
    diag = np.diagonal(chol, axis1=-2, axis2=-1)
    with np.errstate(divide="ignore"):
        return 2.0 * np.sum(np.log(diag), axis=-1)


def gaussian_logpdf(x: np.ndarray, mean: np.ndarray, chol: np.ndarray,
                    chol_inv: np.ndarray | None = None) -> np.ndarray:
    """Log density of ``N(mean, L L^T)`` at ``x``; shapes as in :func:`mahalanobis_sq`."""
    d = x.shape[-1]
    m2 = mahalanobis_sq(x, mean, chol, chol_inv)
    return -0.5 * (m2 + log_det_from_chol(chol)[..., None] + d * LOG_2PI)


def chi2_sf(m2: np.ndarray, d: int) -> np.ndarray:
    """``P(chi2_d > m2)``: the density-quantile confidence of a Gaussian at squared distance ``m2``."""
    from scipy import special  # here, not at the top: scipy.special costs every process a third of a second

    return special.gammaincc(d / 2.0, m2 / 2.0)


def gaussian_product_integral(mean_a: np.ndarray, cov_a: np.ndarray, mean_b: np.ndarray,
                              cov_b: np.ndarray) -> np.ndarray:
    """``int N(x; a) N(x; b) dx = N(mean_a; mean_b, cov_a + cov_b)`` for broadcast batches."""
    cov = cov_a + cov_b
    chol = safe_cholesky(cov)
    return np.exp(gaussian_logpdf((mean_a - mean_b)[..., None, :], np.zeros_like(mean_a - mean_b), chol)[..., 0])


def mixture_l2_sq(wa: np.ndarray, ma: np.ndarray, ca: np.ndarray,
                  wb: np.ndarray, mb: np.ndarray, cb: np.ndarray) -> np.ndarray:
    """Closed-form squared L2 distance ``int (p - q)^2`` between Gaussian mixtures.

    ``w [..., K]``, ``m [..., K, d]``, ``c [..., K, d, d]``; the leading batch axes broadcast.
    """

    def cross(w1, m1, c1, w2, m2, c2):
        g = gaussian_product_integral(m1[..., :, None, :], c1[..., :, None, :, :],
                                      m2[..., None, :, :], c2[..., None, :, :, :])
        return np.einsum("...i,...j,...ij->...", w1, w2, g)

    return cross(wa, ma, ca, wa, ma, ca) + cross(wb, mb, cb, wb, mb, cb) - 2 * cross(wa, ma, ca, wb, mb, cb)


def empirical_cdf(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``P(T < x)`` for each chain: ``table [C, S]`` sorted, ``x [C or 1, ...]`` -> ``[C, ...]``.

    Chains are concatenated with an offset of 2*range so one ``np.searchsorted`` serves them all.
    """
    c, s = table.shape
    x = np.broadcast_to(x, (c,) + x.shape[1:])
    lo = np.minimum(table[:, :1], np.min(x.reshape(c, -1), axis=1, keepdims=True, initial=np.inf))
    hi = np.maximum(table[:, -1:], np.max(x.reshape(c, -1), axis=1, keepdims=True, initial=-np.inf))
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        return _empirical_cdf_loop(table, x)
    span = (hi - lo) * 2.0 + 1.0
    offset = np.cumsum(np.concatenate([[0.0], span[:-1, 0]]))[:, None]
    flat_table = ((table - lo) + offset).ravel()
    flat_x = ((x.reshape(c, -1) - lo) + offset).ravel()
    ranks = np.searchsorted(flat_table, flat_x, side="left") - (np.arange(c) * s)[:, None].repeat(
        x[0].size, axis=1).ravel()
    return (ranks.reshape(x.shape) / s).astype(np.float64)


def _empirical_cdf_loop(table: np.ndarray, x: np.ndarray) -> np.ndarray:
    out = np.empty(x.shape, dtype=np.float64)
    for i in range(table.shape[0]):
        out[i] = np.searchsorted(table[i], x[i], side="left") / table.shape[1]
    return out
