"""Loading experiments: built-in catalog names or YAML files, ``--set`` overrides, resolved dumps."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

from collapselab.errors import ConfigError
from collapselab.experiments.catalog import catalog_names, catalog_text
from collapselab.experiments.resolver import resolve, set_path
from collapselab.experiments.schema import Experiment
from collapselab.store import read_utf8


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 floats: ``1e-9`` and ``1E5`` are numbers, not strings."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def safe_load(text: str) -> Any:
    """Parse YAML text with :class:`YamlLoader` (no Python objects are ever constructed)."""
    return yaml.load(text, Loader=YamlLoader)


def read_yaml_text(path: Path) -> str:
    """The text of an experiment file; unreadable or non-UTF-8 files are a :class:`ConfigError`."""
    return read_utf8(path, prefix="experiment: ")


def load_raw(name_or_path: str) -> dict[str, Any]:
    """The raw mapping of a built-in experiment or a YAML file."""
    path = Path(name_or_path)
    if name_or_path in catalog_names():
        text = catalog_text(name_or_path)
    elif path.suffix in (".yaml", ".yml") or path.exists():
        if not path.exists():
            raise ConfigError(f"experiment: file {name_or_path!r} not found")
        text = read_yaml_text(path)
    else:
        raise ConfigError(f"experiment: unknown experiment {name_or_path!r}; built-in: "
                          f"{', '.join(catalog_names())} (or a path to a .yaml file)")
    try:
        raw = safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"experiment: {_yaml_problem(e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError("experiment: the file must hold a mapping of settings")
    return raw


def apply_overrides(raw: dict[str, Any], sets: list[str] | None = None, seeds: int | None = None,
                    generations: int | None = None) -> dict[str, Any]:
    """A copy of ``raw`` with ``key.path=value`` overrides (values parsed as YAML) and CLI shortcuts.

    ``scale=NAME`` (in the file or as a ``--set``) first applies the experiment's ``scales.NAME`` preset, a
    mapping of the same dotted overrides (e.g. a paper's full scale); explicit ``--set`` values win over it.
    """
    out = copy.deepcopy(raw)
    pairs = [_parse_set(item) for item in sets or []]
    scale = next((v for k, v in reversed(pairs) if k == "scale"), raw.get("scale"))
    if scale is not None:
        presets = raw.get("scales") if isinstance(raw.get("scales"), dict) else {}
        if not isinstance(scale, str) or scale not in presets:
            allowed = ", ".join(map(str, presets)) or "none: this experiment defines no scales"
            raise ConfigError(f"scale: {scale!r} is not one of the experiment's scales ({allowed})")
        if not isinstance(presets[scale], dict):
            raise ConfigError(f"scales.{scale}: must map dotted settings to values")
        pairs = [(str(k), v) for k, v in presets[scale].items()] + pairs
    for key, value in pairs:
        try:
            set_path(out, key, value)
        except (KeyError, ValueError, IndexError) as e:
            raise ConfigError(f"--set: {e.args[0] if e.args else key}") from None
    if seeds is not None:
        out["seeds"] = seeds
    if generations is not None:
        out["generations"] = generations
    applied = [*(sets or []), *([f"seeds={seeds}"] if seeds is not None else []),
               *([f"generations={generations}"] if generations is not None else [])]
    if applied:
        before = out.get("overrides") if isinstance(out.get("overrides"), list) else []
        out["overrides"] = [*before, *applied]
    return out


def _parse_set(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set: {item!r} is not key=value (e.g. --set loss.gamma=0.9)")
    try:
        return key.strip(), safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        return key.strip(), value


def anchor_plugins(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """``raw`` with its ``plugins:`` file paths made relative to ``base`` (the experiment file's folder)."""
    specs = raw.get("plugins")
    if not isinstance(specs, list):
        return raw
    return {**raw, "plugins": [_anchor(s, base) for s in specs]}


def _anchor(spec: Any, base: Path) -> Any:
    """A ``file.py`` or ``file.py:Object`` spec made relative to ``base``; anything else as it is."""
    from collapselab.importer import is_file_spec, split_spec

    if not isinstance(spec, str):
        return spec
    where, obj = split_spec(spec)
    if not is_file_spec(where) or Path(where).expanduser().is_absolute():
        return spec
    return str((base / where).resolve()) + (f":{obj}" if obj else "")


def anchor_references(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """``raw`` with every ``name: "file.py:Object"`` (settings, arms, metrics) relative to ``base``."""
    out = dict(raw)
    keys = ("family", "regime", "curator", "loss")
    for node in [out, *(out.get("arms") if isinstance(out.get("arms"), list) else [])]:
        if not isinstance(node, dict):
            continue
        for key in keys:
            if isinstance(node.get(key), dict) and ":" in str(node[key].get("name", "")):
                node[key] = {**node[key], "name": _anchor(node[key]["name"], base)}
    if isinstance(out.get("data"), dict) and ":" in str(out["data"].get("source", "")):
        out["data"] = {**out["data"], "source": _anchor(out["data"]["source"], base)}
    if isinstance(out.get("metrics"), list):
        out["metrics"] = [_anchor(m, base) if ":" in str(m) else m for m in out["metrics"]]
    return out


def anchor_data_path(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """``raw`` with a relative ``data.path`` (a user's data) made relative to ``base`` (the experiment's folder)."""
    data = raw.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("path"), str):
        return raw
    path = Path(data["path"]).expanduser()
    return raw if path.is_absolute() else {**raw, "data": {**data, "path": str(base / path)}}


def load_experiment(name_or_path: str, sets: list[str] | None = None, seeds: int | None = None,
                    generations: int | None = None, plugins: list[str] | None = None) -> Experiment:
    """Load, override and validate an experiment; bad input raises :class:`ConfigError` (one line).

    ``plugins`` (``--plugin``) join the experiment's own ``plugins:``; both are imported before the rest is
    validated. File paths in an experiment file (``plugins:``, ``data.path``) are relative to that file."""
    raw = load_raw(name_or_path)
    if name_or_path not in catalog_names():
        base = Path(name_or_path).resolve().parent
        raw = anchor_references(anchor_data_path(anchor_plugins(raw, base), base), base)
    raw = apply_overrides(raw, sets, seeds, generations)
    if plugins:  # after the overrides: --set plugins=... does not drop them
        own = raw.get("plugins") if isinstance(raw.get("plugins"), list) else []
        raw = {**raw, "plugins": [*own, *plugins]}
    try:
        return resolve(raw)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def dump_experiment(exp: Experiment) -> str:
    """The resolved experiment as YAML (what a run directory stores)."""
    return yaml.safe_dump(exp.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True)


def parse_resolved(text: str, where: str = "experiment.yaml") -> Experiment:
    """An experiment from :func:`dump_experiment` output (errors name ``where``)."""
    try:
        raw = safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{where}: {_yaml_problem(e)}") from None
    return resolve_dump(raw, where)


def resolve_dump(raw: Any, where: str = "experiment.yaml") -> Experiment:
    """An experiment from a resolved mapping (errors name ``where``)."""
    try:
        return resolve(raw)
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def _yaml_problem(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    where = f" line {mark.line + 1}" if mark else ""
    return f"not valid YAML{where}: {getattr(e, 'problem', None) or e}"


def changed_fields(old: Any, new: Any, path: str = "") -> list[str]:
    """Dotted paths (``--set`` style: ``arms.1.regime.name``) where two experiment dumps differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in list(old) + [k for k in new if k not in old]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in old or key not in new:
                out.append(sub)
            else:
                out.extend(changed_fields(old[key], new[key], sub))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [p for i, (a, b) in enumerate(zip(old, new, strict=True))
                for p in changed_fields(a, b, f"{path}.{i}" if path else str(i))]
    return [] if old == new else [path or "experiment"]
