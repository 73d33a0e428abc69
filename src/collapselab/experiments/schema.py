"""The experiment schema: one YAML file (or built-in name) describes a whole comparison.

An experiment fixes the family, data, regime, curator, loss, sizes, seeds and metrics; ``arms`` override
any of ``family``, ``regime``, ``curator``, ``loss``, ``n_synthetic`` (a dict with the same ``name`` is
merged into the base setting, a different ``name`` replaces it); ``grid`` expands every arm over the
cartesian product of dotted overrides (e.g. ``curator.delta: [0, 0.5]``). Unknown keys are errors.
"""

from __future__ import annotations

import functools
import itertools
import json
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

from collapselab.curators import CuratorSettings, NoCurator
from collapselab.data import SOURCES, DataSettings, source_class
from collapselab.errors import ConfigError
from collapselab.families import FAMILIES, FamilySettings, Resources
from collapselab.losses.ulosses import CE, LossConfig
from collapselab.metrics import METRICS, FailureRule, check_metric
from collapselab.plugins import load_plugins, normalize_spec, registries
from collapselab.regimes import RegimeSettings, Replace
from collapselab.registry import Registry
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

    def batch_seeds(self, batch: int) -> list[int]:
        lo = batch * self.chains_per_batch
        return list(range(lo, min(self.seeds, lo + self.chains_per_batch)))

    def make_source(self) -> Any:
        """The experiment's data source (held-out size and real samples per generation set), built once per process
        (the chains and the report share it, with whatever it has read and cached)."""
        return _source(self.data.model_dump_json(), self.heldout, self.n)

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

@functools.lru_cache(maxsize=4)
def _source(data_json: str, heldout: int, n: int) -> Any:
    """The source of a data setting (by its JSON: settings holding lists are not hashable)."""
    from collapselab.data import SOURCES, make_source

    name = json.loads(data_json)["source"]
    return make_source(SOURCES.config_class(SOURCES[name]).model_validate_json(data_json), heldout, n)


def _check(setting: Any, ctx: SettingContext, where: str) -> str | None:
    """A setting's (or metric's) own cross-field check; a plugin whose check itself fails is named."""
    try:
        return setting.check(ctx)
    except Exception as e:
        what = getattr(setting, "name", None) or getattr(setting, "source", "?")
        raise ValueError(f"{where}: {what}: its check(ctx) failed: {type(e).__name__}: {e}") from None


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
    raw = {**raw, "plugins": _plugins(raw.get("plugins"))}
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
    _resolve_references(doc)
    _complete_data(doc)
    try:
        return Experiment.model_validate(doc)
    except ValidationError as e:
        raise ValueError(format_error(e, raw=doc)) from None


def _plugins(specs: Any) -> list[str]:
    """Import the experiment's ``plugins`` (file paths made absolute, relative to the working directory) before
    anything else is validated; returns them as recorded."""
    if specs is None:
        return []
    if not isinstance(specs, list) or not all(isinstance(x, str) and x.strip() for x in specs):
        raise ValueError("plugins: must be a list of module names, .py files or module:Object references")
    out: list[str] = []
    for spec in map(normalize_spec, specs):
        if spec not in out:
            out.append(spec)
    load_plugins(out)
    return out


#: where a setting names its choice (the data setting: ``source``)
_SETTING_KIND = {"family": "family", "regime": "regime", "curator": "curator", "loss": "loss", "data": "source"}


def _resolve_references(doc: dict[str, Any]) -> None:
    """``module:Object`` names (anywhere a setting or metric is named) imported, registered and replaced by the
    object's own name; each reference joins ``plugins`` so that workers and ``resume`` import it too."""
    regs = registries()
    refs: list[str] = []

    def fix(kind: str, name: Any, where: str) -> Any:
        if not isinstance(name, str) or ":" not in name:
            return name
        ref = normalize_spec(name)
        try:
            entry = regs[kind].entry(ref)
        except ConfigError as e:
            raise ValueError(f"{where}: {e}") from None
        if ref not in refs:
            refs.append(ref)
        return entry.name

    for i, node in enumerate([doc, *doc["arms"]]):
        for key, kind in _SETTING_KIND.items():
            setting = node.get(key)
            if isinstance(setting, dict):
                tag = "source" if key == "data" else "name"
                if tag in setting:
                    where = f"{key}.{tag}" if i == 0 else f"arms.{i - 1}.{key}.{tag}"
                    node[key] = {**setting, tag: fix(kind, setting[tag], where)}
    if isinstance(doc.get("metrics"), list):
        doc["metrics"] = [fix("metric", m, f"metrics.{j}") for j, m in enumerate(doc["metrics"])]
    rules = doc.get("failure")
    for j, rule in enumerate(rules if isinstance(rules, list) else [rules]):
        if isinstance(rule, dict) and "metric" in rule:
            rule["metric"] = fix("metric", rule["metric"], "failure.metric" if not isinstance(rules, list)
                                 else f"failure.{j}.metric")
    doc["plugins"] = [*doc.get("plugins", []), *(r for r in refs if r not in doc.get("plugins", []))]


def _complete_data(doc: dict[str, Any]) -> None:
    """The data source completes its own setting from the arms' (:meth:`SourceConfig.complete`)."""
    data = doc.get("data")
    cls = SOURCES.get(data.get("source")) if isinstance(data, dict) else None  # type: ignore[arg-type]
    if cls is not None:
        doc["data"] = cls.config_class.complete(data, doc["arms"])


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
    """Tag values of the tagged unions (rewards, failure rules, sizes, gamma): pydantic puts them in error
    locations, users never write them. Registry settings are not unions and add none."""
    from collapselab.curators.rewards import Coordinate, Distance, SymbolValues
    from collapselab.losses.ulosses import GAMMA_TAGS

    return ({c.model_fields["name"].default for c in (Coordinate, Distance, SymbolValues)}
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
        field = model.model_fields[part]
        node = node.get(part) if isinstance(node, dict) else None
        reg = next((m for m in field.metadata if isinstance(m, Registry)), None)
        model = (reg.model_for(node) or reg.base) if reg is not None else _pick(field.annotation, node)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _list_item(tp: Any) -> Any:
    args = getattr(tp, "__args__", ())
    return args[0] if args else tp


def _pick(tp: Any, node: Any) -> Any:
    """The member of a (possibly Annotated / Optional) union matching ``node``'s tag; for a registry setting, the
    model of the class ``node`` names."""
    for meta in getattr(tp, "__metadata__", ()):
        if isinstance(meta, Registry):
            return meta.model_for(node) or tp
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


