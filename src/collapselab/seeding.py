"""The run's seed tree: every random draw comes from one ``numpy.random.SeedSequence`` per run.

A stream is addressed by a path of names and integers, e.g. ``("model", 0, 3, "fit")`` for (chain batch 0,
generation 3, purpose ``fit``). The path is hashed into the ``spawn_key`` of a child of the root
``SeedSequence``, so a stream depends only on the root seed and its path: never on the order in which streams
are asked for, on workers or on a resume. Inside a family, draws for different purposes come from named
sub-streams of the stream it was given (:func:`substream`, e.g. ``substream(rng, "chain", c, "masks")``), never
from integers drawn in order: a new draw for one purpose cannot change another's.

Three things are called "seed" in the field's language, and the code keeps them apart: the **root seed** (an
experiment's ``seed``: the root of this tree), the **number of seeds** (``seeds``, ``--seeds``: chains per arm) and
a **seed index** (0 to seeds - 1: one chain of each arm, :meth:`~collapselab.experiments.schema.Experiment.
chain_indices`).

Streams use numpy's ``SFC64`` bit generator: it passes the same statistical test batteries as the
default ``PCG64`` and draws normals faster (the README's benchmark section), which matters because cheap
vectorized chains are bound by random number generation.
"""

from __future__ import annotations

import zlib

import numpy as np


def _key(part: str | int) -> int:
    if isinstance(part, (bool, np.bool_)):
        raise TypeError("seed-tree path parts are str or int")
    if isinstance(part, (int, np.integer)):
        if part < 0:
            raise ValueError("seed-tree path integers must be >= 0")
        return int(part)
    # crc32 is stable across processes and Python versions (unlike hash()); offset keeps names
    # and small integers in distinct ranges.
    return (1 << 32) + zlib.crc32(part.encode("utf-8"))


class SeedTree:
    """Deterministic random streams addressed by path under one root seed."""

    def __init__(self, seed: int) -> None:
        if seed < 0:
            raise ValueError("seed must be >= 0")
        self.seed = int(seed)

    def sequence(self, *path: str | int) -> np.random.SeedSequence:
        """The ``SeedSequence`` at ``path``."""
        return np.random.SeedSequence(self.seed, spawn_key=tuple(_key(p) for p in path))

    def rng(self, *path: str | int) -> np.random.Generator:
        """A fresh ``Generator`` (SFC64) for the stream at ``path``."""
        return np.random.Generator(np.random.SFC64(self.sequence(*path)))

    def lazy_rng(self, *path: str | int) -> LazyGenerator:
        """Like :meth:`rng`, but the generator is only made when first used (streams cost ~15 us each)."""
        return LazyGenerator(self, path)


class LazyGenerator:
    """Stands in for the ``Generator`` at a seed-tree path; creates it on first attribute access."""

    __slots__ = ("_tree", "_path", "_gen")

    def __init__(self, tree: SeedTree, path: tuple) -> None:
        self._tree, self._path, self._gen = tree, path, None

    def __getattr__(self, name: str):
        if self._gen is None:
            self._gen = self._tree.rng(*self._path)
        return getattr(self._gen, name)

    def child(self, *names: str | int) -> LazyGenerator:
        """The sub-stream at this stream's path extended by ``names``."""
        return LazyGenerator(self._tree, (*self._path, *names))


def substream(rng: np.random.Generator | LazyGenerator, *names: str | int) -> np.random.Generator:
    """The named sub-stream ``names`` of ``rng``, whatever has been drawn from ``rng`` already: for a seed-tree
    stream, the stream at its path extended by ``names``; for any other ``Generator`` made from a ``SeedSequence``
    (``np.random.default_rng(0)``, say), the child of that sequence at ``names`` (SFC64, as the tree's)."""
    if isinstance(rng, LazyGenerator):
        return rng.child(*names)  # type: ignore[return-value]
    seq = rng.bit_generator.seed_seq
    if not isinstance(seq, np.random.SeedSequence):
        raise TypeError("substream: the generator must come from a SeedSequence (np.random.default_rng(seed) does)")
    child = np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, *(_key(n) for n in names)))
    return np.random.Generator(np.random.SFC64(child))
