"""Aggregation over seeds: mean curves with 95% bootstrap bands, time to failure, fidelity ratio, theory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from collapselab.experiments.schema import Experiment
from collapselab.metrics import METRICS
from collapselab.metrics.timing import (
    FailureRule,
    arm_timing,
    bootstrap_weights,
    mean_and_ci,
    ratio_interval,
    rule_flags,
)
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
    source = exp.make_source()
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


def report_weights(exp: Experiment) -> np.ndarray:
    """The bootstrap resampling weights ``[B, seeds]`` every arm and metric of ``exp`` shares (paired)."""
    return bootstrap_weights(exp.seeds, SeedTree(exp.seed).rng("report"))


@dataclass
class ArmStats:
    """What the summary needs of one arm: bands ``mean/low/high [G+1, metrics]``, failure timing per rule (the
    primary rule first), theory."""

    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    timings: list[dict[str, Any]]
    checks: dict[str, dict[str, Any]]

    @property
    def timing(self) -> dict[str, Any] | None:
        """The primary rule's timing."""
        return self.timings[0] if self.timings else None


def rule_inputs(exp: Experiment, rule: FailureRule, values: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """What ``rule`` reads from one arm's ``values [seeds, G+1, metrics]``: its curves ``[seeds, G+1]`` and the
    per-seed baseline level (``None`` when the rule is not anchored at a level)."""
    v = values[:, :, exp.metrics.index(rule.metric)]
    b = rule.anchor
    chance = METRICS[rule.metric].chance
    other = values[:, :, exp.metrics.index(b)] if isinstance(b, str) and b in exp.metrics else None
    curves = rule.curves(v, chance=chance, baseline_values=other)
    if b is None or b == "generation0":
        base = None
    elif other is not None:
        base = other[:, 0]
    else:
        base = np.full(v.shape[0], float(chance if b == "chance" else b))
    return curves, base


def arm_stats(exp: Experiment, a: int, values: np.ndarray, weights: np.ndarray,
              theory: dict[str, dict[str, TheoryCurve]]) -> ArmStats:
    """Statistics of arm ``a`` from its values ``[seeds, G+1, metrics]`` (independent of the other arms, so
    they can be computed as soon as the arm's chains are done)."""
    mean, low, high = mean_and_ci(values, weights)
    timings = []
    for rule in exp.rules:
        curves, base = rule_inputs(exp, rule, values)
        t = arm_timing(curves, rule, weights)
        t.update(curves=curves, start=values[:, 0, exp.metrics.index(rule.metric)], baseline=base)
        timings.append(t)
    name = exp.arms[a].name
    checks = {m: _theory_check(c, values[:, :, exp.metrics.index(m)]) for m, c in theory.get(name, {}).items()}
    return ArmStats(mean, low, high, timings, {m: c for m, c in checks.items() if c is not None})


def detectable_ratio(ref_boot: np.ndarray, z: float = 1.959964 + 0.841621) -> float:
    """The smallest fidelity ratio the design detects with 80% power at the 5% level (two-sided): from the spread
    of the reference arm's bootstrap times to failure, ``exp((z_0.975 + z_0.8) sqrt(2) SE(log time))`` (an arm as
    noisy as the reference, unpaired: common random numbers make a paired comparison somewhat tighter). NaN when
    the reference rarely fails within the run."""
    b = np.asarray(ref_boot, dtype=np.float64)
    ok = np.isfinite(b) & (b > 0)
    if ok.mean() < 0.9:
        return float("nan")
    return float(np.exp(z * np.sqrt(2.0) * np.std(np.log(b[ok]), ddof=1)))


def _timing_entry(t: dict[str, Any]) -> dict[str, Any]:
    return {"value": num(t["ttf"]), "low": num(t["low"]), "high": num(t["high"]),
            "censored": not np.isfinite(t["ttf"]), "per_seed": [num(v) for v in t["per_seed"]]}


def summarize(exp: Experiment, values: np.ndarray | None, theory: dict[str, dict[str, TheoryCurve]] | None = None,
              stats: list[ArmStats] | None = None,
              refs: dict[str, np.ndarray] | None = None) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``summary.json`` content and the band arrays ``mean/low/high [arms, G+1, metrics]``.

    ``stats`` (one :class:`ArmStats` per arm) may be given instead of computing them from ``values``; ``refs``
    (:func:`collapselab.report.reference.reference_values`) instead of computing them.
    """
    from collapselab.report.reference import reference_summary, reference_values

    theory = theory or {}
    weights = report_weights(exp)
    if stats is None:
        stats = [arm_stats(exp, a, values[a], weights, theory) for a in range(len(exp.arms))]
    refs = reference_values(exp) if refs is None else refs
    bands = {key: np.stack([getattr(st, key) for st in stats]) for key in ("mean", "low", "high")}
    rules = exp.rules
    summary: dict[str, Any] = {
        "experiment": exp.name, "seeds": exp.seeds, "generations": exp.generations,
        "reference_arm": exp.reference,
        "failure": rules[0].model_dump() if rules else None,
        "metrics": {m: METRICS[m].description for m in exp.metrics},
        "arms": {},
    }
    ref_stats = stats[[arm.name for arm in exp.arms].index(exp.reference)]
    if rules:
        summary["rules"] = []
        for i, rule in enumerate(rules):
            t = ref_stats.timings[i]
            flags = rule_flags(rule, np.asarray(t["start"])[:, None], t["curves"], t["per_seed"], t["baseline"])
            summary["rules"].append({"label": rule.label(), "primary": i == 0, **rule.model_dump(),
                                     "informative": not flags, "flags": flags,
                                     "detectable_ratio": num(detectable_ratio(t["boot"]))})
    for arm, st in zip(exp.arms, stats, strict=True):
        entry: dict[str, Any] = {"settings": arm.model_dump(mode="json", exclude={"name"}), "final": {}}
        for k, m in enumerate(exp.metrics):
            entry["final"][m] = {"mean": num(st.mean[-1, k]), "low": num(st.low[-1, k]), "high": num(st.high[-1, k])}
        if st.timings:
            is_ref = arm.name == exp.reference
            entry["time_to_failure"] = _timing_entry(st.timings[0])
            entry["fidelity_ratio"] = _fidelity(st.timings[0], ref_stats.timings[0], is_ref)
            if len(rules) > 1:
                entry["rules"] = [{"label": r.label(), "time_to_failure": _timing_entry(t),
                                   "fidelity_ratio": _fidelity(t, rt, is_ref)}
                                  for r, t, rt in zip(rules, st.timings, ref_stats.timings, strict=True)]
        if st.checks:
            entry["theory"] = st.checks
        summary["arms"][arm.name] = entry
    if theory:
        summary["theory_curves"] = {arm: {m: [num(v) for v in c.values] for m, c in ms.items()}
                                    for arm, ms in theory.items()}
    reference, flags = reference_summary(exp, refs, weights, bands["mean"][:, 0])
    if reference:
        summary["reference"] = reference
    flags = [f"rule {r['label']!r} is not informative: " + "; ".join(r["flags"])
             for r in summary.get("rules", []) if not r["informative"]] + _start_flags(exp, stats, ref_stats) + flags
    summary["flags"] = flags
    notes = _premise_notes(exp, bands)
    if notes:
        summary["notes"] = notes
    return summary, bands


#: an anchored rule reads each arm from its own generation 0: an arm starting this far (as a ratio) from the
#: reference arm's start is flagged, its time to failure measured from a different place
START_BAND = (0.8, 1.25)


def _start_flags(exp: Experiment, stats: list[ArmStats], ref: ArmStats) -> list[str]:
    """Arms whose generation-0 value of the primary rule's metric is far from the reference arm's, when the rule
    is anchored at each seed's own start (``generation0``): a degenerate start would otherwise pass unseen."""
    rule = exp.primary_rule
    if rule is None or rule.anchor != "generation0":
        return []
    base = float(np.mean(ref.timings[0]["start"]))
    out = []
    for arm, st in zip(exp.arms, stats, strict=True):
        start = float(np.mean(st.timings[0]["start"]))
        if base and not START_BAND[0] <= start / base <= START_BAND[1]:
            out.append(f"arm {arm.name!r} starts at {start:.3g} {rule.metric} at generation 0, {start / base:.2f}x "
                       f"the reference arm's {base:.3g}: its time to failure is measured from a different start")
    return out


#: metrics that measure a confidence-aware loss's premise: the model is more confident on its own samples
PREMISE = {"image_confidence_gap": "Bernoulli samples", "image_confidence_gap_mean": "decoder-mean images",
           "confidence_gap": "own samples"}


def _premise_notes(exp: Experiment, bands: dict[str, np.ndarray]) -> list[str]:
    """Where the model is not more confident on its own samples than on real data (a seed-mean gap <= 0 at some
    generation), one line per metric naming the arms: TCE's premise does not hold there. And arms whose loss kept
    (almost) none of its training targets at some generation: they trained on nothing there."""
    out = []
    if "loss_kept" in exp.metrics:
        k = exp.metrics.index("loss_kept")
        for a, arm in enumerate(exp.arms):
            empty = [g for g, v in enumerate(bands["mean"][a, :, k]) if v < 0.01]
            if empty:
                out.append(f"loss_kept: the loss of arm {arm.name!r} kept under 1% of its training targets at "
                           f"generation{'s' * (len(empty) > 1)} {', '.join(map(str, empty))}: the model barely "
                           f"trained there (e.g. TCE dropping every synthetic image its confidence ranks above gamma)")
    for m, what in PREMISE.items():
        if m not in exp.metrics:
            continue
        k = exp.metrics.index(m)
        arms = [arm.name for a, arm in enumerate(exp.arms) if np.nanmin(bands["mean"][a, :, k]) <= 0]
        if arms:
            out.append(f"{m}: the model is not more confident on its {what} than on real data at some generation "
                       f"for arm{'s' * (len(arms) > 1)} {', '.join(arms)}; a loss that truncates confident targets "
                       f"acts there on real-like and on its own samples alike")
    return out
