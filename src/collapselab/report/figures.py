"""Figures (PNG bytes; the run store writes them).

- One figure per metric: the seed mean per arm with its 95% bootstrap band over seeds, closed-form theory
  dashed, the failure threshold labelled. Up to ``MAX_OVERLAID`` arms share one panel (legend outside the
  plot, 9 pt); more arms get small multiples (one panel per arm, shared axes).
- A forest plot of time to failure per arm with its 95% CI (censored arms drawn as arrows past the last
  generation), when the experiment has a failure rule.
- For a 2-D grid: last-generation heat maps, simulation beside theory, full width with a labelled colour bar.
- For every image-grid exhibit of a family: a grid of samples per arm and generation (:mod:`.exhibits`).
"""

from __future__ import annotations

import io
import math
import os
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from collapselab.exhibits import ImageGrid
from collapselab.experiments.schema import Experiment
from collapselab.metrics import METRICS
from collapselab.report.exhibits import Exhibits, mosaic
from collapselab.report.exhibits import figure_names as exhibit_figures
from collapselab.report.table import plural

Figure = tuple[str, bytes]  # file name, PNG bytes
Job = tuple[str, Callable[..., bytes], tuple]  # file name, a function of this module, its arguments
MAX_OVERLAID = 8
LEGEND_PT = 9
DPI = 110


