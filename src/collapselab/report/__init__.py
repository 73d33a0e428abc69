"""Reports: aggregation over seeds, figures, ``summary.json``, ``report.html`` and the result table."""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.experiments.loader import dump_experiment
from collapselab.experiments.schema import Experiment
from collapselab.report.aggregate import summarize, theory_curves
from collapselab.report.figures import forest_plot, heatmaps, metric_figures
from collapselab.report.html import render
from collapselab.report.table import cells, rich_table
from collapselab.store import dumps_json


def build_report(exp: Experiment, values: np.ndarray) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The summary and the report's files (``summary.json``, ``figures/*.png``, ``report.html``; paths
    relative to the run directory) for ``values [arms, seeds, generations + 1, metrics]``."""
    theory = theory_curves(exp)
    summary, bands = summarize(exp, values, theory)
    figures = forest_plot(exp, summary) + metric_figures(exp, bands, theory) + heatmaps(exp, bands, theory)
    files = {"summary.json": dumps_json(summary).encode()}
    files.update({f"figures/{name}": data for name, data in figures})
    files["report.html"] = render(exp, summary, [name for name, _ in figures], dump_experiment(exp)).encode()
    return summary, files


__all__ = ["build_report", "cells", "rich_table", "summarize", "theory_curves"]
