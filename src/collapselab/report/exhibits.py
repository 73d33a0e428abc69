"""The report's exhibits: what each arm's family shows of its model (:mod:`collapselab.exhibits`), read back from
seed 0's verified checkpoints and shown by kind, under the names the families give.

- :class:`~collapselab.exhibits.ImageGrid`: one figure per name (``figures/<name>.png``; :func:`image_grid_png`),
  a panel per arm and a row per shown generation.
- :class:`~collapselab.exhibits.Passage`: a section per name, the real passage once and each arm's rewrite of it
  per shown generation (:func:`passages_html`).

A generation's exhibits come from one stream shared by all arms (common random numbers), so differences between
the arms' rows are the models', not the draws'. The generations shown are thinned evenly to the kind's
``max_rows`` (first and last kept).
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from collapselab.exhibits import Exhibit, ImageGrid, Passage
from collapselab.experiments.schema import Experiment

#: name -> arm -> [(generation, exhibit)]
Exhibits = dict[str, dict[str, list[tuple[int, Exhibit]]]]


def declared(exp: Experiment) -> dict[str, type]:
    """Every exhibit the arms' families declare, by name: its kind (the first arm's family that names it decides)."""
    from collapselab.families import FAMILIES

    out: dict[str, type] = {}
    for arm in exp.arms:
        for name, kind in FAMILIES[arm.family.name].exhibits.items():
            out.setdefault(name, kind)
    return out


def figure_names(exp: Experiment) -> list[str]:
    """The figures the exhibits of ``exp`` make (one per image grid)."""
    return [f"{name}.png" for name, kind in declared(exp).items() if kind is ImageGrid]


def thinned(gens: list[int], rows: int) -> list[int]:
    """``gens`` thinned evenly to at most ``rows`` (first and last kept)."""
    if len(gens) > rows:
        gens = [gens[i] for i in np.unique(np.round(np.linspace(0, len(gens) - 1, rows)).astype(int))]
    return gens


def collect_exhibits(exp: Experiment, store: Any) -> Exhibits:
    """Seed 0's exhibits per name, arm and shown generation, read from the verified checkpoints of ``store``."""
    kinds = declared(exp)
    if not kinds:
        return {}
    saved: dict[str, dict[int, dict[str, Exhibit]]] = {}
    for arm in exp.arms:
        chain = store.chain(arm.name, 0)
        by_gen: dict[int, dict[str, Exhibit]] = {}
        for g in chain.record_generations():
            by_gen.update(chain.exhibits(g))
        saved[arm.name] = by_gen
    out: Exhibits = {}
    for name, kind in kinds.items():
        gens = thinned([g for g in range(exp.generations + 1)
                        if any(name in saved[a].get(g, {}) for a in saved)], kind.max_rows)
        arms = {a: [(g, saved[a][g][name]) for g in gens if name in saved[a].get(g, {})] for a in saved}
        out[name] = {a: rows for a, rows in arms.items() if rows}
    return out


def mosaic(rows: list[np.ndarray], gap: int = 1, fill: float = 0.3) -> np.ndarray:
    """Rows of images ``[k, H, W]`` tiled into one array, ``gap`` pixels of value ``fill`` between tiles."""
    k, h, w = rows[0].shape
    out = np.full((len(rows) * (h + gap) - gap, k * (w + gap) - gap), fill, dtype=np.float32)
    for r, images in enumerate(rows):
        for i, img in enumerate(images):
            out[r * (h + gap):r * (h + gap) + h, i * (w + gap):i * (w + gap) + w] = img
    return out


def passages_html(name: str, arms: dict[str, list[tuple[int, Passage]]]) -> str:
    """The section of the passage exhibit ``name``: the real passage and each arm's rewrite per generation."""
    e = html.escape
    rows = sorted({g for entries in arms.values() for g, _ in entries})
    if not rows:
        return ""
    texts = {a: dict(entries) for a, entries in arms.items()}
    real = next(iter(texts.values()))[rows[0]].real
    head = "".join(f"<th>{e(a)}</th>" for a in texts)
    body = "".join(f"<tr><th>{g}</th>" + "".join(f"<td class='text'>{e(t[g].text) if g in t else ''}</td>"
                                                 for t in texts.values()) + "</tr>" for g in rows)
    title = name.replace("_", " ").capitalize()
    return (f"<h2>{e(title)}</h2><p>The same real passage from the held-out data, and each arm's rewrite of it by "
            f"generation (seed 0): each window of the passage regenerated from the real text before it, with the "
            f"arm's decoding.</p><blockquote class='text'>{e(real)}</blockquote>"
            f"<table><tr><th>generation</th>{head}</tr>{body}</table>")


def sections_html(exhibits: Exhibits) -> str:
    """Every text section the exhibits make (the passages), in the order the families declare them."""
    return "".join(passages_html(name, arms) for name, arms in exhibits.items()
                   if arms and isinstance(next(iter(arms.values()))[0][1], Passage))