def _figure(figsize: tuple[float, float], **kw):
    """A matplotlib Figure on an Agg canvas (no pyplot: no global state, safe off the main thread)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=figsize, dpi=DPI, **kw)
    FigureCanvasAgg(fig)
    return fig


def _png(fig, tight: bool = False) -> bytes:
    """PNG bytes of ``fig``: drawn once and encoded by Pillow at a low compression level (the default
    ``savefig(bbox_inches="tight")`` draws twice); ``tight`` for figures whose
    layout is not computed by hand."""
    buf = io.BytesIO()
    if tight:
        fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
        return buf.getvalue()
    from PIL import Image

    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    Image.fromarray(np.ascontiguousarray(rgba[..., :3])).save(buf, format="png", compress_level=1)
    return buf.getvalue()


def _text_width(fig, texts: list[str], size: float) -> float:
    """Width in pixels of the widest of ``texts`` at ``size`` points."""
    from matplotlib.font_manager import FontProperties

    renderer, prop = fig.canvas.get_renderer(), FontProperties(size=size)
    return max(renderer.get_text_width_height_descent(t, prop, ismath=False)[0] for t in texts)


def _wrap(name: str, width: int = 30) -> str:
    """An arm name on lines of at most ``width`` characters, broken after commas (grid arms)."""
    import textwrap

    return "\n".join(textwrap.wrap(name.replace(",", ", "), width)).replace(", ", ",")


def _integer_generations(ax, generations: int) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=6))
    ax.set_xlim(-0.05 * max(generations, 1), generations + 0.05 * max(generations, 1))


def _threshold_rules(exp: Experiment, name: str) -> list:
    """The rules on metric ``name`` with a threshold in the metric's own units (an anchored rule's threshold
    is a share per seed: no single line to draw)."""
    return [r for r in exp.rules if r.metric == name and r.anchor is None]


def _threshold_label(rules: list) -> str:
    return "failure: " + "; ".join(r.label() for r in rules)


def _seeds(exp: Experiment) -> str:
    return f"{exp.seeds} seed{'s' * (exp.seeds != 1)}"


#: per arm (cycled): line styles and markers, so arms whose curves coincide stay visible
ARM_STYLES = ("-", "--", "-.", ":")
ARM_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _identical(bands, k: int, names: list[str]) -> dict[int, str]:
    """Arms whose seed-mean curve of metric ``k`` equals an earlier arm's: index -> that arm's name."""
    out = {}
    for a in range(len(names)):
        for b in range(a):
            if np.array_equal(bands["mean"][a, :, k], bands["mean"][b, :, k], equal_nan=True):
                out[a] = names[b]
                break
    return out


def _draw_arm(ax, g, bands, a: int, k: int, color, label: str | None, curve) -> None:
    mean, lo, hi = (bands[x][a, :, k] for x in ("mean", "low", "high"))
    few = len(g) <= 30
    ax.plot(g, mean, color=color, lw=1.8, label=label, ls=ARM_STYLES[a % len(ARM_STYLES)],
            marker=ARM_MARKERS[a % len(ARM_MARKERS)] if few else None, ms=4.5 - 0.4 * (a % 3),
            markevery=max(1, len(g) // 12), fillstyle="none" if a % 2 else "full")
    ok = np.isfinite(lo) & np.isfinite(hi)
    if ok.any():
        ax.fill_between(g, np.where(ok, lo, np.nan), np.where(ok, hi, np.nan), color=color, alpha=0.18, lw=0)
    if curve is not None:
        style = ":" if curve.bound else "--"
        few = np.isfinite(curve.values).sum() <= 3
        ax.plot(g, curve.values, color=color, ls=style, lw=1.4, marker="D" if few else None, ms=5,
                markerfacecolor="none")


_STYLE_WORDS = {"--": "dashed", ":": "dotted", "-.": "dash-dot", "-": "solid"}


def _key_handles(exp: Experiment, has_theory: bool, has_bound: bool, thresholds: list,
                 ref: dict[str, Any] | None = None) -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    band = f"95% CI over {_seeds(exp)}" if exp.seeds > 1 else "no CI (1 seed)"
    handles = [Patch(color="0.5", alpha=0.3, label=band)]
    if has_theory:
        handles.append(Line2D([], [], color="0.3", ls="--", lw=1.4, label="theory (closed form)"))
    if has_bound:
        handles.append(Line2D([], [], color="0.3", ls=":", lw=1.4, label="theory (upper bound)"))
    if thresholds:
        handles.append(Line2D([], [], color="#c0392b", ls="-.", lw=1.2, label=_threshold_label(thresholds)))
    if ref is not None:
        handles.append(Line2D([], [], color="0.35", ls=":", lw=1.8, label=f"{ref['source']} (reference)"))
    return handles


_CACHE = threading.local()


def _reused_axes():
    """One figure and axes per thread, emptied and reused for every overlaid metric figure: matplotlib
    builds tick objects afresh for a new axes, a large share of a figure's cost."""
    if getattr(_CACHE, "axes", None) is None:
        fig = _figure((8.6, 4.3))
        _CACHE.axes = (fig, fig.add_axes((0.085, 0.12, 0.7, 0.78)))
    fig, ax = _CACHE.axes
    for artist in [*ax.lines, *ax.collections, *ax.texts, *ax.patches]:
        artist.remove()
    if ax.get_legend() is not None:
        ax.get_legend().remove()
    ax.relim()
    return fig, ax


def _overlaid(exp: Experiment, k: int, bands, curves, keys: list, thresholds: list, ref: dict | None = None):
    """All arms in one panel, the legend outside on the right (layout computed from the label widths)."""
    from matplotlib import colormaps
    from matplotlib.ticker import MaxNLocator

    m = METRICS[exp.metrics[k]]
    fig, ax = _reused_axes()
    same = _identical(bands, k, [a.name for a in exp.arms])
    names = [arm.name + (f" (identical to {same[a]})" if a in same else "") for a, arm in enumerate(exp.arms)]
    labels = names + [h.get_label() for h in keys] + ["arm"]
    legend_w = _text_width(fig, labels, LEGEND_PT) + 3.4 * LEGEND_PT * DPI / 72  # handles and paddings
    right = max(0.45, 1.0 - (legend_w + 14) / (fig.get_figwidth() * DPI))
    ax.set_position((0.085, 0.12, right - 0.1, 0.78))
    g = np.arange(exp.generations + 1)
    colors = colormaps["tab10"]
    for a in range(len(exp.arms)):
        _draw_arm(ax, g, bands, a, k, colors(a % 10), names[a], curves[a])
    for rule in thresholds:
        ax.axhline(rule.threshold, color="#c0392b", ls="-.", lw=1.2)
    if ref is not None:
        ax.axhline(ref["mean"], color="0.35", ls=":", lw=1.8)
    ax.grid(alpha=0.3)
    _integer_generations(ax, exp.generations)
    ax.tick_params(labelsize=LEGEND_PT)
    ax.set_xlabel("generation", fontsize=10)
    ax.set_ylabel(m.axis, fontsize=10)
    ax.set_title(m.title, fontsize=11, y=1.015)  # an explicit y skips matplotlib's costly title placement
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6))
    arm_handles, _ = ax.get_legend_handles_labels()
    ax.legend(handles=arm_handles + keys, fontsize=LEGEND_PT, frameon=False, loc="upper left",
              bbox_to_anchor=(1.01, 1.0), title="arm", title_fontsize=LEGEND_PT)
    return fig


