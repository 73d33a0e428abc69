"""Collapse timing: failure rules, time to failure, fidelity ratio and bootstrap confidence intervals.

- A **failure rule** is (metric, threshold, direction[, baseline]): a chain has failed once the metric is
  ``above`` (or ``below``) the threshold. Without a baseline the threshold is a value of the metric. With
  ``baseline`` the rule is **anchored**, per seed: the curve read is the share of the generation-0 level
  above the baseline that is kept, ``(v_g - b) / (v_0 - b)``, where ``b`` is

  | ``baseline`` | b |
  |---|---|
  | ``chance`` | the metric's chance level (0.5 for the knowledge probe, 0 for memorisation) |
  | a number | that number |
  | a metric name | that metric's value at the seed's generation 0 (e.g. a measured chance level) |
  | ``generation0`` | 0: the curve is ``v_g / v_0``, a ratio to the seed's own start (``relative: true`` is an alias) |

  so ``{metric: kr_split_0, baseline: chance, threshold: 0.5, direction: below}`` reads "half of the
  generation-0 knowledge above chance is lost". A seed whose generation 0 is not above its baseline has no
  such share (NaN, left out of the arm's mean curve) and is counted in the rule's flags.
- **Time to failure** of a curve is the first crossing, linearly interpolated between the last generation
  before it and the first at or past it (0 if generation 0 already fails); a curve that never crosses
  is censored (``inf``, shown as ``>G``).
- An arm's time to failure is that of its **seed-mean curve**; its 95% CI is the percentile bootstrap
  over seeds (resampled mean curves); the **fidelity ratio** is the arm's time over the reference
  arm's, with a paired bootstrap (arms share seeds and real data).
- A rule is **not informative** (:func:`rule_flags`) when the reference arm fails within the first
  generation interval for most seeds, or when its generation-0 level lies within one standard error (the
  spread of one seed's starting value) of the threshold, or, anchored, of the baseline.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

BOOTSTRAP = 1000
LEVEL = 0.95


Baseline = Literal["chance", "generation0"] | float | str


class FailureRule(BaseModel):
    """``metric`` crossing ``threshold`` in ``direction`` marks failure (anchored at ``baseline`` if set)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    metric: str
    threshold: float
    direction: Literal["above", "below"] = "above"
    baseline: float | str | None = Field(
        None, description="chance | generation0 | a number | a metric name: read the threshold as the share of "
                          "the generation-0 level above this baseline that is kept, per seed")
    relative: bool = Field(False, description="the same as baseline: generation0 (kept for older experiments)")

    @model_validator(mode="after")
    def _alias(self) -> FailureRule:
        if self.relative and self.baseline not in (None, "generation0"):
            raise ValueError(f"relative: true means baseline generation0; it cannot go with baseline "
                             f"{self.baseline!r}")
        if isinstance(self.baseline, float) and not np.isfinite(self.baseline):
            raise ValueError("baseline: must be a finite number, chance, generation0 or a metric name")
        return self

    @property
    def anchor(self) -> float | str | None:
        """The baseline, with ``relative: true`` read as ``generation0``."""
        return "generation0" if self.relative else self.baseline

    def label(self) -> str:
        """The rule in words, e.g. ``kr_split_0 below 0.5 of its level above chance``."""
        b = self.anchor
        if b is None:
            return f"{self.metric} {self.direction} {self.threshold:g}"
        if b == "generation0":
            return f"{self.metric} {self.direction} {self.threshold:g}x generation 0"
        what = f"{b:g}" if isinstance(b, float) else b
        return f"{self.metric} {self.direction} {self.threshold:g} of its generation-0 level above {what}"

    def curves(self, values: np.ndarray, chance: float | None = None,
               baseline_values: np.ndarray | None = None) -> np.ndarray:
        """The curves ``[S, G+1]`` this rule reads from the metric's ``values [S, G+1]``: the values themselves,
        or per seed the kept share ``(v_g - b) / (v_0 - b)`` (NaN for a seed that starts at or past ``b``).

        ``chance``: the metric's chance level (``baseline: chance``); ``baseline_values``: the baseline metric's
        values ``[S, G+1]`` (``baseline: <metric>``; its generation-0 value is used).
        """
        v = np.asarray(values, dtype=np.float64)
        b = self.anchor
        if b is None:
            return v
        if b == "generation0":
            base = np.zeros(v.shape[0])
        elif b == "chance":
            if chance is None:
                raise ValueError(f"failure.baseline: metric {self.metric!r} has no chance level")
            base = np.full(v.shape[0], float(chance))
        elif isinstance(b, float):
            base = np.full(v.shape[0], b)
        else:
            if baseline_values is None:
                raise ValueError(f"failure.baseline: the values of metric {b!r} are needed")
            base = np.asarray(baseline_values, dtype=np.float64)[:, 0]
        span = v[:, :1] - base[:, None]
        with np.errstate(invalid="ignore", divide="ignore"):
            out = (v - base[:, None]) / span
        # the share is defined where generation 0 lies above the baseline (any non-zero start for generation0)
        ok = np.abs(span) > 0 if b == "generation0" else span > 0
        return np.where(np.isfinite(span) & ok, out, np.nan)


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
    """Time to failure of the seed-mean curve of ``curves [S, G+1]`` (what the rule reads: see
    :meth:`FailureRule.curves`), its CI and the per-seed times. Seeds with no defined curve (NaN at generation
    0) are left out of the mean (they are counted by :func:`rule_flags`)."""
    c = np.asarray(curves, dtype=np.float64)
    ok = np.isfinite(c[:, 0])
    with np.errstate(invalid="ignore", divide="ignore"):
        if ok.any() and not ok.all():
            mean = np.nanmean(np.where(ok[:, None], c, np.nan), axis=0)
            w = weights * ok[None, :]
            tot = w.sum(axis=1, keepdims=True)
            w = np.where(tot > 0, w / np.where(tot > 0, tot, 1.0), np.nan)
            boot = crossing_times(boot_means(np.where(ok[:, None], c, 0.0), w), rule)
        else:
            mean = c.mean(axis=0)
            boot = crossing_times(boot_means(c, weights), rule)
        point = float(crossing_times(mean, rule))
    lo, hi = order_stat_interval(boot)
    return {"ttf": point, "low": float(lo), "high": float(hi), "boot": boot,
            "per_seed": crossing_times(c, rule)}


