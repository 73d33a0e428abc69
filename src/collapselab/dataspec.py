"""DataSpec: what a family knows of its data (below the data sources and the families, which both use it)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any


class DataSpec(Mapping[str, Any]):
    """What a family knows of its data: plain values by name (``dim``, ``shape``, ``classes``, ``window``,
    ``tokenizer``...), and ``source``, the real-data source itself, for the families that pretrain or calibrate on
    it: a :class:`collapselab.data.base.Source` (an attribute, not one of the values; annotated ``Any`` because
    the data sources live above this module)."""

    def __init__(self, values: Mapping[str, Any], source: Any = None) -> None:
        self._values = dict(values)
        self.source = source

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def with_values(self, **values: Any) -> DataSpec:
        """The same spec with ``values`` added or replaced."""
        return DataSpec({**self._values, **values}, self.source)

    def __repr__(self) -> str:
        return f"DataSpec({self._values!r}, source={type(self.source).__name__ if self.source else None})"
