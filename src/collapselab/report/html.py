"""The HTML report: the result table (theory beside simulation), the time-to-failure forest plot, one
figure per metric, heat maps, a text family's rewrites beside the real passage, the metric definitions and the
resolved experiment (folded away)."""

from __future__ import annotations

import html
from typing import Any

from collapselab.experiments.schema import Experiment
from collapselab.metrics import METRICS
from collapselab.report.exhibits import Exhibits, declared, sections_html
from collapselab.report.table import REFERENCE_LABEL, caption, columns, plural, reference_row, rule_columns

_CSS = """body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1200px;margin:2em auto;
padding:0 1.2em;color:#1d1d1f;line-height:1.45}
h1{font-size:1.7em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:14px;margin:.6em 0}td,th{border:1px solid #d0d0d0;padding:5px 9px;
text-align:left;vertical-align:top}th{background:#f3f4f6}td.num{font-variant-numeric:tabular-nums}
.ci{color:#555;font-size:12.5px}.th{color:#7a4b00;font-size:12.5px}caption{caption-side:bottom;text-align:left;
color:#555;font-size:13px;padding-top:.4em}figure{margin:1em 0}figure img{max-width:100%;height:auto;
border:1px solid #eee}figcaption{font-size:13px;color:#555}
.figs{display:grid;grid-template-columns:1fr;gap:12px}
pre{background:#f6f8fa;padding:.8em;overflow:auto;font-size:13px}code{background:#f6f8fa;padding:1px 4px}
details summary{cursor:pointer;font-weight:600}.flag{color:#b00020}.ctl{color:#555;font-size:12px;font-weight:normal}
tr.ref{background:#fafafa;color:#444}.wide{overflow-x:auto;max-width:100%}
td.text,blockquote.text{font-family:Georgia,serif;font-size:13.5px;max-width:32em}
blockquote.text{border-left:3px solid #ccc;margin:.6em 0;padding:.2em .8em;color:#333}"""


def _table(exp: Experiment, summary: dict[str, Any]) -> str:
    e = html.escape
    cols = columns(exp, summary)
    head = "<tr><th>arm</th>" + "".join(f"<th>{e(h)}</th>" for h, _ in cols) + "</tr>"
    body = []
    for i, arm in enumerate(exp.arms):
        tds = []
        for _, c in cols:
            lines = c[i]
            parts = [e(lines[0])] + [f"<span class='{'th' if ln.startswith(('theory', 'bound')) else 'ci'}'>"
                                     f"{e(ln)}</span>" for ln in lines[1:]]
            tds.append(f"<td class='num'>{'<br>'.join(parts)}</td>")
        body.append(f"<tr><th>{_arm_cell(arm)}</th>{''.join(tds)}</tr>")
    ref = reference_row(exp, summary, cols)
    if ref is not None:
        body.append(f"<tr class='ref'><th>{REFERENCE_LABEL}</th>" + "".join(
            f"<td class='num'>{e(c[0])}" + (f"<br><span class='ci'>{e(c[1])}</span>" if len(c) > 1 else "") + "</td>"
            for c in ref) + "</tr>")
    return (f"<div class='wide'><table>{head}{''.join(body)}<caption>{e(caption(exp, summary))}</caption></table>"
            f"</div>")


def _arm_cell(arm: Any) -> str:
    """An arm's name in a table, a matched control marked."""
    e = html.escape
    if arm.control_of is None:
        return e(arm.name)
    return f"{e(arm.name)}<br><span class='ctl'>control of {e(arm.control_of)}</span>"


def _cols_table(exp: Experiment, cols: list) -> str:
    e = html.escape
    head = "<tr><th>arm</th>" + "".join(f"<th>{e(h)}</th>" for h, _ in cols) + "</tr>"
    body = "".join(f"<tr><th>{_arm_cell(arm)}</th>" + "".join(
        f"<td class='num'>{e(c[i][0])}<br><span class='ci'>{e(' '.join(c[i][1:]))}</span></td>" for _, c in cols)
        + "</tr>" for i, arm in enumerate(exp.arms))
    return f"<table>{head}{body}</table>"


def _rules(exp: Experiment, summary: dict[str, Any], forests: list[str]) -> str:
    """The failure rules: what each reads, whether it is informative, and a table and forest plot for each rule
    after the primary one (the primary's are in the results table and the first figure)."""
    e = html.escape
    if not exp.rules:
        return ""
    out = [f"<h2>Failure rules</h2><p>Time to failure is the first crossing of the seed-mean curve, interpolated "
           f"between generations; the fidelity ratio is an arm's time to failure over "
           f"<code>{e(exp.reference)}</code>'s. "
           f"An anchored rule reads, per seed, the share of the generation-0 level above its baseline that is kept. "
           f"CIs: percentile bootstrap over seeds, paired across arms (arms share seeds, real data and random "
           f"numbers).</p><ul>"]
    for i, info in enumerate(summary.get("rules", [])):
        verdict = ("informative" if info["informative"] else
                   "<b class='flag'>not informative</b>: " + e("; ".join(info["flags"])))
        mde = info.get("detectable_ratio")
        power = (f"; smallest fidelity ratio detectable at {plural(exp.seeds, 'seed')} (80% power): "
                 f"{float(mde):.2f}" if mde not in (None, "nan") else "")
        out.append(f"<li><b>{'primary' if i == 0 else f'rule {i}'}</b>: <code>{e(info['label'])}</code> "
                   f"({verdict}{power})</li>")
    out.append("</ul>")
    for i in range(1, len(exp.rules)):
        out.append(f"<h3>Rule {i}: <code>{e(exp.rules[i].label())}</code></h3>"
                   + _cols_table(exp, rule_columns(exp, summary, i)))
        out += [_figure(f, f"Time to failure per arm under rule {i}, 95% CI") for f in forests
                if f.endswith(f"_{i}.png")]
    return "".join(out)


