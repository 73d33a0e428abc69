"""The knowledge-retention probe (collapselab.metrics.kr) and the synthetic-text statistics
(collapselab.metrics.text_stats)."""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest

from collapselab.metrics import kr
from collapselab.metrics import text_stats as stats

# independent span patterns (the test's own): what a span of each kind must look like
SPAN = {
    "year": re.compile(r"(?:1\d{3}|20\d{2})"),
    "number": re.compile(r"(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?"),
    "name": re.compile(r"{w}(?: {w}){{0,3}}".format(w=r"[A-Z\u00c0-\u00de][^\W\d_]+(?:-[^\W\d_]+)*")),
}


@pytest.fixture(scope="module")
def chunks() -> list[str]:
    """The first 6 Wikipedia articles as 3 chunks of 2 articles."""
    corpus = pytest.importorskip("collapselab.data.corpora")
    try:
        docs = corpus.wikipedia_articles()[:6]
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return ["\n\n".join(d.text for d in docs[i:i + 2]) for i in range(0, 6, 2)]


@pytest.fixture(scope="module")
def items(chunks) -> list[kr.KRItem]:
    return kr.build_items(chunks, np.random.default_rng(7), per_chunk=30)


def _strip_common(a: str, b: str) -> tuple[int, str, str]:
    """(prefix length, a's middle, b's middle) after removing the common prefix and suffix."""
    p = len(os.path.commonprefix([a, b]))
    s = len(os.path.commonprefix([a[p:][::-1], b[p:][::-1]]))
    return p, a[p:len(a) - s], b[p:len(b) - s]


def _span(kind: str, text: str) -> str:
    m = SPAN[kind].match(text)
    assert m, (kind, text)
    return m.group(0)


def test_items_well_formed(chunks, items):
    assert len(items) == 90  # 30 per chunk
    every = kr.build_items(chunks, np.random.default_rng(0), per_chunk=10**6)
    for c in range(3):
        per_kind = [sum(it.chunk == c and it.kind == k for it in items) for k in kr.KINDS]
        available = [sum(it.chunk == c and it.kind == k for it in every) for k in kr.KINDS]
        # balanced as far as available: a kind with fewer than 10 candidates gives all it has, the others share
        short = [k for k in range(3) if available[k] < 10]
        assert [per_kind[k] for k in short] == [available[k] for k in short]
        full = [per_kind[k] for k in range(3) if k not in short]
        assert min(full) >= 10 and max(full) - min(full) <= 1
    for it in items:
        assert it.kind in kr.KINDS and 0 <= it.chunk < 3
        assert len(it.context.split()) >= 5 and len(it.context) <= 200
        assert it.context == it.context.strip()
        # the true continuation is the chunk's text right after the context
        assert it.context + " " + it.true in chunks[it.chunk]
        a, b = _span(it.kind, it.true), _span(it.kind, it.false)
        assert a != b and SPAN[it.kind].fullmatch(a) and SPAN[it.kind].fullmatch(b)
        rest = it.true[len(a):]
        assert it.false == b + rest  # same continuation, one span swapped
        # removing the common prefix and suffix leaves exactly the two spans, less the characters they share
        p, da, db = _strip_common(it.true, it.false)
        assert da or db
        assert p + len(da) <= len(a) and p + len(db) <= len(b)  # the difference lies inside the spans
        assert a[:p] == b[:p] and a[p + len(da):] == b[p + len(db):]
        if a[0] != b[0] and a[-1] != b[-1]:
            assert (da, db) == (a, b)
        assert it.continuations == (" " + it.true, " " + it.false)
        # spans among the first three words of a chunk are never used
        text = chunks[it.chunk]
        start = text.find(it.context + " " + it.true) + len(it.context) + 1
        assert len(text[:start].split()) >= 3


def test_names_are_not_sentence_starts(items):
    names = [it for it in items if it.kind == "name"]
    assert len(names) >= 5, f"only {len(names)} name items: the check below would test nothing"
    for it in names:
        # the name does not start its sentence: the context ends mid-sentence
        assert not re.search(r"[.!?][\"')\]]*$", it.context)


