"""``nn.Module`` forms of the losses (``TruncatedCrossEntropy(gamma=0.9)``, ...) and ``get_loss`` for configs.

Each built-in u-loss's module is made from its class (:data:`collapselab.losses.functional.FORMS`): the class's
fields are the module's parameters, with their defaults and validation; :class:`ULossModule` holds any u-loss, a
plugin's included.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from collapselab.losses import functional as LF
from collapselab.losses import ulosses as U


class ULossModule(nn.Module):
    """A u-loss (built-in or plugin) as a module with ``F.cross_entropy`` semantics; ``weight`` is a buffer (moves
    with ``.to``). ``normalize``, ``generator`` and TCE's ``batch_dynamic`` as in
    :func:`collapselab.losses.functional.weigh_for`."""

    def __init__(self, loss: U.ULoss, weight: torch.Tensor | None = None, ignore_index: int = -100,
                 reduction: str = "mean", class_dim: int = 1, gradient: str = "backward", normalize: str = "all",
                 generator: torch.Generator | None = None, batch_dynamic: float | None = None) -> None:
        super().__init__()
        LF._check(reduction, gradient)
        if normalize not in ("all", "kept"):
            raise ValueError(f"normalize must be 'all' or 'kept', got {normalize!r}")
        self.register_buffer("weight", weight)
        self.loss = loss
        self.ignore_index, self.reduction, self.class_dim, self.gradient = ignore_index, reduction, class_dim, gradient
        self.normalize, self.generator, self.batch_dynamic = normalize, generator, batch_dynamic

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        weigh = LF.weigh_for(self.loss, self.normalize, self.generator, self.batch_dynamic,
                             LF._seq_len(tuple(target.shape)))
        return LF.uloss(input, target, weigh, self.weight, self.ignore_index, self.reduction, self.class_dim,
                        self.gradient)

    def extra_repr(self) -> str:
        label = self.loss.label() if self.batch_dynamic is None else f"tce(gamma=batch_dynamic, k={self.batch_dynamic})"
        return f"{label}, reduction={self.reduction!r}, class_dim={self.class_dim}"


_MODULE_ARGS = ("weight", "ignore_index", "reduction", "class_dim", "gradient")


def _module_form(cls: type[U.ULoss], mname: str) -> type[ULossModule]:
    def __init__(self: ULossModule, *args: Any, weight: torch.Tensor | None = None, ignore_index: int = -100,
                 reduction: str = "mean", class_dim: int = 1, gradient: str = "backward", **params: Any) -> None:
        loss, options = LF.build(cls, args, params)
        ULossModule.__init__(self, loss, weight, ignore_index, reduction, class_dim, gradient,
                             options.get("normalize", "all"), options.get("generator"), options.get("batch_dynamic"))

    doc = (cls.__doc__ or "").strip() + f"\n\nModule form of :class:`collapselab.losses.ulosses.{cls.__name__}`."
    return type(mname, (ULossModule,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


#: the module of every built-in u-loss by loss name (``nce_rce`` added below)
LOSS_MODULES: dict[str, type[nn.Module]] = {name: _module_form(U.LOSSES[name], mname)
                                             for name, (_, mname) in LF.FORMS.items()}
globals().update({cls.__name__: cls for cls in LOSS_MODULES.values()})
CrossEntropy = LOSS_MODULES["ce"]
TruncatedCrossEntropy = LOSS_MODULES["tce"]
FocalLoss = LOSS_MODULES["focal"]
LinearWeightedLoss = LOSS_MODULES["linear"]
Poly1Loss = LOSS_MODULES["poly1"]
GCELoss = LOSS_MODULES["gce"]
SCELoss = LOSS_MODULES["sce"]
AGCELoss = LOSS_MODULES["agce"]
AELLoss = LOSS_MODULES["ael"]
VCELoss = LOSS_MODULES["vce"]
RandomDropLoss = LOSS_MODULES["random_drop"]


class NCERCELoss(nn.Module):
    """NCE + RCE (not a u-loss; see :func:`collapselab.losses.functional.nce_rce_loss`)."""

    def __init__(self, alpha: float = 1.0, beta: float = 1.0, A: float = -4.0, weight: torch.Tensor | None = None,
                 ignore_index: int = -100, reduction: str = "mean", class_dim: int = 1) -> None:
        super().__init__()
        LF._check(reduction, "backward")
        self.register_buffer("weight", weight)
        self.alpha, self.beta, self.A = float(alpha), float(beta), float(A)
        self.ignore_index, self.reduction, self.class_dim = ignore_index, reduction, class_dim

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return LF.nce_rce_loss(input, target, self.alpha, self.beta, self.A, weight=self.weight,
                               ignore_index=self.ignore_index, reduction=self.reduction, class_dim=self.class_dim)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, A={self.A}, reduction={self.reduction!r}"


LOSS_MODULES["nce_rce"] = NCERCELoss


def get_loss(name: str, **params: Any) -> nn.Module:
    """The loss module called ``name`` (``ce``, ``tce``, ``focal``, ... ``nce_rce``, or a plugin's u-loss by name
    or ``module:Class``) built with ``params`` (the loss's fields, plus the module arguments)."""
    if name in LOSS_MODULES:
        return LOSS_MODULES[name](**params)
    from collapselab.errors import ConfigError

    try:
        cls = U.LOSSES.entry(name).obj
    except ConfigError:
        names = [*LOSS_MODULES, *(n for n in U.LOSSES.names() if n not in LOSS_MODULES)]
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join(names)}") from None
    module_args = {k: params.pop(k) for k in _MODULE_ARGS if k in params}
    loss, options = LF.build(cls, (), params)
    return ULossModule(loss, **module_args, normalize=options.get("normalize", "all"),
                       generator=options.get("generator"), batch_dynamic=options.get("batch_dynamic"))
