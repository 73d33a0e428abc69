"""The raw-dict resolver: an experiment as written (a mapping from YAML) made into a validated :class:`Experiment`:
plugins imported first, ``module:Object`` references registered, arms merged into the base settings and expanded
over ``grid``, the data source completing its own setting; a problem is one line naming the field
(:mod:`collapselab.experiments.messages`)."""

from __future__ import annotations

import itertools
from typing import Any

from pydantic import ValidationError

from collapselab.data import SOURCES
from collapselab.errors import ConfigError
from collapselab.experiments.messages import format_error
from collapselab.experiments.schema import ARM_KEYS, ArmOverride, Experiment
from collapselab.plugins import load_plugins, normalize_spec, registries


def set_path(raw: dict, path: str, value: Any) -> None:
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


