"""Regimes: how generation g's training set is built from the real pool and the synthetic history.

Each regime is a pure function of (generation, real pool, kept state, new synthetic samples) to a
training set; its state (e.g. the accumulated pool) is a dict of SampleSets that the chain persists.
``n`` is the experiment's real sample size per generation, ``m`` its synthetic size (``n_synthetic``,
default ``n``). Generation 0 trains on ``n`` real samples in every regime.

| regime | generation g >= 1 trains on |
|---|---|
| replace | m samples from model g-1 (``rewrite: true``: model g-1's rewrite of generation 0's n real samples) |
| accumulate | the n real + every synthetic set so far (m per generation) |
| accumulate_subsample | n samples drawn without replacement from that accumulated pool |
| mix(lam) | the same n real + round(lam * n) samples from model g-1 (Bertrand et al.) |
| fresh_real(alpha) | round(alpha * n) new real + n - round(alpha * n) samples from model g-1 |
| fortifai(chunks) | model g-1's same-size rewrite (``resample``) of training set g-1, plus real chunk g (n new |
|                  | real samples) while g < chunks; warm-started (ForTIFAI) |
| fortifai(oracle) | the same with the real text in place of every rewrite: real chunks 0..g (the protocol's |
|                  | ceiling: no synthetic data, the same schedule and warm start) |

A regime whose ``request`` is ``None`` draws nothing from the previous model at that generation (the chain then
passes ``synthetic=None`` to :meth:`RegimeConfig.build`).
"""

from __future__ import annotations

from typing import ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from collapselab.data.base import RealPool
from collapselab.registry import SettingRegistry
from collapselab.samples import SampleSet, concat
from collapselab.settings import SettingContext

State = dict[str, SampleSet]
Request = int | SampleSet | None  # how many samples to draw from the previous model, a set to rewrite, or nothing


class RegimeConfig(BaseModel):
    """Base of all regimes (``name`` selects one)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    name: str
    #: warm start generation g's fit from model g-1.
    warm_start: ClassVar[bool] = False

    @property
    def rewrites(self) -> bool:
        """Whether generation g >= 1 asks the previous model to rewrite a set (``resample``) rather than draw."""
        return False

    def real_needed(self, n: int, generations: int) -> int:
        """Real samples a chain consumes over generations 0..G."""
        return n

    def initial(self, real: RealPool, n: int) -> tuple[SampleSet, State]:
        """Generation 0's training set (n real samples) and the initial state."""
        return real.take(0, n), {}

    def request(self, g: int, n: int, m: int, state: State) -> Request:
        """What generation g draws from model g-1."""
        return m

    def build(self, g: int, n: int, m: int, real: RealPool, state: State, synthetic: SampleSet,
              rng: np.random.Generator) -> tuple[SampleSet, State]:
        """Generation g's training set and the new state."""
        raise NotImplementedError

    def check(self, ctx: SettingContext) -> str | None:
        """Why this regime cannot serve the arm of ``ctx`` (one line), or ``None``; checked at validation."""
        return None


#: every regime by name: the built-ins below, plugins (entry points ``collapselab.regimes``, ``plugins:``)
REGIMES = SettingRegistry("regime", RegimeConfig)


@REGIMES.register
class Replace(RegimeConfig):
    """Train only on the previous model's samples: ``m`` drawn freely, or with ``rewrite`` its rewrite
    (``resample``) of generation 0's ``n`` real samples (Yi et al.'s XSUM set-up: the same documents are
    summarised by every generation's model; ``n_synthetic`` is then unused)."""

    name: Literal["replace"] = "replace"
    rewrite: bool = False

    @property
    def rewrites(self) -> bool:
        return self.rewrite

    def initial(self, real, n):
        first = real.take(0, n)
        return first, ({"real": first} if self.rewrite else {})

    def request(self, g, n, m, state):
        return state["real"] if self.rewrite else m

    def build(self, g, n, m, real, state, synthetic, rng):
        return synthetic, (state if self.rewrite else {})


@REGIMES.register
class Accumulate(RegimeConfig):
    """Keep the real data and every synthetic set (Gerstgrasser et al.)."""

    name: Literal["accumulate"] = "accumulate"

    def initial(self, real, n):
        first = real.take(0, n)
        return first, {"pool": first}

    def build(self, g, n, m, real, state, synthetic, rng):
        pool = concat([state["pool"], synthetic])
        return pool, {"pool": pool}


@REGIMES.register
class AccumulateSubsample(Accumulate):
    """Accumulate, but train on n samples drawn without replacement from the pool."""

    name: Literal["accumulate_subsample"] = "accumulate_subsample"

    def build(self, g, n, m, real, state, synthetic, rng):
        pool = concat([state["pool"], synthetic])
        idx = np.argsort(rng.random((pool.n_chains, pool.n)), axis=1)[:, :n]
        return pool.take(np.sort(idx, axis=1)), {"pool": pool}


@REGIMES.register
class Mix(RegimeConfig):
    """All n real samples plus ``lam * n`` synthetic ones (Bertrand et al.)."""

    name: Literal["mix"] = "mix"
    lam: float = Field(1.0, gt=0)

    def request(self, g, n, m, state):
        return max(1, round(self.lam * n))

    def build(self, g, n, m, real, state, synthetic, rng):
        return concat([real.take(0, n), synthetic]), {}


@REGIMES.register
class FreshReal(RegimeConfig):
    """``alpha * n`` new real samples + the rest synthetic, at every generation."""

    name: Literal["fresh_real"] = "fresh_real"
    alpha: float = Field(0.1, gt=0, lt=1)

    def _a(self, n: int) -> int:
        return max(1, round(self.alpha * n))

    def real_needed(self, n, generations):
        return n + generations * self._a(n)

    def request(self, g, n, m, state):
        return max(1, n - self._a(n))

    def build(self, g, n, m, real, state, synthetic, rng):
        a = self._a(n)
        return concat([real.take(n + (g - 1) * a, a), synthetic]), {}


@REGIMES.register
class Fortifai(RegimeConfig):
    """ForTIFAI's protocol: stage g = model g-1's rewrite of stage g-1's set + real chunk g (n samples).

    ``oracle: true`` is its ceiling and control: the real text in place of every rewrite (stage g trains on real
    chunks 0..g), with the same schedule and warm start."""

    name: Literal["fortifai"] = "fortifai"
    chunks: int = Field(6, ge=1)
    oracle: bool = False
    warm_start: ClassVar[bool] = True

    @property
    def rewrites(self) -> bool:
        return not self.oracle

    def real_needed(self, n, generations):
        return n * min(self.chunks, generations + 1)

    def initial(self, real, n):
        first = real.take(0, n)
        return first, {"train": first}

    def request(self, g, n, m, state):
        return None if self.oracle else state["train"]

    def build(self, g, n, m, real, state, synthetic, rng):
        if self.oracle:
            train = real.take(0, n * min(g + 1, self.chunks))
            return train, {"train": train}
        train = concat([synthetic, real.take(g * n, n)]) if g < self.chunks else synthetic
        return train, {"train": train}


#: an experiment's ``regime:`` setting: any registered regime by ``name``
RegimeSettings = REGIMES.field()
