"""Text metrics of a causal LM, against held-out real text unless stated (ForTIFAI's evaluation).

- ``perplexity``: ``exp(total NLL / total tokens)`` of the held-out test windows (token-weighted; each chain's
  windows read as one stream in blocks of the family's ``block_size``, every token predicted).
- ``kr_accuracy``, ``kr_split_<s>`` and ``kr_unseen``: a knowledge-retention probe built from the chain's real
  chunks (:mod:`collapselab.metrics.kr`; chunk s = pool windows ``[s n, (s + 1) n)``, whole articles): an item is
  right when the true continuation (the differing span and the rest of the sentence) is more likely than the
  false one. ``kr_unseen`` is the probe on the chunks the chain has **not** trained on yet: the probe's chance
  level, measured (it should read 0.5; a familiarity effect would show here). It is a KR-test-style probe, not
  the paper's GPT-4o-mini item set; items are drawn per seed (rebuilt identically on resume).
- ``memorization_<k>``: nats per token by which the model predicts real chunk k better than the pretrained
  model it started from (base NLL minus the model's); 0 for a model that never saw the chunk, its chance level.
- On the model's **rewrite** of the held-out windows (its own decoding): ``unigram_kl``
  (KL of the rewrites' unigram distribution from the real training
  text's, :func:`collapselab.metrics.text_stats.unigram_kl`), ``distinct_1/2/3``, ``self_bleu``,
  and ``vocab_coverage``. (``confidence_gap`` and ``heldout_nll`` of :mod:`~collapselab.metrics.fidelity` apply to
  text too: the mean next-token probability on the same rewrites minus on the held-out real windows, both read
  as streams, is ForTIFAI's Fig. 1.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.families.base import Family
from collapselab.metrics.base import MetricContext, metric
from collapselab.metrics.kr import source_items
from collapselab.samples import SampleSet

TEXT = ("text",)
#: the run output holding the knowledge-retention item set (:func:`kr_items_bytes`).
KR_FILE = "kr_items.safetensors"
#: per-chunk metrics registered (kr_split_0 .. kr_split_{MAX_SPLITS - 1}, memorization_0 ...).
MAX_SPLITS = 16


def heldout_logprobs(model: Family, ctx: MetricContext) -> np.ndarray:
    """Per-token log-probabilities of the held-out windows ``[C, n, W]`` (once per generation)."""
    if "heldout_lp" not in ctx.cache:
        ctx.cache["heldout_lp"] = model.log_prob(ctx.heldout)
    return ctx.cache["heldout_lp"]


def probe_rewrite(model: Family, ctx: MetricContext) -> SampleSet:
    """The model's rewrite of the held-out windows (once per generation; shared with ``confidence_gap``)."""
    from collapselab.metrics.fidelity import _own_sample

    return _own_sample(model, ctx)


@metric("perplexity", TEXT, "perplexity of the real held-out test windows: exp(total NLL / total tokens)",
        title="Perplexity on real test text", axis="perplexity", reference="base")
def perplexity(model: Family, ctx: MetricContext) -> np.ndarray:
    lp = heldout_logprobs(model, ctx)
    return np.exp(-lp.reshape(lp.shape[0], -1).mean(axis=1))


def kr_items_bytes(source: Any, tree: Any, batches: int) -> bytes:
    """The probe's item sets of chain batches ``0 .. batches - 1`` as safetensors bytes: the arrays of
    :func:`collapselab.metrics.kr.items_to_arrays` under ``b<batch>/`` (read one back with ``safetensors.numpy.load``,
    the keys of a batch without their prefix, and :func:`collapselab.metrics.kr.items_from_arrays`)."""
    from collapselab.metrics.kr import items_to_arrays
    from collapselab.store import tensors_bytes

    arrays = {f"b{b:04d}/{k}": v for b in range(batches)
              for k, v in items_to_arrays(source_items(source, tree, b)).items()}
    return tensors_bytes(arrays, {"n": source.n, "seed": tree.seed, "batches": batches})


#: the probe metrics save their item sets (one per seed) with the run
KR_SAVES = {KR_FILE: kr_items_bytes}


def kr_results(model: Family, ctx: MetricContext) -> tuple[np.ndarray, np.ndarray]:
    """``(correct [C, items], chunk [items])`` of the knowledge-retention probe (once per generation)."""
    if "kr" not in ctx.cache:
        items = source_items(ctx.source, ctx.tree, ctx.batch)
        diff = model.compare_continuations([i.context for i in items], [i.true for i in items],
                                           [i.false for i in items])
        correct = (diff > 0) + 0.5 * (diff == 0)
        ctx.cache["kr"] = (correct, np.array([i.chunk for i in items], dtype=np.int64))
    return ctx.cache["kr"]


def _kr_mean(model: Family, ctx: MetricContext, sel: np.ndarray) -> np.ndarray:
    correct, _ = kr_results(model, ctx)
    return correct[:, sel].mean(axis=1) if sel.any() else np.full(model.n_chains, np.nan)


@metric("kr_accuracy", TEXT, "knowledge retention: share of probe items from all real chunks where the true "
        "continuation is more likely than the false one (chance 0.5)", better="higher",
        needs="compare_continuations", title="Knowledge retention (all chunks)", axis="KR accuracy",
        chance=0.5, reference="base", saves=KR_SAVES)
