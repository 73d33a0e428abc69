"""Hugging Face adapter: any u-loss as a ``transformers.Trainer(compute_loss_func=...)`` for causal LMs.

The returned callable mirrors transformers' ``ForCausalLMLoss``: labels are right-padded with
``ignore_index`` and shifted by one (the logits at position t predict label t + 1; the logits are not
sliced), the logits' class dimension is last, and the loss is accumulated in float32. When the Trainer
passes ``num_items_in_batch`` (the number of predicted tokens of the whole optimizer step), the loss is
the sum over this micro-batch divided by it, so gradient accumulation gives the same loss and gradients
as one large batch; otherwise it is the mean over the micro-batch's non-ignored tokens.
"""

from __future__ import annotations

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


def causal_lm_loss(name: str = "tce", ignore_index: int = -100, **params: Any) -> Callable[..., torch.Tensor]:
    """A ``compute_loss_func(outputs, labels, num_items_in_batch=None)`` using the u-loss ``name``.

    ``params`` are the loss's own (``gamma=0.99``, ``normalize="all"`` for TCE, ...); ``nce_rce`` works too.
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

    def compute_loss(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None, **_: Any) -> torch.Tensor:
        logits = _logits(outputs)
        target = shift_labels(labels.to(logits.device), ignore_index)
        reduction = "mean" if num_items_in_batch is None else "sum"
        if name == "nce_rce":
            loss = LF.nce_rce_loss(logits, target, ignore_index=ignore_index, reduction=reduction, class_dim=-1,
                                   **params)
        else:
            weigh = LF.make_weigh(name, tuple(target.shape), **params)
            loss = LF.uloss(logits, target, weigh, ignore_index=ignore_index, reduction=reduction, class_dim=-1)
        if num_items_in_batch is not None:
            if isinstance(num_items_in_batch, torch.Tensor):
                num_items_in_batch = num_items_in_batch.to(loss.device)
            loss = loss / num_items_in_batch
        return loss

    return compute_loss
