"""``hf_dataset``: a Hugging Face ``datasets`` dataset on disk as a text or image source (offline).

``path`` is a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk`` (read with
``datasets.load_from_disk``), or local ``.parquet`` / ``.jsonl`` / ``.json`` / ``.csv`` files (a file, folder or
glob, read with ``datasets.load_dataset(<format>, data_files=...)``); ``split`` picks the split of a dataset dict.
Nothing is fetched from the hub (``HF_DATASETS_OFFLINE=1``; ``datasets`` keeps its Arrow cache under
collapselab's cache folder).

- ``text: <column>``: a text source, one article per record, split into pretraining / pool / validation / test as
  ``text_files`` (and the KR probe and text metrics work on it);
- ``image: <column>`` (``label: <column>`` for classes): an image source, greyscale and resized to ``size`` as
  ``image_folder``, with the same seeded, stratified split.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from collapselab.data.base import SOURCES, Source, SourceConfig
from collapselab.data.corpora import Document
from collapselab.data.files import find_files
from collapselab.data.image_folder import decoded_classes, stratified_split, to_grey
from collapselab.data.images import ImageSource, Splits
from collapselab.data.text import TextConfig, TextSource
from collapselab.dataspec import DataSpec
from collapselab.errors import ConfigError
from collapselab.settings import SettingContext

FORMATS = {".parquet": "parquet", ".jsonl": "json", ".json": "json", ".csv": "csv"}


class HFDatasetConfig(TextConfig):
    """A ``datasets`` dataset on disk (see the module docstring); text settings apply with ``text``, image ones
    with ``image``."""

    source: Literal["hf_dataset"] = "hf_dataset"
    path: str = Field(min_length=1, description="a save_to_disk folder, or .parquet/.jsonl/.json/.csv files")
    split: str = Field("train", min_length=1, description="the split of a dataset dict")
    text: str | None = Field(None, min_length=1, description="the column of the text (a text source)")
    image: str | None = Field(None, min_length=1, description="the column of the images (an image source)")
    label: str | None = Field(None, min_length=1, description="images: the column of the class labels")
    size: int = Field(28, ge=4, le=512, description="images: resized to size x size pixels")
    balanced: bool = Field(True, description="images: class-balanced order of each chain's real pool")
    split_seed: int = Field(0, ge=0, description="seed of the records' order / the image split")
    min_words: int = Field(8, ge=1, description="text: records with fewer words are dropped")
    validation_share: float = Field(0.1, gt=0.0, lt=0.5, description="images: share held out for validation")
    test_share: float = Field(0.2, gt=0.0, lt=0.5, description="images: share held out for testing")

    @model_validator(mode="after")
    def _one_column(self) -> HFDatasetConfig:
        if (self.text is None) == (self.image is None):
            raise ValueError("name the text column (text: <column>) or the image column (image: <column>), one of "
                             "them")
        if self.label is not None and self.image is None:
            raise ValueError("label: only for images (image: <column>)")
        return self

    def check(self, ctx: SettingContext) -> str | None:
        from collapselab.data.image_folder import CLASSIFIER_METRICS

        if self.image is not None and self.label is None:
            bad = [m for m in ctx.metrics if m in CLASSIFIER_METRICS]
            if bad:
                return f"metrics: {', '.join(bad)} need(s) class labels; set data.label to the label column"
        return None


@lru_cache(maxsize=4)
def load_records(config: HFDatasetConfig) -> Any:
    """The dataset's split (``datasets.Dataset``), read offline."""
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise ConfigError("data.source: hf_dataset needs the datasets package: pip install 'collapselab[hf]'") \
            from None
    from collapselab.cache import cache_dir

    datasets.disable_progress_bars()
    root = Path(config.path).expanduser()
    try:
        if root.is_dir() and any((root / f).exists() for f in ("dataset_info.json", "dataset_dict.json",
                                                                 "state.json")):
            ds = datasets.load_from_disk(str(root))
        else:
            files = find_files(config.path, tuple(FORMATS))
            kinds = {FORMATS[f.suffix.lower()] for f in files}
            if len(kinds) > 1:
                raise ConfigError(f"data.path: {config.path!r} mixes formats ({', '.join(sorted(kinds))}); point it at "
                                  f"one kind of file")
            ds = datasets.load_dataset(kinds.pop(), data_files=[str(f) for f in files],
                                       cache_dir=str(cache_dir() / "datasets"))
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"data.path: cannot read {config.path!r} with datasets ({type(e).__name__}: "
                          f"{str(e).splitlines()[0] if str(e) else ''})") from None
    if isinstance(ds, datasets.DatasetDict):
        if config.split not in ds:
            raise ConfigError(f"data.split: {config.split!r} is not a split of {config.path!r}; its splits: "
                              f"{', '.join(ds)}")
        ds = ds[config.split]
    for field, column in (("text", config.text), ("image", config.image), ("label", config.label)):
        if column is not None and column not in ds.column_names:
            raise ConfigError(f"data.{field}: {column!r} is not a column of {config.path!r}; its columns: "
                              f"{', '.join(ds.column_names)}")
    if len(ds) == 0:
        raise ConfigError(f"data.path: {config.path!r} holds no records")
    return ds


