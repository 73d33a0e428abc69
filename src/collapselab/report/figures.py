"""Figures (PNG bytes; the run store writes them).

- One figure per metric: the seed mean per arm with its 95% bootstrap band over seeds, closed-form theory
  dashed, the failure threshold labelled. Up to ``MAX_OVERLAID`` arms share one panel (legend outside the
  plot, 9 pt); more arms get small multiples (one panel per arm, shared axes).
- A forest plot of time to failure per arm with its 95% CI (censored arms drawn as arrows past the last
  generation), when the experiment has a failure rule.
- For a 2-D grid: last-generation heat maps, simulation beside theory, full width with a labelled colour bar.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

from collapselab.experiments.schema import Experiment
from collapselab.metrics import METRICS

Figure = tuple[str, bytes]  # file name, PNG bytes
MAX_OVERLAID = 8
LEGEND_PT = 9
DPI = 110


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    _plt().close(fig)
    return buf.getvalue()


def _wrap(name: str, width: int = 30) -> str:
    """An arm name on lines of at most ``width`` characters, broken after commas (grid arms)."""
    import textwrap

    return "\n".join(textwrap.wrap(name.replace(",", ", "), width)).replace(", ", ",")


def _integer_generations(ax, generations: int) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))
    ax.set_xlim(-0.05 * max(generations, 1), generations + 0.05 * max(generations, 1))


def _threshold_label(exp: Experiment) -> str:
    f = exp.failure
    return f"failure: {f.metric} {'>' if f.direction == 'above' else '<'} {f.threshold:g}"


def _seeds(exp: Experiment) -> str:
    return f"{exp.seeds} seed{'s' * (exp.seeds != 1)}"


def _draw_arm(ax, g, bands, a: int, k: int, color, label: str | None, curve) -> None:
    mean, lo, hi = (bands[x][a, :, k] for x in ("mean", "low", "high"))
    marker = "o" if len(g) <= 12 else None
    ax.plot(g, mean, color=color, lw=1.8, label=label, marker=marker, ms=3.5)
    ok = np.isfinite(lo) & np.isfinite(hi)
    if ok.any():
        ax.fill_between(g, np.where(ok, lo, np.nan), np.where(ok, hi, np.nan), color=color, alpha=0.18, lw=0)
    if curve is not None:
        style = ":" if curve.bound else "--"
        few = np.isfinite(curve.values).sum() <= 3
        ax.plot(g, curve.values, color=color, ls=style, lw=1.4, marker="D" if few else None, ms=5,
                markerfacecolor="none")


_STYLE_WORDS = {"--": "dashed", ":": "dotted", "-.": "dash-dot", "-": "solid"}


def _key_handles(exp: Experiment, has_theory: bool, has_bound: bool, has_threshold: bool) -> list:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    band = f"95% CI over {_seeds(exp)}" if exp.seeds > 1 else "no CI (1 seed)"
    handles = [Patch(color="0.5", alpha=0.3, label=band)]
    if has_theory:
        handles.append(Line2D([], [], color="0.3", ls="--", lw=1.4, label="theory (closed form)"))
    if has_bound:
        handles.append(Line2D([], [], color="0.3", ls=":", lw=1.4, label="theory (upper bound)"))
    if has_threshold:
        handles.append(Line2D([], [], color="#c0392b", ls="-.", lw=1.2, label=_threshold_label(exp)))
    return handles


def metric_figures(exp: Experiment, bands: dict[str, np.ndarray], theory: dict[str, dict[str, Any]]) -> list[Figure]:
    """``<metric>.png`` for every metric."""
    plt = _plt()
    g = np.arange(exp.generations + 1)
    out = []
    n = len(exp.arms)
    colors = plt.get_cmap("tab10")
    for k, name in enumerate(exp.metrics):
        m = METRICS[name]
        curves = [theory.get(arm.name, {}).get(name) for arm in exp.arms]
        has_theory = any(c is not None and not c.bound for c in curves)
        has_bound = any(c is not None and c.bound for c in curves)
        threshold = exp.failure is not None and exp.failure.metric == name
        if n <= MAX_OVERLAID:
            fig, ax = plt.subplots(figsize=(8.0, 4.2))
            axes = [ax] * n
        else:
            cols = min(4, math.ceil(math.sqrt(n)))
            rows = math.ceil(n / cols)
            fig, grid = plt.subplots(rows, cols, figsize=(2.9 * cols, 2.4 * rows + 1.0), sharex=True, sharey=True,
                                     squeeze=False, layout="constrained")
            axes = list(grid.ravel())
            for ax in axes[n:]:
                ax.set_visible(False)
            for ax in axes[max(0, n - cols):n]:  # the last panel of each column shows its generations
                ax.xaxis.set_tick_params(labelbottom=True)
        for a, arm in enumerate(exp.arms):
            color = colors(a % 10) if n <= MAX_OVERLAID else colors(0)
            _draw_arm(axes[a], g, bands, a, k, color, arm.name if n <= MAX_OVERLAID else None, curves[a])
            if n > MAX_OVERLAID:
                axes[a].set_title(_wrap(arm.name), fontsize=LEGEND_PT)
        for ax in axes[:n] if n > MAX_OVERLAID else axes[:1]:
            if threshold:
                ax.axhline(exp.failure.threshold, color="#c0392b", ls="-.", lw=1.2)
            ax.grid(alpha=0.3)
            _integer_generations(ax, exp.generations)
            ax.tick_params(labelsize=LEGEND_PT)
        keys = _key_handles(exp, has_theory, has_bound, threshold)
        if n <= MAX_OVERLAID:
            ax = axes[0]
            ax.set_xlabel("generation", fontsize=10)
            ax.set_ylabel(m.axis, fontsize=10)
            ax.set_title(m.title, fontsize=11)
            arm_handles, _ = ax.get_legend_handles_labels()
            ax.legend(handles=arm_handles + keys, fontsize=LEGEND_PT, frameon=False, loc="upper left",
                      bbox_to_anchor=(1.01, 1.0), title="arm", title_fontsize=LEGEND_PT)
        else:
            key = "; ".join(h.get_label() if i == 0 else f"{_STYLE_WORDS[h.get_linestyle()]}: {h.get_label()}"
                            for i, h in enumerate(keys))
            fig.suptitle(f"{m.title}\nline: seed mean; band: {key}", fontsize=11)
            fig.supxlabel("generation", fontsize=10)
            fig.supylabel(m.axis, fontsize=10)
        out.append((f"{name}.png", _png(fig)))
    return out


def forest_plot(exp: Experiment, summary: dict[str, Any]) -> list[Figure]:
    """``time_to_failure.png``: each arm's time to failure with its 95% CI (empty without a failure rule)."""
    if exp.failure is None:
        return []
    plt = _plt()
    G = exp.generations
    arms = [a.name for a in exp.arms]
    fig, ax = plt.subplots(figsize=(8.0, 0.9 + 0.38 * len(arms)))
    right = G * 1.06
    for i, name in enumerate(arms):
        t = summary["arms"][name]["time_to_failure"]
        v, lo, hi = (float(t[x]) for x in ("value", "low", "high"))
        y = len(arms) - 1 - i
        color = "#c0392b" if name == exp.reference else "#1f4e79"
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
        ratio = summary["arms"][name]["fidelity_ratio"]
        if name == exp.reference:
            label += "  (reference)"
        elif ratio["defined"] and np.isfinite(float(ratio["value"])):
            label += f"  ratio {float(ratio['value']):.2f}"
        ax.text(right * 1.01, y, label, va="center", fontsize=LEGEND_PT)
    ax.axvline(G, color="0.5", ls=":", lw=1)
    ax.set_yticks(range(len(arms)), list(reversed(arms)), fontsize=LEGEND_PT)
    ax.set_xlim(0, right)
    ax.set_ylim(-0.7, len(arms) - 0.3)
    ax.set_xlabel("time to failure (generation, interpolated)", fontsize=10)
    ax.set_title(f"Time to failure ({_threshold_label(exp)}), point and 95% CI over {_seeds(exp)}; "
                 f"arrows: not failed by generation {G}", fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.tick_params(axis="x", labelsize=LEGEND_PT)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10))
    return [("time_to_failure.png", _png(fig))]


