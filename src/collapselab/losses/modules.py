"""``nn.Module`` forms of the losses (``TruncatedCrossEntropy(gamma=0.9)``, ...) and ``get_loss`` for configs."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from collapselab.losses import functional as LF


class _Loss(nn.Module):
    """Holds the common ``F.cross_entropy`` arguments; ``weight`` is a buffer (moves with ``.to``)."""

    fn: Any = None
    #: the u-loss name whose parameters are validated at construction (None: not a u-loss)
    uloss_name: str | None = None

    def __init__(self, weight: torch.Tensor | None = None, ignore_index: int = -100, reduction: str = "mean",
                 class_dim: int = 1, gradient: str = "backward", **params: Any) -> None:
        super().__init__()
        LF._check(reduction, gradient if self.fn is not LF.nce_rce_loss else "backward")
        if self.uloss_name is not None:
            LF.make_weigh(self.uloss_name, (), **params)  # bad parameters raise now, not at the first call
        self.register_buffer("weight", weight)
        self.ignore_index, self.reduction, self.class_dim, self.gradient = ignore_index, reduction, class_dim, gradient
        self.params = params

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        extra = {} if self.fn is LF.nce_rce_loss else {"gradient": self.gradient}
        return type(self).fn(input, target, weight=self.weight, ignore_index=self.ignore_index,
                             reduction=self.reduction, class_dim=self.class_dim, **self.params, **extra)

    def extra_repr(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{params}, reduction={self.reduction!r}, class_dim={self.class_dim}".lstrip(", ")


def _module(name: str, fn: Any, doc: str, uloss: str | None = None, **defaults: Any) -> type[_Loss]:
    def __init__(self, *args: Any, weight: torch.Tensor | None = None, ignore_index: int = -100,
                 reduction: str = "mean", class_dim: int = 1, gradient: str = "backward", **params: Any) -> None:
        if args:
            params.update(dict(zip(defaults, args, strict=False)))
        unknown = set(params) - set(defaults)
        if unknown:
            raise TypeError(f"{name} got unexpected parameters {sorted(unknown)}; allowed: {sorted(defaults)}")
        _Loss.__init__(self, weight, ignore_index, reduction, class_dim, gradient, **{**defaults, **params})

    return type(name, (_Loss,), {"fn": staticmethod(fn), "__init__": __init__, "__doc__": doc, "uloss_name": uloss})


CrossEntropy = _module("CrossEntropy", LF.cross_entropy, "Cross entropy (see ``functional.cross_entropy``).",
                       "ce")
TruncatedCrossEntropy = _module("TruncatedCrossEntropy", LF.truncated_cross_entropy,
                                "Truncated cross entropy (see ``functional.truncated_cross_entropy``).",
                                "tce", gamma=0.99, normalize="all", k=1.0)
FocalLoss = _module("FocalLoss", LF.focal_loss, "Focal loss.", "focal", gamma=2.0)
LinearWeightedLoss = _module("LinearWeightedLoss", LF.linear_weighted_loss,
                             "w = 1 - beta u, beta in [0, 1] (see ``functional.linear_weighted_loss``).",
                             "linear", beta=1.0)
Poly1Loss = _module("Poly1Loss", LF.poly1_loss, "Poly-1 loss.", "poly1", epsilon=1.0)
GCELoss = _module("GCELoss", LF.gce_loss, "Generalized cross entropy.", "gce", q=0.7)
SCELoss = _module("SCELoss", LF.sce_loss, "Symmetric cross entropy.", "sce", alpha=0.1, beta=1.0, A=-4.0)
NCERCELoss = _module("NCERCELoss", LF.nce_rce_loss, "NCE + RCE (not a u-loss; see ``functional.nce_rce_loss``).",
                     alpha=1.0, beta=1.0, A=-4.0)
AGCELoss = _module("AGCELoss", LF.agce_loss, "Asymmetric GCE.", "agce", a=1.0, q=2.0)
AELLoss = _module("AELLoss", LF.ael_loss, "Asymmetric exponential loss.", "ael", a=2.5)
VCELoss = _module("VCELoss", LF.vce_loss, "Bounded-variation cross entropy.", "vce", a=0.5)

LOSS_MODULES: dict[str, type[_Loss]] = {
    "ce": CrossEntropy, "tce": TruncatedCrossEntropy, "focal": FocalLoss, "linear": LinearWeightedLoss,
    "poly1": Poly1Loss, "gce": GCELoss, "sce": SCELoss, "nce_rce": NCERCELoss, "agce": AGCELoss,
    "ael": AELLoss, "vce": VCELoss,
}


class ULossModule(_Loss):
    """Any registered u-loss (a plugin included) as a module with ``F.cross_entropy`` semantics."""

    def __init__(self, loss: Any, weight: torch.Tensor | None = None, ignore_index: int = -100,
                 reduction: str = "mean", class_dim: int = 1, gradient: str = "backward") -> None:
        super().__init__(weight, ignore_index, reduction, class_dim, gradient)
        self.loss = loss

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return LF._u(self.loss, input, target, self.weight, self.ignore_index, self.reduction, self.class_dim,
                     self.gradient)

    def extra_repr(self) -> str:
        return f"{self.loss.label()}, reduction={self.reduction!r}, class_dim={self.class_dim}"


def get_loss(name: str, **params: Any) -> nn.Module:
    """The loss module called ``name`` (``ce``, ``tce``, ``focal``, ... ``nce_rce``, or a plugin's u-loss by name
    or ``module:Class``) built with ``params`` (a plugin's: its fields, plus the module arguments)."""
    if name in LOSS_MODULES:
        return LOSS_MODULES[name](**params)
    from pydantic import ValidationError

    from collapselab.losses.ulosses import LOSSES, get_uloss

    if name not in LOSSES and ":" not in name:
        names = [*LOSS_MODULES, *(n for n in LOSSES.names() if n not in LOSS_MODULES)]
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(names)}")
    module_args = {k: params.pop(k) for k in ("weight", "ignore_index", "reduction", "class_dim", "gradient")
                   if k in params}
    try:
        loss = get_uloss(name, **params)
    except ValidationError as e:
        raise ValueError(f"loss {name!r}: {e.errors()[0]['msg']}") from None
    return ULossModule(loss, **module_args)
