"""Metrics per (arm, seed, generation), always against held-out real data or the known truth."""

from collapselab.metrics import categorical, features, fidelity, images, params, reward  # noqa: F401  (registration)
from collapselab.metrics.base import METRICS, Metric, MetricContext, check_metric, compute
from collapselab.metrics.timing import FailureRule

__all__ = ["METRICS", "FailureRule", "Metric", "MetricContext", "check_metric", "compute"]
