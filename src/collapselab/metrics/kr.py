"""A knowledge-retention probe in the style of ForTIFAI's KR-test: does the model prefer a true continuation?

Each item is a context from the real corpus and two continuations of it: ``true``, the rest of the sentence as
written, and ``false``, the same words with one fact-bearing span (a year, another number or a capitalised
name) swapped for another span of the same kind from the same article. A model that retained the text gives
the true continuation the higher log-probability; :func:`accuracy` is the share of items where it does.

This is **not** the paper's item set (ForTIFAI had GPT-4o-mini write true/false sentence pairs for
wikitext-2, ``kt_dataset_gpt_mini.json``); the items here are built by rule from our own corpus, so they
exist for any text, are reproducible from a seed and differ in exactly one span, which makes the comparison
a pure test of the fact rather than of the wording.

- Spans: a year (four digits, 1000-2099), another number (digits, optionally with thousands commas and a
  decimal part; not glued to letters, as in ``6th``) or a name (a maximal run of 1-4 Capitalised words that
  does not start the sentence; month and weekday names and leading function words are not names). Only spans
  preceded by a single space and not among the chunk's first 3 words are used.
- Context: the text before the span, at most ``context_chars`` characters of the same paragraph, cut at a word
  boundary (the rest of the sentence after the span is cut to ``rest_chars`` the same way), always including the
  start of the span's sentence (items whose sentence prefix is longer are skipped), with at least 5 words. The corpus
  reads ``context + " " + true``; score the continuation with its leading space (:attr:`KRItem.continuations`), as
  ForTIFAI scores ``question + " " + answer``.
- Distractor: another occurrence of a span of the same kind **from the same article** (else the same chunk),
  drawn uniformly over its occurrences, whose string differs from the true span. True and false spans then
  come from one frequency profile and both appeared in the text a model trained on, so familiarity with the
  chunk's names cannot tell them apart: a model that never saw the article scores chance (tested).
- Leaks: an item whose true span already occurs (as a whole word sequence) in its context is dropped (17% of
  the items of an earlier version), and a distractor that occurs in the context is not drawn.
- Items: every candidate by default (``per_chunk=None``), or at most ``per_chunk`` per chunk, balanced over
  the span kinds.
- Scoring (:meth:`collapselab.families.causal_lm.CausalLM.compare_continuations`): ``context + " " + true``
  and ``context + " " + false`` are tokenised as wholes and each is scored from the first token where the
  two differ to its end (the differing span and the rest of the sentence after it), log-probabilities
  summed. ForTIFAI's code scores both up to the shorter joint tokenisation and the KR-Test paper (Zibakhsh
  et al., arXiv 2601.03505) sums up to the shorter continuation, so a longer span is cut and a pair of spans
  with one shared first token can compare no token of the span at all; here no token of either span or of
  what follows it is left out.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

KINDS: tuple[str, ...] = ("year", "number", "name")
MIN_CONTEXT_WORDS = 5
SKIP_WORDS = 3
_MAX_NAME_WORDS = 4

_UP = "A-Z\u00c0-\u00d6\u00d8-\u00de"
_LOW = "a-z\u00df-\u00f6\u00f8-\u00ff"
_WORD = rf"[{_UP}][{_LOW}]+(?:-[{_UP}][{_LOW}]+)*"
_WORD_RE = re.compile(_WORD)
_CAP_RUN = re.compile(rf"(?<![\w'’-])[{_UP}][\w'’-]*(?: [{_UP}][\w'’-]*)*")
_NUMBER = re.compile(r"(?<![\w.,-])(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?![\w-]|[.,]\d)")
_YEAR = re.compile(r"(?:1\d{3}|20\d{2})")
_PARAGRAPH = re.compile(r"[^\n]+(?:\n(?!\s*\n)[^\n]+)*")
_BOUNDARY = re.compile(r"[.!?][\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")
_ABBREV = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "vs", "c", "ca", "e.g", "i.e", "cf", "no", "vol",
           "fig", "gen", "col", "lt", "capt", "rev", "mt", "ft", "u.s", "u.k", "approx", "al", "op", "pp"}
_NOT_NAMES = {"January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
              "Sunday"}
_LEADING = {"The", "A", "An", "In", "On", "At", "Of", "And", "But", "Or", "For", "To", "By", "With", "From",
            "As", "It", "He", "She", "They", "We", "I", "This", "That", "These", "Those", "His", "Her", "Its",
            "Their", "Our", "If", "When", "While", "After", "Before", "Since", "Although", "However", "Some",
            "All", "There", "Here", "What", "Which", "Who", "Not", "No", "One", "Many", "Most", "Other"}


@dataclass(frozen=True)
class KRItem:
    """One probe item: ``context`` then either the ``true`` or the ``false`` continuation (from article
    ``article`` of chunk ``chunk``)."""

    context: str
    true: str
    false: str
    kind: str
    chunk: int
    article: int = 0

    @property
    def continuations(self) -> tuple[str, str]:
        """The two continuations as they follow the context in the text (with the leading space)."""
        return " " + self.true, " " + self.false


@dataclass(frozen=True)
class _Span:
    start: int  # in the chunk text
    end: int
    kind: str
    sent_start: int
    sent_end: int
    para_start: int


def _sentences(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentence (start, end) offsets of ``text[start:end]`` (one paragraph); a rule-based splitter."""
    out, s = [], start
    for m in _BOUNDARY.finditer(text, start, end):
        before = text[s:m.start()].split()
        word = before[-1].lstrip("\"'([").lower() if before else ""
        if word in _ABBREV or (len(word) == 1 and word.isalpha()):
            continue  # an abbreviation or an initial, not a sentence end
        out.append((s, m.start() + 1 + len(m.group(0)[1:].rstrip())))
        s = m.end()
    if s < end:
        out.append((s, end))
    return out


