"""Real data sources and known-truth toys, selected by ``data.source`` in an experiment."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from collapselab.data.base import FiniteSource, RealPool, Source, SourceConfig, TruthSource
from collapselab.data.digits import Digits, DigitsConfig
from collapselab.data.images import MNIST, DigitImages, FashionMNIST, FashionMNISTConfig, ImageSource, MNISTConfig
from collapselab.data.shakespeare import Shakespeare, ShakespeareConfig
from collapselab.data.text import Plays, PlaysConfig, TextSource, Wikipedia, WikipediaConfig
from collapselab.data.truth import (
    CategoricalTruth,
    CategoricalTruthConfig,
    GaussianTruth,
    GaussianTruthConfig,
    GMMTruth,
    GMMTruthConfig,
    LinearTruth,
    LinearTruthConfig,
)

SOURCES: dict[str, type[Source]] = {
    "gaussian": GaussianTruth,
    "gmm": GMMTruth,
    "linear": LinearTruth,
    "categorical": CategoricalTruth,
    "digits": Digits,
    "shakespeare": Shakespeare,
    "mnist": MNIST,
    "fashion_mnist": FashionMNIST,
    "wikipedia": Wikipedia,
    "plays": Plays,
}

DataSettings = Annotated[GaussianTruthConfig | GMMTruthConfig | LinearTruthConfig | CategoricalTruthConfig
                         | DigitsConfig | ShakespeareConfig | MNISTConfig | FashionMNISTConfig | WikipediaConfig
                         | PlaysConfig,
                         Field(discriminator="source")]


def source_class(config: SourceConfig) -> type[Source]:
    """The source class serving ``config`` (``digits`` in ``form: images`` is served as images)."""
    if getattr(config, "form", None) == "images":
        return DigitImages
    return SOURCES[config.source]


def make_source(config: SourceConfig, heldout: int, n: int = 0) -> Source:
    """The data source for ``config`` with ``heldout`` held-out samples (``n``: real samples per generation)."""
    return source_class(config)(config, heldout, n)


__all__ = ["SOURCES", "DataSettings", "FiniteSource", "ImageSource", "RealPool", "Source", "SourceConfig",
           "TextSource", "TruthSource", "make_source", "source_class"]
