"""Exhibits: what a family shows of its model in the report, beside the metrics.

A family declares the exhibits it provides by name and kind (:attr:`collapselab.families.base.Family.exhibits`)
and makes them every generation from chain 0's model (:meth:`~collapselab.families.base.Family.exhibit`); the
chain saves them with its checkpoints and the report shows each under the family's name, by its kind. The engine
and the report's generic code never know what a sample is: only the kinds below say how an exhibit is drawn.

- :class:`ImageGrid`: a row of sample images (and, optionally, the expected images of the same draws and their
  class labels); the report draws one figure per name (``figures/<name>.png``), a row per shown generation.
- :class:`Passage`: a rewrite of a real passage; the report shows the real text once and each arm's rewrite of it
  per shown generation, in a section titled by the name.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np


@dataclass(frozen=True)
class ImageGrid:
    """A row of greyscale samples ``draws [k, H, W]`` in [0, 1]; ``means``: the expected images of the same draws;
    ``labels [k]``: the classes a conditional model was asked for."""

    draws: np.ndarray
    means: np.ndarray | None = None
    labels: np.ndarray | None = None
    #: the most generations the report shows (evenly thinned, first and last kept)
    max_rows: ClassVar[int] = 6


@dataclass(frozen=True)
class Passage:
    """A real passage (``real``) and the model's rewrite of it (``text``)."""

    real: str
    text: str
    max_rows: ClassVar[int] = 8


Exhibit = ImageGrid | Passage
#: every kind of exhibit by name, as saved
KINDS: dict[str, type] = {"image_grid": ImageGrid, "passage": Passage}
_KIND_OF = {v: k for k, v in KINDS.items()}


def _text(s: str) -> np.ndarray:
    return np.frombuffer(s.encode("utf-8"), dtype=np.uint8).copy()


def to_arrays(exhibit: Exhibit) -> dict[str, np.ndarray]:
    """The arrays an exhibit is saved as (text as UTF-8 bytes), its kind included."""
    out = {"kind": _text(_KIND_OF[type(exhibit)])}
    for f in fields(exhibit):
        v = getattr(exhibit, f.name)
        if v is not None:
            out[f.name] = _text(v) if isinstance(v, str) else np.ascontiguousarray(v)
    return out


def from_arrays(arrays: dict[str, np.ndarray]) -> Exhibit:
    """The exhibit :func:`to_arrays` saved."""
    cls = KINDS[bytes(arrays["kind"]).decode("utf-8")]
    values = {}
    for f in fields(cls):
        if f.name in arrays:
            a = arrays[f.name]
            values[f.name] = bytes(a).decode("utf-8") if f.type in ("str", str) else a
    return cls(**values)