def _small_multiples(exp: Experiment, k: int, bands, curves, keys: list, thresholds: list,
                     ref: dict | None = None):
    """One panel per arm (shared axes), for more arms than one panel can show readably."""
    from matplotlib import colormaps

    m = METRICS[exp.metrics[k]]
    n = len(exp.arms)
    cols = min(4, math.ceil(math.sqrt(n)))
    rows = math.ceil(n / cols)
    fig = _figure((2.9 * cols, 2.4 * rows + 1.0), layout="constrained")
    axes = list(fig.subplots(rows, cols, sharex=True, sharey=True, squeeze=False).ravel())
    for ax in axes[n:]:
        ax.set_visible(False)
    for ax in axes[max(0, n - cols):n]:  # the last panel of each column shows its generations
        ax.xaxis.set_tick_params(labelbottom=True)
    g = np.arange(exp.generations + 1)
    color = colormaps["tab10"](0)
    for a, arm in enumerate(exp.arms):
        ax = axes[a]
        _draw_arm(ax, g, bands, a, k, color, None, curves[a])
        ax.set_title(_wrap(arm.name), fontsize=LEGEND_PT)
        for rule in thresholds:
            ax.axhline(rule.threshold, color="#c0392b", ls="-.", lw=1.2)
        if ref is not None:
            ax.axhline(ref["mean"], color="0.35", ls=":", lw=1.8)
        ax.grid(alpha=0.3)
        _integer_generations(ax, exp.generations)
        ax.tick_params(labelsize=LEGEND_PT)
    key = "; ".join(h.get_label() if i == 0 else f"{_STYLE_WORDS[h.get_linestyle()]}: {h.get_label()}"
                    for i, h in enumerate(keys))
    fig.suptitle(f"{m.title}\nline: seed mean; band: {key}", fontsize=11)
    fig.supxlabel("generation", fontsize=10)
    fig.supylabel(m.axis, fontsize=10)
    return fig


def metric_png(exp: Experiment, k: int, bands: dict[str, np.ndarray], theory: dict[str, dict[str, Any]],
               ref: dict[str, Any] | None = None) -> bytes:
    """The figure of metric ``k``: all arms in one panel, or small multiples beyond ``MAX_OVERLAID`` arms."""
    name = exp.metrics[k]
    curves = [theory.get(arm.name, {}).get(name) for arm in exp.arms]
    has_theory = any(c is not None and not c.bound for c in curves)
    has_bound = any(c is not None and c.bound for c in curves)
    thresholds = _threshold_rules(exp, name)
    keys = _key_handles(exp, has_theory, has_bound, thresholds, ref)
    draw = _overlaid if len(exp.arms) <= MAX_OVERLAID else _small_multiples
    return _png(draw(exp, k, bands, curves, keys, thresholds, ref))


