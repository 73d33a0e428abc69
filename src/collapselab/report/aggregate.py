"""Aggregation over seeds: mean curves with 95% bootstrap bands, time to failure, fidelity ratio, theory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from collapselab.data import make_source
from collapselab.experiments.schema import Experiment
from collapselab.metrics import METRICS
from collapselab.metrics.timing import arm_timing, bootstrap_weights, mean_and_ci, ratio_interval
from collapselab.seeding import SeedTree
from collapselab.theory.predictions import PREDICTIONS, UPPER_BOUNDS


@dataclass(frozen=True)
class TheoryCurve:
    """A closed-form prediction of one metric for one arm over generations 0..G (NaN where silent)."""

    source: str
    values: np.ndarray
    bound: bool = False  # an upper bound on the expectation rather than the expectation


def theory_curves(exp: Experiment) -> dict[str, dict[str, TheoryCurve]]:
    """``{arm: {metric: curve}}`` of every applicable prediction listed in ``exp.theory``."""
    if not exp.theory:
        return {}
    source = make_source(exp.data, exp.heldout)
    out: dict[str, dict[str, TheoryCurve]] = {}
    for arm in exp.arms:
        for name in exp.theory:
            for metric, curve in PREDICTIONS[name](exp, arm, source).items():
                if metric in exp.metrics:
                    out.setdefault(arm.name, {})[metric] = TheoryCurve(
                        name, np.asarray(curve, dtype=np.float64), (name, metric) in UPPER_BOUNDS)
    return out


def num(x: float) -> float | str:
    """A float for JSON: finite as is, else ``"inf"``, ``"-inf"`` or ``"nan"``."""
    return float(x) if np.isfinite(x) else str(float(x))


def _theory_check(curve: TheoryCurve, values: np.ndarray) -> dict[str, Any] | None:
    """Simulation vs theory at the last generation the theory speaks about; ``z`` = (sim - theory) / SE."""
    finite = np.flatnonzero(np.isfinite(curve.values))
    if finite.size == 0:
        return None
    g = int(finite[-1])
    sim = values[:, g]
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = float(np.mean(sim))
        se = float(np.std(sim, ddof=1) / np.sqrt(sim.size)) if sim.size > 1 else float("nan")
        z = (mean - curve.values[g]) / se if se > 0 else float("nan")
    out = {"generation": g, "theory": num(curve.values[g]), "simulation": num(mean), "se": num(se),
           "source": curve.source, "kind": "upper bound" if curve.bound else "expectation"}
    if curve.bound:
        out["within_bound"] = bool(mean <= curve.values[g])
    else:
        out["z"] = num(z)
    return out


def _fidelity(t: dict, ref: dict, is_reference: bool) -> dict[str, Any]:
    """An arm's time to failure over the reference arm's, with its paired bootstrap CI and when it is undefined."""
    if is_reference:
        return {"value": 1.0, "low": 1.0, "high": 1.0, "defined": True, "note": "reference arm"}
    if not np.isfinite(ref["ttf"]):
        return {"value": "nan", "low": "nan", "high": "nan", "defined": False,
                "note": "undefined: the reference arm never fails"}
    if ref["ttf"] == 0:
        return {"value": "nan", "low": "nan", "high": "nan", "defined": False,
                "note": "undefined: the reference arm fails at generation 0"}
    lo, hi = ratio_interval(t["boot"], ref["boot"])
    value = t["ttf"] / ref["ttf"]
    note = "lower bound: the arm never fails" if not np.isfinite(value) else ""
    return {"value": num(value), "low": num(lo), "high": num(hi), "defined": True, "note": note}


def summarize(exp: Experiment, values: np.ndarray, theory: dict[str, dict[str, TheoryCurve]] | None = None
              ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``summary.json`` content and the band arrays ``mean/low/high [arms, G+1, metrics]``."""
    theory = theory or {}
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
            entry["final"][m] = {"mean": num(mean[a, -1, k]), "low": num(low[a, -1, k]), "high": num(high[a, -1, k])}
        if arm.name in timings:
            t = timings[arm.name]
            entry["time_to_failure"] = {"value": num(t["ttf"]), "low": num(t["low"]), "high": num(t["high"]),
                                        "censored": not np.isfinite(t["ttf"]),
                                        "per_seed": [num(v) for v in t["per_seed"]]}
            entry["fidelity_ratio"] = _fidelity(t, timings[exp.reference], arm.name == exp.reference)
        checks = {m: _theory_check(c, values[a, :, :, exp.metrics.index(m)])
                  for m, c in theory.get(arm.name, {}).items()}
        checks = {m: c for m, c in checks.items() if c is not None}
        if checks:
            entry["theory"] = checks
        summary["arms"][arm.name] = entry
    if theory:
        summary["theory_curves"] = {arm: {m: [num(v) for v in c.values] for m, c in ms.items()}
                                    for arm, ms in theory.items()}
    return summary, bands
