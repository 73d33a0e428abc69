"""Losses as functions of the target probability u (see :mod:`collapselab.losses.ulosses`)."""

from collapselab.losses.ulosses import (
    AEL,
    AGCE,
    CE,
    GCE,
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
)

__all__ = ["AEL", "AGCE", "CE", "GCE", "SCE", "TCE", "ULOSS_CLASSES", "ULOSS_NAMES", "VCE", "Focal",
           "Linear", "LossConfig", "Poly1", "ULoss", "get_uloss"]
