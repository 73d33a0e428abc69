"""Plugins: importing them into the registries of their kinds, in every process of a run, and pinning them.

A plugin spec is a module name, a ``.py`` file (recorded with its absolute path) or ``module:Object``. Importing a
module or file registers what it declares (decorated objects, and every class of a kind with a ``name`` it
defines, so a plugin needs no decorator); ``module:Object`` registers that object in the registry of its kind.
:func:`plugin_record` pins what a run depends on (a distribution's version, a file's sha256) for ``run.json``.

The importer lives here too (a ``.py`` file under a name that is the same in every process, so its objects pickle
to workers; a module from the working directory, as ``python -m`` finds it), with the crediting of registrations
to the plugin being imported; it installs itself into :mod:`collapselab.registry`, which resolves ``module:Object``
names through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata as md
import importlib.util
import inspect
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from collapselab import registry
from collapselab.errors import ConfigError, first_line
from collapselab.registry import Registry

__all__ = ["crediting", "import_object", "is_file_spec", "load_plugin", "load_plugins", "normalize_spec",
           "plugin_record", "plugin_version", "registries", "reset_plugins", "split_spec"]

_origin: list[str] = []  # the plugin being imported (its registrations are credited to it)


@contextlib.contextmanager
def crediting(origin: str) -> Iterator[None]:
    """Registrations made inside are credited to ``origin`` (the plugin being imported)."""
    _origin.append(origin)
    try:
        yield
    finally:
        _origin.pop()



def current_origin() -> str | None:
    """The plugin being imported, if any (what a registration made now is credited to)."""
    return _origin[-1] if _origin else None


def is_file_spec(spec: str) -> bool:
    """Whether a plugin spec names a Python file (``./x.py``, ``/abs/x.py``) rather than a module."""
    return spec.endswith(".py") or "/" in spec or "\\" in spec


def file_module_name(path: Path) -> str:
    """The module name a plugin file is imported as: the same in every process for the same file path, so
    objects defined in it pickle to worker processes."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() else "_" for c in path.stem)
    return f"collapselab_plugin_{stem}_{digest}"


def _import_file(path: Path, what: str) -> Any:
    name = file_module_name(path)
    if name in sys.modules:
        return sys.modules[name]
    if path.is_dir():
        raise ConfigError(f"{what}: a folder; give a .py file, or the folder's package as a module name")
    if not path.is_file():
        raise ConfigError(f"{what}: no such file")
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"{what}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:
        del sys.modules[name]
        raise ConfigError(f"{what}: cannot import: {type(e).__name__}: {first_line(e)}") from None
    return module


def _import_module(name: str, what: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:  # as `python -m` does: a module beside the user is importable from every entry point
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except (Exception, SystemExit) as e:
        raise ConfigError(f"{what}: cannot import module {name!r}: {type(e).__name__}: {first_line(e)}") from None


def import_module_or_file(where: str, what: str) -> Any:
    """The module ``where`` names (a module name, or a ``.py`` file imported under :func:`file_module_name`)."""
    return _import_file(Path(where).expanduser().resolve(), what) if is_file_spec(where) \
        else _import_module(where, what)


def import_object(ref: str, what: str) -> Any:
    """The object of ``module:Object`` (``module`` may be a ``.py`` path); errors name ``what``."""
    mod, attr = split_spec(ref)
    if not attr:
        raise ConfigError(f"{what}: write module:Object")
    with crediting(f"plugin {ref}"):
        module = import_module_or_file(mod, what)
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{what}: module {mod!r} has no {attr!r}")
        obj = getattr(obj, part)
    return obj


def normalize_spec(spec: str) -> str:
    """A plugin spec as recorded: file paths absolute (relative ones against the working directory)."""
    where, obj = split_spec(spec)
    if not is_file_spec(where):
        return spec
    return str(Path(where).expanduser().resolve()) + (f":{obj}" if obj else "")


def split_spec(spec: str) -> tuple[str, str]:
    """``(module or file, object)`` of a plugin spec (object ``""`` for a whole module or file)."""
    head, sep, tail = spec.rpartition(":")
    return (head, tail) if sep and head and not is_file_spec(tail) else (spec, "")


class _Loader:
    """This module as the registries' :class:`collapselab.registry.Loader`."""

    import_object = staticmethod(import_object)
    crediting = staticmethod(crediting)
    current_origin = staticmethod(current_origin)


registry.install_loader(_Loader())


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
