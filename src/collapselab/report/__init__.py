"""Reports: aggregation over seeds, figures, ``summary.json``, ``report.html`` and the result table."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from collapselab.experiments.loader import dump_experiment
from collapselab.experiments.schema import Experiment
from collapselab.io import atomic_write_json, atomic_write_text
from collapselab.report.aggregate import summarize, theory_curves
from collapselab.report.figures import heatmaps, metric_figures
from collapselab.report.html import render
from collapselab.report.table import cells, rich_table


def write_report(exp: Experiment, values: np.ndarray, run_dir: Path) -> dict[str, Any]:
    """Write ``summary.json``, ``figures/*.png`` and ``report.html`` from ``values [arms, seeds, G+1, metrics]``."""
    theory = theory_curves(exp)
    summary, bands = summarize(exp, values, theory)
    atomic_write_json(run_dir / "summary.json", summary)
    folder = run_dir / "figures"
    figures = metric_figures(exp, bands, theory, folder) + heatmaps(exp, bands, theory, folder)
    atomic_write_text(run_dir / "report.html", render(exp, summary, figures, dump_experiment(exp)))
    return summary


__all__ = ["cells", "rich_table", "summarize", "theory_curves", "write_report"]
