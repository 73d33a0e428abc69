"""Experiments: schema, YAML loading and the built-in catalog (``catalog/*.yaml``).

Attributes are imported on first use, so ``collapselab list`` does not pay for the schema's imports.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "apply_overrides": "loader", "dump_experiment": "loader", "load_experiment": "loader", "parse_resolved": "loader",
    "catalog_names": "catalog", "catalog_text": "catalog", "catalog_summaries": "catalog",
    "Arm": "schema", "Experiment": "schema", "resolve": "resolver",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"collapselab.experiments.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'collapselab.experiments' has no attribute {name!r}")
