"""Metrics per (arm, seed, generation), always against held-out real data or the known truth."""

from collapselab.metrics import (  # noqa: F401  (registration)
    categorical,
    features,
    fidelity,
    images,
    losses,
    params,
    reward,
    text,
)
from collapselab.metrics.base import METRICS, Metric, MetricContext, check_metric, compute
from collapselab.metrics.timing import FailureRule

__all__ = ["METRICS", "FailureRule", "Metric", "MetricContext", "check_metric", "compute"]