def _name_spans(text: str, s0: int, s1: int) -> list[tuple[int, int]]:
    """Maximal runs of 1-4 Capitalised words in a sentence, not at its start, without leading stop words."""
    out = []
    first_word = re.match(r"[\"'(\[]*\S", text[s0:s1])
    first = s0 + (first_word.end() - 1 if first_word else 0)
    for m in _CAP_RUN.finditer(text, s0, s1):
        words = m.group(0).split(" ")
        if not all(_WORD_RE.fullmatch(w) for w in words):
            continue  # a run with an acronym, an initial, a possessive or an odd word: not a clean name
        start = m.start()
        while words and words[0] in _LEADING:
            start += len(words[0]) + 1
            words = words[1:]
        if not words or len(words) > _MAX_NAME_WORDS or m.start() <= first or any(w in _NOT_NAMES for w in words):
            continue
        out.append((start, m.end()))
    return out


def _spans(text: str) -> list[_Span]:
    """All usable fact-bearing spans of a chunk, in text order."""
    words = list(re.finditer(r"\S+", text))
    skip = words[SKIP_WORDS - 1].end() if len(words) >= SKIP_WORDS else len(text)
    out = []
    for para in _PARAGRAPH.finditer(text):
        for s0, s1 in _sentences(text, para.start(), para.end()):
            found = [(a, b, "year" if _YEAR.fullmatch(text, a, b) else "number")
                     for a, b in ((m.start(), m.end()) for m in _NUMBER.finditer(text, s0, s1))]
            found += [(a, b, "name") for a, b in _name_spans(text, s0, s1)]
            for a, b, kind in sorted(found):
                if a >= skip and a > s0 and text[a - 1] == " " and (a < 2 or not text[a - 2].isspace()):
                    out.append(_Span(a, b, kind, s0, s1, para.start()))
    return out


