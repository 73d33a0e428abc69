"""Fidelity and diversity metrics for every modality, against held-out real data or the known truth."""

from __future__ import annotations

import numpy as np

from collapselab.families.base import Family
from collapselab.families.gaussian import Gaussian
from collapselab.families.gaussian_math import mixture_l2_sq
from collapselab.metrics.base import MetricContext, metric

ALL = ("points", "regression", "tokens")
CONTINUOUS = ("points", "regression")
TAIL_ALPHA = 0.01
W1_DIRECTIONS = 64


def _sample_mean(values: np.ndarray) -> np.ndarray:
    """Mean over samples (and tokens): ``[C, n, ...]`` -> ``[C]``."""
    return values.reshape(values.shape[0], -1).mean(axis=1)


@metric("heldout_nll", (*ALL, "text"),
        "mean negative log-likelihood of held-out real data (per sample; per token for text)",
        title="Negative log-likelihood of held-out real data", axis="NLL per sample (nats)")
def heldout_nll(model: Family, ctx: MetricContext) -> np.ndarray:
    return -_sample_mean(model.log_prob(ctx.heldout))


def _kl_gaussian(model: Gaussian, truth: Gaussian) -> np.ndarray:
    """KL(truth || model) in closed form; ``inf`` for a chain whose covariance is singular (collapsed)."""
    mt, ct = truth.moments()
    mm, cm = model.moments()
    d = mt.shape[-1]
    diff = mm - mt
    if d == 1:  # the hot path of long 1-D chains (and exact for a variance of 0: KL = inf)
        vm, vt = cm[:, 0, 0], ct[:, 0, 0]
        with np.errstate(divide="ignore", invalid="ignore"):
            out = 0.5 * ((vt + diff[:, 0] ** 2) / vm - 1.0 + np.log(vm / vt))
        return np.where(vm > 0, out, np.inf)
    sign, logdet_m = np.linalg.slogdet(cm)
    _, logdet_t = np.linalg.slogdet(ct)
    ok = sign > 0
    out = np.full(cm.shape[0], np.inf)
    if ok.any():
        inv = np.linalg.inv(cm[ok])
        ctk = np.broadcast_to(ct, cm.shape)[ok]
        dk = diff[ok]
        out[ok] = 0.5 * (np.trace(inv @ ctk, axis1=1, axis2=2) + np.einsum("ci,cij,cj->c", dk, inv, dk) - d
                         + logdet_m[ok] - np.broadcast_to(logdet_t, logdet_m.shape)[ok])
    return out


@metric("kl_to_truth", ALL, "KL(truth || model): closed form for gaussian, linear (x ~ N(0, I)) and "
        "unigram categorical; Monte Carlo over the held-out truth sample otherwise", needs_truth=True,
        title="KL divergence from the truth to the model", axis="KL(truth || model) (nats)")
def kl_to_truth(model: Family, ctx: MetricContext) -> np.ndarray:
    truth = ctx.truth
    if isinstance(model, Gaussian) and isinstance(truth, Gaussian):
        return _kl_gaussian(model, truth)
    if hasattr(model, "theta") and hasattr(truth, "theta"):
        s2t, s2m = truth.sigma2, model.sigma2
        err = np.sum((model.theta - truth.theta) ** 2, axis=1)
        return 0.5 * (np.log(s2m / s2t) + (s2t + err) / s2m - 1.0)
    if hasattr(model, "distribution") and getattr(model.config, "order", 1) == 1:
        pt, pm = truth.distribution(), model.distribution()
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(pt > 0, pt * (np.log(pt) - np.log(pm)), 0.0)
        return terms.sum(axis=1)
    # Monte Carlo: the held-out set of a truth source is a sample from the truth
    return _sample_mean(truth.log_prob(ctx.heldout) - model.log_prob(ctx.heldout))


@metric("gmm_l2_to_truth", ("points",), "closed-form L2 distance sqrt(int (p - q)^2) between the fitted "
        "mixture and the true one", needs_truth=True, needs="mixture",
        title="L2 distance between fitted and true densities", axis="L2 distance")
