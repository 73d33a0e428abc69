"""Linear-regression collapse under replace / accumulate (Gerstgrasser et al.) and Dohmatob et al.

Gerstgrasser, Schaeffer, et al. 2024, "Is Model Collapse Inevitable? Breaking the Curse of Recursion by
Accumulating Real and Synthetic Data" (arXiv 2404.01413): T real samples with Gaussian covariates, the
design X reused by every generation, synthetic labels ``X theta_{g-1} + N(0, sigma^2)``. Errors are
``E||theta_g - theta*||^2`` (= the test-error excess for isotropic covariates), generation 0 = the fit
on real data (the paper's iteration g + 1).

Dohmatob, Feng, Kempe 2024, "Model Collapse Demystified: The Case of Regression" (arXiv 2402.07712).
"""

from __future__ import annotations

import numpy as np


def ols_error(d: int, T: int, sigma: float) -> float:
    """``E||theta_hat - theta*||^2 = sigma^2 d / (T - d - 1)`` for OLS on T Gaussian rows (inverse-Wishart mean)."""
    if d + 2 > T:
        raise ValueError("the closed form needs T >= d + 2")
    return sigma**2 * d / (T - d - 1)


def replace_error(g: int | np.ndarray, d: int, T: int, sigma: float) -> np.ndarray:
    """Replace: ``sigma^2 d/(T-d-1) (g+1)`` (exact for fixed or fresh designs)."""
    return ols_error(d, T, sigma) * (np.asarray(g, dtype=np.float64) + 1)


def accumulate_error(g: int | np.ndarray, d: int, T: int, sigma: float) -> np.ndarray:
    """Accumulate: ``sigma^2 d/(T-d-1) sum_{i=1}^{g+1} 1/i^2`` (exact for a design reused across generations;
    bounded by ``pi^2/6`` times the real-data error)."""
    g = np.atleast_1d(np.asarray(g, dtype=np.int64))
    harmonic2 = np.cumsum(1.0 / np.arange(1, g.max() + 2) ** 2)
    out = ols_error(d, T, sigma) * harmonic2[g]
    return out if out.size > 1 else out[0]


def dohmatob_error(g: int | np.ndarray, d: int, T: int, sigma: float, T0: int, sigma0: float) -> np.ndarray:
    """``sigma^2 d/(T-d-1) + g sigma0^2 d/(T0-d-1)``: one fit on T samples with noise sigma and g fits on T0
    synthetic samples labelled with noise sigma0 (OLS is unbiased, so the independent errors add; the
    order of the fits does not matter)."""
    return ols_error(d, T, sigma) + np.asarray(g, dtype=np.float64) * ols_error(d, T0, sigma0)