def _context(text: str, span: _Span, context_chars: int) -> str | None:
    """Up to ``context_chars`` characters before the span (same paragraph, whole words, whole sentence start)."""
    end = span.start - 1  # drop the separating space
    if end - span.sent_start > context_chars:
        return None
    lo = max(span.para_start, end - context_chars)
    if lo > span.para_start and not text[lo - 1].isspace():
        nxt = re.compile(r"\s+").search(text, lo, end)
        lo = nxt.end() if nxt else end
    ctx = text[lo:end]
    return ctx if len(ctx.split()) >= MIN_CONTEXT_WORDS else None


def _quotas(available: Sequence[int], total: int) -> list[int]:
    """Split ``total`` draws as evenly as possible over kinds with ``available`` candidates (water filling)."""
    quota = [0] * len(available)
    left = min(total, sum(available))
    while left > 0:
        open_ = [k for k in range(len(available)) if quota[k] < available[k]]
        share = max(left // len(open_), 1)
        for k in open_:
            take = min(share, available[k] - quota[k], left)
            quota[k] += take
            left -= take
    return quota


def _occurs(span: str, text: str) -> bool:
    """Whether ``span`` occurs in ``text`` as a whole (not inside a longer word or number)."""
    return re.search(rf"(?<![\w.,-]){re.escape(span)}(?![\w]|[.,]\d)", text) is not None


def _draw_other(pools: Sequence[Sequence[str]], true: str, context: str, rng: np.random.Generator) -> str | None:
    """A uniformly drawn element of the first pool that has an admissible one (a string that differs from
    ``true`` and does not occur in ``context``), or None."""
    ok = lambda s: s != true and not _occurs(s, context)  # noqa: E731
    for pool in pools:
        for _ in range(64):  # rejection sampling: uniform over the admissible elements, O(1) expected
            if not pool:
                break
            cand = pool[int(rng.integers(len(pool)))]
            if ok(cand):
                return cand
        others = [s for s in pool if ok(s)]
        if others:
            return others[int(rng.integers(len(others)))]
    return None


def _clip(rest: str, chars: int) -> str:
    """The rest of a sentence cut to at most ``chars`` characters at a word boundary (long sentences)."""
    if len(rest) <= chars:
        return rest
    cut = rest.rfind(" ", 0, chars)
    return rest[:cut] if cut > 0 else rest[:chars]


Chunk = str | Sequence[str]  # a chunk's text, or the texts of its articles


def build_items(chunks: Sequence[Chunk], rng: np.random.Generator, per_chunk: int | None = None,
                context_chars: int = 200, rest_chars: int = 100) -> list[KRItem]:
    """Probe items from each chunk (``chunk`` = its index; a chunk given as a list of article texts gives each
    item its ``article``): every usable candidate, or at most ``per_chunk`` balanced over the span kinds.

    Deterministic for a given ``rng`` state. Distractors come from the same article, else the same chunk (see
    the module docstring); items whose true span occurs in their context, or with no admissible distractor,
    are left out.
    """
    if (per_chunk is not None and per_chunk < 0) or context_chars < 1:
        raise ValueError("per_chunk must be >= 0 (or None: all) and context_chars >= 1")
    arts = [[c] if isinstance(c, str) else list(c) for c in chunks]
    spans = [[_spans(text) for text in chunk] for chunk in arts]
    items: list[KRItem] = []
    for c, (chunk, found) in enumerate(zip(arts, spans, strict=True)):
        pools = [{k: [text[sp.start:sp.end] for sp in f if sp.kind == k] for k in KINDS}
                 for text, f in zip(chunk, found, strict=True)]
        whole = {k: [s for p in pools for s in p[k]] for k in KINDS}
        cands: dict[str, list[KRItem]] = {k: [] for k in KINDS}
        for a, (text, f) in enumerate(zip(chunk, found, strict=True)):
            for sp in f:
                ctx = _context(text, sp, context_chars)
                span = text[sp.start:sp.end]
                if ctx is None or _occurs(span, ctx):
                    continue
                other = _draw_other((pools[a][sp.kind], whole[sp.kind]), span, ctx, rng)
                if other is not None:
                    rest = _clip(text[sp.end:sp.sent_end], rest_chars)
                    cands[sp.kind].append(KRItem(ctx, span + rest, other + rest, sp.kind, c, a))
        if per_chunk is None:
            chosen = [it for k in KINDS for it in cands[k]]
        else:
            quotas = _quotas([len(cands[k]) for k in KINDS], per_chunk)
            chosen = [cands[k][i] for k, q in zip(KINDS, quotas, strict=True) if q
                      for i in rng.choice(len(cands[k]), size=q, replace=False).tolist()]
        items += sorted(chosen, key=lambda it: (it.article, KINDS.index(it.kind)))  # a stable, readable order
    return items


def _pack(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    raw = [s.encode("utf-8") for s in strings]
    offsets = np.zeros(len(raw) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in raw], dtype=np.int64)
    return np.frombuffer(b"".join(raw), dtype=np.uint8).copy(), offsets


def _unpack(data: np.ndarray, offsets: np.ndarray) -> list[str]:
    buf = np.asarray(data, dtype=np.uint8).tobytes()
    off = np.asarray(offsets, dtype=np.int64)
    return [buf[off[i]:off[i + 1]].decode("utf-8") for i in range(len(off) - 1)]


def items_to_arrays(items: Sequence[KRItem]) -> dict[str, np.ndarray]:
    """The item set as plain numpy arrays (safetensors-ready: no pickle, no object arrays).

    ``{field}_bytes`` (uint8, the UTF-8 strings concatenated) and ``{field}_offsets`` (int64, n + 1) for
    context/true/false, ``kind`` (int64 index into :data:`KINDS`), ``chunk`` and ``article`` (int64).
    """
    out: dict[str, np.ndarray] = {}
    for field in ("context", "true", "false"):
        out[f"{field}_bytes"], out[f"{field}_offsets"] = _pack([getattr(it, field) for it in items])
    out["kind"] = np.array([KINDS.index(it.kind) for it in items], dtype=np.int64)
    out["chunk"] = np.array([it.chunk for it in items], dtype=np.int64)
    out["article"] = np.array([it.article for it in items], dtype=np.int64)
    return out


def items_from_arrays(arrays: dict[str, np.ndarray]) -> list[KRItem]:
    """The inverse of :func:`items_to_arrays`."""
    fields = {f: _unpack(arrays[f"{f}_bytes"], arrays[f"{f}_offsets"]) for f in ("context", "true", "false")}
    kinds, chunks = np.asarray(arrays["kind"]), np.asarray(arrays["chunk"])
    n = len(kinds)
    article = np.asarray(arrays.get("article", np.zeros(n, dtype=np.int64)))
    if any(len(v) != n for v in fields.values()) or len(chunks) != n or len(article) != n:
        raise ValueError("KR arrays disagree in length")
    return [KRItem(fields["context"][i], fields["true"][i], fields["false"][i], KINDS[int(kinds[i])],
                   int(chunks[i]), int(article[i])) for i in range(n)]


def accuracy(true_scores: np.ndarray, false_scores: np.ndarray) -> float:
    """Share of items whose true continuation scores strictly higher than the false one (ties count 0.5)."""
    t, f = np.asarray(true_scores, dtype=np.float64), np.asarray(false_scores, dtype=np.float64)
    if t.shape != f.shape or t.size == 0:
        raise ValueError(f"need two non-empty score arrays of one shape, got {t.shape} and {f.shape}")
    return float(np.mean((t > f) + 0.5 * (t == f)))


def source_items(source: Any, tree: Any, batch: int) -> list:
    """Chain batch ``batch``'s knowledge-retention items, drawn from its own chunks of the text ``source`` (a
    :class:`~collapselab.data.text.TextSource`) with the batch's own stream; cached on the source."""
    key = (tree.seed, batch)
    cache = source.__dict__.setdefault("_kr_cache", {})
    if key not in cache:
        chunks = [source.chunk_articles(tree, batch, k) for k in range(source.chunk_count(tree, batch))]
        cache[key] = build_items(chunks, tree.rng("data", batch, "kr"), per_chunk=source.config.kr_items)
    return cache[key]
