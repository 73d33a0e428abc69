"""Data sources: where the real data of a chain comes from, its held-out set and (if known) its truth.

A source gives, per chain batch, a :class:`RealPool` whose ``take(offset, count)`` returns the real
samples at positions ``[offset, offset + count)`` of each chain's own real stream: for a known-truth
source, fresh draws from the truth; for a finite data set, a per-chain random permutation of the
training split (so chains see different real subsets, and regimes that ask for "new" real data get
samples they have not seen). Real data depend only on (root seed, batch, positions), never on the
arm: arms compare on common real data.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict

from collapselab.families.base import Family
from collapselab.registry import ClassRegistry
from collapselab.samples import SampleSet
from collapselab.seeding import SeedTree
from collapselab.settings import SettingContext

Kind = Literal["points", "regression", "tokens", "images", "text"]


class SourceConfig(BaseModel):
    """Base of every data-source setting (``source`` selects it)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    source: str

    def check(self, ctx: SettingContext) -> str | None:
        """Why this data setting cannot serve the arm of ``ctx`` (one line naming the field), or ``None``; no I/O."""
        return None

    @classmethod
    def complete(cls, data: dict[str, Any], arms: list[dict[str, Any]]) -> dict[str, Any]:
        """The raw data setting with what it leaves to be filled in from the arms' raw settings (e.g. a text
        source's tokenizer from their model); called once while the experiment is resolved (default: as it is)."""
        return data


@dataclass
class RealPool:
    """Real samples for one chain batch: ``take(offset, count)`` -> ``SampleSet [C, count]``."""

    source: Source
    tree: SeedTree
    batch: int
    n_chains: int

    def take(self, offset: int, count: int) -> SampleSet:
        return self.source.take(self.tree, self.batch, self.n_chains, offset, count)


class Source(abc.ABC):
    """A real-data source (see module docstring)."""

    #: the name ``data.source`` selects it by, and the model validating that setting
    name: ClassVar[str]
    config_class: ClassVar[type[SourceConfig]] = SourceConfig
    kind: ClassVar[Kind]
    #: True for sources whose truth is known exactly (closed-form metrics apply).
    has_truth: ClassVar[bool] = False

    def __init__(self, config: SourceConfig, heldout: int, n: int = 0) -> None:
        self.config = config
        self.heldout_size = int(heldout)
        #: the experiment's real samples per generation (a text source lays its chunks out in units of it)
        self.n = int(n)

    @classmethod
    def serving(cls, config: SourceConfig) -> type[Source]:
        """The class that serves ``config`` (itself; a source with several forms may hand over to another)."""
        return cls

    @property
    @abc.abstractmethod
    def spec(self) -> Mapping[str, Any]:
        """What a family needs to know about the samples (``dim``, ``vocab``, ``seq_len``...); a source whose
        families pretrain or calibrate on its data returns a :class:`~collapselab.families.base.DataSpec` holding
        itself."""

    @property
    def truth(self) -> Family | None:
        """The true model (single chain) when known, else ``None``."""
        return None

    @property
    def pool_size(self) -> int | None:
        """Real training samples available per chain (``None``: unlimited)."""
        return None

    @abc.abstractmethod
    def take(self, tree: SeedTree, batch: int, n_chains: int, offset: int, count: int) -> SampleSet:
        """Real samples ``[offset, offset + count)`` of each chain's stream."""

    def check_heldout(self) -> str | None:
        """Why the held-out size cannot be served (one line naming ``heldout``), or ``None``."""
        return None

    def stand_in(self, like: SampleSet | int, rng: np.random.Generator) -> SampleSet | None:
        """Real samples standing in for a model's (``like``: what a model would rewrite, or a count) in the
        reference rows of the sample metrics (:mod:`collapselab.report.reference`); ``None``: none defined."""
        return None

    def check_capacity(self, tree: SeedTree, batches: int, need: int) -> str | None:
        """Why some of the first ``batches`` chain batches cannot be served ``need`` real samples (one line), or
        ``None``; checked before a run starts (sources whose pool depends on the batch override it)."""
        return None

    @abc.abstractmethod
    def heldout(self, tree: SeedTree, batch: int = 0) -> SampleSet:
        """Held-out real data ``[1, m, ...]`` of chain batch ``batch`` (shared by all arms; most sources hold out
        one set for every batch)."""

    def pool(self, tree: SeedTree, batch: int, n_chains: int) -> RealPool:
        return RealPool(self, tree, batch, n_chains)


class TruthSource(Source):
    """A source whose real data are draws from a known model."""

    has_truth = True

    @property
    @abc.abstractmethod
    def truth(self) -> Family:
        ...

    def draw(self, n_chains: int, count: int, rng: np.random.Generator) -> SampleSet:
        return self.truth.tile(n_chains).sample(count, rng)

    def take(self, tree: SeedTree, batch: int, n_chains: int, offset: int, count: int) -> SampleSet:
        return self.draw(n_chains, count, tree.rng("data", batch, "real", offset))

    def heldout(self, tree: SeedTree, batch: int = 0) -> SampleSet:
        return self.draw(1, self.heldout_size, tree.rng("data", "heldout"))


class FiniteSource(Source):
    """A source backed by a finite array of real samples, split once into train pool and held-out."""

    @abc.abstractmethod
    def load(self) -> dict[str, np.ndarray]:
        """All real samples as arrays ``[N, ...]`` (no chain axis)."""

    def _split(self, tree: SeedTree) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        cache = getattr(self, "_split_cache", None)
        if cache is not None and cache[0] == tree.seed:
            return cache[1]
        data = self.load()
        n = len(next(iter(data.values())))
        perm = tree.rng("data", "split").permutation(n)
        held, train = perm[: self.heldout_size], perm[self.heldout_size:]
        out = ({k: v[train] for k, v in data.items()}, {k: v[held] for k, v in data.items()})
        self._split_cache = (tree.seed, out)
        return out

    def train_size(self) -> int:
        data = self.load()
        return len(next(iter(data.values()))) - self.heldout_size

    @property
    def pool_size(self) -> int:
        return self.train_size()

    def take(self, tree: SeedTree, batch: int, n_chains: int, offset: int, count: int) -> SampleSet:
        train, _ = self._split(tree)
        n = len(next(iter(train.values())))
        if offset + count > n:
            raise ValueError(f"real pool exhausted: {offset + count} samples asked of {n}")
        rng = tree.rng("data", batch, "permutation")
        order = np.stack([rng.permutation(n) for _ in range(n_chains)])[:, offset:offset + count]
        return SampleSet({k: v[order] for k, v in train.items()})

    def heldout(self, tree: SeedTree, batch: int = 0) -> SampleSet:
        _, held = self._split(tree)
        return SampleSet({k: v[None] for k, v in held.items()})


#: every data source by ``source`` name: the built-ins, plugins (entry points ``collapselab.sources``, ``plugins:``)
SOURCES = ClassRegistry("source", Source, key="source")
