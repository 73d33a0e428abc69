"""Hugging Face adapter: any u-loss as a ``transformers.Trainer(compute_loss_func=...)`` for causal LMs.

The returned callable mirrors transformers' ``ForCausalLMLoss``: labels are right-padded with
``ignore_index`` and shifted by one (the logits at position t predict label t + 1; the logits are not
sliced), unless already shifted labels are passed as ``shift_labels=`` (then ``labels`` is not used and may
be None); the logits' class dimension is last. The loss is computed and returned in float32 also for
float16/bfloat16 logits (their gradient comes back in their own dtype, computed in float32). When the Trainer
passes ``num_items_in_batch`` (the number of predicted tokens of the whole optimizer step), the loss is the
float32 sum over this micro-batch divided by it, so gradient accumulation gives the same loss and gradients
as one large batch; otherwise it is the mean over the micro-batch's non-ignored tokens.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from collapselab.losses import functional as LF


def _logits(outputs: Any) -> torch.Tensor:
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping):
        return outputs["logits"]
    if hasattr(outputs, "logits"):
        return outputs.logits
    return outputs[0]


def shift_labels(labels: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """``labels`` shifted left by one, the last position filled with ``ignore_index`` (as ``ForCausalLMLoss``)."""
    return F.pad(labels, (0, 1), value=ignore_index)[..., 1:]


_shift = shift_labels  # the callable below takes a ``shift_labels`` argument, as ``ForCausalLMLoss``


def _targets(logits: torch.Tensor, labels: torch.Tensor | None, shifted: torch.Tensor | None,
             ignore_index: int) -> torch.Tensor:
    if shifted is None:
        if labels is None:
            raise ValueError("causal_lm_loss: pass labels or shift_labels")
        return _shift(labels.to(logits.device), ignore_index)
    shifted = shifted.to(logits.device)
    shape = logits.shape[:-1]
    if shifted.shape != shape:  # ForCausalLMLoss flattens both, so any layout with one label per row works
        if shifted.numel() != math.prod(shape):
            raise ValueError(f"causal_lm_loss: shift_labels shape {tuple(shifted.shape)} does not match logits "
                             f"{tuple(logits.shape)}")
        shifted = shifted.reshape(shape)
    return shifted


def causal_lm_loss(name: str = "tce", ignore_index: int = -100, **params: Any) -> Callable[..., torch.Tensor]:
    """A ``compute_loss_func(outputs, labels, num_items_in_batch=None, *, shift_labels=None)`` for ``name``.

    The callable takes ``outputs`` (logits ``[B, T, V]``, or a model output holding them), ``labels``
    (unshifted; may be None when ``shift_labels`` is given), ``num_items_in_batch`` and, as
    ``ForCausalLMLoss``, keyword ``shift_labels`` (already shifted labels, used as they are) and
    ``ignore_index`` (default: this factory's); other keywords are ignored. ``params`` are the loss's own
    (``gamma=0.99``, ``normalize="all"`` for TCE, ...); ``nce_rce`` works too.
    TCE's ``normalize="kept"`` is rejected: the kept count of the whole accumulated batch is unknown to each
    micro-batch, so it cannot honour ``num_items_in_batch``.
    """
    if name == "tce" and params.get("normalize", "all") == "kept":
        raise ValueError("causal_lm_loss: normalize='kept' cannot be made invariant to gradient accumulation; "
                         "use normalize='all' (ForTIFAI's convention)")
    if name == "nce_rce":
        LF.nce_rce_loss(torch.zeros(1, 2), torch.zeros(1, dtype=torch.long), **params)  # validate now
    else:
        LF.make_weigh(name, (), **params)  # validate now

    default_ignore = ignore_index

    def compute_loss(outputs: Any, labels: torch.Tensor | None = None, num_items_in_batch: Any = None, *,
                     shift_labels: torch.Tensor | None = None, ignore_index: int | None = None,
                     **_: Any) -> torch.Tensor:
        logits = _logits(outputs)
        ignore = default_ignore if ignore_index is None else ignore_index
        target = _targets(logits, labels, shift_labels, ignore)
        reduction = "mean" if num_items_in_batch is None else "sum"
        if name == "nce_rce":
            loss = LF.nce_rce_loss(logits, target, ignore_index=ignore, reduction=reduction, class_dim=-1,
                                   **params)
        else:
            weigh = LF.make_weigh(name, tuple(target.shape), **params)
            loss = LF.uloss(logits, target, weigh, ignore_index=ignore, reduction=reduction, class_dim=-1)
        if num_items_in_batch is not None:  # the loss is float32 (float64 for float64 logits): divide in it
            loss = loss / torch.as_tensor(num_items_in_batch, dtype=loss.dtype, device=loss.device)
        return loss

    return compute_loss
