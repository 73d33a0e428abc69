"""Shumailov et al.'s Gaussian chain and Bertrand et al.'s mixing contraction, in closed form.

Shumailov, Shumaylov, Zhao, Gal, Papernot, Anderson, "The Curse of Recursion" (arXiv 2305.17493; Nature
2024): each generation fits mean and variance to M samples of the previous fit. With ``nf = g + 1`` fits
(generation 0 = the fit on real data) and ``c`` the variance divisor (M-1 unbiased, M for the MLE),
``sigma_g^2 = sigma^2 prod_k chi2_{M-1}/c`` with independent factors.

Bertrand, Bose, Duplessis, Jiralerspong, Gidel, "On the Stability of Iterative Retraining of Generative
Models on their own Data" (arXiv 2310.00429): training on all n real samples plus ``lam n`` synthetic ones
contracts the distance to the real-data optimum by ``lam / (1 + lam)`` per generation.
"""

from __future__ import annotations

import numpy as np


def _c(M: int, unbiased: bool) -> int:
    return M - 1 if unbiased else M


def expected_variance(g: int | np.ndarray, M: int, sigma2: float = 1.0, unbiased: bool = True) -> np.ndarray:
    """``E sigma_g^2 = sigma^2 ((M-1)/c)^(g+1)``: constant for the unbiased estimator, ``((M-1)/M)^(g+1)`` for MLE."""
    return sigma2 * ((M - 1) / _c(M, unbiased)) ** (np.asarray(g, dtype=np.float64) + 1)


def expected_log_variance(g: int | np.ndarray, M: int, sigma2: float = 1.0, unbiased: bool = True) -> np.ndarray:
    """``E log sigma_g^2 = log sigma^2 + (g+1) [psi((M-1)/2) + log(2/c)]`` (negative drift: sigma_g^2 -> 0 a.s.)."""
    from scipy.special import digamma  # here, not at the top: scipy.special costs every process 0.3 s

    nf = np.asarray(g, dtype=np.float64) + 1
    return np.log(sigma2) + nf * (digamma((M - 1) / 2) + np.log(2.0 / _c(M, unbiased)))


def median_variance(g: int | np.ndarray, M: int, sigma2: float = 1.0, unbiased: bool = True) -> np.ndarray:
    """Median of ``sigma_g^2`` (Edgeworth correction of the log-normal approximation): it falls like
    ``exp(-(g+1)/(M-1))`` while the unbiased mean stays at sigma^2."""
    from scipy.special import polygamma

    nu = (M - 1) / 2
    skew_shift = polygamma(2, nu) / (6 * polygamma(1, nu))
    return np.exp(expected_log_variance(g, M, sigma2, unbiased) - skew_shift)


def expected_mean_error(g: int | np.ndarray, M: int, sigma2: float = 1.0, unbiased: bool = True) -> np.ndarray:
    """``E (mu_g - mu)^2 = sigma^2/M sum_{k=0}^{g} ((M-1)/c)^k``: ``sigma^2 (g+1)/M`` for the unbiased
    estimator, ``sigma^2 (1 - ((M-1)/M)^(g+1))`` for the MLE."""
    ratio = (M - 1) / _c(M, unbiased)
    nf = np.asarray(g, dtype=np.float64) + 1
    if ratio == 1:
        return sigma2 * nf / M
    return sigma2 / M * (1 - ratio**nf) / (1 - ratio)


def mix_contraction(lam: float) -> float:
    """Bertrand et al.'s contraction factor of the mix regime: ``lam / (1 + lam)``."""
    return lam / (1.0 + lam)


def mix_recursion(generations: int, n: int, lam: float, sr2: float, e0: float = 0.0,
                  v0: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact moments of a 1-D Gaussian MLE chain under ``mix(lam)``: ``e_t = E (mu_t - m)^2`` and ``v_t = E v_t``.

    ``m``, ``sr2`` are the real data's mean and MLE variance; each generation pools the n real samples with
    ``N_s = lam n`` fresh samples of the previous fit:
    ``e_{t+1} = a^2 (e_t + v_t / N_s)`` with ``a = lam/(1+lam)``, and
    ``v_{t+1} = [sr2 + lam v_t (N_s - 1)/N_s + a (e_t + v_t / N_s)] / (1 + lam)``. Returns arrays over t = 0..G.
    """
    a, ns = mix_contraction(lam), lam * n
    e, v = e0, sr2 if v0 is None else v0
    es, vs = [e], [v]
    for _ in range(generations):
        e, v = a**2 * (e + v / ns), (sr2 + lam * v * (ns - 1) / ns + a * (e + v / ns)) / (1 + lam)
        es.append(e)
        vs.append(v)
    return np.asarray(es), np.asarray(vs)


def mix_fixed_point(n: int, lam: float, sr2: float) -> tuple[float, float]:
    """Stationary ``(e*, v*)`` of :func:`mix_recursion`.

    ``v* = sr2 / (1 + lam/(n(1+2 lam)))`` and ``e* = v* lam/(n(1+2 lam))``: no collapse for finite lam.
    """
    k = lam / (n * (1 + 2 * lam))
    v = sr2 / (1 + k)
    return v * k, v
