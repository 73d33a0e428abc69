"""The experiment schema: one YAML file (or built-in name) describes a whole comparison.

An experiment fixes the family, data, regime, curator, loss, sizes, seeds and metrics; ``arms`` override
any of ``family``, ``regime``, ``curator``, ``loss``, ``n_synthetic`` (a dict with the same ``name`` is
merged into the base setting, a different ``name`` replaces it); ``grid`` expands every arm over the
cartesian product of dotted overrides (e.g. ``curator.delta: [0, 0.5]``). Unknown keys are errors.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Tag,
    field_validator,
    model_validator,
)
from pydantic import Discriminator as UnionTag

from collapselab.curators import CuratorSettings, NoCurator
from collapselab.data import DataSettings, cached_source, source_class
from collapselab.families import FAMILIES, FamilySettings, Resources
from collapselab.losses.ulosses import CE, LossConfig
from collapselab.metrics import METRICS, FailureRule, check_metric
from collapselab.regimes import RegimeSettings, Replace
from collapselab.settings import SettingContext

#: one failure rule or a list of them; tagged so that an error names ``failure.<field>`` or ``failure.<i>.<field>``
FailureSetting = Annotated[Annotated[FailureRule, Tag("failure-rule")] | Annotated[list[FailureRule],
                                                                                  Tag("failure-rules")],
                           UnionTag(lambda v: "failure-rules" if isinstance(v, list) else "failure-rule")]
class SyntheticSchedule(BaseModel):
    """A synthetic set that grows with the generation: ``start`` at generation 1, ``step`` more each generation
    after (Yi et al.'s ``delta x round``: ``{start: delta, step: delta}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    start: int = Field(ge=1, le=10_000_000)
    step: int = Field(0, ge=0, le=10_000_000)


def _size_tag(v: Any) -> str:
    if isinstance(v, list):
        return "size-list"
    return "size-schedule" if isinstance(v, (dict, SyntheticSchedule)) else "size-number"


#: synthetic samples per generation: a number, ``{start, step}`` or one number per generation 1..G
SyntheticSize = Annotated[Annotated[int, Tag("size-number"), Field(ge=1, le=10_000_000)]
                          | Annotated[SyntheticSchedule, Tag("size-schedule")]
                          | Annotated[list[Annotated[int, Field(ge=1, le=10_000_000)]], Tag("size-list")],
                          UnionTag(_size_tag)]


def synthetic_size(size: int | SyntheticSchedule | list[int], g: int) -> int:
    """Synthetic samples drawn at generation ``g >= 1`` under ``size`` (see :data:`SyntheticSize`)."""
    if isinstance(size, int):
        return size
    if isinstance(size, SyntheticSchedule):
        return size.start + size.step * (g - 1)
    return size[min(g, len(size)) - 1]


ARM_KEYS = ("family", "regime", "curator", "loss", "n_synthetic")
_ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+=,-]*$")


class ArmOverride(BaseModel):
    """One arm as written: a name and partial overrides (raw dicts, merged at resolution)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    name: str
    family: dict[str, Any] | None = None
    regime: dict[str, Any] | None = None
    curator: dict[str, Any] | None = None
    loss: dict[str, Any] | None = None
    n_synthetic: SyntheticSize | None = None
    control_of: str | None = Field(None, description="the arm this one is the matched control of (reports mark it)")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _ARM_NAME.match(v):
            raise ValueError("arm names use letters, digits and _ . + = , - (no spaces or slashes)")
        return v


class Arm(BaseModel):
    """A fully resolved arm: every setting concrete."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    name: str
    family: FamilySettings
    regime: RegimeSettings
    curator: CuratorSettings
    loss: LossConfig
    n_synthetic: SyntheticSize
    control_of: str | None = None

    def synthetic(self, g: int) -> int:
        """Synthetic samples this arm draws at generation ``g >= 1``."""
        return synthetic_size(self.n_synthetic, g)


