"""The report's sample grid, for families whose samples are images (:meth:`Family.gallery`).

For each arm: a row of samples per checkpointed generation (at most ``MAX_ROWS``, evenly spaced, first and
last included), drawn from seed 0's checkpointed model. A generation's samples come from one stream shared
by all arms (common random numbers), so differences between the arms' rows are the models', not the draws'.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.experiments.schema import Experiment

MAX_ROWS = 6
PER_ROW = 10
#: arm -> [(generation, {"draws": [PER_ROW, H, W], "means": ..., "labels": [PER_ROW]})]
Gallery = dict[str, list[tuple[int, dict[str, np.ndarray]]]]


def arms_overriding(exp: Experiment, method: str) -> list[str]:
    """The arms whose family overrides :class:`Family` ``method`` (e.g. ``gallery``: it draws images)."""
    from collapselab.families import FAMILIES, Family

    return [arm.name for arm in exp.arms if getattr(FAMILIES[arm.family.name], method) is not getattr(Family, method)]


def has_gallery(exp: Experiment) -> bool:
    """Whether the report of ``exp`` holds a sample grid (some arm's family draws images)."""
    return bool(arms_overriding(exp, "gallery"))


def thinned(gens: list[int], rows: int) -> list[int]:
    """``gens`` thinned evenly to at most ``rows`` (first and last kept)."""
    if len(gens) > rows:
        gens = [gens[i] for i in np.unique(np.round(np.linspace(0, len(gens) - 1, rows)).astype(int))]
    return gens


def gallery_generations(exp: Experiment) -> list[int]:
    """The generations shown: checkpointed ones, thinned evenly to at most ``MAX_ROWS``."""
    return thinned([g for g in range(exp.generations + 1) if g % exp.checkpoint_every == 0 or g == exp.generations],
                   MAX_ROWS)


def collect_gallery(exp: Experiment, store: Any) -> Gallery:
    """Samples of seed 0 per arm and shown generation, from the verified checkpoints of ``store``."""
    from collapselab.families import make_family
    from collapselab.seeding import SeedTree

    arms = arms_overriding(exp, "gallery")
    if not arms:
        return {}
    spec = exp.make_source().spec
    tree = SeedTree(exp.seed)
    chains = len(exp.batch_seeds(0))
    out: Gallery = {}
    for arm in exp.arms:
        if arm.name not in arms:
            continue
        rows = []
        for g in gallery_generations(exp):
            state, _ = store.chain(arm.name, 0).load(g, regime=False)
            model = make_family(arm.family, chains, spec).load_state_dict(state)
            rows.append((g, model.gallery(PER_ROW, tree.rng("gallery", g))))
        out[arm.name] = rows
    return out


def mosaic(rows: list[np.ndarray], gap: int = 1, fill: float = 0.3) -> np.ndarray:
    """Rows of images ``[k, H, W]`` tiled into one array, ``gap`` pixels of value ``fill`` between tiles."""
    k, h, w = rows[0].shape
    out = np.full((len(rows) * (h + gap) - gap, k * (w + gap) - gap), fill, dtype=np.float32)
    for r, images in enumerate(rows):
        for i, img in enumerate(images):
            out[r * (h + gap):r * (h + gap) + h, i * (w + gap):i * (w + gap) + w] = img
    return out
