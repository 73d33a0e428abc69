"""Capacity checks: whether the data can serve a run, before anything is written (the first step that reads
data)."""

from __future__ import annotations

from collapselab.errors import ConfigError
from collapselab.experiments.schema import Experiment


def check_data(exp: Experiment) -> None:
    """Raise :class:`ConfigError` (one line naming the field) when the data cannot serve the run: a finite real
    data set too small for the held-out set or for what an arm's regime consumes over all generations, or some
    seed's real pool too small (sources whose pool depends on the seed, e.g. whole-article text chunks). The
    first step that reads data; run before anything is written."""
    try:
        _check_data(exp)
    except ConfigError:
        raise
    except (OSError, ValueError) as e:  # a source that cannot read its data: one line naming the field
        msg = " ".join(str(e).split())
        raise ConfigError(msg if msg.startswith(("data", "heldout", "n:")) else f"data: {msg}") from None


def _check_data(exp: Experiment) -> None:
    from collapselab.data import FiniteSource
    from collapselab.seeding import SeedTree

    source = exp.make_source()
    if isinstance(source, FiniteSource):
        available = source.pool_size
        why = source.check_heldout()
        if why:
            raise ConfigError(why)
        if available < 1:
            total = available + exp.heldout
            raise ConfigError(f"heldout: {exp.heldout} held-out samples leave none of the {total} samples of "
                              f"{exp.data.source!r} to train on; allowed: 1 to {total - 1}")
        for arm in exp.arms:
            need = arm.regime.real_needed(exp.n, exp.generations)
            if need > available:
                raise ConfigError(f"n: the real pool of {exp.data.source!r} holds {available} training samples "
                                  f"(after {exp.heldout} held out) but arm {arm.name!r} ({arm.regime.name}) needs "
                                  f"{need}")
    need = max(arm.regime.real_needed(exp.n, exp.generations) for arm in exp.arms)
    why = source.check_capacity(SeedTree(exp.seed), exp.n_batches, need)
    if why:
        raise ConfigError(why)
