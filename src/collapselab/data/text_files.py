"""``text_files``: a user's own text as a text source (offline; the KR probe and the text metrics work on it).

``path`` names a file, a folder (searched recursively) or a glob of ``.txt`` / ``.md`` files (one article per
file, or per piece between ``separator`` strings) or ``.jsonl`` / ``.parquet`` files (one article per record, its
text in ``field``). The articles, in a seeded order (``split_seed``; ``null``: sorted file names, records in
file order), are dealt to pretraining / pool /
validation / test as the built-in corpora are (:mod:`collapselab.data.text`), so every seed draws its chunks,
probe items and held-out windows from them in the same way.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import Field

from collapselab.data.base import SOURCES
from collapselab.data.corpora import Document
from collapselab.data.files import find_files, read_text
from collapselab.data.text import TextConfig, TextSource
from collapselab.errors import ConfigError

TEXT_SUFFIXES = (".txt", ".md", ".jsonl", ".parquet")


class TextFilesConfig(TextConfig):
    """A user's text files (see the module docstring)."""

    source: Literal["text_files"] = "text_files"
    path: str = Field(min_length=1, description="a file, folder or glob of .txt/.md/.jsonl/.parquet files")
    field: str = Field("text", min_length=1, description=".jsonl/.parquet: the field holding an article's text")
    separator: str | None = Field(None, min_length=1, description=".txt/.md: split each file into articles at "
                                                                  "this string (e.g. a blank line: '\\n\\n')")
    split_seed: int | None = Field(0, ge=0, description="seed of the articles' order before they are dealt to parts "
                                                         "(null: file and record order, as the built-in corpora)")
    min_words: int = Field(8, ge=1, description="articles with fewer words are dropped")


def _records(path, field: str) -> list[tuple[str, str]]:
    """(title, text) of every record of a .jsonl or .parquet file."""
    out = []
    if path.suffix.lower() == ".parquet":
        import polars as pl

        try:
            frame = pl.read_parquet(path)
        except Exception as e:
            raise ConfigError(f"data.path: cannot read {str(path)!r} as parquet ({type(e).__name__})") from None
        if field not in frame.columns:
            raise ConfigError(f"data.field: {field!r} is not a column of {str(path)!r}; its columns: "
                              f"{', '.join(frame.columns)}")
        return [(f"{path.stem}#{i}", str(t)) for i, t in enumerate(frame[field].to_list()) if t is not None]
    for i, line in enumerate(read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"data.path: line {i} of {str(path)!r} is not JSON ({e.msg})") from None
        if not isinstance(record, dict) or field not in record:
            keys = ", ".join(record) if isinstance(record, dict) else type(record).__name__
            raise ConfigError(f"data.field: {field!r} is not a field of line {i} of {str(path)!r}; its fields: {keys}")
        if isinstance(record[field], str):
            out.append((str(record.get("title", f"{path.stem}#{i}")), record[field]))
    return out


@lru_cache(maxsize=4)
def read_articles(config: TextFilesConfig) -> tuple[Document, ...]:
    """The articles of ``config`` in their seeded order (cached per process)."""
    docs = []
    for f in find_files(config.path, TEXT_SUFFIXES):
        if f.suffix.lower() in (".jsonl", ".parquet"):
            pieces = _records(f, config.field)
        else:
            text = read_text(f)
            parts = text.split(config.separator) if config.separator else [text]
            pieces = [(f.stem if len(parts) == 1 else f"{f.stem}#{i}", t) for i, t in enumerate(parts)]
        docs += [Document(title, t.strip()) for title, t in pieces
                 if len(t.split()) >= config.min_words]
    if not docs:
        raise ConfigError(f"data.path: {config.path!r} holds no article of at least {config.min_words} words")
    if config.split_seed is None:
        return tuple(docs)
    order = np.random.default_rng(config.split_seed).permutation(len(docs))
    return tuple(docs[i] for i in order.tolist())


@SOURCES.register
class TextFiles(TextSource):
    """A user's text (see the module docstring)."""

    name = "text_files"
    config_class = TextFilesConfig
    config: TextFilesConfig

    @classmethod
    def corpus(cls, config: TextFilesConfig) -> tuple[Document, ...]:
        docs = read_articles(config)
        need = sum(1 for k in (config.pretrain, config.pool, config.validation, config.test) if k)
        if len(docs) < need:
            raise ConfigError(f"data.path: {config.path!r} holds {len(docs)} article(s); the split into pretraining "
                              f"/ pool / validation / test needs at least {need} (more files, records, or a "
                              f"data.separator)")
        return docs
