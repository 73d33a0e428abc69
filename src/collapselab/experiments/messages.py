"""One-line messages for a pydantic ``ValidationError`` of an experiment: ``<dotted.field>: <what is wrong /
allowed>``, tagged-union tags left out of the path, unknown keys listed with the allowed ones."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from collapselab.experiments.schema import Experiment
from collapselab.registry import Registry


def _clean(loc: tuple) -> tuple:
    return tuple(x for x in loc if not (isinstance(x, str) and x in _UNION_TAGS))


def _same_problem(a: dict, b: dict) -> bool:
    """Whether two errors are one problem met in several arms (the same field and message, arms aside): an
    override of the base setting is validated in every arm."""
    def tail(e: dict) -> tuple:
        loc = _clean(e["loc"])
        return loc[2:] if len(loc) >= 2 and loc[0] == "arms" and isinstance(loc[1], int) else loc

    return a["type"] == b["type"] and a["msg"] == b["msg"] and tail(a) == tail(b)


def format_error(err: ValidationError, prefix: tuple = (), raw: Any = None) -> str:
    """One line: ``<dotted.field>: <what is wrong / allowed>`` (+ how many more problems; the same problem in
    several arms counts once)."""
    errors = err.errors()
    first = errors[0]
    distinct: list[dict] = []
    for e in errors:
        if not any(_same_problem(e, d) for d in distinct):
            distinct.append(e)
    more = len(distinct) - 1
    loc = tuple(prefix) + _clean(first["loc"])
    path = ".".join(str(x) for x in loc) or "experiment"
    if not loc and first["type"] == "value_error":  # cross-field checks name their field themselves
        return first["msg"].replace("Value error, ", "") + (f" (and {more} more)" if more else "")
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1], raw)
        msg = f"unknown key {loc[-1]!r}" + (f"; allowed: {', '.join(allowed)}" if allowed else "")
        path = ".".join(str(x) for x in loc[:-1]) or "experiment"
    elif first["type"] == "missing":
        msg = "is required"
    elif first["type"] in ("literal_error", "enum") and "expected" in first.get("ctx", {}):
        expected = first["ctx"]["expected"].replace("'", "").replace(" or ", ", ")
        msg = f"{first.get('input')!r} is not allowed; allowed: {expected}"
    elif first["type"] in ("model_type", "model_attributes_type", "dict_type"):
        allowed = _allowed_keys(loc, raw)
        what = f"a mapping of {', '.join(allowed)}" if allowed else "a mapping"
        msg = f"must be {what}; got {first.get('input')!r}"
    else:
        msg = first["msg"]
        if first["type"].startswith(("greater", "less")) and "input" in first:
            msg += f" (got {first['input']!r})"
        msg = msg.replace("Value error, ", "")
    return f"{path}: {msg}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def _union_tags() -> set[str]:
    """Tag values of the tagged unions (rewards, failure rules, sizes, gamma): pydantic puts them in error
    locations, users never write them. Registry settings are not unions and add none."""
    from collapselab.curators.rewards import Coordinate, Distance, SymbolValues
    from collapselab.losses.ulosses import GAMMA_TAGS

    return ({c.model_fields["name"].default for c in (Coordinate, Distance, SymbolValues)}
            | {"failure-rule", "failure-rules", "size-number", "size-schedule", "size-list", *GAMMA_TAGS})


_UNION_TAGS = _union_tags()


def _allowed_keys(loc: tuple, raw: Any) -> list[str]:
    """Field names of the model at ``loc`` in the experiment (resolving tagged unions from ``raw``)."""
    model: Any = Experiment
    node = raw
    for part in loc:
        if isinstance(part, int):
            model = _list_item(model)
            node = node[part] if isinstance(node, list) and part < len(node) else None
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)) or part not in model.model_fields:
            return []
        field = model.model_fields[part]
        node = node.get(part) if isinstance(node, dict) else None
        reg = next((m for m in field.metadata if isinstance(m, Registry)), None)
        model = (reg.model_for(node) or reg.base) if reg is not None else _pick(field.annotation, node)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _list_item(tp: Any) -> Any:
    args = getattr(tp, "__args__", ())
    return args[0] if args else tp


def _pick(tp: Any, node: Any) -> Any:
    """The member of a (possibly Annotated / Optional) union matching ``node``'s tag; for a registry setting, the
    model of the class ``node`` names."""
    for meta in getattr(tp, "__metadata__", ()):
        if isinstance(meta, Registry):
            return meta.model_for(node) or tp
    origin_args = getattr(tp, "__args__", None)
    if hasattr(tp, "__metadata__"):  # Annotated[Union[...], Field(discriminator=...)]
        tp = tp.__origin__
        origin_args = getattr(tp, "__args__", None)
    if not origin_args:
        return tp
    members = [a for a in origin_args if isinstance(a, type) and issubclass(a, BaseModel)]
    if len(members) == 1:
        return members[0]
    if isinstance(node, dict):
        for m in members:
            for tag in ("name", "source"):
                f = m.model_fields.get(tag)
                if f is not None and node.get(tag) == f.default:
                    return m
    return tp


