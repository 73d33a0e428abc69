"""The HTML report: settings, the result table, one figure per metric (and heat maps)."""

from __future__ import annotations

import html
from typing import Any

from collapselab.experiments.schema import Experiment
from collapselab.report.table import cells

_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f3f3f3}img{max-width:100%;margin:.5em 0}code,pre{background:#f6f6f6;padding:2px 4px}
.figs{display:grid;grid-template-columns:repeat(auto-fill,minmax(480px,1fr));gap:8px}"""


def render(exp: Experiment, summary: dict[str, Any], figures: list[str], experiment_yaml: str) -> str:
    header, rows = cells(exp, summary)
    e = html.escape
    table = "<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in header) + "</tr>"
    table += "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in r) + "</tr>" for r in rows) + "</table>"
    metrics = "".join(f"<li><b>{e(m)}</b>: {e(d)}</li>" for m, d in summary["metrics"].items())
    fail = exp.failure
    rule = (f"<p>Failure rule: <code>{e(fail.metric)} {e(fail.direction)} {fail.threshold:g}</code>; time to "
            f"failure is the first (interpolated) crossing of the seed-mean curve; fidelity ratio = arm's time / "
            f"<code>{e(exp.reference)}</code>'s; CIs: paired bootstrap over seeds.</p>") if fail else ""
    figs = "".join(f'<img src="figures/{e(f)}" alt="{e(f)}">' for f in figures)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{e(exp.name)}</title>"
            f"<style>{_CSS}</style></head><body><h1>{e(exp.name)}</h1><p>{e(exp.description)}</p>"
            f"<p>{exp.seeds} seeds x {len(exp.arms)} arms, generations 0..{exp.generations}, n = {exp.n} real "
            f"samples per generation, data: <code>{e(exp.data.source)}</code>.</p>{table}{rule}"
            f"<h2>Metrics</h2><ul>{metrics}</ul><h2>Figures</h2><div class='figs'>{figs}</div>"
            f"<h2>Experiment</h2><pre>{e(experiment_yaml)}</pre></body></html>\n")