def rule_flags(rule: FailureRule, values: np.ndarray, curves: np.ndarray, per_seed: np.ndarray,
               baseline: np.ndarray | None = None) -> list[str]:
    """Why ``rule`` measures little on the reference arm (empty when it is informative).

    ``values [S, G+1]``: the reference arm's metric; ``curves``: what the rule reads (:meth:`FailureRule.curves`);
    ``per_seed``: its per-seed times to failure; ``baseline [S]``: the per-seed baseline level when anchored.
    """
    out = []
    s = len(per_seed)
    early = int(np.sum(per_seed <= 1.0))
    if s and early * 2 > s:
        out.append(f"the reference arm fails within the first generation interval for {early} of {s} seeds")
    undefined = int(np.sum(~np.isfinite(np.asarray(curves, dtype=np.float64)[:, 0])))
    if undefined:
        out.append(f"{undefined} of {s} seeds start at or beyond the baseline (no level above it to lose)")
    start = np.asarray(values, dtype=np.float64)[:, 0]
    if s >= 2 and np.isfinite(start).all():
        sd = float(np.std(start, ddof=1))
        if rule.anchor is None:
            gap = abs(float(np.mean(start)) - rule.threshold)
            if gap <= sd:
                out.append(f"generation 0 ({np.mean(start):.3g}) lies within one standard error ({sd:.2g}) of the "
                           f"threshold {rule.threshold:g}")
        elif baseline is not None and rule.anchor != "generation0":
            above = start - np.asarray(baseline, dtype=np.float64)
            sd = float(np.std(above, ddof=1))
            if abs(float(np.mean(above))) <= sd:
                out.append(f"generation 0 lies within one standard error ({sd:.2g}) of the baseline "
                           f"({np.mean(above):+.3g} above it)")
    return out


def ratio_interval(arm_boot: np.ndarray, ref_boot: np.ndarray) -> tuple[float, float]:
    """Paired bootstrap CI of a ratio of times to failure (censored numerators give ``inf``; resamples whose
    reference time is 0 or censored have no ratio and are left out)."""
    ok = np.isfinite(ref_boot) & (ref_boot > 0)
    if not ok.any():
        return float("nan"), float("nan")
    lo, hi = order_stat_interval(arm_boot[ok] / ref_boot[ok])
    return float(lo), float(hi)
