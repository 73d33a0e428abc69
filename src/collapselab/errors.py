"""Exceptions with a user-facing meaning (the CLI maps them to exit codes)."""

from __future__ import annotations


class ConfigError(ValueError):
    """Bad input: an experiment file, a CLI argument or a run directory that cannot be used.

    The message is one line that names the field and what is allowed; the CLI exits with code 2.
    """


class ChainError(RuntimeError):
    """A chain could not go on (e.g. a non-finite fit); names arm, seed and generation."""

    def __init__(self, arm: str, seed: int | str, generation: int, what: str) -> None:
        self.arm, self.seed, self.generation = arm, seed, generation
        super().__init__(f"arm {arm!r}, seed {seed}, generation {generation}: {what}")
