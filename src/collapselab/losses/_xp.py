"""The few array operations the u-loss definitions need, for numpy arrays and torch tensors alike.

Hand-written rather than array-api-compat: a handful of functions do not justify a dependency, and torch's
``where``/``clamp`` signatures differ from numpy's in ways the compat layer does not hide for scalars.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def is_torch(x: Any) -> bool:
    return type(x).__module__.split(".")[0] == "torch"


class _Numpy:
    exp = staticmethod(np.exp)
    expm1 = staticmethod(np.expm1)
    log = staticmethod(np.log)
    log1p = staticmethod(np.log1p)
    where = staticmethod(np.where)

    @staticmethod
    def sigmoid(x: Any) -> Any:
        from scipy.special import expit

        return expit(x)

    @staticmethod
    def clamp_min(x: Any, v: float) -> Any:
        return np.maximum(x, v)

    @staticmethod
    def tiny(x: Any) -> float:
        dt = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
        return float(np.finfo(dt).tiny)

    @staticmethod
    def as_float(x: Any) -> Any:
        x = np.asarray(x)
        return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)

    @staticmethod
    def to_numpy(x: Any) -> np.ndarray:
        return np.asarray(x)


class _Torch:
    def __init__(self) -> None:
        import torch

        self.t = torch
        self.exp, self.expm1, self.log, self.log1p = torch.exp, torch.expm1, torch.log, torch.log1p
        self.where, self.sigmoid = torch.where, torch.sigmoid

    @staticmethod
    def clamp_min(x: Any, v: float) -> Any:
        return x.clamp_min(v)

    def tiny(self, x: Any) -> float:
        return float(self.t.finfo(x.dtype).tiny)

    @staticmethod
    def as_float(x: Any) -> Any:
        return x if x.is_floating_point() else x.double()

    @staticmethod
    def to_numpy(x: Any) -> np.ndarray:
        return x.detach().double().cpu().numpy()


_NP = _Numpy()
_TORCH: _Torch | None = None


def namespace(x: Any) -> Any:
    """The operations for ``x``'s array library."""
    global _TORCH
    if is_torch(x):
        if _TORCH is None:
            _TORCH = _Torch()
        return _TORCH
    return _NP
