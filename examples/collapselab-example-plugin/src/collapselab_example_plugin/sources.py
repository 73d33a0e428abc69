"""A text source variant: one article per non-empty line of a UTF-8 file."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from collapselab.data.corpora import Document
from collapselab.data.text import TextConfig, TextSource
from collapselab.errors import ConfigError


class TextLinesConfig(TextConfig):
    """The file whose lines are the articles."""

    source: Literal["text_lines"] = "text_lines"
    path: str = Field(min_length=1)


class TextLines(TextSource):
    """Each non-empty line of ``path`` is an article, in file order."""

    name = "text_lines"
    config_class = TextLinesConfig
    config: TextLinesConfig

    @classmethod
    def corpus(cls, config: TextLinesConfig) -> tuple[Document, ...]:
        path = Path(config.path).expanduser()
        if not path.is_file():
            raise ConfigError(f"data.path: {config.path!r} is not a file")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        docs = tuple(Document(f"line {i}", t) for i, t in enumerate(lines, 1) if t)
        if not docs:
            raise ConfigError(f"data.path: {config.path!r} has no non-empty line")
        return docs