def figure_jobs(exp: Experiment, summary: dict[str, Any], bands: dict[str, np.ndarray],
                theory: dict[str, dict[str, Any]], exhibits: Exhibits | None = None) -> list[Job]:
    """Every figure of the report as ``(file name, function, arguments)`` (independent; any order)."""
    jobs: list[Job] = [(name, forest_png, (exp, summary, i)) for i, name in enumerate(forest_names(exp))]
    for name, arms in (exhibits or {}).items():
        if arms and isinstance(next(iter(arms.values()))[0][1], ImageGrid):
            jobs.append((f"{name}.png", image_grid_png, (exp, arms)))
    refs = summary.get("reference", {})
    jobs += [(f"{m}.png", metric_png, (exp, k, bands, theory, refs.get(m))) for k, m in enumerate(exp.metrics)]
    if _is_grid(exp):
        jobs += [(f"heatmap_{m}.png", heatmap_png, (exp, k, bands, theory)) for k, m in enumerate(exp.metrics)]
    return jobs


def figure_names(exp: Experiment) -> list[str]:
    """The file names :func:`figure_jobs` produces for ``exp``, in the same order."""
    names = forest_names(exp)
    names += exhibit_figures(exp)
    names += [f"{m}.png" for m in exp.metrics]
    if _is_grid(exp):
        names += [f"heatmap_{m}.png" for m in exp.metrics]
    return names


def forest_names(exp: Experiment) -> list[str]:
    """The forest plots' file names: ``time_to_failure.png`` for the primary rule, ``time_to_failure_<i>.png``
    for rule ``i`` after it."""
    return ["time_to_failure.png" if i == 0 else f"time_to_failure_{i}.png" for i in range(len(exp.rules))]


def render(jobs: list[Job], parallel: bool = False) -> list[Figure]:
    """Run figure jobs, in the order of ``jobs``; with ``parallel``, on a machine with a second core (and ``fork``),
    a forked copy of this process draws every other figure while this one draws the rest (drawing holds the GIL,
    so threads would not help; a fork has matplotlib imported and warm, so it starts at once). The copy only
    draws: its figures come back through a pipe as PNG bytes, and whatever it cannot draw is drawn here."""
    if not (parallel and len(jobs) > 1 and hasattr(os, "fork") and _cores() > 1):
        return [(name, fn(*args)) for name, fn, args in jobs]
    away = [i for i in range(len(jobs)) if i % 2 == 0]
    forked = _forked(jobs, away)
    out = {i: fn(*args) for i, (_, fn, args) in enumerate(jobs) if i not in away}
    out.update(forked.get_all())
    for i in away:  # what the copy could not draw
        if i not in out:
            out[i] = jobs[i][1](*jobs[i][2])
    return [(name, out[i]) for i, (name, _, _) in enumerate(jobs)]


def _cores() -> int:
    from collapselab.torch_runtime import usable_cores

    return usable_cores()


class _Forked:
    """The figures a forked child draws (:func:`render`); :meth:`get_all` waits for them."""

    def __init__(self, pid: int, fd: int) -> None:
        self.pid, self.fd = pid, fd

    def get_all(self) -> dict[int, bytes]:
        import pickle

        chunks = []
        with os.fdopen(self.fd, "rb") as fh:
            while block := fh.read(1 << 20):
                chunks.append(block)
        _, status = os.waitpid(self.pid, 0)
        try:
            return pickle.loads(b"".join(chunks)) if status == 0 and chunks else {}  # our own child's bytes
        except Exception:
            return {}


def _forked(jobs: list[Job], away: list[int]) -> _Forked:
    import pickle

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: draw, send the bytes, and leave without running anything of the parent's
        code = 1
        try:
            os.close(r)
            done = {i: jobs[i][1](*jobs[i][2]) for i in away}
            data = pickle.dumps(done)
            view = memoryview(data)
            while view:
                view = view[os.write(w, view):]
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    return _Forked(pid, r)


