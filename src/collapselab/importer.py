"""Importing plugin code: a module (from the working directory too, as ``python -m`` finds it), a ``.py`` file (under
a module name that is the same in every process for the same path, so its objects pickle to worker processes) or
``module:Object``; and the crediting of what an import registers to the plugin being imported. Below the
registry, which resolves ``module:Object`` names with it; :mod:`collapselab.plugins` loads and pins plugins with it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from collapselab.errors import ConfigError, first_line

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
