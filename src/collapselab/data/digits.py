"""Real images as points: scikit-learn's 8x8 digits (1,797 images, bundled with scikit-learn).

Pixels are projected on the first ``dims`` principal components of the training split and scaled by
one common factor so the projected training data have unit average variance per dimension. Small,
real and fast: the default for point families on real data.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

import numpy as np
from pydantic import Field

from collapselab.data.base import SOURCES, FiniteSource, Source, SourceConfig
from collapselab.seeding import SeedTree


class DigitsConfig(SourceConfig):
    """``dims`` principal components of the digits (64 = all pixels, unprojected but scaled); ``form: images``
    gives the 8x8 images with labels instead (:class:`collapselab.data.images.DigitImages`)."""

    source: Literal["digits"] = "digits"
    dims: int = Field(2, ge=1, le=64)
    form: Literal["points", "images"] = "points"
    balanced: bool = Field(True, description="images: class-balanced order of each chain's real pool")


@SOURCES.register
class Digits(FiniteSource):
    name = "digits"
    config_class = DigitsConfig
    kind = "points"
    config: DigitsConfig

    @classmethod
    def serving(cls, config: SourceConfig) -> type[Source]:
        if getattr(config, "form", None) == "images":
            from collapselab.data.images import DigitImages

            return DigitImages
        return cls

    @property
    def spec(self) -> dict[str, Any]:
        return {"dim": self.config.dims}

    @cached_property
    def _pixels(self) -> np.ndarray:
        from sklearn.datasets import load_digits

        return load_digits().data.astype(np.float64)

    def load(self) -> dict[str, np.ndarray]:
        return {"x": self._pixels}

    def _split(self, tree: SeedTree):
        cache = getattr(self, "_proj_cache", None)
        if cache is not None and cache[0] == tree.seed:
            return cache[1]
        train, held = super()._split(tree)
        x = train["x"]
        mean = x.mean(axis=0)
        if self.config.dims < x.shape[1]:
            basis = np.linalg.svd(x - mean, full_matrices=False)[2][: self.config.dims]
            # fix each component's sign so the projection does not depend on the LAPACK build
            basis *= np.where(basis[np.arange(len(basis)), np.abs(basis).argmax(axis=1)] < 0, -1.0, 1.0)[:, None]
        else:
            basis = np.eye(x.shape[1])
        proj = (x - mean) @ basis.T
        scale = np.sqrt(np.mean(proj.var(axis=0)))
        out = ({"x": proj / scale}, {"x": (held["x"] - mean) @ basis.T / scale})
        self._proj_cache = (tree.seed, out)
        return out
