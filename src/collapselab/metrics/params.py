"""Parameter metrics: distance of the fitted parameter to the truth theta* or the verifier's center theta_c."""

from __future__ import annotations

import numpy as np

from collapselab.curators import KnowledgeBall
from collapselab.families.base import Family
from collapselab.metrics.base import MetricContext, metric


@metric("param_error", ("points", "regression"), "||theta_hat - theta*||^2 (the mean for gaussian)",
        needs_truth=True, needs="parameter",
        title="Squared error of the fitted parameter", axis="||theta_hat - theta*||^2")
def param_error(model: Family, ctx: MetricContext) -> np.ndarray:
    return np.sum((model.parameter() - ctx.truth.parameter()) ** 2, axis=1)


@metric("param_error_center", ("regression",), "||theta_hat - theta_c||^2, theta_c the knowledge_ball "
        "verifier's center (needs that curator)", needs_truth=True, needs="parameter",
        title="Squared distance to the verifier's centre", axis="||theta_hat - theta_c||^2",
        check=lambda ctx: None if ctx.arm.curator.name == "knowledge_ball" else
        f"param_error_center needs a knowledge_ball curator; arm {ctx.arm.name!r} has {ctx.arm.curator.name!r}")
def param_error_center(model: Family, ctx: MetricContext) -> np.ndarray:
    if not isinstance(ctx.curator, KnowledgeBall):
        raise ValueError("param_error_center needs a knowledge_ball curator")
    center = ctx.curator.center(ctx.source.truth.parameter()[0])
    return np.sum((model.parameter() - center) ** 2, axis=1)


@metric("noise_variance", ("regression",), "fitted noise variance sigma_hat^2", better="higher",
        needs="noise_variance",
        title="Fitted noise variance", axis="sigma_hat^2")
def noise_variance(model: Family, ctx: MetricContext) -> np.ndarray:
    return model.noise_variance()
