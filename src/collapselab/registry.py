"""Registries: one per kind of extension, three ways in.

Kinds: ``loss``, ``curator``, ``regime``, ``family``, ``source``, ``metric``. Each :class:`Registry` maps a
name to a class (a metric: a :class:`~collapselab.metrics.base.Metric`) and is filled

- by the built-ins, with the kind's decorator (``@LOSSES.register``...);
- by installed packages, through the entry-point group ``collapselab.<kind>s`` (``name = module:Object``),
  loaded lazily: a broken plugin breaks only the runs that name it;
- by ad-hoc code: an experiment's ``plugins: [module, ./file.py, module:Object]``, ``collapselab run --plugin``,
  or ``name: "module:Object"`` anywhere a name is written (:mod:`collapselab.plugins`).

This module knows no kind: each kind's module creates its registry here, and :mod:`collapselab.plugins` (above
them all) loads plugins into them and pins what a run used.

Built-in names win; a plugin registering one of them is a one-line :class:`ConfigError`. A setting field of an
experiment is ``REGISTRY.field()``: validation asks the registry for the class of the name and lets that
class's own pydantic model validate the rest (errors keep their dotted paths).
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, SerializeAsAny, ValidationError, WrapValidator
from pydantic_core import InitErrorDetails, PydanticCustomError

from collapselab.errors import ConfigError

BUILTIN = "built-in"
#: the kinds and the plural in their entry-point group names (``collapselab.losses``...)
PLURALS = {"loss": "losses", "curator": "curators", "regime": "regimes", "family": "families", "source": "sources",
           "metric": "metrics"}


@dataclass(frozen=True)
class Entry:
    """A registered name: the object and where it comes from (``built-in``, ``plugin SPEC``, ``entry point``)."""

    name: str
    obj: Any
    origin: str


@dataclass(frozen=True)
class SettingContext:
    """What a setting's cross-field ``check(ctx) -> str | None`` may look at: the arm being checked (all of its
    settings), the classes of its family and data source, the data setting, the experiment's metrics, real
    samples per generation and generations, and the synthetic sizes the arm draws."""

    arm: Any
    family: Any
    source: Any
    data: Any
    kind: str
    metrics: tuple[str, ...]
    n: int
    generations: int
    sizes: frozenset[int]


_origin: list[str] = []  # the plugin being imported (its registrations are credited to it)


class Registry:
    """Names of one kind of extension -> their classes (see the module docstring).

    ``name_of`` gives an object's declared name, ``config_of`` the pydantic model that validates its setting
    (``None``: the kind has no settings, e.g. metrics), ``accepts`` whether an object is of this kind; ``key`` is
    the field that names the choice in a setting (``name``, or ``source`` for data).
    """

    def __init__(self, kind: str, base: type, name_of: Callable[[Any], str],
                 accepts: Callable[[Any], bool], config_of: Callable[[Any], type[BaseModel]] | None = None,
                 key: str = "name", unwrap: Callable[[Any], Any] | None = None, want: str = "") -> None:
        self.kind, self.base, self.key = kind, base, key
        self.group = f"collapselab.{PLURALS.get(kind, kind + 's')}"
        self._name_of, self._accepts, self._config_of = name_of, accepts, config_of
        self._unwrap, self._want_text = unwrap or (lambda o: o), want
        self._builtin: dict[str, Entry] = {}
        self._plugins: dict[str, Entry] = {}
        self._eps: dict[str, md.EntryPoint] | None = None

    # -- filling --------------------------------------------------------------------------------
    def register(self, obj: Any) -> Any:
        """Decorator: register ``obj`` under its declared name (built-in when it lives in collapselab)."""
        self.add(obj)
        return obj

    def add(self, obj: Any, name: str | None = None, origin: str | None = None, module: str | None = None) -> Entry:
        """Register ``obj`` (under ``name`` or its declared name; ``module``: where it is defined, if not its
        ``__module__``); a clash with another object is a ConfigError."""
        name = name or self._name_of(obj)
        module = module or getattr(obj, "__module__", "") or ""
        if origin is None and (module == "collapselab" or module.startswith("collapselab.")):
            self._builtin[name] = Entry(name, obj, BUILTIN)
            return self._builtin[name]
        origin = origin or (_origin[-1] if _origin else f"module {module}")
        if name in self._builtin and self._builtin[name].obj is not obj:
            raise ConfigError(f"{self.kind} {name!r} ({origin}): the name of a built-in {self.kind}; built-in "
                              f"names win, rename the plugin's")
        old = self._plugins.get(name)
        if old is not None and old.obj is not obj and _qualname(old.obj) != _qualname(obj) and old.origin != origin:
            raise ConfigError(f"{self.kind} {name!r}: registered by both {old.origin} and {origin}; rename one")
        self._plugins[name] = Entry(name, obj, origin)
        return self._plugins[name]

    # -- lookup ---------------------------------------------------------------------------------
    def _entry_points(self) -> dict[str, md.EntryPoint]:
        if self._eps is None:
            self._eps = {ep.name: ep for ep in md.entry_points(group=self.group)}
        return self._eps

    def entry(self, name: str) -> Entry:
        """The entry of ``name``: a built-in, a registered plugin, an entry point (loaded now) or ``module:Object``
        (imported and registered now). Unknown names and broken plugins raise a one-line :class:`ConfigError`."""
        if name in self._builtin:
            return self._builtin[name]
        if name in self._plugins:
            return self._plugins[name]
        if ":" in name:
            return self._by_reference(name)
        ep = self._entry_points().get(name)
        if ep is not None:
            return self._load_entry_point(ep)
        raise ConfigError(f"unknown {self.kind} {name!r}; allowed: {', '.join(self.names())}")

    def __getitem__(self, name: str) -> Any:
        try:
            return self.entry(name).obj
        except ConfigError as e:
            raise KeyError(name) from e

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and (name in self._builtin or name in self._plugins
                                          or name in self._entry_points())

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self.entry(name).obj
        except ConfigError:
            return default

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def keys(self) -> list[str]:
        return self.names()

    def values(self) -> list[Any]:
        return [self[n] for n in self.names()]

    def items(self) -> list[tuple[str, Any]]:
        return [(n, self[n]) for n in self.names()]

    def names(self, builtin_only: bool = False) -> list[str]:
        """Built-in names (in registration order), then plugins and installed entry points (sorted)."""
        if builtin_only:
            return list(self._builtin)
        extra = sorted((set(self._plugins) | set(self._entry_points())) - set(self._builtin))
        return [*self._builtin, *extra]

    def builtins(self) -> list[Any]:
        """The built-in objects, in registration order."""
        return [e.obj for e in self._builtin.values()]

    def listing(self) -> list[tuple[str, str]]:
        """``(name, origin)`` for every name, entry points not loaded (those shadowed by a built-in marked)."""
        out = [(n, e.origin) for n, e in self._builtin.items()]
        extra = [(n, e.origin) for n, e in self._plugins.items() if n not in self._builtin]
        for n, ep in self._entry_points().items():
            if n in self._builtin:
                extra.append((n, f"entry point {ep.value} ({_dist(ep)}): shadowed by the built-in, not used"))
            elif n not in self._plugins:
                extra.append((n, f"entry point {ep.value} ({_dist(ep)})"))
        return out + sorted(extra)

    def unwrap(self, obj: Any) -> Any:
        """What ``module:Object`` names, as this registry holds it (a metric's function: its :class:`Metric`)."""
        return self._unwrap(obj)

    def _by_reference(self, ref: str) -> Entry:
        obj = self._unwrap(import_object(ref, f"{self.kind} {ref!r}"))
        if not self._accepts(obj):
            raise ConfigError(f"{self.kind} {ref!r}: {_describe(obj)} is not a {self.kind} ({self._want()})")
        for e in self.registered():
            if e.obj is obj:
                return e
        return self.add(obj, origin=f"plugin {ref}")


    def _load_entry_point(self, ep: md.EntryPoint) -> Entry:
        where = f"{self.kind} {ep.name!r} (entry point {ep.value} of {_dist(ep)})"
        try:
            with crediting(f"entry point {ep.value} ({_dist(ep)})"):
                obj = ep.load()
        except Exception as e:
            raise ConfigError(f"{where}: cannot import: {type(e).__name__}: {_first_line(e)}") from None
        if ep.name in self._plugins:  # the module registered it with the decorator
            return self._plugins[ep.name]
        obj = self._unwrap(obj)
        if not self._accepts(obj):
            raise ConfigError(f"{where}: {_describe(obj)} is not a {self.kind} ({self._want()})")
        declared = self._name_of(obj)
        if declared != ep.name:
            raise ConfigError(f"{where}: the object is named {declared!r}; the entry point must use that name")
        return self.add(obj, origin=f"entry point {ep.value} ({_dist(ep)})")

    def _want(self) -> str:
        if self._want_text:
            return self._want_text
        return f"a subclass of {self.base.__module__}.{self.base.__qualname__}" if inspect.isclass(self.base) \
            else str(self.base)

    # -- settings -------------------------------------------------------------------------------
    def accepts(self, obj: Any) -> bool:
        """Whether ``obj`` is of this registry's kind."""
        return self._accepts(obj)

    def registered(self) -> list[Entry]:
        """The entries registered so far: built-ins, then plugins (entry points not yet loaded are not among them)."""
        return [*self._builtin.values(), *self._plugins.values()]

    def holds(self, obj: Any) -> bool:
        """Whether ``obj`` is registered (built-in or plugin)."""
        return any(e.obj is obj for e in self.registered())

    def name_of(self, obj: Any) -> str:
        """The name ``obj`` declares."""
        return self._name_of(obj)

    def forget_plugins(self) -> None:
        """Drop the plugins registered in this process (built-ins stay; entry points are looked up again)."""
        self._plugins.clear()
        self._eps = None

    def config_class(self, obj: Any) -> type[BaseModel]:
        """The pydantic model validating a setting of ``obj``."""
        assert self._config_of is not None, f"{self.kind} has no settings"
        return self._config_of(obj)

    def field(self) -> Any:
        """The annotation of an experiment field holding one setting of this kind: ``{key: NAME, ...}`` validated
        by NAME's own model, serialised with all of its fields."""
        base = self._config_of(self.base) if self._config_of else self.base
        return Annotated[SerializeAsAny[base], WrapValidator(self._validate), self]

    def _validate(self, value: Any, handler: Any) -> Any:
        base = self._config_of(self.base) if self._config_of else self.base
        if isinstance(value, base):
            return value
        if not isinstance(value, dict):
            raise _error((), f"must be a mapping with a {self.key!r} (one of: {', '.join(self.names())})", value)
        name = value.get(self.key)
        if name is None:
            raise ValidationError.from_exception_data(
                "setting", [InitErrorDetails(type="missing", loc=(self.key,), input=value)])
        if not isinstance(name, str):
            raise _error((self.key,), f"must be a name; available: {', '.join(self.names())}", name)
        try:
            obj = self.entry(name).obj
        except ConfigError as e:
            raise _error((self.key,), str(e), name) from None
        return self.config_class(obj).model_validate({**value, self.key: self._name_of(obj)})

    def model_for(self, node: Any) -> type[BaseModel] | None:
        """The settings model a raw mapping selects (for error messages), ``None`` if none."""
        if not isinstance(node, dict) or not isinstance(node.get(self.key), str):
            return None
        obj = self.get(node[self.key])
        return None if obj is None else self.config_class(obj)


@contextlib.contextmanager
def crediting(origin: str) -> Iterator[None]:
    """Registrations made inside are credited to ``origin`` (the plugin being imported)."""
    _origin.append(origin)
    try:
        yield
    finally:
        _origin.pop()


def _error(loc: tuple, msg: str, value: Any) -> ValidationError:
    return ValidationError.from_exception_data(
        "setting", [InitErrorDetails(type=PydanticCustomError("registry", msg.replace("{", "{{").replace("}", "}}")),
                                     loc=loc, input=value)])


def _describe(obj: Any) -> str:
    """``module m``, ``function m.f``, ``class m.C`` or ``<type> value`` for an error message."""
    if inspect.ismodule(obj):
        return f"module {obj.__name__}"
    kind = "class" if inspect.isclass(obj) else "function" if callable(obj) else type(obj).__name__
    return f"{kind} {_qualname(obj)}"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def _dist(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an installed package"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


# -- ad-hoc plugins -------------------------------------------------------------------------------
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
        raise ConfigError(f"{what}: cannot import: {type(e).__name__}: {_first_line(e)}") from None
    return module


def _import_module(name: str, what: str) -> Any:
    cwd = os.getcwd()
    if cwd not in sys.path:  # as `python -m` does: a module beside the user is importable from every entry point
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    except (Exception, SystemExit) as e:
        raise ConfigError(f"{what}: cannot import module {name!r}: {type(e).__name__}: {_first_line(e)}") from None


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
