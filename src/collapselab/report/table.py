"""The per-arm result table; the terminal and the HTML report share the cell texts.

Columns: arm, time to failure, fidelity ratio, then each metric at the last generation (seed mean over its
95% bootstrap CI; with the closed-form value and the z-score of the simulation where a theory applies).
In the terminal each cell takes two or three short lines and the columns are split into as many tables as
the width needs (80 columns when piped), the arm column repeated in each.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from collapselab.experiments.schema import Experiment

Column = tuple[str, list[list[str]]]  # header, per arm the lines of its cell


def _v(x: Any) -> str:
    x = float(x)
    if x != x:
        return "nan"
    if abs(x) == float("inf"):
        return "inf" if x > 0 else "-inf"
    return f"{x:.3g}"


def _g(x: Any, last: int) -> str:
    x = float(x)
    return f">{last}" if x == float("inf") else f"{x:.1f}"


def arm_label(arm: Any, sep: str = " ") -> str:
    """An arm's name, with ``(control of X)`` for a matched control."""
    return arm.name if arm.control_of is None else f"{arm.name}{sep}(control of {arm.control_of})"


def plural(n: int, word: str) -> str:
    """``1 seed``, ``8 seeds``."""
    return f"{n} {word}{'s' * (n != 1)}"


def _ttf(t: dict[str, Any], last: int) -> list[str]:
    v, lo, hi = (float(t[x]) for x in ("value", "low", "high"))
    if all(x == float("inf") for x in (v, lo, hi)):
        return [f">{last}", "(not failed)"]
    return [_g(v, last), f"[{_g(lo, last)}, {_g(hi, last)}]"]


def _ratio(r: dict[str, Any], last: int, ref_ttf: float) -> list[str]:
    if r.get("note") == "reference arm":
        return ["1", "(reference)"]
    if not r["defined"]:
        return ["undefined", "(ref. never fails)" if "never" in r["note"] else "(ref. fails at g0)"]
    v = float(r["value"])
    if v == float("inf"):
        return [f">{last / ref_ttf:.2f}", "(not failed)"]
    return [f"{v:.2f}", f"[{_v(r['low'])}, {_v(r['high'])}]"]


def _metric(final: dict[str, Any], check: dict[str, Any] | None) -> list[str]:
    lines = [_v(final["mean"]), f"[{_v(final['low'])}, {_v(final['high'])}]"]
    if check is not None:
        at = f"@g{check['generation']} " if check.get("at_last") is False else ""
        if check["kind"] == "upper bound":
            lines.append(f"bound {at}{_v(check['theory'])}")
        else:
            lines.append(f"theory {at}{_v(check['theory'])} z={_z(check['z'])}")
    return lines


def _z(z: Any) -> str:
    z = float(z)
    return "n/a" if z != z else f"{z:+.1f}"


def rule_columns(exp: Experiment, summary: dict[str, Any], rule: int = 0) -> list[Column]:
    """Time to failure and fidelity ratio under rule ``rule`` (0: the primary), one cell per arm."""
    arms = [a.name for a in exp.arms]
    G = exp.generations

    def pick(a: str, key: str) -> dict[str, Any]:
        e = summary["arms"][a]
        return e["rules"][rule][key] if rule else e[key]

    ref_ttf = float(pick(exp.reference, "time_to_failure")["value"])
    return [("time to failure", [_ttf(pick(a, "time_to_failure"), G) for a in arms]),
            (f"fidelity ratio (vs {exp.reference})", [_ratio(pick(a, "fidelity_ratio"), G, ref_ttf) for a in arms])]


def columns(exp: Experiment, summary: dict[str, Any]) -> list[Column]:
    """Every column of the result table (the arm column excluded): the primary rule's timing, then the metrics."""
    arms = [a.name for a in exp.arms]
    out: list[Column] = rule_columns(exp, summary) if exp.rules else []
    G = exp.generations
    for m in exp.metrics:
        cells = []
        for a in arms:
            e = summary["arms"][a]
            check = e.get("theory", {}).get(m)
            if check is not None:
                check = {**check, "at_last": check["generation"] == G}
            cells.append(_metric(e["final"][m], check))
        out.append((m, cells))
    return out