def _theory_table(exp: Experiment, summary: dict[str, Any]) -> str:
    e = html.escape
    rows = []
    for arm in exp.arms:
        for metric, c in summary["arms"][arm.name].get("theory", {}).items():
            verdict = (("within" if c["within_bound"] else "above") + " the bound") if c["kind"] == "upper bound" \
                else f"{float(c['z']):+.2f}" if c.get("z") not in (None, "nan") else "n/a"
            rows.append(f"<tr><td>{e(arm.name)}</td><td>{e(metric)}</td><td>{c['generation']}</td>"
                        f"<td>{e(c['source'])} ({e(c['kind'])})</td><td class='num'>{float(c['theory']):.5g}</td>"
                        f"<td class='num'>{float(c['simulation']):.5g} ± {float(c['se']):.2g}</td>"
                        f"<td class='num'>{e(verdict)}</td></tr>")
    if not rows:
        return ""
    return ("<h2>Theory beside simulation</h2><table><tr><th>arm</th><th>metric</th><th>generation</th>"
            "<th>closed form</th><th>theory</th><th>simulation ± SE</th><th>z (or bound check)</th></tr>"
            + "".join(rows) + f"</table><p class='ci'>z = (seed mean - theory) / standard error of the mean over "
            f"{plural(exp.seeds, 'seed')}; |z| below about 3 is agreement within simulation noise.</p>")


def _figure(name: str, title: str) -> str:
    e = html.escape
    return (f"<figure><img src='figures/{e(name)}' alt='{e(title)}'>"
            f"<figcaption>{e(title)}</figcaption></figure>")


def render(exp: Experiment, summary: dict[str, Any], figures: list[str], experiment_yaml: str,
           exhibits: Exhibits | None = None) -> str:
    """The report page; ``figures`` are file names under ``figures/``, ``exhibits`` what the families show."""
    e = html.escape
    forests = [f for f in figures if f.startswith("time_to_failure")]
    forest = [f for f in forests if f == "time_to_failure.png"]
    heat = [f for f in figures if f.startswith("heatmap_")]
    grids = {f"{name}.png" for name in declared(exp)}
    samples = [f for f in figures if f in grids]
    per_metric = [f for f in figures if f not in forests and f not in heat and f not in samples]
    title_of = {f"{m}.png": METRICS[m].title for m in exp.metrics}
    title_of.update({f"heatmap_{m}.png": f"{METRICS[m].title}: last generation over the grid" for m in exp.metrics})
    title_of["time_to_failure.png"] = "Time to failure per arm, 95% CI"
    title_of.update({f: f"{f[:-4].replace('_', ' ').capitalize()} per arm and generation (seed 0)" for f in samples})
    figs = "".join(_figure(f, title_of.get(f, f)) for f in forest + samples)
    figs += "".join(_figure(f, title_of.get(f, f)) for f in heat)
    figs += "<div class='figs'>" + "".join(_figure(f, title_of.get(f, f)) for f in per_metric) + "</div>"
    metrics = "".join(f"<li><b>{e(m)}</b> ({e(METRICS[m].title.lower())}): {e(d)}</li>"
                      for m, d in summary["metrics"].items())
    changed = ""
    if exp.overrides or exp.scale:
        items = ([f"scale={exp.scale}"] if exp.scale and not any(o.startswith("scale=") for o in exp.overrides or [])
                 else []) + list(exp.overrides or [])
        changed = (f"<p class='flag'><b>This run changes the experiment described above</b>: "
                   f"{', '.join(f'<code>{e(o)}</code>' for o in items)} (the description, and any wall time it "
                   f"quotes, are of the experiment as written).</p>")
    flags = [f for f in summary.get("flags", []) if not f.startswith("rule ")]
    if flags:
        changed += "<p class='flag'><b>Flagged</b>: " + "; ".join(e(f) for f in flags) + "</p>"
    for note in summary.get("notes", []):
        changed += f"<p class='flag'><b>Note</b>: {e(note)}</p>"
    setup = (f"{plural(len(exp.arms), 'arm')} x {plural(exp.seeds, 'seed')}; generations 0 to {exp.generations} "
             f"(generation 0 trains on real data only); n = {exp.n} real samples per generation; data "
             f"<code>{e(exp.data.source)}</code>; family <code>{e(exp.family.name)}</code>.")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width,initial-scale=1'><title>{e(exp.name)} - collapselab"
            f"</title><style>{_CSS}</style></head><body><h1>{e(exp.name)}</h1><p>{e(exp.description)}</p>"
            f"{changed}<p>{setup}</p><h2>Results</h2>{_table(exp, summary)}{_rules(exp, summary, forests)}"
            f"{_theory_table(exp, summary)}"
            f"<h2>Figures</h2><p class='ci'>Lines: seed mean per arm; bands: 95% bootstrap CI over "
            f"{plural(exp.seeds, 'seed')}; dashed: closed-form theory.</p>{figs}{sections_html(exhibits or {})}"
            f"<h2>Metrics</h2><ul>{metrics}</ul>"
            f"<details><summary>Resolved experiment (experiment.yaml)</summary><pre>{e(experiment_yaml)}</pre>"
            f"</details></body></html>\n")
