"""The run's seed tree: every random draw comes from one ``numpy.random.SeedSequence`` per run.

A stream is addressed by a path of names and integers, e.g. ``("model", "ce", 0, 3, "sample")`` for
(arm ``ce``, chain batch 0, generation 3, purpose ``sample``). The path is hashed into the
``spawn_key`` of a child of the root ``SeedSequence``, so a stream depends only on the root seed and
its path: never on the order in which streams are asked for, on workers or on a resume.
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
        """A fresh ``Generator`` (PCG64) for the stream at ``path``."""
        return np.random.Generator(np.random.PCG64(self.sequence(*path)))