def kr_accuracy(model: Family, ctx: MetricContext) -> np.ndarray:
    _, chunk = kr_results(model, ctx)
    return _kr_mean(model, ctx, np.ones(len(chunk), dtype=bool))


@metric("kr_unseen", TEXT, "the knowledge-retention probe on the real chunks not yet trained on: the probe's "
        "measured chance level (0.5 for a valid probe)", better="higher", needs="compare_continuations",
        title="Knowledge retention on chunks not yet trained on (chance level)", axis="KR accuracy", chance=0.5,
        reference="base", saves=KR_SAVES)
def kr_unseen(model: Family, ctx: MetricContext) -> np.ndarray:
    _, chunk = kr_results(model, ctx)
    return _kr_mean(model, ctx, chunk >= ctx.chunks_seen)


def _kr_split(s: int):
    def fn(model: Family, ctx: MetricContext) -> np.ndarray:
        _, chunk = kr_results(model, ctx)
        return _kr_mean(model, ctx, chunk == s)

    return fn


for _s in range(MAX_SPLITS):
    metric(f"kr_split_{_s}", TEXT, f"knowledge retention on the probe items of real chunk {_s} (chance 0.5)",
           better="higher", needs="compare_continuations", title=f"Knowledge retention, chunk {_s}",
           axis="KR accuracy", chance=0.5, reference="base", saves=KR_SAVES)(_kr_split(_s))


def _chunk_logprobs(model: Family, ctx: MetricContext, k: int) -> np.ndarray:
    """Per-token log-probabilities ``[C, n, W]`` of real chunk ``k`` under ``model``."""
    return model.log_prob(ctx.source.take(ctx.tree, ctx.batch, 1, k * ctx.n, ctx.n))


def _memorization(k: int):
    def fn(model: Family, ctx: MetricContext) -> np.ndarray:
        if k >= ctx.source.chunk_count(ctx.tree, ctx.batch):
            return np.full(model.n_chains, np.nan)
        key = ("base_chunk", k)
        if key not in ctx.static:  # the pretrained start point's log-likelihood, once per chain batch
            if "base_model" not in ctx.static:
                ctx.static["base_model"] = model.pretrained()
            ctx.static[key] = _chunk_logprobs(ctx.static["base_model"], ctx, k).reshape(-1).mean()
        lp = _chunk_logprobs(model, ctx, k)
        return lp.reshape(lp.shape[0], -1).mean(axis=1) - ctx.static[key]

    return fn


for _k in range(MAX_SPLITS):
    metric(f"memorization_{_k}", TEXT, f"memorisation of real chunk {_k}: the pretrained base model's NLL on it minus "
           f"this model's, nats per token (0 for a model that never saw it)", better="higher", needs="pretrained",
           title=f"Memorisation of real chunk {_k}", axis="base NLL - model NLL (nats/token)",
           chance=0.0)(_memorization(_k))


def _rewrite_stat(fn):
    def per_chain(model: Family, ctx: MetricContext) -> np.ndarray:
        x = probe_rewrite(model, ctx)["x"]
        return np.array([fn(model, ctx, x[c]) for c in range(x.shape[0])])

    return per_chain


def _real_tokens(ctx: MetricContext) -> np.ndarray:
    if "real_tokens" not in ctx.static:
        ctx.static["real_tokens"] = ctx.source.training_tokens(ctx.tree, ctx.batch)
    return ctx.static["real_tokens"]


@metric("unigram_kl", TEXT, "KL(rewrites || real training text) of the unigram token distributions, nats (ForTIFAI's "
        "direction; add-one smoothing over the vocabulary on both sides)",
        title="Unigram KL, real text vs rewrites", axis="KL (nats)", reference="real")
@_rewrite_stat
def unigram_kl(model: Family, ctx: MetricContext, x: np.ndarray) -> float:
    from collapselab.metrics.text_stats import unigram_kl as kl

    return kl(x.reshape(-1), _real_tokens(ctx), model.vocab_size)


def _distinct(n: int):
    def fn(model: Family, ctx: MetricContext, x: np.ndarray) -> float:
        from collapselab.metrics.text_stats import distinct_n

        return distinct_n(x, n)

    return fn


for _n in (1, 2, 3):
    metric(f"distinct_{_n}", TEXT, f"distinct {_n}-grams / all {_n}-grams in the model's rewrites", better="higher",
           title=f"Distinct {_n}-grams in rewrites", axis=f"distinct-{_n}", reference="real",
           band=(0.5, 1.5))(_rewrite_stat(_distinct(_n)))


@metric("self_bleu", TEXT, "self-BLEU (0-100) of the model's rewrites (sacrebleu; up to 200 subsampled, each "
        "against the others): higher = less diverse", title="Self-BLEU of rewrites", axis="self-BLEU",
        reference="real")
@_rewrite_stat
def self_bleu(model: Family, ctx: MetricContext, x: np.ndarray) -> float:
    from collapselab.metrics.text_stats import self_bleu as sb

    return sb(model.decode(x), np.random.default_rng(0))


@metric("vocab_coverage", TEXT, "share of the real training text's token types that occur in the model's rewrites",
        better="higher", title="Vocabulary coverage of rewrites", axis="coverage", reference="real")
@_rewrite_stat
def vocab_coverage(model: Family, ctx: MetricContext, x: np.ndarray) -> float:
    from collapselab.metrics.text_stats import vocab_coverage as vc

    return vc(x.reshape(-1), _real_tokens(ctx))
