"""Figures: one per metric (seed mean and 95% band per arm, theory dashed), heat maps for 2-D grids."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from collapselab.experiments.schema import Experiment
from collapselab.io import atomic_write_bytes


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    atomic_write_bytes(path, buf.getvalue())


def metric_figures(exp: Experiment, bands: dict[str, np.ndarray], theory: dict[str, dict[str, np.ndarray]],
                   folder: Path) -> list[str]:
    """Write ``<metric>.png`` for every metric; returns the file names."""
    plt = _plt()
    g = np.arange(exp.generations + 1)
    names = []
    colors = plt.get_cmap("tab10" if len(exp.arms) <= 10 else "viridis")
    for k, metric in enumerate(exp.metrics):
        fig, ax = plt.subplots(figsize=(6.4, 3.8))
        for a, arm in enumerate(exp.arms):
            col = colors(a % 10) if len(exp.arms) <= 10 else colors(a / max(1, len(exp.arms) - 1))
            mean, lo, hi = (bands[x][a, :, k] for x in ("mean", "low", "high"))
            ax.plot(g, mean, color=col, lw=1.6, label=arm.name)
            ok = np.isfinite(lo) & np.isfinite(hi)
            ax.fill_between(g, np.where(ok, lo, np.nan), np.where(ok, hi, np.nan), color=col, alpha=0.18, lw=0)
            curve = theory.get(arm.name, {}).get(metric)
            if curve is not None:
                marker = "o" if np.isfinite(curve).sum() <= 3 else None
                ax.plot(g, curve, color=col, ls="--", lw=1.2, marker=marker, ms=4)
        if exp.failure is not None and exp.failure.metric == metric:
            ax.axhline(exp.failure.threshold, color="0.3", ls=":", lw=1)
        ax.set_xlabel("generation")
        ax.set_ylabel(metric)
        title = metric + ("  (dashed: theory)" if any(metric in t for t in theory.values()) else "")
        ax.set_title(title, fontsize=10)
        if len(exp.arms) <= 12:
            ax.legend(fontsize=7, frameon=False)
        ax.grid(alpha=0.3)
        name = f"{metric}.png"
        _save(fig, folder / name)
        plt.close(fig)
        names.append(name)
    return names


def heatmaps(exp: Experiment, bands: dict[str, np.ndarray], theory: dict[str, dict[str, np.ndarray]],
             folder: Path) -> list[str]:
    """For a 2-D ``grid``: last-generation heat maps of each metric, simulation beside theory."""
    axes = exp.axes or {}
    if len(axes) != 2 or len(exp.arms) != np.prod([len(v) for v in axes.values()]):
        return []
    plt = _plt()
    (kx, vx), (ky, vy) = axes.items()
    names = []
    for k, metric in enumerate(exp.metrics):
        sim = bands["mean"][:, -1, k].reshape(len(vx), len(vy))
        th = np.array([theory.get(a.name, {}).get(metric, np.full(exp.generations + 1, np.nan))[-1]
                       for a in exp.arms]).reshape(len(vx), len(vy))
        panels = [("simulation", sim)] + ([("theory", th)] if np.isfinite(th).any() else [])
        fig, axs = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.8), squeeze=False,
                                layout="constrained")
        finite = np.concatenate([p[1][np.isfinite(p[1])] for p in panels])
        vmin, vmax = (finite.min(), finite.max()) if finite.size else (0, 1)
        for ax, (label, grid) in zip(axs[0], panels, strict=True):
            im = ax.imshow(grid, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap="viridis")
            ax.set_xticks(range(len(vy)), [f"{v:g}" for v in vy], fontsize=7)
            ax.set_yticks(range(len(vx)), [f"{v:g}" for v in vx], fontsize=7)
            ax.set_xlabel(ky)
            ax.set_ylabel(kx)
            ax.set_title(f"{metric}, generation {exp.generations}: {label}", fontsize=9)
            mid = (vmin + vmax) / 2
            for (i, j), v in np.ndenumerate(grid):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=7, color="k" if v > mid else "w")
        fig.colorbar(im, ax=axs[0].tolist(), shrink=0.9)
        name = f"heatmap_{metric}.png"
        _save(fig, folder / name)
        plt.close(fig)
        names.append(name)
    return names