def gmm_l2_to_truth(model: Family, ctx: MetricContext) -> np.ndarray:
    if not hasattr(ctx.truth, "mixture"):
        raise ValueError("gmm_l2_to_truth needs a mixture truth")
    return np.sqrt(np.maximum(mixture_l2_sq(*model.mixture(), *ctx.truth.mixture()), 0.0))


def _own_sample(model: Family, ctx: MetricContext):
    """One model sample per metric evaluation, shaped like the held-out set (same covariates if conditional)."""
    if "own" not in ctx.cache:
        ctx.cache["own"] = model.resample(ctx.heldout, ctx.rng)
    return ctx.cache["own"]


@metric("w1", ("points",), f"Wasserstein-1 between a model sample and held-out real data (same size); exact "
        f"in 1-D, sliced over {W1_DIRECTIONS} random directions in more dimensions",
        title="Wasserstein-1 distance of model samples to held-out real data", axis="Wasserstein-1")
def w1(model: Family, ctx: MetricContext) -> np.ndarray:
    a = _own_sample(model, ctx)["x"]
    b = np.broadcast_to(ctx.heldout["x"], a.shape)
    d = a.shape[-1]
    if d == 1:
        return np.abs(np.sort(a[..., 0], axis=1) - np.sort(b[..., 0], axis=1)).mean(axis=1)
    dirs = ctx.rng.standard_normal((d, W1_DIRECTIONS))
    dirs /= np.linalg.norm(dirs, axis=0)
    pa, pb = np.sort(a @ dirs, axis=1), np.sort(b @ dirs, axis=1)
    return np.abs(pa - pb).mean(axis=(1, 2))


@metric("variance_ratio", ("points",), "trace of the fitted covariance / trace of the true covariance "
        "(of the held-out real data when no truth is known)", better="higher", needs="moments",
        title="Variance of the model relative to the real data", axis="fitted / true variance")
def variance_ratio(model: Family, ctx: MetricContext) -> np.ndarray:
    if ctx.truth is not None and hasattr(ctx.truth, "moments"):
        ref = np.trace(ctx.truth.moments()[1][0])
    else:
        x = ctx.heldout["x"][0]
        ref = np.trace(np.atleast_2d(np.cov(x, rowvar=False)))
    return np.trace(model.moments()[1], axis1=1, axis2=2) / ref


@metric("tail_mass", CONTINUOUS, f"fraction of held-out real samples in the fitted model's own {TAIL_ALPHA:.0%} "
        f"density tail, i.e. with confidence u < {TAIL_ALPHA} ({TAIL_ALPHA} for a correct model; grows as "
        f"tails are lost)",
        title="Held-out real data in the model's 1% density tail", axis="share of held-out data")
def tail_mass(model: Family, ctx: MetricContext) -> np.ndarray:
    return _sample_mean(model.confidence(ctx.heldout) < TAIL_ALPHA)


@metric("confidence_gap", (*ALL, "text"),
        "mean confidence u of the model on its own samples minus on held-out real data",
        title="Confidence on own samples minus on real data", axis="mean u (own) - mean u (real)")
def confidence_gap(model: Family, ctx: MetricContext) -> np.ndarray:
    return _sample_mean(confidence_of(model, ctx, "own")) - _sample_mean(confidence_of(model, ctx, "heldout"))


def confidence_of(model: Family, ctx: MetricContext, which: str, method: str = "confidence") -> np.ndarray:
    """The model's ``confidence`` (or ``loss_confidence``) of its own sample (``which="own"``) or of the held-out
    real data (``"heldout"``), computed once per generation (a family whose loss confidence is its confidence
    shares one)."""
    if method == "loss_confidence" and type(model).loss_confidence is Family.loss_confidence:
        method = "confidence"
    key = (method, which)
    if key not in ctx.cache:
        data = _own_sample(model, ctx) if which == "own" else ctx.heldout
        ctx.cache[key] = getattr(model, method)(data)
    return ctx.cache[key]
