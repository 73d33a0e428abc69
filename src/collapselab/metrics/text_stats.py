"""Corpus statistics of synthetic text against real text (token-id arrays unless stated), with simple CIs.

- :func:`unigram_kl`: KL divergence of the unigram token distributions, ``KL(synthetic || real)`` as in
  ForTIFAI's ``src/kl-divregence.ipynb`` (``kl_divergence(synthetic_distribution, wikitext_distribution)``),
  with additive smoothing instead of their ``1e-10`` floor.
- :func:`distinct_n`, :func:`self_bleu`, :func:`vocab_coverage`: diversity of the synthetic text.
- :func:`confidence_gap` / :func:`gap_ci`: mean per-token probability on the model's own text minus on real
  text (ForTIFAI's Fig. 1: collapse shows as over-confidence on self-generated text).
- :func:`mean_ci`: mean and a normal-approximation confidence interval.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist

import numpy as np


def _ids(x: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(x).ravel()
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{name}: token ids must be integers, got {a.dtype}")
    return a.astype(np.int64, copy=False)


def unigram_kl(synthetic: np.ndarray, real: np.ndarray, vocab: int, alpha: float = 1.0) -> float:
    """``KL(P_synthetic || P_real)`` in nats between additively smoothed unigram distributions.

    ``P(t) = (count(t) + alpha) / (N + alpha * vocab)`` on both sides, for every id in ``[0, vocab)``.
    The direction is ForTIFAI's (``kl_divergence(synthetic_distribution, wikitext_distribution)`` in their
    ``src/kl-divregence.ipynb``): it grows when the synthetic text piles mass on tokens that are rare in
    real text. They floor zero probabilities at ``1e-10`` without renormalising; Laplace smoothing
    (``alpha > 0``) keeps both sides proper distributions and the value finite.
    """
    s, r = _ids(synthetic, "synthetic"), _ids(real, "real")
    if s.size == 0 or r.size == 0:
        raise ValueError("unigram_kl needs two non-empty corpora")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    for a, name in ((s, "synthetic"), (r, "real")):
        if a.min() < 0 or a.max() >= vocab:
            raise ValueError(f"{name}: token ids outside [0, {vocab})")
    p = (np.bincount(s, minlength=vocab) + alpha) / (s.size + alpha * vocab)
    q = (np.bincount(r, minlength=vocab) + alpha) / (r.size + alpha * vocab)
    return max(float(np.sum(p * (np.log(p) - np.log(q)))), 0.0)


def distinct_n(windows: Sequence[Sequence[int]] | np.ndarray, n: int) -> float:
    """Distinct n-grams / all n-grams, counting only n-grams that lie inside one window."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ids = [_ids(np.asarray(w), "windows") for w in windows]
    grams = [np.lib.stride_tricks.sliding_window_view(w, n) for w in ids if w.size >= n]
    if not grams:
        raise ValueError(f"no window has {n} tokens")
    g = np.ascontiguousarray(np.concatenate(grams))
    return len(np.unique(g.view(np.dtype((np.void, g.itemsize * n))))) / len(g)


def self_bleu(texts: Sequence[str], rng: np.random.Generator, max_texts: int = 200) -> float:
    """Mean sentence BLEU (0-100) of each text against all the others, over a subsample of ``max_texts``.

    Equals the mean of sacrebleu's ``BLEU(effective_order=True).sentence_score(text, others)`` (checked in
    the tests) but computes it in O(k) rather than O(k^2) reference passes: each text is tokenised and its
    n-grams counted once (sacrebleu's tokenizer and ``extract_all_word_ngrams``), the leave-one-out clipping
    counts come from each n-gram's two largest counts, and the score from ``BLEU.compute_bleu``. The
    subsample is drawn with ``rng`` (no replacement), so the value is deterministic for a given ``rng``
    state. Higher = less diverse.
    """
    from sacrebleu.metrics import BLEU
    from sacrebleu.metrics.helpers import extract_all_word_ngrams

    if len(texts) < 2 or max_texts < 2:
        raise ValueError("self_bleu needs at least 2 texts")
    idx = np.sort(rng.choice(len(texts), size=min(max_texts, len(texts)), replace=False))
    bleu = BLEU(effective_order=True)
    order = bleu.max_ngram_order
    counts, lens = [], []
    for i in idx:
        grams, length = extract_all_word_ngrams(bleu.tokenizer(texts[int(i)].rstrip()), 1, order)
        counts.append(grams)
        lens.append(length)
    top: dict[tuple[str, ...], list[int]] = {}  # n-gram -> [largest count, its text, second largest count]
    for k, grams in enumerate(counts):
        for g, c in grams.items():
            t = top.get(g)
            if t is None:
                top[g] = [c, k, 0]
            elif c > t[0]:
                top[g] = [c, k, t[0]]
            elif c > t[2]:
                t[2] = c
    scores = []
    for k, grams in enumerate(counts):
        correct, total = [0] * order, [0] * order
        for g, c in grams.items():
            best, who, second = top[g]
            total[len(g) - 1] += c
            correct[len(g) - 1] += min(c, second if who == k else best)
        others = lens[:k] + lens[k + 1:]
        ref_len = min(others, key=lambda r: (abs(lens[k] - r), r))  # sacrebleu: closest, ties to the shorter
        scores.append(BLEU.compute_bleu(correct, total, lens[k], ref_len, smooth_method=bleu.smooth_method,
                                        smooth_value=bleu.smooth_value, effective_order=True,
                                        max_ngram_order=order).score)
    return float(np.mean(scores))


def vocab_coverage(synthetic: np.ndarray, real: np.ndarray) -> float:
    """Share of the distinct token ids of ``real`` that occur in ``synthetic``."""
    r = np.unique(_ids(real, "real"))
    if r.size == 0:
        raise ValueError("vocab_coverage needs a non-empty real corpus")
    return float(np.isin(r, _ids(synthetic, "synthetic")).mean())


def confidence_gap(self_conf: np.ndarray, real_conf: np.ndarray) -> float:
    """Mean per-token probability on self-generated text minus that on real text (ForTIFAI's Fig. 1)."""
    a, b = np.asarray(self_conf, dtype=np.float64), np.asarray(real_conf, dtype=np.float64)
    if a.size == 0 or b.size == 0:
        raise ValueError("confidence_gap needs two non-empty arrays")
    return float(a.mean() - b.mean())


def _z(level: float) -> float:
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return NormalDist().inv_cdf(0.5 + level / 2)


def _mean_var(values: np.ndarray) -> tuple[float, float, int]:
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("need at least one value")
    var = float(v.var(ddof=1)) if v.size > 1 else math.nan
    return float(v.mean()), var, v.size


def mean_ci(values: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """``(mean, lo, hi)``: mean ± z * s / sqrt(n) (normal approximation, s with ddof=1; nan bounds if n = 1)."""
    m, var, n = _mean_var(values)
    half = _z(level) * math.sqrt(var / n)
    return m, m - half, m + half


def gap_ci(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> tuple[float, float, float]:
    """``(gap, lo, hi)`` for ``mean(a) - mean(b)`` of two independent samples.

    Standard error ``sqrt(s_a^2 / n_a + s_b^2 / n_b)`` (ddof=1), normal approximation; nan bounds if a
    sample has one value.
    """
    ma, va, na = _mean_var(a)
    mb, vb, nb = _mean_var(b)
    half = _z(level) * math.sqrt(va / na + vb / nb)
    gap = ma - mb
    return gap, gap - half, gap + half
