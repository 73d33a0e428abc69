"""Registries: one per kind of extension, three ways in.

Kinds: ``loss``, ``curator``, ``regime``, ``family``, ``source``, ``metric``. Each :class:`Registry` maps a
name to a class (a metric: a :class:`~collapselab.metrics.base.Metric`) and is filled

- by the built-ins, with the kind's decorator (``@LOSSES.register``...);
- by installed packages, through the entry-point group ``collapselab.<kind>s`` (``name = module:Object``),
  loaded lazily: a broken plugin breaks only the runs that name it;
- by ad-hoc code: an experiment's ``plugins: [module, ./file.py, module:Object]``, ``collapselab run --plugin``,
  or ``name: "module:Object"`` anywhere a name is written (:mod:`collapselab.plugins`).

This module knows no kind: each kind's module creates its registry here, and :mod:`collapselab.plugins` (above
them all) loads plugins into them and pins what a run used. Importing a reference or an entry point's code, and
crediting what it registers, is :mod:`collapselab.importer` (below this module).

Three typed registries say what an object of a kind is, so no kind restates it: :class:`SettingRegistry` (a
pydantic settings class whose ``name`` field is a Literal: losses, curators, regimes), :class:`ClassRegistry` (a
class with a ``name`` and its settings model ``config_class``: families, data sources) and
:class:`ObjectRegistry` (instances with a ``name``: metrics).

Built-in names win; a plugin registering one of them is a one-line :class:`ConfigError`. A setting field of an
experiment is ``REGISTRY.field()``: validation asks the registry for the class of the name and lets that
class's own pydantic model validate the rest (errors keep their dotted paths).
"""

from __future__ import annotations

import importlib.metadata as md
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, SerializeAsAny, ValidationError, WrapValidator
from pydantic_core import InitErrorDetails, PydanticCustomError

from collapselab.errors import ConfigError, first_line
from collapselab.importer import crediting, current_origin, import_object

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


class Registry:
    """Names of one kind of extension -> their objects (see the module docstring); a subclass says what an object
    of the kind is (:meth:`name_of`, :meth:`accepts`, :meth:`config_class`).

    ``key`` is the field that names the choice in a setting (``name``, or ``source`` for data); ``want`` how an
    error describes an object of the kind.
    """

    def __init__(self, kind: str, base: type, key: str = "name", want: str = "") -> None:
        self.kind, self.base, self.key = kind, base, key
        self.group = f"collapselab.{PLURALS.get(kind, kind + 's')}"
        self._want_text = want
        self._builtin: dict[str, Entry] = {}
        self._plugins: dict[str, Entry] = {}
        self._eps: dict[str, md.EntryPoint] | None = None

    # -- what an object of the kind is (the typed registries below) -------------------------------
    def name_of(self, obj: Any) -> str:
        """The name ``obj`` declares."""
        raise NotImplementedError

    def accepts(self, obj: Any) -> bool:
        """Whether ``obj`` is of this registry's kind."""
        raise NotImplementedError

    def config_class(self, obj: Any) -> type[BaseModel]:
        """The pydantic model validating a setting of ``obj``."""
        raise NotImplementedError(f"{self.kind} has no settings")

    def unwrap(self, obj: Any) -> Any:
        """What ``module:Object`` names, as this registry holds it (a metric's function: its metric)."""
        return obj

    @property
    def has_settings(self) -> bool:
        return True

    # -- filling --------------------------------------------------------------------------------
    def register(self, obj: Any) -> Any:
        """Decorator: register ``obj`` under its declared name (built-in when it lives in collapselab)."""
        self.add(obj)
        return obj

    def add(self, obj: Any, name: str | None = None, origin: str | None = None, module: str | None = None) -> Entry:
        """Register ``obj`` (under ``name`` or its declared name; ``module``: where it is defined, if not its
        ``__module__``); a clash with another object is a ConfigError."""
        name = name or self.name_of(obj)
        module = module or getattr(obj, "__module__", "") or ""
        if origin is None and (module == "collapselab" or module.startswith("collapselab.")):
            self._builtin[name] = Entry(name, obj, BUILTIN)
            return self._builtin[name]
        origin = origin or current_origin() or f"module {module}"
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

    def _by_reference(self, ref: str) -> Entry:
        obj = self.unwrap(import_object(ref, f"{self.kind} {ref!r}"))
        if not self.accepts(obj):
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
            raise ConfigError(f"{where}: cannot import: {type(e).__name__}: {first_line(e)}") from None
        if ep.name in self._plugins:  # the module registered it with the decorator
            return self._plugins[ep.name]
        obj = self.unwrap(obj)
        if not self.accepts(obj):
            raise ConfigError(f"{where}: {_describe(obj)} is not a {self.kind} ({self._want()})")
        declared = self.name_of(obj)
        if declared != ep.name:
            raise ConfigError(f"{where}: the object is named {declared!r}; the entry point must use that name")
        return self.add(obj, origin=f"entry point {ep.value} ({_dist(ep)})")

    def _want(self) -> str:
        if self._want_text:
            return self._want_text
        return f"a subclass of {self.base.__module__}.{self.base.__qualname__}" if inspect.isclass(self.base) \
            else str(self.base)

    # -- settings -------------------------------------------------------------------------------
    def registered(self) -> list[Entry]:
        """The entries registered so far: built-ins, then plugins (entry points not yet loaded are not among them)."""
        return [*self._builtin.values(), *self._plugins.values()]

    def holds(self, obj: Any) -> bool:
        """Whether ``obj`` is registered (built-in or plugin)."""
        return any(e.obj is obj for e in self.registered())

    def forget_plugins(self) -> None:
        """Drop the plugins registered in this process (built-ins stay; entry points are looked up again)."""
        self._plugins.clear()
        self._eps = None

    def field(self) -> Any:
        """The annotation of an experiment field holding one setting of this kind: ``{key: NAME, ...}`` validated
        by NAME's own model, serialised with all of its fields."""
        base = self.config_class(self.base) if self.has_settings else self.base
        return Annotated[SerializeAsAny[base], WrapValidator(self._validate), self]

    def _validate(self, value: Any, handler: Any) -> Any:
        base = self.config_class(self.base) if self.has_settings else self.base
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
        return self.config_class(obj).model_validate({**value, self.key: self.name_of(obj)})

    def model_for(self, node: Any) -> type[BaseModel] | None:
        """The settings model a raw mapping selects (for error messages), ``None`` if none."""
        if not isinstance(node, dict) or not isinstance(node.get(self.key), str):
            return None
        obj = self.get(node[self.key])
        return None if obj is None else self.config_class(obj)


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




