"""Collapse timing: failure rules, time to failure, fidelity ratio and bootstrap confidence intervals.

- A **failure rule** is (metric, threshold, direction): a chain has failed once the metric is
  ``above`` (or ``below``) the threshold; with ``relative: true`` the threshold is a ratio to the chain's own
  generation-0 value (e.g. perplexity above 2x where it started).
- **Time to failure** of a curve is the first crossing, linearly interpolated between the last generation
  before it and the first at or past it (0 if generation 0 already fails); a curve that never crosses
  is censored (``inf``, shown as ``>G``).
- An arm's time to failure is that of its **seed-mean curve**; its 95% CI is the percentile bootstrap
  over seeds (resampled mean curves); the **fidelity ratio** is the arm's time over the reference
  arm's, with a paired bootstrap (arms share seeds and real data).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

BOOTSTRAP = 1000
LEVEL = 0.95


class FailureRule(BaseModel):
    """``metric`` crossing ``threshold`` in ``direction`` marks failure."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    metric: str
    threshold: float
    direction: Literal["above", "below"] = "above"
    relative: bool = False

    def label(self) -> str:
        """The rule in words, e.g. ``perplexity above 2x generation 0``."""
        return f"{self.metric} {self.direction} {self.threshold:g}{'x generation 0' if self.relative else ''}"


def crossing_times(curves: np.ndarray, rule: FailureRule) -> np.ndarray:
    """Interpolated first-crossing generation of each curve ``[..., G+1]`` (``inf`` if never)."""
    c = np.asarray(curves, dtype=np.float64)
    thr = rule.threshold
    with np.errstate(invalid="ignore"):
        crossed = c >= thr if rule.direction == "above" else c <= thr
    any_cross = crossed.any(axis=-1)
    first = np.argmax(crossed, axis=-1)
    prev = np.take_along_axis(c, np.maximum(first - 1, 0)[..., None], axis=-1)[..., 0]
    cur = np.take_along_axis(c, first[..., None], axis=-1)[..., 0]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(np.isfinite(cur) & np.isfinite(prev) & (cur != prev), (thr - prev) / (cur - prev), 1.0)
    t = np.where(first == 0, 0.0, first - 1 + np.clip(frac, 0.0, 1.0))
    return np.where(any_cross, t, np.inf)


def order_stat_interval(samples: np.ndarray, axis: int = 0, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval by order statistics (no interpolation, so ``inf`` values stay meaningful; NaN
    sorts last, as in ``np.sort``)."""
    b = samples.shape[axis]
    lo = int(np.floor((1 - level) / 2 * (b - 1)))
    hi = int(np.ceil((1 + level) / 2 * (b - 1)))
    s = np.partition(samples, (lo, hi), axis=axis)  # O(B) selection instead of a full sort
    return np.take(s, lo, axis=axis), np.take(s, hi, axis=axis)


def bootstrap_weights(n_seeds: int, rng: np.random.Generator, b: int = BOOTSTRAP) -> np.ndarray:
    """``[B, S]`` resampling weights (counts / S) of the bootstrap; shared by every arm and metric (paired)."""
    idx = rng.integers(0, n_seeds, size=(b, n_seeds))
    counts = np.bincount((idx + np.arange(b)[:, None] * n_seeds).ravel(), minlength=b * n_seeds)
    return counts.reshape(b, n_seeds) / n_seeds


def boot_means(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Bootstrap means ``[B, ...]`` of ``values [S, ...]`` as one matrix product (no ``[B, S, ...]`` copy).

    Infinite values are carried separately so a resample holding ``inf`` has mean ``inf`` (not NaN); NaN
    values propagate to the resamples that hold them.
    """
    flat = values.reshape(values.shape[0], -1)
    with np.errstate(invalid="ignore"):
        out = weights @ np.where(np.isinf(flat), 0.0, flat)
    pos, neg = np.isposinf(flat), np.isneginf(flat)
    if pos.any() or neg.any():  # float products: numpy's boolean matmul has no BLAS path (100x slower)
        held = (weights > 0).astype(np.float64)
        has_pos, has_neg = held @ pos > 0, held @ neg > 0
        out = np.where(has_pos, np.inf, out)
        out = np.where(has_neg, np.where(has_pos, np.nan, -np.inf), out)
    return out.reshape((weights.shape[0],) + values.shape[1:])


def mean_and_ci(values: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seed mean of ``values [S, ...]`` and its bootstrap 95% CI."""
    with np.errstate(invalid="ignore"):
        mean = values.mean(axis=0)
    lo, hi = order_stat_interval(boot_means(values, weights), axis=0)
    return mean, lo, hi


def arm_timing(curves: np.ndarray, rule: FailureRule, weights: np.ndarray) -> dict[str, np.ndarray | float]:
    """Time to failure of the seed-mean curve of ``curves [S, G+1]``, its CI and the per-seed times (a relative
    rule reads each seed's curve as a ratio to its generation-0 value)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        if rule.relative:
            curves = np.asarray(curves, dtype=np.float64) / np.asarray(curves, dtype=np.float64)[:, :1]
        boot = crossing_times(boot_means(curves, weights), rule)
        point = float(crossing_times(curves.mean(axis=0), rule))
    lo, hi = order_stat_interval(boot)
    return {"ttf": point, "low": float(lo), "high": float(hi), "boot": boot,
            "per_seed": crossing_times(curves, rule)}


def ratio_interval(arm_boot: np.ndarray, ref_boot: np.ndarray) -> tuple[float, float]:
    """Paired bootstrap CI of a ratio of times to failure (censored numerators give ``inf``; resamples whose
    reference time is 0 or censored have no ratio and are left out)."""
    ok = np.isfinite(ref_boot) & (ref_boot > 0)
    if not ok.any():
        return float("nan"), float("nan")
    lo, hi = order_stat_interval(arm_boot[ok] / ref_boot[ok])
    return float(lo), float(hi)
