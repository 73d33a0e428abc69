"""Experiments: schema, YAML loading and the built-in catalog (``catalog/*.yaml``)."""

from collapselab.experiments.loader import (
    apply_overrides,
    catalog_names,
    catalog_text,
    dump_experiment,
    load_experiment,
    parse_resolved,
)
from collapselab.experiments.schema import Arm, Experiment, resolve

__all__ = ["Arm", "Experiment", "apply_overrides", "catalog_names", "catalog_text", "dump_experiment",
           "load_experiment", "parse_resolved", "resolve"]