class Experiment(BaseModel):
    """A validated, resolved experiment (``arms`` concrete)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str = ""
    family: FamilySettings
    data: DataSettings
    n: int = Field(ge=1, le=10_000_000, description="real training samples per generation")
    n_synthetic: SyntheticSize | None = None
    generations: int = Field(ge=0, le=100_000)
    seeds: int = Field(ge=1, le=1_000_000, description="the number of seeds: chains per arm (seed indices 0..seeds-1)")
    seed: int = Field(0, ge=0, description="the root seed: the root of the run's seed tree")
    batch_size: int | None = Field(None, ge=1)
    heldout: int = Field(2000, ge=1)
    regime: RegimeSettings = Field(default_factory=Replace)
    curator: CuratorSettings = Field(default_factory=NoCurator)
    loss: LossConfig = Field(default_factory=CE)
    loss_steps: int = Field(3, ge=1, le=100)
    arms: list[Arm]
    axes: dict[str, list[Any]] | None = Field(None, description="grid axes (filled from grid; for heat maps)")
    metrics: list[str] = Field(min_length=1)
    failure: FailureSetting | None = Field(
        None, description="a failure rule, or a list of them: the first is primary (time to failure and fidelity "
                          "ratio), the others are reported beside it")
    reference_arm: str | None = None
    theory: list[str] = Field(default_factory=list)
    checkpoint_every: int = Field(1, ge=1)
    scale: str | None = Field(None, description="the preset of ``scales`` applied (``--set scale=NAME``)")
    scales: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                              description="named presets of dotted overrides, e.g. a paper's scale")
    plugins: list[str] = Field(default_factory=list, description="modules, .py files or module:Object imported "
                                                                  "before the rest is validated (and in every worker)")
    resources: Resources | None = Field(None, description="--backend ray: what each chain task asks the cluster "
                                                          "for, over its family's own (e.g. {num_gpus: 0.25})")
    overrides: list[str] | None = Field(None, description="the --set / --seeds / --generations this run applied to "
                                                          "the experiment as written (recorded; the report lists them)")

    @property
    def chains_per_batch(self) -> int:
        """Seeds per chain batch: ``batch_size``, else as many as the arms' families hold in one model."""
        return self.batch_size or min(self.seeds, *(FAMILIES[a.family.name].max_chains for a in self.arms))

    @property
    def n_batches(self) -> int:
        return -(-self.seeds // self.chains_per_batch)

    def chain_indices(self, batch: int) -> list[int]:
        """The seed indices (0 to ``seeds - 1``) of chain batch ``batch``'s chains."""
        lo = batch * self.chains_per_batch
        return list(range(lo, min(self.seeds, lo + self.chains_per_batch)))

    def make_source(self) -> Any:
        """The experiment's data source (held-out size and real samples per generation set), built once per process
        (the chains and the report share it, with whatever it has read and cached)."""
        return cached_source(self.data, self.heldout, self.n)

    @property
    def rules(self) -> list[FailureRule]:
        """The failure rules, primary first (empty without a rule)."""
        if self.failure is None:
            return []
        return list(self.failure) if isinstance(self.failure, list) else [self.failure]

    @property
    def primary_rule(self) -> FailureRule | None:
        """The rule behind time to failure and the fidelity ratio."""
        return self.rules[0] if self.rules else None

    @property
    def reference(self) -> str:
        return self.reference_arm or self.arms[0].name

    def arm(self, name: str) -> Arm:
        return next(a for a in self.arms if a.name == name)

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        names = [a.name for a in self.arms]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"arms: duplicate arm names {dup}")
        if self.reference_arm is not None and self.reference_arm not in names:
            raise ValueError(f"reference_arm: {self.reference_arm!r} is not an arm; arms: {names}")
        for i, arm in enumerate(self.arms):
            if arm.control_of is not None and (arm.control_of not in names or arm.control_of == arm.name):
                raise ValueError(f"arms.{i}.control_of: {arm.control_of!r} is not another arm; arms: {names}")
        source_cls = source_class(self.data)
        kind = source_cls.kind
        for arm in self.arms:
            where = f"arms ({arm.name})"
            fam = FAMILIES[arm.family.name]
            if fam.kind != kind:
                raise ValueError(f"{where}: family {fam.name!r} models {fam.kind}, but data source "
                                 f"{self.data.source!r} gives {kind}")
            if isinstance(arm.n_synthetic, list) and len(arm.n_synthetic) < self.generations:
                raise ValueError(f"{where + ': ' if len(self.arms) > 1 else ''}n_synthetic: {len(arm.n_synthetic)} "
                                 f"sizes for {self.generations} generations; give one per generation "
                                 f"1..{self.generations}")
            ctx = SettingContext(arm, fam, source_cls, self.data, kind, tuple(self.metrics), self.n,
                                 self.generations, frozenset(arm.synthetic(g) for g in range(1, self.generations + 1)))
            for setting, always in ((self.data, False), (arm.family, False), (arm.regime, True),
                                    (arm.curator, True), (arm.loss, True)):
                why = _check(setting, ctx, where)
                if why:
                    raise ValueError(f"{where}: {why}" if always or len(self.arms) > 1 else why)
            for m in self.metrics:
                why = check_metric(m, kind, source_cls.has_truth, fam, self.data.source)
                if why is None and METRICS[m].check is not None:
                    why = _check(METRICS[m], ctx, "metrics")
                if why:
                    raise ValueError(f"metrics: {why}")
        self._check_rules()
        from collapselab.theory.predictions import PREDICTIONS

        unknown = [t for t in self.theory if t not in PREDICTIONS]
        if unknown:
            raise ValueError(f"theory: unknown {unknown}; allowed: {', '.join(sorted(PREDICTIONS))}")
        return self


    def _check_rules(self) -> None:
        from collapselab.metrics import METRICS

        rules = self.rules
        if isinstance(self.failure, list) and not rules:
            raise ValueError("failure: an empty list; give a rule or leave failure out")
        labels = [r.label() for r in rules]
        if len(set(labels)) < len(labels):
            raise ValueError(f"failure: the same rule twice ({sorted({x for x in labels if labels.count(x) > 1})})")
        for i, rule in enumerate(rules):
            where = "failure" if len(rules) == 1 and not isinstance(self.failure, list) else f"failure.{i}"
            if rule.metric not in self.metrics:
                raise ValueError(f"{where}.metric: {rule.metric!r} must be one of the metrics {self.metrics}")
            b = rule.anchor
            if b == "chance" and METRICS[rule.metric].chance is None:
                with_chance = sorted(m for m in self.metrics if METRICS[m].chance is not None)
                raise ValueError(f"{where}.baseline: metric {rule.metric!r} has no chance level; use a number or a "
                                 f"metric name" + (f" (metrics with one: {', '.join(with_chance)})"
                                                   if with_chance else ""))
            if isinstance(b, str) and b not in ("chance", "generation0") and b not in self.metrics:
                raise ValueError(f"{where}.baseline: {b!r} is not chance, generation0, a number or one of the "
                                 f"metrics {self.metrics}")

def _check(setting: Any, ctx: SettingContext, where: str) -> str | None:
    """A setting's (or metric's) own cross-field check; a plugin whose check itself fails is named."""
    try:
        return setting.check(ctx)
    except Exception as e:
        what = getattr(setting, "name", None) or getattr(setting, "source", "?")
        raise ValueError(f"{where}: {what}: its check(ctx) failed: {type(e).__name__}: {e}") from None
