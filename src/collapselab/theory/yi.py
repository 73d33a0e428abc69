"""Yi, Liu, Cheng, Xu (arXiv 2510.16657): verifier-filtered synthetic retraining in linear regression.

Setting: ``theta_0`` is OLS on real data ``(X0, y0)`` (``X0 = U diag(mu_j) V^T``); each round labels the
block design (``v_j`` repeated n times) with the current estimate plus ``N(0, sigma^2)`` noise, keeps
``n`` samples per direction accepted by the knowledge ball ``abs(y - v_j.theta_c) <= r + sigma_c``
(``sigma_c = sigma sqrt(2/pi)``, ``theta_c = theta* + Delta u``), and refits OLS on them alone, so
``theta_{t+1} = sum_j v_j mean(accepted y_j)``. The formulas follow the authors' released code
(Theorem 3.1 as implemented there); the contraction bound and plateau are the paper's Section 4 results,
re-derived (per direction, the map is a ``rho``-contraction with ``rho = theta(-b, b)``).
"""

from __future__ import annotations

import math

import numpy as np

SIGMA_C = math.sqrt(2.0 / math.pi)


def _pdf(x: np.ndarray) -> np.ndarray:
    # N(0, 1)'s density and distribution function as scipy.stats.norm computes them (its _norm_pdf and
    # special.ndtr, bitwise the same): importing scipy.stats costs every CLI call half a second
    return np.exp(-np.asarray(x, dtype=float) ** 2 / 2.0) / np.sqrt(2 * np.pi)


def _z(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.special import ndtr  # here, not at the top: scipy.special costs every CLI call a third of a second

    return ndtr(b) - ndtr(a)


def C(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``C(a, b) = (phi(b) - phi(a)) / Z``; the mean of N(0,1) truncated to [a, b] is ``-C``."""
    return (_pdf(b) - _pdf(a)) / _z(a, b)


def theta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``theta(a, b)``: the variance of N(0,1) truncated to [a, b]."""
    return 1.0 - (b * _pdf(b) - a * _pdf(a)) / _z(a, b) - C(a, b) ** 2


def lam(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``lambda(a, b)``: minus half the third central moment of N(0,1) truncated to [a, b]."""
    z = _z(a, b)
    pa, pb = _pdf(a), _pdf(b)
    return (((b * b - 1) * pb - (a * a - 1) * pa) / (2 * z) + 3 * (pb - pa) * (b * pb - a * pa) / (2 * z**2)
            + (pb - pa) ** 3 / z**3)


def truncated_moments(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(m1, m2, m3) = (-C, theta, -2 lambda)``: mean, variance, third central moment of N(0,1) on [a, b]."""
    return -C(a, b), theta(a, b), -2.0 * lam(a, b)


def real_baseline(X0: np.ndarray, sigma: float = 1.0) -> float:
    """``E ||theta_0 - theta*||^2 = sigma^2 sum_j mu_j^-2`` for OLS on the real design X0."""
    mu = np.linalg.svd(np.asarray(X0, dtype=np.float64), compute_uv=False)
    return float(sigma**2 * np.sum(mu**-2.0))


def one_round_mse(X0: np.ndarray, r: float, delta: float, u: np.ndarray, n: int, sigma: float = 1.0) -> float:
    """``E ||theta_1 - theta*||^2`` after one verified round (Theorem 3.1, leading order in 1/mu_j^2).

    ``sigma^2 sum_j [m2_j/n + m1_j^2 + (m2_j^2 + m1_j m3_j)/mu_j^2]`` with the moments of N(0,1)
    truncated to ``[(p_j - w)/sigma, (p_j + w)/sigma]``, ``p_j = Delta v_j.u``, ``w = r + sigma_c``;
    ``n`` is the number of accepted samples per direction (quota mode).
    """
    _, mu, vt = np.linalg.svd(np.asarray(X0, dtype=np.float64), full_matrices=False)
    proj = vt @ (delta * np.asarray(u, dtype=np.float64))
    w = r + sigma * SIGMA_C
    m1, m2, m3 = truncated_moments((proj - w) / sigma, (proj + w) / sigma)
    return float(np.sum(sigma**2 * (m2 / n + m1**2 + (m2**2 + m1 * m3) / mu**2)))


def rho(r: float, sigma: float = 1.0) -> float:
    """Contraction factor ``rho = theta(-b, b)``, ``b = (r + sigma_c)/sigma``."""
    b = (r + sigma * SIGMA_C) / sigma
    return float(theta(np.asarray(-b), np.asarray(b)))


def contraction_bound(t: int | np.ndarray, d0_sq: float, r: float, n: int, p: int, sigma: float = 1.0):
    """Theorem 4.1: ``E||theta_t - theta_c||^2 <= rho^{2t} d0^2 + p sigma^2 rho (1 - rho^{2t}) / (n (1 - rho^2))``."""
    q = rho(r, sigma)
    t = np.asarray(t, dtype=np.float64)
    return q ** (2 * t) * d0_sq + p * sigma**2 * q / n * (1 - q ** (2 * t)) / (1 - q**2)


def plateau(delta: float, r: float, n: int, p: int, sigma: float = 1.0) -> float:
    """Long-run error to the truth: ``Delta^2 + p sigma^2 rho / (n (1 - rho^2))`` (the knowledge center's bias
    plus the verifier-limited variance)."""
    q = rho(r, sigma)
    return delta**2 + p * sigma**2 * q / (n * (1 - q**2))
