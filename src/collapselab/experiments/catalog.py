"""The built-in experiment catalog (``catalog/*.yaml`` shipped in the package); imports only PyYAML."""

from __future__ import annotations

from importlib import resources

import yaml


def catalog_names() -> list[str]:
    """Names of the built-in experiments."""
    folder = resources.files("collapselab.experiments") / "catalog"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def catalog_text(name: str) -> str:
    """The YAML text of a built-in experiment."""
    return (resources.files("collapselab.experiments") / "catalog" / f"{name}.yaml").read_text(encoding="utf-8")


def catalog_summaries() -> list[tuple[str, str]]:
    """``(name, first sentence of the description)`` of every built-in experiment, without validating them."""
    out = []
    for name in catalog_names():
        raw = yaml.safe_load(catalog_text(name)) or {}
        out.append((name, str(raw.get("description", "")).split(". ")[0].strip()))
    return out
