"""Reports: aggregation over seeds, figures, ``summary.json``, ``report.html`` and the result table."""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.experiments.loader import dump_experiment
from collapselab.experiments.schema import Experiment
from collapselab.metrics.base import saved_files
from collapselab.report.aggregate import ArmStats, TheoryCurve, arm_stats, report_weights, summarize, theory_curves
from collapselab.report.exhibits import Exhibits, collect_exhibits, declared
from collapselab.report.figures import figure_jobs, figure_names
from collapselab.report.figures import render as render_figures
from collapselab.report.html import render as render_html
from collapselab.report.table import cells, rich_table
from collapselab.store import dumps_json


def report_names(exp: Experiment) -> list[str]:
    """The files :func:`build_report` writes for ``exp`` (relative to the run directory)."""
    return ["summary.json", *(f"figures/{name}" for name in figure_names(exp)), "report.html",
            *saved_files(exp.metrics)]


def build_report(exp: Experiment, values: np.ndarray | None, stats: list[ArmStats] | None = None,
                 theory: dict[str, dict[str, TheoryCurve]] | None = None,
                 exhibits: Exhibits | None = None,
                 refs: dict[str, np.ndarray] | None = None,
                 parallel: bool = False) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The summary and the report's files (``summary.json``, ``figures/*.png``, ``report.html`` and the files the
    metrics save, :attr:`~collapselab.metrics.base.Metric.saves`; paths relative to the run directory) for
    ``values [arms, seeds, generations + 1, metrics]`` (or the arms' precomputed ``stats`` with the ``theory`` they
    were computed with); ``exhibits`` (from :func:`collect_exhibits`) add what the families show; ``parallel``: the
    figures drawn on two cores (:func:`collapselab.report.figures.render`)."""
    theory = theory_curves(exp) if theory is None else theory
    summary, bands = summarize(exp, values, theory, stats, refs)
    jobs = figure_jobs(exp, summary, bands, theory, exhibits)
    figures = render_figures(jobs, parallel)
    files = {"summary.json": dumps_json(summary).encode()}
    files.update({f"figures/{name}": data for name, data in figures})
    files["report.html"] = render_html(exp, summary, [name for name, _ in figures], dump_experiment(exp),
                                        exhibits).encode()
    saves = saved_files(exp.metrics)  # what the metrics save with the run (e.g. a probe's item sets)
    if saves:
        from collapselab.seeding import SeedTree

        source, tree = exp.make_source(), SeedTree(exp.seed)
        files.update({name: build(source, tree, exp.n_batches) for name, build in saves.items()})
    return summary, files


__all__ = ["ArmStats", "arm_stats", "build_report", "cells", "collect_exhibits", "declared", "report_names",
           "report_weights", "rich_table", "summarize", "theory_curves"]
