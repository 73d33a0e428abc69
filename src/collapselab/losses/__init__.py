"""Losses as functions of the target probability u.

A plugin loss subclasses :class:`ULoss` with a ``name`` and ``value(log_u)`` (see ``ulosses``); :data:`LOSSES` is
the registry of every loss, built-in or plugin. A training loop applies a loss through :class:`AppliedLoss` (the one
seam, :mod:`collapselab.losses.training`), which also records what the loss did (:class:`LossRecord`).

- :mod:`collapselab.losses.ulosses`: the definitions ``l(u)`` and ``w(u)`` (numpy and torch), used by the engine.
- :mod:`collapselab.losses.functional` / :mod:`~collapselab.losses.modules`: PyTorch losses with
  ``F.cross_entropy`` semantics; :mod:`~collapselab.losses.fused`: memory-lean linear + loss;
  :mod:`~collapselab.losses.hf`: a Hugging Face ``Trainer`` loss; :mod:`~collapselab.losses.binary`: the
  same u-losses for Bernoulli outputs (pixels). These import torch on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

from collapselab.losses.training import AppliedLoss, LossRecord
from collapselab.losses.ulosses import (
    AEL,
    AGCE,
    CE,
    GCE,
    LOSSES,
    SCE,
    TCE,
    ULOSS_CLASSES,
    ULOSS_NAMES,
    VCE,
    Focal,
    Linear,
    LossConfig,
    Poly1,
    ULoss,
    get_uloss,
    ops,
)

_TORCH_EXPORTS = {
    "cross_entropy": "functional", "truncated_cross_entropy": "functional", "focal_loss": "functional",
    "linear_weighted_loss": "functional", "poly1_loss": "functional", "gce_loss": "functional",
    "sce_loss": "functional", "nce_rce_loss": "functional", "agce_loss": "functional", "ael_loss": "functional",
    "vce_loss": "functional", "random_drop_loss": "functional", "weigh_for": "functional",
    "RandomDropLoss": "modules", "ULossModule": "modules", "CrossEntropy": "modules",
    "TruncatedCrossEntropy": "modules",
    "FocalLoss": "modules", "LinearWeightedLoss": "modules", "Poly1Loss": "modules", "GCELoss": "modules",
    "SCELoss": "modules", "NCERCELoss": "modules", "AGCELoss": "modules", "AELLoss": "modules",
    "VCELoss": "modules", "get_loss": "modules", "linear_cross_entropy": "fused", "binary_uloss": "binary",
}


def __getattr__(name: str) -> Any:  # torch is imported only when a torch loss is asked for
    if name in _TORCH_EXPORTS:
        return getattr(importlib.import_module(f"collapselab.losses.{_TORCH_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'collapselab.losses' has no attribute {name!r}")


__all__ = ["AEL", "AGCE", "CE", "GCE", "LOSSES", "AppliedLoss", "LossRecord", "SCE", "TCE", "ULOSS_CLASSES",
           "ULOSS_NAMES", "VCE", "Focal", "Linear", "LossConfig", "Poly1", "ULoss", "get_uloss", "ops", *_TORCH_EXPORTS]
