"""Real data sources and known-truth toys, selected by ``data.source`` in an experiment."""

from __future__ import annotations

from collapselab.data import (  # noqa: F401  (they register the built-in sources)
    array_file,
    digits,
    hf_dataset,
    image_folder,
    images,
    shakespeare,
    text,
    text_files,
    truth,
)
from collapselab.data.base import SOURCES, FiniteSource, RealPool, Source, SourceConfig, TruthSource
from collapselab.data.images import ImageSource
from collapselab.data.text import TextSource

#: an experiment's ``data:`` setting: any registered source by ``source``
DataSettings = SOURCES.field()


def source_class(config: SourceConfig) -> type[Source]:
    """The source class serving ``config`` (e.g. ``digits`` in ``form: images`` is served as images)."""
    return SOURCES[config.source].serving(config)


def make_source(config: SourceConfig, heldout: int, n: int = 0) -> Source:
    """The data source for ``config`` with ``heldout`` held-out samples (``n``: real samples per generation)."""
    return source_class(config)(config, heldout, n)


__all__ = ["SOURCES", "DataSettings", "FiniteSource", "ImageSource", "RealPool", "Source", "SourceConfig",
           "TextSource", "TruthSource", "make_source", "source_class"]
