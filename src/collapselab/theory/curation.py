"""Ferbach, Bertrand, Bose, Gidel (arXiv 2407.09499), "Self-Consuming Generative Models with Curated Data
Provably Optimize Human Preferences": the exact K-choice curation update on a finite support.

K samples are drawn from ``p_t``; one is kept with probability ``exp(r_i) / sum_j exp(r_j)``. The law of
the kept sample is ``p_{t+1}(x) = p_t(x) H(x)`` with
``H(x) = E[K e^{r(x)} / (e^{r(x)} + sum_{j<K} e^{r(X_j)})]``, ``X_j ~ p_t`` iid, computed exactly through
``1/s = int_0^inf e^{-ts} dt``: ``H(x) = K e^{r(x)} int_0^inf e^{-t e^{r(x)}} (sum_v p_v e^{-t e^{r_v}})^{K-1} dt``.
"""

from __future__ import annotations

import numpy as np


def curate_step(p: np.ndarray, reward: np.ndarray, K: int) -> np.ndarray:
    """One exact (infinite-sample) K-choice curation step; renormalised (the map is K-homogeneous in p)."""
    from scipy.integrate import quad  # here, not at the top: scipy.integrate costs every process 0.4 s

    p = np.asarray(p, dtype=np.float64)
    w = np.exp(np.asarray(reward, dtype=np.float64) - np.max(reward))  # shift-invariant; avoids overflow
    if K == 1:
        return p / p.sum()
    h = np.empty_like(p)
    for i, wx in enumerate(w):
        val, _ = quad(lambda t, wx=wx: np.exp(-t * wx) * np.dot(p, np.exp(-t * w)) ** (K - 1), 0, np.inf,
                      limit=400, epsabs=1e-14, epsrel=1e-12)
        h[i] = K * wx * val
    q = p * h
    return q / q.sum()


def curation_trajectory(p0: np.ndarray, reward: np.ndarray, K: int, generations: int,
                        lam: float | None = None) -> np.ndarray:
    """``[G+1, V]`` distributions: ``p_{t+1} = curate(p_t)``, or ``(p_0 + lam curate(p_t)) / (1 + lam)``
    when real data are mixed in (Bertrand-style ``mix(lam)`` regime)."""
    out = [np.asarray(p0, dtype=np.float64) / np.sum(p0)]
    for _ in range(generations):
        q = curate_step(out[-1], reward, K)
        out.append(q if lam is None else (out[0] + lam * q) / (1 + lam))
    return np.stack(out)
