"""The report's rewrites, for families whose samples are text (:meth:`Family.passages`).

Every generation, a text family rewrites the first :data:`~collapselab.families.base.PASSAGE_WINDOWS`
held-out windows (each from the real context before it, the arm's own decoding) and the chain saves the
token ids with its checkpoint. The report shows the same real passage (the windows from ``SHOW_FROM`` on,
which have a full context) beside each arm's rewrite of it, one row per shown generation (at most
``MAX_ROWS``, evenly spaced, first and last included), from seed 0's chain.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.experiments.schema import Experiment
from collapselab.report.gallery import arms_overriding, thinned

MAX_ROWS = 8
SHOW_FROM = 3
Passages = dict[str, Any]  # {"real": str, "rows": [(generation, {arm: str})]}


def has_passages(exp: Experiment) -> bool:
    """Whether the report of ``exp`` shows rewrites of a real passage (some arm's family writes text)."""
    return bool(arms_overriding(exp, "passages"))


def collect_passages(exp: Experiment, store: Any) -> Passages:
    """The real passage and seed 0's rewrites of it per arm and shown generation, read from the verified
    checkpoints of ``store``."""
    from collapselab.families import make_family
    from collapselab.families.base import PASSAGE_WINDOWS
    from collapselab.seeding import SeedTree

    arms = arms_overriding(exp, "passages")
    if not arms:
        return {}
    source = exp.make_source()
    heldout = source.heldout(SeedTree(exp.seed), 0)["x"][0]
    gens = thinned(list(range(exp.generations + 1)), MAX_ROWS)
    chains = len(exp.batch_seeds(0))
    texts: dict[str, dict[int, str]] = {}
    for arm in exp.arms:
        if arm.name not in arms:
            continue
        chain = store.chain(arm.name, 0)
        saved: dict[int, np.ndarray] = {}
        for g in chain.record_generations():
            saved.update(chain.passages(g))
        family = make_family(arm.family, chains, source.spec)
        texts[arm.name] = {g: "".join(family.decode(saved[g][SHOW_FROM:])) for g in gens if g in saved}
    rows = [(g, {a: t[g] for a, t in texts.items() if g in t}) for g in gens]
    rows = [(g, row) for g, row in rows if row]  # runs written before passages were saved have none
    return {"real": "".join(source.decode(heldout[SHOW_FROM:PASSAGE_WINDOWS])), "rows": rows} if rows else {}


def passages_html(passages: Passages) -> str:
    """The rewrites section of the report page (empty without passages)."""
    import html

    if not passages or not passages.get("rows"):
        return ""
    e = html.escape
    arms = list(dict.fromkeys(a for _, row in passages["rows"] for a in row))
    head = "".join(f"<th>{e(a)}</th>" for a in arms)
    body = "".join(f"<tr><th>{g}</th>" + "".join(f"<td class='text'>{e(row.get(a, ''))}</td>" for a in arms)
                   + "</tr>" for g, row in passages["rows"])
    return (f"<h2>Rewrites</h2><p>The same real passage from the held-out test articles, and each arm's rewrite "
            f"of it by generation (seed 0): each window of the passage regenerated from the real text before it, "
            f"with the arm's decoding.</p><blockquote class='text'>{e(passages['real'])}</blockquote>"
            f"<table><tr><th>generation</th>{head}</tr>{body}</table>")