def forest_png(exp: Experiment, summary: dict[str, Any], rule: int = 0) -> bytes:
    """Each arm's time to failure under rule ``rule`` (0: the primary) with its 95% CI."""
    G = exp.generations
    arms = [a.name for a in exp.arms]
    controls = {a.name for a in exp.arms if a.control_of is not None}
    height = 1.3 + 0.38 * len(arms)
    fig = _figure((8.6, height))
    width_px = fig.get_figwidth() * DPI
    left = (_text_width(fig, [f"{a} (control)" for a in arms], LEGEND_PT) + 16) / width_px
    label_w = (_text_width(fig, [f">{G}  (reference)", f"{G:.1f}  ratio 10.00"], LEGEND_PT) + 12) / width_px
    ax = fig.add_axes((left, 0.55 / height, 1 - left - label_w - 0.01, 1 - 1.15 / height))
    right = G * 1.06
    for i, name in enumerate(arms):
        entry = summary["arms"][name]
        t = entry["rules"][rule]["time_to_failure"] if rule else entry["time_to_failure"]
        v, lo, hi = (float(t[x]) for x in ("value", "low", "high"))
        y = len(arms) - 1 - i
        color = "#c0392b" if name == exp.reference else "#8a8f94" if name in controls else "#1f4e79"
        if np.isfinite(lo):
            ax.plot([lo, min(hi, right)], [y, y], color=color, lw=2.2, solid_capstyle="butt")
        if not np.isfinite(hi):
            ax.annotate("", xy=(right, y), xytext=(min(lo, G) if np.isfinite(lo) else G, y),
                        arrowprops={"arrowstyle": "->", "color": color, "lw": 1.6})
        if np.isfinite(v):
            ax.plot([v], [y], "o", color=color, ms=7)
            label = f"{v:.1f}"
        else:
            label = f">{G}"
        ratio = entry["rules"][rule]["fidelity_ratio"] if rule else entry["fidelity_ratio"]
        if name == exp.reference:
            label += "  (reference)"
        elif ratio["defined"] and np.isfinite(float(ratio["value"])):
            label += f"  ratio {float(ratio['value']):.2f}"
        ax.text(right * 1.01, y, label, va="center", fontsize=LEGEND_PT, clip_on=False)
    ax.axvline(G, color="0.5", ls=":", lw=1)
    ticks = [f"{a} (control)" if a in controls else a for a in arms]
    ax.set_yticks(range(len(arms)), list(reversed(ticks)), fontsize=LEGEND_PT)
    ax.set_xlim(0, right)
    ax.set_ylim(-0.7, len(arms) - 0.3)
    ax.set_xlabel("time to failure (generation, interpolated)", fontsize=10)
    info = summary["rules"][rule]
    note = "" if info["informative"] else "  [not informative: see the report]"
    ax.set_title(f"Time to failure (failure: {info['label']}){note}\npoint and 95% CI over {_seeds(exp)}; arrow: "
                 f"not failed by generation {G}", fontsize=10, loc="left", y=1.02)
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="x", labelsize=LEGEND_PT)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10))
    return _png(fig)


def _is_grid(exp: Experiment) -> bool:
    axes = exp.axes or {}
    return len(axes) == 2 and len(exp.arms) == int(np.prod([len(v) for v in axes.values()]))


