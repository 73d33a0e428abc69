"""Metric registry: each metric maps a fitted model (C chains) to one number per chain.

Every metric is measured against held-out **real** data or the known truth. A metric declares which
sample kinds it applies to and whether it needs a known truth, so an experiment asking for a metric
that cannot be computed is rejected before anything runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from collapselab.curators import CuratorConfig
from collapselab.data.base import Source
from collapselab.errors import ConfigError, NumericalError
from collapselab.families.base import Family
from collapselab.losses.ulosses import CE, ULoss
from collapselab.registry import ObjectRegistry
from collapselab.samples import SampleSet
from collapselab.seeding import SeedTree
from collapselab.settings import SettingContext


@dataclass
class MetricContext:
    """Inputs of a metric besides the model (``truth``: the known truth tiled over the chains, or None)."""

    source: Source
    heldout: SampleSet
    rng: np.random.Generator
    curator: CuratorConfig
    truth: Family | None
    #: per generation (reset by the chain every generation)
    cache: dict = field(default_factory=dict)
    #: for the chain batch's life (e.g. features of the held-out real data)
    static: dict = field(default_factory=dict)
    #: the experiment's real samples per generation and the run's seed tree
    n: int = 0
    tree: SeedTree = field(default_factory=lambda: SeedTree(0))
    #: the chain batch measured (its own real data: chunks, probe items, held-out windows)
    batch: int = 0
    #: real samples the chain has trained on up to this generation (the regime's ``real_needed``)
    real_seen: int = 0
    #: the arm's loss (the metrics of what it drops)
    loss: ULoss = field(default_factory=CE)

    @classmethod
    def make(cls, source: Source, heldout: SampleSet, rng: np.random.Generator, curator: CuratorConfig,
             n_chains: int, n: int = 0, tree: SeedTree | None = None, batch: int = 0,
             loss: ULoss | None = None) -> MetricContext:
        """A context whose truth is tiled over ``n_chains``."""
        t = source.truth
        return cls(source, heldout, rng, curator, None if t is None else t.tile(n_chains), n=n,
                   tree=tree or SeedTree(0), batch=batch, loss=loss or CE())

    @property
    def chunks_seen(self) -> int:
        """Real chunks of ``n`` samples trained on so far."""
        return -(-self.real_seen // self.n) if self.n else 0


MetricFn = Callable[[Family, MetricContext], np.ndarray]
#: in a metric's ``kinds``: it applies to every kind of data (what it needs, every family has)
ANY_KIND = "any"


@dataclass(frozen=True)
class Metric:
    name: str
    fn: MetricFn
    kinds: tuple[str, ...]
    needs_truth: bool
    description: str
    #: ``lower`` when smaller values are better (for the default failure direction).
    better: str = "lower"
    #: family capability (method name) the metric needs, if any.
    needs: str | None = None
    #: figure title and y-axis label (plain words, for readers who do not know the identifier).
    title: str = ""
    axis: str = ""
    #: the value a model that learned nothing scores (a failure rule may be anchored at it), if there is one.
    chance: float | None = None
    #: where the metric's reference row comes from: ``real`` (the metric of real data standing in for the
    #: model's samples: :class:`collapselab.report.reference.RealData`), ``base`` (the pretrained model every
    #: fit starts from) or ``None``
    reference: str | None = None
    #: the band (as ratios to the reference) a sound generation 0 lies in; a run outside it is flagged
    band: tuple[float, float] | None = None
    #: a cross-field check of the arm (e.g. a curator with a reward): ``check(ctx) -> str | None``
    check: Callable[[SettingContext], str | None] | None = None
    #: files the metric saves with the run (e.g. a probe's item set), by name relative to the run directory:
    #: ``build(source, tree, batches) -> bytes``; metrics naming the same file share it
    saves: tuple[tuple[str, Callable[[Source, SeedTree, int], bytes]], ...] = ()


#: every metric by name: the built-ins (``@metric``), plugins (entry points ``collapselab.metrics``, ``plugins:``)
METRICS = ObjectRegistry("metric", Metric,
                         unwrap=lambda o: next((e.obj for e in METRICS.registered() if e.obj.fn is o), o),
                         want="a function decorated with collapselab.metrics.base.metric")


def metric(name: str, kinds: tuple[str, ...], description: str, needs_truth: bool = False,
           better: str = "lower", needs: str | None = None, title: str = "",
           axis: str = "", chance: float | None = None, reference: str | None = None,
           band: tuple[float, float] | None = None,
           check: Callable[[SettingContext], str | None] | None = None,
           saves: dict[str, Callable[[Source, SeedTree, int], bytes]] | None = None) -> Callable[[MetricFn], MetricFn]:
    """Register a metric function under ``name`` (``title``/``axis``: how figures label it; ``chance``: the
    value of a model that learned nothing, where one exists; ``reference`` and ``band``: see :class:`Metric`;
    ``check``: why an arm cannot have it, or ``None``; ``saves``: the files it saves with the run, see
    :class:`Metric`). A metric in user code is a plugin like any other."""

    if isinstance(kinds, str) or not all(isinstance(k, str) for k in kinds):
        raise TypeError(f"metric {name!r}: kinds must be a tuple of data kinds, e.g. ('points',), got {kinds!r}")

    def deco(fn: MetricFn) -> MetricFn:
        METRICS.add(Metric(name, fn, kinds, needs_truth, description, better, needs,
                           title or name.replace("_", " ").capitalize(), axis or name.replace("_", " "),
                           chance, reference, band, check, tuple((saves or {}).items())), module=fn.__module__)
        return fn

    return deco


def check_metric(name: str, kind: str, has_truth: bool, family: type[Family], source_name: str) -> str | None:
    """Why ``name`` cannot be computed for this family and source, or ``None`` if it can."""
    try:
        m = METRICS.entry(name).obj
    except ConfigError as e:
        return str(e)
    if kind not in m.kinds and ANY_KIND not in m.kinds:
        return f"metric {name!r} applies to {'/'.join(m.kinds)} data; source {source_name!r} gives {kind}"
    if m.needs_truth and not has_truth:
        return f"metric {name!r} needs a known truth; source {source_name!r} is real data without one"
    if m.needs and not hasattr(family, m.needs):
        return f"metric {name!r} needs a family with {m.needs}(); {family.name!r} has none"
    return None


def compute(names: list[str], model: Family, ctx: MetricContext) -> dict[str, np.ndarray]:
    """All requested metrics, ``{name: [C] float64}``."""
    out = {}
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for name in names:
            value = np.asarray(METRICS[name].fn(model, ctx), dtype=np.float64)
            if value.size != model.n_chains:
                raise NumericalError(f"metric {name!r} gave {value.size} value(s) of shape {value.shape}; a metric "
                                     f"gives one number per chain ({model.n_chains})")
            out[name] = value.reshape(model.n_chains)
    return out


def saved_files(names: list[str]) -> dict[str, Callable[[Source, SeedTree, int], bytes]]:
    """The files the metrics ``names`` save with a run, by file name (see :attr:`Metric.saves`)."""
    return {file: build for name in names for file, build in METRICS[name].saves}
