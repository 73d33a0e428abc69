"""u-losses for Bernoulli outputs (pixels of a binary-likelihood image model), torch.

For a logit ``z`` and a target ``t`` the model's probability of the observed value is
``u = sigmoid(z)^t (1 - sigmoid(z))^(1-t)``, so ``log u = -BCE(z, t) = -(softplus(z) - t z)``; for a binary
``t`` this is exactly the probability of the observed pixel. (Real grey-level targets in [0, 1] are allowed:
``u`` is then the geometric mixture above, the quantity whose negative log is the usual BCE.)
The u-loss ``l(u)`` of :mod:`collapselab.losses.ulosses` is evaluated on that ``log u`` and differentiated
exactly: ``dl/dz = w(u) (sigmoid(z) - t)``, i.e. BCE's gradient re-weighted by ``w(u)``, the same definition
the categorical losses use. ``F.binary_cross_entropy_with_logits`` is the ``ce`` case (``w = 1``).

Numerics: ``log u`` and the loss are computed in float32 (float64 for float64 logits); the gradient has
the logits' dtype and is formed in the forward pass (one logits-sized tensor kept for backward).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from collapselab.losses import ulosses as U

Reduction = Literal["mean", "sum", "none"]


class _BinaryULoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z: torch.Tensor, t: torch.Tensor, loss: U.ULoss, sample_weight: torch.Tensor | None,
                generator: torch.Generator | None = None, tally: Callable[[torch.Tensor], None] | None = None):
        acc = torch.float64 if z.dtype == torch.float64 else torch.float32
        zf, tf = z.detach().to(acc), t.to(acc)
        nll = F.binary_cross_entropy_with_logits(zf, tf, reduction="none")  # -log u
        mask = loss.keep_mask(nll, generator)  # shaped like it (only its shape, dtype and device are read)
        threshold = loss.threshold
        if isinstance(loss, U.TCE) and threshold is not None and mask is None and sample_weight is None:
            # the common case in 5 element-wise passes, no generic temporaries (a third faster per step on an
            # MLP VAE); the same values, bit for bit, as the general path below
            keep = nll >= -math.log(threshold)  # in log space, as ulosses.TCE
            if tally is not None:
                tally(keep)
            ctx.save_for_backward(torch.sigmoid(zf).sub_(tf).mul_(keep).to(z.dtype))
            return torch.where(keep, nll, 0.0)
        log_u = -nll
        value, w = loss.value_and_weight(log_u)
        if mask is not None:
            value, w = value * mask, w * mask
        if tally is not None:
            tally(w)
        if sample_weight is not None:
            sw = sample_weight.to(acc).reshape(sample_weight.shape + (1,) * (z.dim() - sample_weight.dim()))
            value, w = value * sw, w * sw
        ctx.save_for_backward((w * (torch.sigmoid(zf) - tf)).to(z.dtype))
        return value

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        (grad,) = ctx.saved_tensors
        up = float(grad_output) if grad_output.dim() == 0 else grad_output.to(grad.dtype)  # no rounding to half
        return grad * up, None, None, None, None, None


def binary_uloss(logits: torch.Tensor, target: torch.Tensor, loss: U.ULoss | None = None,
                 reduction: Reduction = "mean", sample_weight: torch.Tensor | None = None,
                 generator: torch.Generator | None = None,
                 tally: Callable[[torch.Tensor], None] | None = None) -> torch.Tensor:
    """The u-loss ``loss`` (default CE) of Bernoulli ``logits`` for ``target`` values in [0, 1], element-wise.

    ``reduction``: ``"none"`` (per element, ``logits``' shape), ``"sum"``, or ``"mean"`` (over elements).
    ``sample_weight``: optional weights for the leading dimensions (e.g. one per image ``[N]``), multiplied
    into the loss and its gradient (how image-level u-weights apply). ``loss=CE()`` equals
    ``F.binary_cross_entropy_with_logits``. A loss that drops targets at random (``random_drop``) draws its mask
    from ``generator`` (default: torch's global generator). ``tally`` (if given) is called with the per-element
    weights ``w(u)`` (mask included, before ``sample_weight``), how :class:`~collapselab.losses.training.AppliedLoss`
    counts the targets kept.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    if target.shape != logits.shape:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits shape {tuple(logits.shape)}")
    if sample_weight is not None and sample_weight.shape != logits.shape[: sample_weight.dim()]:
        raise ValueError(f"sample_weight shape {tuple(sample_weight.shape)} must match the leading dimensions "
                         f"of logits {tuple(logits.shape)}")
    per = _BinaryULoss.apply(logits, target, loss if loss is not None else U.CE(), sample_weight, generator, tally)
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.mean()


def log_u_binary(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``log u`` per element: the log-probability of ``target`` under Bernoulli(sigmoid(logits))."""
    return -F.binary_cross_entropy_with_logits(logits.float(), target.float(), reduction="none")
