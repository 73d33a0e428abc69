"""Loading experiments: built-in catalog names or YAML files, ``--set`` overrides, resolved dumps."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from collapselab.errors import ConfigError
from collapselab.experiments.schema import Experiment, _set_path, resolve


def catalog_names() -> list[str]:
    """Names of the built-in experiments."""
    folder = resources.files("collapselab.experiments") / "catalog"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def catalog_text(name: str) -> str:
    """The YAML text of a built-in experiment."""
    return (resources.files("collapselab.experiments") / "catalog" / f"{name}.yaml").read_text(encoding="utf-8")


def load_raw(name_or_path: str) -> dict[str, Any]:
    """The raw mapping of a built-in experiment or a YAML file."""
    path = Path(name_or_path)
    if name_or_path in catalog_names():
        text = catalog_text(name_or_path)
    elif path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"experiment: file {name_or_path!r} not found")
        text = path.read_text(encoding="utf-8")
    else:
        raise ConfigError(f"experiment: unknown experiment {name_or_path!r}; built-in: "
                          f"{', '.join(catalog_names())} (or a path to a .yaml file)")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"experiment: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise ConfigError("experiment: the file must hold a mapping of settings")
    return raw


def apply_overrides(raw: dict[str, Any], sets: list[str] | None = None, seeds: int | None = None,
                    generations: int | None = None) -> dict[str, Any]:
    """A copy of ``raw`` with ``key.path=value`` overrides (values parsed as YAML) and CLI shortcuts."""
    out = copy.deepcopy(raw)
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set: {item!r} is not key=value (e.g. --set loss.gamma=0.9)")
        try:
            parsed = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError:
            parsed = value
        try:
            _set_path(out, key.strip(), parsed)
        except (KeyError, ValueError, IndexError) as e:
            raise ConfigError(f"--set: {e.args[0] if e.args else key}") from None
    if seeds is not None:
        out["seeds"] = seeds
    if generations is not None:
        out["generations"] = generations
    return out


def load_experiment(name_or_path: str, sets: list[str] | None = None, seeds: int | None = None,
                    generations: int | None = None) -> Experiment:
    """Load, override and validate an experiment; bad input raises :class:`ConfigError` (one line)."""
    raw = apply_overrides(load_raw(name_or_path), sets, seeds, generations)
    try:
        return resolve(raw)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def dump_experiment(exp: Experiment) -> str:
    """The resolved experiment as YAML (what a run directory stores)."""
    return yaml.safe_dump(exp.model_dump(mode="json", exclude_none=True), sort_keys=False, allow_unicode=True)


def parse_resolved(text: str) -> Experiment:
    """An experiment from :func:`dump_experiment` output."""
    try:
        return resolve(yaml.safe_load(text))
    except (ValueError, yaml.YAMLError) as e:
        raise ConfigError(f"experiment.yaml: {e}") from None
