"""The context of a setting's cross-field check: what ``check(ctx) -> str | None`` of a loss, curator, regime,
family, data source or metric may look at."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


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
