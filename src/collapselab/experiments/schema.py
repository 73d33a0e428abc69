"""The experiment schema: one YAML file (or built-in name) describes a whole comparison.

An experiment fixes the family, data, regime, curator, loss, sizes, seeds and metrics; ``arms`` override
any of ``family``, ``regime``, ``curator``, ``loss``, ``n_synthetic`` (a dict with the same ``name`` is
merged into the base setting, a different ``name`` replaces it); ``grid`` expands every arm over the
cartesian product of dotted overrides (e.g. ``curator.delta: [0, 0.5]``). Unknown keys are errors.
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic import Discriminator as UnionTag

from collapselab.curators import (
    CuratorSettings,
    Discriminator,
    KnowledgeBall,
    LuceChoice,
    NoCurator,
    RougeOracle,
    TopK,
)
from collapselab.data import SOURCES, DataSettings, source_class
from collapselab.families import FAMILIES, FamilySettings
from collapselab.losses.ulosses import CE, LossConfig
from collapselab.metrics import FailureRule, check_metric
from collapselab.regimes import RegimeSettings, Replace
from collapselab.rewards import SymbolValues

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
    seeds: int = Field(ge=1, le=1_000_000)
    seed: int = Field(0, ge=0)
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
    overrides: list[str] | None = Field(None, description="the --set / --seeds / --generations this run applied to "
                                                          "the experiment as written (recorded; the report lists them)")

    @property
    def chains_per_batch(self) -> int:
        """Seeds per chain batch: ``batch_size``, else as many as the arms' families hold in one model."""
        return self.batch_size or min(self.seeds, *(FAMILIES[a.family.name].max_chains for a in self.arms))

    @property
    def n_batches(self) -> int:
        return -(-self.seeds // self.chains_per_batch)

    def batch_seeds(self, batch: int) -> list[int]:
        lo = batch * self.chains_per_batch
        return list(range(lo, min(self.seeds, lo + self.chains_per_batch)))

    def make_source(self) -> Any:
        """The experiment's data source (held-out size and real samples per generation set)."""
        from collapselab.data import make_source

        return make_source(self.data, self.heldout, self.n)

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
            fam = arm.family.name
            if FAMILIES[fam].kind != kind:
                raise ValueError(f"{where}: family {fam!r} models {FAMILIES[fam].kind}, but data source "
                                 f"{self.data.source!r} gives {kind}")
            check_data = getattr(arm.family, "check_data", None)
            why = check_data(self.data) if check_data is not None else None
            if why:
                raise ValueError(why if len(self.arms) == 1 else f"{where}: {why}")
            for m in self.metrics:
                why = check_metric(m, kind, source_cls.has_truth, FAMILIES[fam], self.data.source)
                if why:
                    raise ValueError(f"metrics: {why}")
            if "mean_reward" in self.metrics and not isinstance(arm.curator, (TopK, LuceChoice)):
                raise ValueError(f"metrics: mean_reward needs a curator with a reward; arm {arm.name!r} has "
                                 f"{arm.curator.name!r}")
            if "label_accuracy" in self.metrics and not getattr(arm.family, "conditional", False):
                raise ValueError(f"metrics: label_accuracy needs a conditional model (family.conditional: true); "
                                 f"arm {arm.name!r} is unconditional")
            if "param_error_center" in self.metrics and not isinstance(arm.curator, KnowledgeBall):
                raise ValueError(f"metrics: param_error_center needs a knowledge_ball curator; arm {arm.name!r} "
                                 f"has {arm.curator.name!r}")
            if isinstance(arm.curator, Discriminator) and kind != "images":
                raise ValueError(f"{where}: curator discriminator needs image data; source {self.data.source!r} "
                                 f"gives {kind}")
            if isinstance(arm.curator, Discriminator) and arm.curator.conditional and not getattr(
                    arm.family, "conditional", False):
                raise ValueError(f"{where}: a conditional discriminator needs a conditional family "
                                 f"(family.conditional: true)")
            if isinstance(arm.curator, RougeOracle) and (kind != "text" or not arm.regime.rewrites):
                raise ValueError(f"{where}: curator rouge_oracle needs text data and a rewriting regime (fortifai, or "
                                 f"replace with rewrite: true); got {self.data.source!r} and {arm.regime.name!r}")
            if isinstance(arm.curator, KnowledgeBall) and (fam != "linear" or not source_cls.has_truth):
                raise ValueError(f"{where}: curator knowledge_ball needs the linear family and the linear source")
            if isinstance(arm.curator, (TopK, LuceChoice)):
                token_reward = isinstance(arm.curator.reward, SymbolValues)
                if token_reward != (kind == "tokens"):
                    raise ValueError(f"{where}: reward {arm.curator.reward.name!r} does not apply to {kind} data")
            if isinstance(arm.n_synthetic, list) and len(arm.n_synthetic) < self.generations:
                raise ValueError(f"{where + ': ' if len(self.arms) > 1 else ''}n_synthetic: {len(arm.n_synthetic)} "
                                 f"sizes for {self.generations} generations; give one per generation "
                                 f"1..{self.generations}")
            sizes = {arm.synthetic(g) for g in range(1, self.generations + 1)}
            if fam == "linear" and arm.family.design == "block" and any(m % self.data.dim for m in sizes):
                raise ValueError(f"{where}: the block design needs n_synthetic ({sorted(sizes)}) to be a "
                                 f"multiple of data.dim ({self.data.dim})")
        self._check_rules()
        self._check_pool(source_cls)
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

    def _check_pool(self, source_cls: type) -> None:
        """A finite real data set must hold what every arm's regime consumes over all generations."""
        from collapselab.data import FiniteSource

        if not issubclass(source_cls, FiniteSource):
            return
        source = self.make_source()
        try:
            available = source.pool_size
        except (OSError, ValueError) as e:
            raise ValueError(f"data: {e}") from None
        why = source.check_heldout()
        if why:
            raise ValueError(why)
        if available < 1:
            total = available + self.heldout
            raise ValueError(f"heldout: {self.heldout} held-out samples leave none of the {total} samples of "
                             f"{self.data.source!r} to train on; allowed: 1 to {total - 1}")
        for arm in self.arms:
            need = arm.regime.real_needed(self.n, self.generations)
            if need > available:
                raise ValueError(f"n: the real pool of {self.data.source!r} holds {available} training samples "
                                 f"(after {self.heldout} held out) but arm {arm.name!r} ({arm.regime.name}) needs "
                                 f"{need}")


def _set_path(raw: dict, path: str, value: Any) -> None:
    parts = path.split(".")
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        key: Any = int(part) if isinstance(node, list) else part
        if isinstance(node, list):
            if not 0 <= key < len(node):
                raise KeyError(f"{'.'.join(parts[:i + 1])}: index out of range")
        elif key not in node or node[key] is None:
            node[key] = {}
        node = node[key]
    last = parts[-1]
    if isinstance(node, list):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise KeyError(f"{path}: {'.'.join(parts[:-1])} is not a mapping")


def merge_setting(base: dict | None, override: dict | None) -> dict | None:
    """An arm's override merged into the base setting (same ``name``/``source``: deep merge; else replace)."""
    if override is None:
        return base
    if base is None:
        return dict(override)
    tag = "name" if "name" in base or "name" in override else "source"
    if tag in override and override.get(tag) != base.get(tag):
        return dict(override)
    out = dict(base)
    for k, v in override.items():
        out[k] = merge_setting(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def expand_arms(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """Raw arm dicts after grid expansion (validated as :class:`ArmOverride` first)."""
    arms_raw = raw.get("arms") or [{"name": raw.get("name", "base")}]
    if not isinstance(arms_raw, list):
        raise _RawError(("arms",), "must be a list of arms")
    arms = []
    for i, a in enumerate(arms_raw):
        try:
            arms.append(ArmOverride.model_validate(a).model_dump(exclude_none=True))
        except ValidationError as e:
            raise _RawError(("arms", i), None, e) from None
    grid = raw.get("grid")
    if not grid:
        return arms
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise _RawError(("grid",), "must map dotted setting paths to non-empty lists of values")
    for key in grid:
        if key.split(".")[0] not in ARM_KEYS:
            raise _RawError(("grid", key), f"grid keys start with one of {', '.join(ARM_KEYS)}")
    out = []
    for arm in arms:
        for combo in itertools.product(*grid.values()):
            new = {k: (dict(v) if isinstance(v, dict) else v) for k, v in arm.items()}
            label = ",".join(f"{_axis_label(k)}={_fmt(v)}" for k, v in zip(grid, combo, strict=True))
            new["name"] = label if len(arms) == 1 and "arms" not in raw else f"{arm['name']},{label}"
            for key, value in zip(grid, combo, strict=True):
                head, *rest = key.split(".")
                if rest:
                    new[head] = merge_setting(new.get(head) or dict(raw.get(head) or {}),
                                              _nest(rest, value))
                else:
                    new[head] = value
            out.append(new)
    return out


def _axis_label(key: str) -> str:
    """How a grid axis appears in arm names: its last part, or the setting for ``<setting>.name``."""
    parts = key.split(".")
    return parts[-2] if parts[-1] == "name" and len(parts) > 1 else parts[-1]


def _nest(parts: list[str], value: Any) -> dict:
    out: Any = value
    for p in reversed(parts):
        out = {p: out}
    return out


class _RawError(Exception):
    def __init__(self, loc: tuple, msg: str | None, err: ValidationError | None = None) -> None:
        self.loc, self.msg, self.err = loc, msg, err


def resolve(raw: dict[str, Any]) -> Experiment:
    """Validate a raw experiment dict into an :class:`Experiment` (arms resolved).

    Raises ``ValueError`` with one line naming the field and what is allowed.
    """
    if not isinstance(raw, dict):
        raise ValueError("experiment: the file must hold a mapping of settings")
    try:
        arms = expand_arms(raw)
    except _RawError as e:
        if e.err is not None:
            raise ValueError(format_error(e.err, prefix=e.loc, raw=raw)) from None
        raise ValueError(f"{'.'.join(map(str, e.loc))}: {e.msg}") from None
    base = {k: raw.get(k) for k in ARM_KEYS if raw.get(k) is not None}
    resolved = []
    for arm in arms:
        full = {"name": arm["name"]}
        for k in ("family", "regime", "curator", "loss"):
            merged = merge_setting(base.get(k), arm.get(k))
            if merged is not None:
                full[k] = merged
        full["n_synthetic"] = arm.get("n_synthetic", raw.get("n_synthetic") or raw.get("n"))
        if arm.get("control_of") is not None:
            full["control_of"] = arm["control_of"]
        resolved.append(full)
    doc = {k: v for k, v in raw.items() if k not in ("arms", "grid")}
    doc["arms"] = resolved
    if raw.get("grid"):
        doc["axes"] = raw["grid"]
    for key, default in (("regime", {"name": "replace"}), ("curator", {"name": "none"}), ("loss", {"name": "ce"})):
        doc.setdefault(key, default)
        for a in resolved:
            a.setdefault(key, doc[key])
    _fill_tokenizer(doc)
    try:
        return Experiment.model_validate(doc)
    except ValidationError as e:
        raise ValueError(format_error(e, raw=doc)) from None


def _fill_tokenizer(doc: dict[str, Any]) -> None:
    """A text source's ``tokenizer: model`` (the default) becomes the arms' ``family.model`` when they agree."""
    data = doc.get("data")
    if not isinstance(data, dict) or data.get("tokenizer", "model") != "model":
        return
    cls = SOURCES.get(data.get("source"))  # type: ignore[arg-type]
    if cls is None or cls.kind != "text":
        return
    models = {(a.get("family") or {}).get("model", "tiny") for a in doc["arms"] if isinstance(a.get("family"), dict)}
    if len(models) == 1:
        doc["data"] = {**data, "tokenizer": models.pop()}


def format_error(err: ValidationError, prefix: tuple = (), raw: Any = None) -> str:
    """One line: ``<dotted.field>: <what is wrong / allowed>`` (+ how many more problems)."""
    first = err.errors()[0]
    loc = tuple(prefix) + tuple(x for x in first["loc"] if not (isinstance(x, str) and x in _UNION_TAGS))
    path = ".".join(str(x) for x in loc) or "experiment"
    if not loc and first["type"] == "value_error":  # cross-field checks name their field themselves
        more = len(err.errors()) - 1
        return first["msg"].replace("Value error, ", "") + (f" (and {more} more)" if more else "")
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1], raw)
        msg = f"unknown key {loc[-1]!r}" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        path = ".".join(str(x) for x in loc[:-1]) or "experiment"
    elif first["type"] == "missing":
        msg = "is required"
    else:
        msg = first["msg"]
        if first["type"].startswith(("greater", "less")) and "input" in first:
            msg += f" (got {first['input']!r})"
        msg = msg.replace("Value error, ", "")
    more = len(err.errors()) - 1
    return f"{path}: {msg}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def _union_tags() -> set[str]:
    """Tag values of the tagged unions: pydantic puts them in error locations, users never write them."""
    from collapselab.curators import CURATORS
    from collapselab.losses.ulosses import GAMMA_TAGS, ULOSS_NAMES
    from collapselab.regimes import REGIMES
    from collapselab.rewards import Coordinate, Distance

    classes = (*CURATORS, *REGIMES, Coordinate, Distance, SymbolValues)
    return (set(FAMILIES) | set(SOURCES) | set(ULOSS_NAMES) | {c.model_fields["name"].default for c in classes}
            | {"failure-rule", "failure-rules", "size-number", "size-schedule", "size-list", *GAMMA_TAGS})


_UNION_TAGS = _union_tags()


def _allowed_keys(loc: tuple, raw: Any) -> list[str]:
    """Field names of the model at ``loc`` in the experiment (resolving tagged unions from ``raw``)."""
    model: Any = Experiment
    node = raw
    for part in loc:
        if isinstance(part, int):
            model = _list_item(model)
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return []
        model = model.model_fields[part].annotation
        node = node.get(part) if isinstance(node, dict) else None
        model = _pick(model, node)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _list_item(tp: Any) -> Any:
    args = getattr(tp, "__args__", ())
    return args[0] if args else tp


def _pick(tp: Any, node: Any) -> Any:
    """The member of a (possibly Annotated / Optional) union matching ``node``'s tag."""
    origin_args = getattr(tp, "__args__", None)
    if hasattr(tp, "__metadata__"):  # Annotated[Union[...], Field(discriminator=...)]
        tp = tp.__origin__
        origin_args = getattr(tp, "__args__", None)
    if not origin_args:
        return tp
    members = [a for a in origin_args if isinstance(a, type) and issubclass(a, BaseModel)]
    if len(members) == 1:
        return members[0]
    if isinstance(node, dict):
        for m in members:
            for tag in ("name", "source"):
                f = m.model_fields.get(tag)
                if f is not None and node.get(tag) == f.default:
                    return m
    return tp