def test_items_deterministic(chunks, items):
    again = kr.build_items(chunks, np.random.default_rng(7), per_chunk=30)
    other = kr.build_items(chunks, np.random.default_rng(8), per_chunk=30)
    assert again == items
    assert other != items


def test_items_array_round_trip(items):
    arrays = kr.items_to_arrays(items)
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in arrays.values())
    assert arrays["context_bytes"].dtype == np.uint8 and arrays["chunk"].dtype == np.int64
    assert kr.items_from_arrays(arrays) == items
    odd = [kr.KRItem("Où est la Gare Saint-Lazare, dit-il", "Zoë ...", "Ærø ...", "name", 3)]
    assert kr.items_from_arrays(kr.items_to_arrays(odd)) == odd
    assert kr.items_from_arrays(kr.items_to_arrays([])) == []


def test_items_round_trip_through_safetensors(items, tmp_path):
    st = pytest.importorskip("safetensors.numpy")
    st.save_file(kr.items_to_arrays(items), tmp_path / "kr.safetensors")
    assert kr.items_from_arrays(st.load_file(tmp_path / "kr.safetensors")) == items


def test_build_items_on_a_hand_text():
    """Distractors come from the item's own article; an item is dropped when its true span or every admissible
    distractor already occurs in its context (the later year, name and number here see the earlier ones)."""
    text = ("Alpha beta gamma delta. The old bridge over the river was built in 1066 by Harold. "
            "Later the town grew to 2,500 people and hosted a fair. A second bridge was finished in 1947 near Paris "
            "with 12 arches.")
    other = "Some filler words here. A third bridge was opened in 1990 near Rome with 30 arches."
    got = kr.build_items([[text], [other]], np.random.default_rng(0))
    first = {(it.kind, it.true, it.false) for it in got if it.chunk == 0}
    assert first == {("year", "1066 by Harold.", "1947 by Harold."), ("name", "Harold.", "Paris."),
                     ("number", "2,500 people and hosted a fair.", "12 people and hosted a fair.")}
    year = next(it for it in got if it.chunk == 0 and it.kind == "year")
    assert year.context == "Alpha beta gamma delta. The old bridge over the river was built in"
    assert not [it for it in got if it.chunk == 1]  # one span of each kind: no distractor in its article or chunk
    # with the second article in the same chunk, its items take distractors from the chunk
    both = kr.build_items([[text, other]], np.random.default_rng(0))
    assert {(it.article, it.true.split(" ")[0]) for it in both if it.article == 1} == {(1, "1990"), (1, "Rome"),
                                                                                      (1, "30")}
    assert kr.build_items([[text]], np.random.default_rng(0), per_chunk=2) != []
    assert len(kr.build_items([[text]], np.random.default_rng(0), per_chunk=2)) == 2


def test_accuracy():
    assert kr.accuracy(np.array([1.0, 2.0, 0.0, 5.0]), np.array([0.0, 3.0, 0.0, 1.0])) == pytest.approx(0.625)
    with pytest.raises(ValueError):
        kr.accuracy(np.zeros(2), np.zeros(3))


def test_unigram_kl_hand_computed():
    synthetic, real = np.array([0, 0, 1]), np.array([0, 1, 2, 2])
    p = [3 / 6, 2 / 6, 1 / 6]  # (counts + 1) / (3 + 3)
    q = [2 / 7, 2 / 7, 3 / 7]  # (counts + 1) / (4 + 3)
    want = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert stats.unigram_kl(synthetic, real, vocab=3) == pytest.approx(want, abs=1e-12)
    p2 = [2.5 / 4.5, 1.5 / 4.5, 0.5 / 4.5]  # alpha = 0.5
    q2 = [1.5 / 5.5, 1.5 / 5.5, 2.5 / 5.5]
    want2 = sum(pi * math.log(pi / qi) for pi, qi in zip(p2, q2, strict=True))
    assert stats.unigram_kl(synthetic, real, vocab=3, alpha=0.5) == pytest.approx(want2, abs=1e-12)
    corpus = np.random.default_rng(0).integers(0, 50, 1000)
    assert stats.unigram_kl(corpus, corpus.copy(), vocab=60) == 0.0
    assert stats.unigram_kl(corpus, np.roll(corpus, 3), vocab=60) == 0.0  # order does not matter
    with pytest.raises(ValueError):
        stats.unigram_kl(synthetic, real, vocab=2)


