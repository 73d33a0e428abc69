"""Real data sources and known-truth toys, selected by ``data.source`` in an experiment (importing this package
registers every built-in source)."""

from __future__ import annotations

import functools
import json

# (import order is registration order, the order `collapselab list sources` shows: the known-truth toys, the
# built-in real data sets, then the sources of a user's own files)
from collapselab.data.base import SOURCES, FiniteSource, RealPool, Source, SourceConfig, TruthSource
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

# isort: split
from collapselab.data.digits import Digits, DigitsConfig
from collapselab.data.images import MNIST, DigitImages, FashionMNIST, FashionMNISTConfig, ImageSource, MNISTConfig
from collapselab.data.shakespeare import Shakespeare, ShakespeareConfig
from collapselab.data.text import Plays, PlaysConfig, TextSource, Wikipedia, WikipediaConfig

# isort: split
from collapselab.data.array_file import ArrayFile, ArrayFileConfig
from collapselab.data.hf_dataset import HFDataset, HFDatasetConfig
from collapselab.data.image_folder import ImageFolder, ImageFolderConfig
from collapselab.data.text_files import TextFiles, TextFilesConfig

#: an experiment's ``data:`` setting: any registered source by ``source``
DataSettings = SOURCES.field()


def source_class(config: SourceConfig) -> type[Source]:
    """The source class serving ``config`` (e.g. ``digits`` in ``form: images`` is served as images)."""
    return SOURCES[config.source].serving(config)


def make_source(config: SourceConfig, heldout: int, n: int = 0) -> Source:
    """The data source for ``config`` with ``heldout`` held-out samples (``n``: real samples per generation)."""
    return source_class(config)(config, heldout, n)


def cached_source(config: SourceConfig, heldout: int, n: int = 0) -> Source:
    """:func:`make_source`, built once per process for the same settings (the chains and the report share it, with
    whatever it has read and cached)."""
    return _cached(config.model_dump_json(), heldout, n)


@functools.lru_cache(maxsize=4)
def _cached(data_json: str, heldout: int, n: int) -> Source:  # keyed by JSON: settings holding lists do not hash
    name = json.loads(data_json)["source"]
    return make_source(SOURCES.config_class(SOURCES[name]).model_validate_json(data_json), heldout, n)


__all__ = ["MNIST", "SOURCES", "ArrayFile", "ArrayFileConfig", "CategoricalTruth", "CategoricalTruthConfig",
           "DataSettings", "DigitImages", "Digits", "DigitsConfig", "FashionMNIST", "FashionMNISTConfig",
           "FiniteSource", "GMMTruth", "GMMTruthConfig", "GaussianTruth", "GaussianTruthConfig", "HFDataset",
           "HFDatasetConfig", "ImageFolder", "ImageFolderConfig", "ImageSource", "LinearTruth", "LinearTruthConfig",
           "MNISTConfig", "Plays", "PlaysConfig", "RealPool", "Shakespeare", "ShakespeareConfig", "Source",
           "SourceConfig", "TextFiles", "TextFilesConfig", "TextSource", "TruthSource", "Wikipedia",
           "WikipediaConfig", "cached_source", "make_source", "source_class"]
