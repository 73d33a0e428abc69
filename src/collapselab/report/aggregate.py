"""Aggregation over seeds: mean curves with 95% bootstrap bands, time to failure, fidelity ratio, theory."""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.data import make_source
from collapselab.experiments.schema import Experiment
from collapselab.metrics import METRICS
from collapselab.metrics.timing import arm_timing, bootstrap_weights, mean_and_ci, ratio_interval
from collapselab.seeding import SeedTree
from collapselab.theory.predictions import PREDICTIONS


def theory_curves(exp: Experiment) -> dict[str, dict[str, np.ndarray]]:
    """``{arm: {metric: curve}}`` of every applicable prediction listed in ``exp.theory``."""
    if not exp.theory:
        return {}
    source = make_source(exp.data, exp.heldout)
    out: dict[str, dict[str, np.ndarray]] = {}
    for arm in exp.arms:
        for name in exp.theory:
            for metric, curve in PREDICTIONS[name](exp, arm, source).items():
                if metric in exp.metrics:
                    out.setdefault(arm.name, {})[metric] = np.asarray(curve, dtype=np.float64)
    return out


def _num(x: float) -> float | str:
    return float(x) if np.isfinite(x) else str(float(x))


def summarize(exp: Experiment, values: np.ndarray,
              theory: dict[str, dict[str, np.ndarray]] | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``summary.json`` content and the band arrays ``mean/low/high [arms, G+1, metrics]``."""
    weights = bootstrap_weights(exp.seeds, SeedTree(exp.seed).rng("report"))
    mean, low, high = (np.empty(values.shape[:1] + values.shape[2:]) for _ in range(3))
    for a in range(values.shape[0]):
        mean[a], low[a], high[a] = mean_and_ci(values[a], weights)
    bands = {"mean": mean, "low": low, "high": high}
    summary: dict[str, Any] = {
        "experiment": exp.name, "seeds": exp.seeds, "generations": exp.generations,
        "reference_arm": exp.reference,
        "failure": exp.failure.model_dump() if exp.failure else None,
        "metrics": {m: METRICS[m].description for m in exp.metrics},
        "arms": {},
    }
    timings = {}
    if exp.failure is not None:
        k = exp.metrics.index(exp.failure.metric)
        for a, arm in enumerate(exp.arms):
            timings[arm.name] = arm_timing(values[a, :, :, k], exp.failure, weights)
    for a, arm in enumerate(exp.arms):
        entry: dict[str, Any] = {"settings": arm.model_dump(mode="json", exclude={"name"}), "final": {}}
        for k, m in enumerate(exp.metrics):
            entry["final"][m] = {"mean": _num(mean[a, -1, k]), "low": _num(low[a, -1, k]),
                                 "high": _num(high[a, -1, k])}
        if arm.name in timings:
            t = timings[arm.name]
            ref = timings[exp.reference]
            entry["time_to_failure"] = {"value": _num(t["ttf"]), "low": _num(t["low"]), "high": _num(t["high"]),
                                        "censored": not np.isfinite(t["ttf"]),
                                        "per_seed": [_num(v) for v in t["per_seed"]]}
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = t["ttf"] / ref["ttf"] if np.isfinite(ref["ttf"]) else np.nan
            lo, hi = ratio_interval(t["boot"], ref["boot"])
            entry["fidelity_ratio"] = {"value": _num(ratio), "low": _num(lo), "high": _num(hi)}
        summary["arms"][arm.name] = entry
    if theory:
        summary["theory"] = {arm: {m: [_num(v) for v in c] for m, c in ms.items()} for arm, ms in theory.items()}
    return summary, bands