@lru_cache(maxsize=4)
def hf_articles(config: HFDatasetConfig) -> tuple[Document, ...]:
    """The text records as articles, in a seeded order."""
    ds = load_records(config)
    docs = [Document(f"record {i}", t.strip()) for i, t in enumerate(ds[config.text])
            if isinstance(t, str) and len(t.split()) >= config.min_words]
    if not docs:
        raise ConfigError(f"data.text: no record of {config.path!r} holds {config.min_words} words or more")
    order = np.random.default_rng(config.split_seed).permutation(len(docs))
    return tuple(docs[i] for i in order.tolist())


@lru_cache(maxsize=4)
def hf_images(config: HFDatasetConfig) -> tuple[Splits, int]:
    """The image records' train / validation / test splits and the number of classes (0: unlabelled); labels are
    renumbered 0, 1, ... in sorted order."""
    ds = load_records(config)
    if config.label is not None:
        raw = list(ds[config.label])
        bad = [v for v in raw if isinstance(v, bool) or not isinstance(v, (int, np.integer))]
        if bad:
            raise ConfigError(f"data.label: {config.label!r} must hold integer class labels; found {bad[0]!r}")
        values = sorted({int(v) for v in raw})
        labels = [values.index(int(v)) for v in raw]
        names = tuple(str(v) for v in values)
    else:
        labels, names = [0] * len(ds), ("all",)
    images = [None if v is None else to_grey(v, config.size) for v in ds[config.image]]
    x, y, names = decoded_classes(images, labels, names, f"records of {config.path!r}", "data.image",
                                  config.label is not None)
    parts = stratified_split(y, config.validation_share, config.test_share, config.split_seed, "data.path")
    return {k: (x[v], y[v]) for k, v in parts.items()}, (len(names) if config.label else 0)


@SOURCES.register
class HFDataset(TextSource):
    """A dataset's text records (``text`` set; ``image`` set: served by :class:`HFImages`)."""

    name = "hf_dataset"
    config_class = HFDatasetConfig
    config: HFDatasetConfig

    @classmethod
    def serving(cls, config: SourceConfig) -> type[Source]:
        return HFImages if getattr(config, "image", None) else cls

    @classmethod
    def corpus(cls, config: HFDatasetConfig) -> tuple[Document, ...]:  # type: ignore[override]
        return hf_articles(config)


class HFImages(ImageSource):
    """A dataset's image records (``image`` set)."""

    config: HFDatasetConfig  # type: ignore[assignment]

    def splits(self) -> Splits:  # type: ignore[override]
        return hf_images(self.config)[0]

    @property
    def classes(self) -> int:  # type: ignore[override]
        return hf_images(self.config)[1]

    @property
    def spec(self) -> DataSpec:
        return super().spec.with_values(classes=self.classes)
