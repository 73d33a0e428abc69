"""Plugins: importing them into the registries of their kinds, in every process of a run, and pinning them.

A plugin spec is a module name, a ``.py`` file (recorded with its absolute path) or ``module:Object``. Importing a
module or file registers what it declares (decorated objects, and every class of a kind with a ``name`` it
defines, so a plugin needs no decorator); ``module:Object`` registers that object in the registry of its kind.
:func:`plugin_record` pins what a run depends on (a distribution's version, a file's sha256) for ``run.json``.

The importing itself (a ``.py`` file under a name that is the same in every process, a module from the working
directory, ``module:Object``, the crediting of registrations) is :mod:`collapselab.importer`, below the registry
that resolves ``module:Object`` names with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata as md
import inspect
import sys
import warnings
from pathlib import Path
from typing import Any

from collapselab.errors import ConfigError
from collapselab.importer import (
    crediting,
    import_module_or_file,
    import_object,
    is_file_spec,
    normalize_spec,
    split_spec,
)
from collapselab.registry import Registry

__all__ = ["crediting", "import_object", "is_file_spec", "load_plugin", "load_plugins", "normalize_spec",
           "plugin_record", "plugin_version", "registries", "reset_plugins", "split_spec"]

def load_plugin(spec: str) -> None:
    """Import one plugin: a module name, a ``.py`` file (absolute path) or ``module:Object`` (registered in the
    registry of its kind). Registrations made while importing are credited to ``plugin SPEC``."""
    regs = registries()  # the built-ins first: a plugin that imports collapselab must not get their names credited
    if split_spec(spec)[1]:
        raw = import_object(spec, f"plugins: {spec!r}")
        kinds = [r for r in regs.values() if r.accepts(r.unwrap(raw))]
        if not kinds:
            raise ConfigError(f"plugins: {spec!r} is not a loss, curator, regime, family, source or metric")
        for r in kinds:
            if not r.holds(r.unwrap(raw)):
                r.add(r.unwrap(raw), origin=f"plugin {spec}")
        return
    if spec in _loaded:
        return
    before = sum(len(r.names()) for r in regs.values())
    with crediting(f"plugin {spec}"):
        module = import_module_or_file(spec, f"plugins: {spec!r}")
        unnamed = _register_classes(module)
    _loaded.add(spec)
    if sum(len(r.names()) for r in regs.values()) == before:
        extra = f" ({', '.join(unnamed)} declare(s) no name)" if unnamed else ""
        warnings.warn(f"plugins: {spec!r} registers nothing new: no loss, curator, regime, family or source class "
                      f"with a name, no @metric{extra}", stacklevel=2)


_loaded: set[str] = set()  # module and file plugins imported (and their classes registered) in this process


def _register_classes(module: Any) -> list[str]:
    """Register the classes a plugin module defines that are of a kind and declare a name (a ``ULoss`` subclass
    with its ``name`` Literal, a ``Family`` with ``name``...), so a plugin needs no decorator; returns the classes
    of a kind that declare none (intermediate bases, or a forgotten ``name``)."""
    regs = registries().values()
    unnamed: list[str] = []
    for obj in list(vars(module).values()):
        if not inspect.isclass(obj) or obj.__module__ != module.__name__:
            continue
        for r in regs:
            if not r.accepts(obj) or r.holds(obj):
                continue
            try:
                name = r.name_of(obj)
            except (AttributeError, TypeError, KeyError):  # an intermediate base without a name of its own
                unnamed.append(obj.__name__)
                continue
            if isinstance(name, str) and name:
                r.add(obj, name)
    return unnamed


def load_plugins(specs: list[str] | tuple[str, ...]) -> None:
    """Import every plugin of ``specs`` (see :func:`load_plugin`); each process of a run does this first."""
    for spec in specs:
        load_plugin(spec)


def plugin_version(spec: str) -> dict[str, str]:
    """How a plugin is pinned in the run record: its distribution's version, else the sha256 of its file."""
    where = split_spec(spec)[0]
    if is_file_spec(where):
        p = Path(where)
        return {"spec": spec, "sha256": hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "missing"}
    dists = md.packages_distributions().get(where.split(".")[0]) or []
    for dist in dists:
        with contextlib.suppress(md.PackageNotFoundError):
            return {"spec": spec, "version": f"{dist} {md.version(dist)}"}
    file = getattr(sys.modules.get(where), "__file__", None)
    if file and Path(file).is_file():
        return {"spec": spec, "sha256": hashlib.sha256(Path(file).read_bytes()).hexdigest()}
    return {"spec": spec, "version": "unknown"}


def plugin_record(exp: Any) -> list[dict[str, str]]:
    """Every plugin an experiment depends on, pinned: its ``plugins`` (version or file sha256) and the installed
    entry points its settings and metrics name (``kind:name`` with the distribution's version)."""
    out = [plugin_version(spec) for spec in exp.plugins]
    regs = registries()
    used: list[tuple[str, str]] = [("source", exp.data.source), *(("metric", m) for m in exp.metrics)]
    for arm in exp.arms:
        used += [("family", arm.family.name), ("regime", arm.regime.name), ("curator", arm.curator.name),
                 ("loss", arm.loss.name)]
    for kind, name in dict.fromkeys(used):
        entry = regs[kind].entry(name)
        if entry.origin.startswith("entry point"):
            out.append({"spec": f"{kind}:{name}", "version": entry.origin.removeprefix("entry point ")})
    return out


def reset_plugins() -> None:
    """Forget every plugin registered in this process (built-ins stay; installed entry points are found again):
    for tests and notebooks that load several plugin versions in one process."""
    for r in registries().values():
        r.forget_plugins()
    _loaded.clear()


def registries() -> dict[str, Registry]:
    """Every kind's registry (importing the built-ins)."""
    from collapselab.curators import CURATORS
    from collapselab.data import SOURCES
    from collapselab.families import FAMILIES
    from collapselab.losses.ulosses import LOSSES
    from collapselab.metrics import METRICS
    from collapselab.regimes import REGIMES

    return {"loss": LOSSES, "curator": CURATORS, "regime": REGIMES, "family": FAMILIES, "source": SOURCES,
            "metric": METRICS}