def heatmap_png(exp: Experiment, k: int, bands: dict[str, np.ndarray], theory: dict[str, dict[str, Any]]) -> bytes:
    """For a 2-D ``grid``: the last-generation heat map of metric ``k``, simulation beside theory."""
    (kx, vx), (ky, vy) = exp.axes.items()
    G = exp.generations
    metric = exp.metrics[k]
    sim = bands["mean"][:, -1, k].reshape(len(vx), len(vy))
    th = np.array([c.values[-1] if (c := theory.get(a.name, {}).get(metric)) is not None else np.nan
                   for a in exp.arms]).reshape(len(vx), len(vy))
    panels = [("simulation", sim)] + ([("theory", th)] if np.isfinite(th).any() else [])
    width = 12.0 if len(panels) == 2 else 8.0
    cell = max(0.55, min(1.1, 9.0 / max(len(vy), 1)))
    fig = _figure((width, max(3.2, cell * len(vx) + 1.4)), layout="constrained")
    axs = fig.subplots(1, len(panels), squeeze=False)
    finite = np.concatenate([p[1][np.isfinite(p[1])] for p in panels])
    vmin, vmax = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    im = None
    for ax, (label, grid) in zip(axs[0], panels, strict=True):
        im = ax.imshow(grid, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="viridis")
        ax.set_xticks(range(len(vy)), [f"{v:g}" for v in vy], fontsize=LEGEND_PT)
        ax.set_yticks(range(len(vx)), [f"{v:g}" for v in vx], fontsize=LEGEND_PT)
        ax.set_xlabel(ky, fontsize=10)
        ax.set_ylabel(kx, fontsize=10)
        ax.set_title(f"{label} (generation {G})", fontsize=10)
        mid = (vmin + vmax) / 2
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=LEGEND_PT,
                        color="black" if v > mid else "white")
    bar = fig.colorbar(im, ax=axs[0].tolist(), shrink=0.9)
    bar.set_label(f"{METRICS[metric].axis} (seed mean)", fontsize=10)
    bar.ax.tick_params(labelsize=LEGEND_PT)
    fig.suptitle(METRICS[metric].title, fontsize=11)
    return _png(fig)


#: the smallest size of one sample in the grid, in pixels
SAMPLE_PX = 56


def image_grid_png(exp: Experiment, gallery: dict[str, list[tuple[int, ImageGrid]]]) -> bytes:
    """An image-grid exhibit's figure: per arm (one panel each, stacked), seed 0's samples per shown generation: the
    images passed on (``draws``) and, beside them, the expected images of the same draws (``means``); columns
    labelled by class for a conditional model; every sample at least :data:`SAMPLE_PX` pixels wide (dark ink on
    white)."""
    arms = [a.name for a in exp.arms if a.name in gallery]
    first = gallery[arms[0]][0][1]
    k = first.draws.shape[0]
    kinds = ["draws"] + (["means"] if first.means is not None else [])
    rows_per_arm = len(gallery[arms[0]]) * len(kinds)
    h, w = first.draws.shape[1:]
    cell = SAMPLE_PX / DPI  # inches per sample
    label_w = 1.3
    fig_w = label_w + k * cell * (w + 1) / w + 0.3
    panel_h = rows_per_arm * cell * (h + 1) / h
    fig = _figure((fig_w, len(arms) * (panel_h + 0.55) + 0.45))
    total_h = fig.get_figheight()
    y = total_h - 0.45
    for name in arms:
        entries = gallery[name]
        rows, ticks = [], []
        for g, imgs in entries:
            for kind in kinds:
                rows.append(getattr(imgs, kind))
                ticks.append(f"g{g} {'draws' if kind == 'draws' else 'means'}")
        y -= 0.45
        ax = fig.add_axes((label_w / fig_w, (y - panel_h) / total_h, k * cell * (w + 1) / w / fig_w,
                           panel_h / total_h))
        y -= panel_h + 0.1
        ax.imshow(mosaic(rows), cmap="gray_r", vmin=0, vmax=1, interpolation="nearest", aspect="auto")
        ax.set_yticks([i * (h + 1) + h / 2 for i in range(len(rows))], ticks, fontsize=LEGEND_PT)
        labels = entries[0][1].labels
        if labels is not None:
            ax.set_xticks([i * (w + 1) + w / 2 for i in range(k)], [str(int(c)) for c in labels], fontsize=LEGEND_PT)
            ax.xaxis.tick_top()
        else:
            ax.set_xticks([])
        ax.set_title(name, fontsize=10, loc="left", pad=14 if labels is not None else 4)
        for side in ax.spines.values():
            side.set_visible(False)
    what = "images passed on (draws) and the decoder's means of the same codes"
    fig.suptitle(f"Samples of seed 0's model by arm and generation: {what}; {plural(k, 'sample')} per row"
                 + ("; columns: the class asked for" if first.labels is not None else ""),
                 fontsize=10, x=0.01, ha="left", y=1 - 0.15 / total_h)
    return _png(fig)