def heatmaps(exp: Experiment, bands: dict[str, np.ndarray], theory: dict[str, dict[str, Any]]) -> list[Figure]:
    """For a 2-D ``grid``: last-generation heat maps of each metric, simulation beside theory."""
    axes = exp.axes or {}
    if len(axes) != 2 or len(exp.arms) != np.prod([len(v) for v in axes.values()]):
        return []
    plt = _plt()
    (kx, vx), (ky, vy) = axes.items()
    out = []
    G = exp.generations
    for k, metric in enumerate(exp.metrics):
        sim = bands["mean"][:, -1, k].reshape(len(vx), len(vy))
        th = np.array([c.values[-1] if (c := theory.get(a.name, {}).get(metric)) is not None else np.nan
                       for a in exp.arms]).reshape(len(vx), len(vy))
        panels = [("simulation", sim)] + ([("theory", th)] if np.isfinite(th).any() else [])
        width = 12.0 if len(panels) == 2 else 8.0
        cell = max(0.55, min(1.1, 9.0 / max(len(vy), 1)))
        fig, axs = plt.subplots(1, len(panels), figsize=(width, max(3.2, cell * len(vx) + 1.4)), squeeze=False,
                                layout="constrained")
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
        out.append((f"heatmap_{metric}.png", _png(fig)))
    return out
