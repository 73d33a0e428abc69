"""Rewards for reward-based curators (``top_k``, ``luce_choice``): a number per sample, higher is better."""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from collapselab.samples import SampleSet


class RewardConfig(BaseModel):
    """Base of all rewards (``name`` selects one)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    name: str

    #: the data kinds the reward scores
    kinds: ClassVar[tuple[str, ...]] = ("points", "regression", "images", "text")

    def __call__(self, data: SampleSet) -> np.ndarray:
        raise NotImplementedError

    def check(self, kind: str) -> str | None:
        """Why the reward cannot score ``kind`` data, or ``None``."""
        return None if kind in self.kinds else f"reward {self.name!r} does not apply to {kind} data"


class Coordinate(RewardConfig):
    """``scale * x[..., index]`` for point samples."""

    name: Literal["coordinate"] = "coordinate"
    index: int = Field(0, ge=0)
    scale: float = 1.0

    def __call__(self, data):
        return self.scale * data["x"][..., self.index]


class Distance(RewardConfig):
    """``-scale * ||x - target||^2`` for point samples."""

    name: Literal["distance"] = "distance"
    target: list[float]
    scale: float = Field(1.0, gt=0)

    def __call__(self, data):
        return -self.scale * np.sum((data["x"] - np.asarray(self.target)) ** 2, axis=-1)


class SymbolValues(RewardConfig):
    """Sum over the tokens of a sequence of ``values[token]``."""

    name: Literal["symbol_values"] = "symbol_values"
    kinds: ClassVar[tuple[str, ...]] = ("tokens",)
    values: list[float]

    def __call__(self, data):
        v = np.asarray(self.values, dtype=np.float64)
        x = data["x"]
        if x.max(initial=0) >= len(v):
            raise ValueError(f"symbol_values has {len(v)} values but the vocabulary is larger")
        return v[x].reshape(x.shape[0], x.shape[1], -1).sum(-1)


RewardSettings = Annotated[Coordinate | Distance | SymbolValues, Field(discriminator="name")]
