"""What the arm's loss did, per generation: the gamma it trained with and the shares of targets it drops.

These read the fit's :class:`~collapselab.losses.training.LossRecord` (every family has one per chain, from the
seam that applied the loss), so they apply to every family.

- ``loss_gamma``: the confidence threshold of the fit's last epoch or refit (the realised one for an adaptive
  ``{quantile: q}`` or ``{dynamic: k}``); 1 for cross entropy (it truncates nothing); NaN for a loss that does not
  truncate by confidence (focal's exponent, say, is not a threshold).
- ``loss_kept``: the share of the training targets (tokens, pixels, images or samples) the loss kept in the fit's
  last epoch or refit, i.e. the mean of its weight ``w(u)`` there (with a random-drop mask applied).
- ``drop_own`` / ``drop_real``: the share of the model's own samples' targets (its rewrite of the held-out windows,
  or its samples) and of held-out real data's that the loss, at that gamma, would drop: ``1 - mean(w(u))`` times
  a random mask's keep share. A truncating loss should drop more of its own text than of real text (ForTIFAI's
  premise): the difference is what it can act on.
- ``image_confidence_gap`` / ``image_confidence_gap_mean`` (VAE): the mean image-level confidence of the model's
  Bernoulli samples (decoder-mean images) minus that of held-out real images (0.5 for unseen real images by
  construction): positive when the model is over-confident on its own samples, as TCE assumes.
"""

from __future__ import annotations

import numpy as np

from collapselab.families.base import Family
from collapselab.metrics.base import ANY_KIND, MetricContext, metric
from collapselab.metrics.fidelity import confidence_of


def _records(model: Family) -> list:
    return list(model.loss_records) + [None] * (model.n_chains - len(model.loss_records))


@metric("loss_gamma", (ANY_KIND,), "the confidence threshold of the fit's last epoch (realised for an adaptive gamma; "
        "1 for cross entropy, NaN for a loss without one)", title="Gamma used in training", axis="gamma")
def loss_gamma(model: Family, ctx: MetricContext) -> np.ndarray:
    return np.array([np.nan if r is None or r.gamma is None else r.gamma for r in _records(model)])


@metric("loss_kept", (ANY_KIND,), "share of the training targets the loss kept in the fit's last epoch (mean w(u))",
        better="higher", title="Share of training targets kept by the loss", axis="share kept")
def loss_kept(model: Family, ctx: MetricContext) -> np.ndarray:
    return np.array([np.nan if r is None else r.kept for r in _records(model)])


def _dropped(model: Family, ctx: MetricContext, which: str) -> np.ndarray:
    u = confidence_of(model, ctx, which, "loss_confidence")
    out = np.empty(model.n_chains)
    for c, record in enumerate(_records(model)):
        loss = ctx.loss if record is None else record.loss  # the loss as the fit applied it (its gamma resolved)
        w = np.asarray(loss.weight_u(np.asarray(u[c], dtype=np.float64)), dtype=np.float64)
        out[c] = 1.0 - float(np.mean(w)) * loss.keep_share
    return out


@metric("drop_own", (ANY_KIND,), "share of the targets of the model's own samples (its rewrite of the held-out "
        "windows) that the arm's loss, at its realised gamma, drops", needs="loss_confidence",
        title="Share of the model's own targets the loss drops", axis="share dropped")
def drop_own(model: Family, ctx: MetricContext) -> np.ndarray:
    return _dropped(model, ctx, "own")


@metric("drop_real", (ANY_KIND,), "share of the targets of held-out real data that the arm's loss, at its realised "
        "gamma, drops", needs="loss_confidence", title="Share of real targets the loss drops",
        axis="share dropped")
def drop_real(model: Family, ctx: MetricContext) -> np.ndarray:
    return _dropped(model, ctx, "heldout")


def _image_gap(kind: str):
    def fn(model: Family, ctx: MetricContext) -> np.ndarray:
        own = model.image_confidence(model.draw(ctx.heldout.n, ctx.rng, kind))
        real = model.image_confidence(ctx.heldout)
        return own.mean(axis=1) - real.mean(axis=1)

    return fn


metric("image_confidence_gap", ("images",), "mean image-level confidence of the model's Bernoulli samples minus "
       "that of held-out real images (u = rank of ELBO_model - ELBO_ref among unseen real images; > 0: the model "
       "is over-confident on its own samples)", needs="image_confidence",
       title="Image confidence, own Bernoulli samples minus real", axis="mean u (own) - mean u (real)",
       chance=0.0)(_image_gap("bernoulli"))
metric("image_confidence_gap_mean", ("images",), "as image_confidence_gap for the model's decoder-mean images",
       needs="image_confidence", title="Image confidence, own mean images minus real",
       axis="mean u (own) - mean u (real)", chance=0.0)(_image_gap("mean"))