class SettingRegistry(Registry):
    """A kind whose objects are pydantic settings classes (a subclass of ``base`` with a ``name`` field whose default,
    a Literal, is the name): the class validates its own setting (losses, curators, regimes)."""

    def name_of(self, obj: Any) -> str:
        field = getattr(obj, "model_fields", {}).get("name")
        if field is None or not isinstance(field.default, str):
            raise TypeError(f"{getattr(obj, '__qualname__', obj)}: a plugin class needs a `name` field with a "
                            f"default (a Literal)")
        return field.default

    def accepts(self, obj: Any) -> bool:
        return isinstance(obj, type) and issubclass(obj, self.base) and obj is not self.base

    def config_class(self, obj: Any) -> type[BaseModel]:
        return obj


class ClassRegistry(Registry):
    """A kind whose objects are (non-abstract) classes of ``base`` declaring a ``name`` and the settings model
    ``config_class`` that validates a setting of them (families, data sources)."""

    def name_of(self, obj: Any) -> str:
        return obj.name

    def accepts(self, obj: Any) -> bool:
        return (isinstance(obj, type) and issubclass(obj, self.base) and not inspect.isabstract(obj)
                and isinstance(getattr(obj, "name", None), str))

    def config_class(self, obj: Any) -> type[BaseModel]:
        return obj.config_class


class ObjectRegistry(Registry):
    """A kind whose objects are instances of ``base`` with a ``name`` and no settings (metrics); ``unwrap`` maps what a
    ``module:Object`` reference names (e.g. a decorated function) to the registered instance."""

    def __init__(self, kind: str, base: type, unwrap: Callable[[Any], Any] | None = None, want: str = "") -> None:
        super().__init__(kind, base, want=want)
        self._unwrap = unwrap or (lambda o: o)

    def name_of(self, obj: Any) -> str:
        return obj.name

    def accepts(self, obj: Any) -> bool:
        return isinstance(obj, self.base)

    def unwrap(self, obj: Any) -> Any:
        return self._unwrap(obj)

    @property
    def has_settings(self) -> bool:
        return False