def test_distinct_n_hand_example():
    windows = [[1, 2, 3, 1, 2], [1, 2, 4]]
    # bigrams: (1,2) (2,3) (3,1) (1,2) | (1,2) (2,4): 4 distinct of 6; across-window (2,1) not counted
    assert stats.distinct_n(windows, 2) == pytest.approx(4 / 6, abs=1e-12)
    assert stats.distinct_n(windows, 1) == pytest.approx(4 / 8, abs=1e-12)
    assert stats.distinct_n(np.array([[1, 2, 3], [1, 2, 3]]), 3) == pytest.approx(0.5, abs=1e-12)
    assert stats.distinct_n([[5, 6], [1, 2, 3]], 3) == 1.0  # the short window has no trigram


def test_vocab_coverage_hand_example():
    assert stats.vocab_coverage(np.array([1, 1, 2, 9]), np.array([1, 2, 3, 4, 4])) == pytest.approx(0.5)
    assert stats.vocab_coverage(np.array([], dtype=np.int64), np.array([3])) == 0.0


def test_self_bleu():
    same = ["the cat sat on the mat with a hat today"] * 5
    assert stats.self_bleu(same, np.random.default_rng(0)) == pytest.approx(100.0, abs=1e-9)
    varied = ["the cat sat on the mat with a hat today", "a dog ran in the park after the red ball",
              "stock prices fell sharply on monday morning trade", "she wrote three letters to her old friend",
              "the cat sat on a chair near the window today"]
    low = stats.self_bleu(varied, np.random.default_rng(0))
    assert 0.0 <= low < 50.0
    # equals the mean of sacrebleu's own sentence_score of each text against all the others
    from sacrebleu.metrics import BLEU

    bleu = BLEU(effective_order=True)
    tricky = varied + ["the cat sat on the mat with a hat today", "Today, the cat sat on the mat.", "cat", "",
                       "the the the the the cat cat", "a hat today the cat sat on the mat with"]
    want = np.mean([bleu.sentence_score(h, tricky[:i] + tricky[i + 1:]).score for i, h in enumerate(tricky)])
    assert stats.self_bleu(tricky, np.random.default_rng(0)) == pytest.approx(want, abs=1e-9)
    many = [f"text number {i} has words {i % 7} and {i % 3}" for i in range(30)]
    a = stats.self_bleu(many, np.random.default_rng(1), max_texts=10)
    assert a == stats.self_bleu(many, np.random.default_rng(1), max_texts=10)
    assert a != stats.self_bleu(many, np.random.default_rng(2), max_texts=10)


def test_confidence_gap_and_cis():
    a, b = np.array([0.9, 0.8, 0.7, 0.6]), np.array([0.5, 0.3])
    assert stats.confidence_gap(a, b) == pytest.approx(0.35, abs=1e-12)
    gap, lo, hi = stats.gap_ci(a, b)
    se = math.sqrt((0.05 / 3) / 4 + 0.02 / 2)  # var(a, ddof=1) = 0.05/3, var(b, ddof=1) = 0.02
    assert gap == pytest.approx(0.35, abs=1e-12)
    assert lo == pytest.approx(0.35 - 1.959963984540054 * se, abs=1e-9)
    assert hi == pytest.approx(0.35 + 1.959963984540054 * se, abs=1e-9)
    m, lo, hi = stats.mean_ci(np.array([1.0, 2.0, 3.0, 4.0]), level=0.9)
    half = 1.6448536269514722 * math.sqrt((5 / 3) / 4)
    assert (m, lo, hi) == pytest.approx((2.5, 2.5 - half, 2.5 + half), abs=1e-9)
    m, lo, hi = stats.mean_ci(np.array([2.0]))
    assert m == 2.0 and math.isnan(lo) and math.isnan(hi)
