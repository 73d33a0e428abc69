"""Reference rows: where generation 0 should start.

Each sample metric (distinct-n, unigram KL, self-BLEU, vocabulary coverage; the Fréchet distance, precision /
recall, class entropy ...) is also measured on **real data standing in for the model's samples**
(:class:`RealData`: a text model's rewrite of the held-out windows is replaced by the real windows themselves; an
image model's samples by as many real images of the validation split), and the causal LM's perplexity and probe
on the **pretrained model** every fit starts from. The report shows these rows beside the arms, per seed's own
held-out data, so a reader sees where generation 0 stands; a metric with a ``band`` (distinct-n: 0.5 to 1.5
times the real text's) flags a run whose generation 0 falls outside it (a degenerate or word-salad writer).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.experiments.schema import Experiment
from collapselab.metrics.base import METRICS, MetricContext, compute
from collapselab.samples import SampleSet
from collapselab.seeding import SeedTree

LABELS = {"real": "real data", "base": "pretrained base"}


class RealData:
    """Real data in the place of a model (one chain): what the sample metrics read of it is real."""

    n_chains = 1

    def __init__(self, source: Any) -> None:
        self.source = source

    def resample(self, like: SampleSet, rng: np.random.Generator) -> SampleSet:
        return self.source.stand_in(like, rng)

    def sample(self, n: int, rng: np.random.Generator) -> SampleSet:
        return self.source.stand_in(n, rng)

    def decode(self, x: np.ndarray) -> list[str]:
        return self.source.decode(x)

    @property
    def vocab_size(self) -> int:
        return len(self.source.tokenizer)


def reference_values(exp: Experiment) -> dict[str, np.ndarray]:
    """``{metric: [seeds]}`` of every metric of ``exp`` with a reference, each seed measured on its own chain batch's
    held-out data (NaN where the family or source has no such reference)."""
    names = {kind: [m for m in exp.metrics if METRICS[m].reference == kind] for kind in LABELS}
    if not any(names.values()):
        return {}
    from collapselab.curators import NoCurator
    from collapselab.families import make_family

    source = exp.make_source()
    tree = SeedTree(exp.seed)
    out = {m: np.full(exp.seeds, np.nan) for ms in names.values() for m in ms}
    family = make_family(exp.arms[0].family, 1, source.spec)
    models: dict[str, Any] = {}
    if names["real"] and source.stand_in(1, np.random.default_rng(0)) is not None:
        models["real"] = RealData(source)
    if names["base"] and hasattr(family, "pretrained"):
        models["base"] = family.pretrained()
    for b in range(exp.n_batches):
        seeds = exp.chain_indices(b)
        for kind, model in models.items():
            ctx = MetricContext.make(source, source.heldout(tree, b), tree.rng("reference", kind, b), NoCurator(), 1,
                                     n=exp.n, tree=tree, batch=b)
            for m, v in compute(names[kind], model, ctx).items():
                out[m][seeds] = v[0]
    return out


def reference_summary(exp: Experiment, refs: dict[str, np.ndarray], weights: np.ndarray,
                      start: np.ndarray) -> tuple[dict[str, Any], list[str]]:
    """The summary's ``reference`` entries (seed mean and bootstrap CI per metric) and the flags of arms whose
    generation 0 (``start [arms, metrics]``, seed means) lies outside a metric's band around its reference."""
    from collapselab.metrics.timing import mean_and_ci

    entries: dict[str, Any] = {}
    flags: list[str] = []
    for m, v in refs.items():
        if not np.isfinite(v).any():
            continue
        mean, lo, hi = mean_and_ci(v, weights)
        entries[m] = {"source": LABELS[METRICS[m].reference], "mean": float(mean), "low": float(lo),
                      "high": float(hi)}
        band = METRICS[m].band
        if band is None or not mean > 0:
            continue
        k = exp.metrics.index(m)
        for a, arm in enumerate(exp.arms):
            ratio = start[a, k] / mean
            if not band[0] <= ratio <= band[1]:
                flags.append(f"generation 0 of arm {arm.name!r} has {m} {start[a, k]:.3g}, {ratio:.2f}x the "
                             f"{LABELS[METRICS[m].reference]}'s {mean:.3g} (outside {band[0]:g}-{band[1]:g}x: "
                             f"{'a degenerate, repetitive' if ratio < band[0] else 'an incoherent'} writer)")
    return entries, flags
