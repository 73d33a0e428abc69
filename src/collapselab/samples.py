"""SampleSet: a batch of samples with a leading chain axis, the one data type the engine moves.

Every array has shape ``[C, n, ...]`` (C chains, n samples per chain). ``weight`` ``[C, n]`` is a
per-sample curation weight (1 = kept, 0 = dropped by a curator that rejects a variable number per
chain); families multiply it into their fit weights. Unit weights are not stored (``w is None``) until
something needs the array. Regimes and curators only use the operations
here, so they never need to know what a sample is (a point, an (x, y) pair, a token sequence...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SampleSet:
    """Named arrays sharing the leading ``[C, n]`` axes, plus per-sample weights."""

    arrays: Mapping[str, np.ndarray]
    w: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not self.arrays:
            raise ValueError("a SampleSet needs at least one array")
        shapes = {k: v.shape[:2] for k, v in self.arrays.items()}
        first = next(iter(shapes.values()))
        if any(len(v.shape) < 2 for v in self.arrays.values()) or len(set(shapes.values())) != 1:
            raise ValueError(f"SampleSet arrays must share leading [chains, samples] axes, got {shapes}")
        object.__setattr__(self, "_shape", first)
        if self.w is not None and self.w.shape != first:
            raise ValueError(f"weight shape {self.w.shape} != {first}")

    @property
    def weight(self) -> np.ndarray:
        """Per-sample curation weights ``[C, n]`` (ones when none were set)."""
        return np.ones(self._shape, dtype=np.float64) if self.w is None else self.w

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    @property
    def n_chains(self) -> int:
        return int(self._shape[0])

    @property
    def n(self) -> int:
        return int(self._shape[1])

    def with_weight(self, weight: np.ndarray) -> SampleSet:
        """The same samples with other per-sample weights."""
        return SampleSet(self.arrays, np.asarray(weight, dtype=np.float64))

    def take(self, index: np.ndarray) -> SampleSet:
        """Per-chain selection: ``index`` is ``[C, m]`` (positions along the sample axis) or ``[m]``."""
        index = np.asarray(index)
        if index.ndim == 1:
            return SampleSet({k: v[:, index] for k, v in self.arrays.items()},
                             None if self.w is None else self.w[:, index])

        def pick(a: np.ndarray) -> np.ndarray:
            idx = index.reshape(index.shape + (1,) * (a.ndim - 2))
            return np.take_along_axis(a, idx, axis=1)

        return SampleSet({k: pick(v) for k, v in self.arrays.items()}, None if self.w is None else pick(self.w))

    def head(self, m: int) -> SampleSet:
        """The first ``m`` samples of every chain."""
        return SampleSet({k: v[:, :m] for k, v in self.arrays.items()}, None if self.w is None else self.w[:, :m])

    def chains(self, index: np.ndarray | slice) -> SampleSet:
        """A subset of chains."""
        return SampleSet({k: v[index] for k, v in self.arrays.items()}, None if self.w is None else self.w[index])

    def broadcast_weight(self, like: np.ndarray) -> np.ndarray:
        """``weight`` reshaped to broadcast against a per-sample (or per-token) array ``[C, n, ...]``."""
        return self.weight.reshape(self._shape + (1,) * (like.ndim - 2))

    def to_flat(self, prefix: str = "") -> dict[str, np.ndarray]:
        """Flat ``{name: array}`` for safetensors (weights under ``<prefix>__weight__``)."""
        out = {f"{prefix}{k}": np.ascontiguousarray(v) for k, v in self.arrays.items()}
        out[f"{prefix}__weight__"] = np.ascontiguousarray(self.weight)
        return out

    @staticmethod
    def from_flat(flat: Mapping[str, np.ndarray], prefix: str = "") -> SampleSet:
        """Inverse of :meth:`to_flat`."""
        arrays = {k[len(prefix):]: v for k, v in flat.items()
                  if k.startswith(prefix) and k != f"{prefix}__weight__"}
        return SampleSet(arrays, flat[f"{prefix}__weight__"])


def concat(sets: Iterable[SampleSet]) -> SampleSet:
    """Concatenate along the sample axis (all sets must hold the same array names)."""
    sets = [s for s in sets if s is not None]
    if not sets:
        raise ValueError("nothing to concatenate")
    if len(sets) == 1:
        return sets[0]
    keys = list(sets[0].arrays)
    for s in sets[1:]:
        if list(s.arrays) != keys:
            raise ValueError(f"cannot concatenate sample sets holding {keys} and {list(s.arrays)}")
    weight = None if all(s.w is None for s in sets) else np.concatenate([s.weight for s in sets], axis=1)
    return SampleSet({k: np.concatenate([s.arrays[k] for s in sets], axis=1) for k in keys}, weight)
