"""The per-arm result table (terminal and HTML share the cell texts)."""

from __future__ import annotations

from typing import Any

from rich.table import Table

from collapselab.experiments.schema import Experiment


def _f(x: Any) -> float:
    return float(x)


def _val(x: float) -> str:
    if x != x:
        return "nan"
    if abs(x) == float("inf"):
        return "inf" if x > 0 else "-inf"
    return f"{x:.4g}"


def _t(v: Any, last: int) -> str:
    v = _f(v)
    return f">{last}" if v == float("inf") else f"{v:.1f}"


def cells(exp: Experiment, summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: arm, final metrics (mean [95% CI]), time to failure, fidelity ratio."""
    header = ["arm"] + [f"{m} @ g{exp.generations}" for m in exp.metrics]
    has_ttf = exp.failure is not None
    if has_ttf:
        header += ["time to failure", f"fidelity ratio (vs {exp.reference})"]
    rows = []
    G = exp.generations
    for arm in exp.arms:
        e = summary["arms"][arm.name]
        row = [arm.name]
        for m in exp.metrics:
            f = e["final"][m]
            row.append(f"{_val(_f(f['mean']))} [{_val(_f(f['low']))}, {_val(_f(f['high']))}]")
        if has_ttf:
            t = e["time_to_failure"]
            row.append(f"{_t(t['value'], G)} [{_t(t['low'], G)}, {_t(t['high'], G)}]")
            r = e["fidelity_ratio"]
            rv = _f(r["value"])
            if rv != rv:
                row.append("n/a (reference censored)" if arm.name != exp.reference else "1")
            elif rv == float("inf"):
                row.append(f">{G / max(_f(summary['arms'][exp.reference]['time_to_failure']['value']), 1e-9):.2f}")
            else:
                row.append(f"{rv:.2f} [{_val(_f(r['low']))}, {_val(_f(r['high']))}]")
        rows.append(row)
    return header, rows


def rich_table(exp: Experiment, summary: dict[str, Any]) -> Table:
    """A rich table of :func:`cells`."""
    header, rows = cells(exp, summary)
    fail = exp.failure
    caption = (f"mean [95% bootstrap CI] over {exp.seeds} seeds; failure: {fail.metric} {fail.direction} "
               f"{fail.threshold:g}" if fail else f"mean [95% bootstrap CI] over {exp.seeds} seeds")
    t = Table(title=f"{exp.name}: {exp.generations} generations", caption=caption)
    for h in header:
        t.add_column(h, overflow="fold")
    for r in rows:
        t.add_row(*r)
    return t