def reference_row(exp: Experiment, summary: dict[str, Any], cols: list[Column]) -> list[list[str]] | None:
    """The reference row's cells (a metric's value on real data or on the pretrained base, over the seeds'
    held-out data), one per column, or ``None`` when no metric has one."""
    refs = summary.get("reference") or {}
    if not refs:
        return None
    return [[_v(refs[h]["mean"]), f"({refs[h]['source']})"] if h in refs else [""] for h, _ in cols]


REFERENCE_LABEL = "reference"


def caption(exp: Experiment, summary: dict[str, Any] | None = None) -> str:
    """What the numbers are: last generation, seed mean [95% bootstrap CI], failure rule (and whether it is
    informative)."""
    text = (f"metrics at generation {exp.generations}: seed mean [95% bootstrap CI] over "
            f"{plural(exp.seeds, 'seed')}")
    if exp.rules:
        text += f"; failure: {exp.rules[0].label()}"
        rules = (summary or {}).get("rules") or []
        if rules and not rules[0]["informative"]:
            text += " (NOT INFORMATIVE: " + "; ".join(rules[0]["flags"]) + ")"
        if len(exp.rules) > 1:
            text += f"; {plural(len(exp.rules) - 1, 'more rule')} in the report"
    if exp.theory:
        text += "; theory: closed form and z = (simulation - theory) / standard error"
    if (summary or {}).get("reference"):
        text += "; reference: the metric on real data in place of the model's samples, or of the pretrained base"
    flags = [f for f in (summary or {}).get("flags", []) if not f.startswith("rule ")]
    if flags:
        text += "; FLAGGED: " + "; ".join(flags)
    return text


def cells(exp: Experiment, summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and one-line rows (the HTML report's table)."""
    cols = columns(exp, summary)
    header = ["arm"] + [h for h, _ in cols]
    rows = [[arm_label(arm)] + [" ".join(c[i]) for _, c in cols] for i, arm in enumerate(exp.arms)]
    ref = reference_row(exp, summary, cols)
    if ref is not None:
        rows.append([REFERENCE_LABEL] + [" ".join(c) for c in ref])
    return header, rows


def _table(exp: Experiment, chunk: list[Column], arm_w: int, title: str | None,
           ref: list[list[str]] | None = None) -> Table:
    t = Table(box=box.SIMPLE_HEAD, padding=(0, 1), title=title, title_justify="left", pad_edge=False)
    t.add_column("arm", overflow="fold", max_width=arm_w)
    for header, _ in chunk:
        t.add_column(header, overflow="fold")
    for a, arm in enumerate(exp.arms):
        t.add_row(arm_label(arm, "\n"), *["\n".join(c[a]) for _, c in chunk],
                  end_section=a < len(exp.arms) - 1 or ref is not None)
    if ref is not None:
        t.add_row(REFERENCE_LABEL, *["\n".join(c) for c in ref], style="dim")
    return t


def rich_table(exp: Experiment, summary: dict[str, Any], width: int | None = None) -> Group:
    """The result table for a terminal ``width`` columns wide (default 80), split into several if needed."""
    from rich.console import Console

    width = width or 80
    measure = Console(width=10_000).measure
    cols = columns(exp, summary)
    arm_w = min(max(len(REFERENCE_LABEL), *(len(a.name) for a in exp.arms)), 24)
    chunks: list[list[Column]] = [[]]
    for col in cols:  # greedy: add columns while the table's natural width fits
        if chunks[-1] and measure(_table(exp, chunks[-1] + [col], arm_w, None)).maximum > width:
            chunks.append([])
        chunks[-1].append(col)
    title = f"{exp.name}: {plural(len(exp.arms), 'arm')} x {plural(exp.seeds, 'seed')}, generations 0-{exp.generations}"
    ref = reference_row(exp, summary, cols)
    at, tables = 0, []
    for i, chunk in enumerate(chunks):
        part = None if ref is None else ref[at:at + len(chunk)]
        at += len(chunk)
        if part is not None and not any(c != [""] for c in part):
            part = None
        tables.append(_table(exp, chunk, arm_w, title if i == 0 else None, part))
    return Group(*tables, Text(caption(exp, summary), style="dim"))
