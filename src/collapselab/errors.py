"""Exceptions with a user-facing meaning; the CLI maps each to one line and an exit code.

| exception | meaning | exit code |
|---|---|---|
| :class:`ConfigError` | bad input: an experiment, an argument, a run directory that cannot be used | 2 |
| :class:`ChainError` | a chain could not go on (a numerical failure in a fit or a metric) | 1 |
| :class:`StoreError` | the run store could not write (no space, I/O error); names the path | 1 |
| :class:`Interrupted` | SIGINT / SIGTERM arrived; finished generations are kept | 130 / 143 |
"""

from __future__ import annotations


def first_line(e: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none (for one-line errors)."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


class ConfigError(ValueError):
    """Bad input: an experiment file, a CLI argument or a run directory that cannot be used.

    The message is one line that names the field and what is allowed; the CLI exits with code 2.
    """


class ChainError(RuntimeError):
    """A chain could not go on (e.g. a non-finite fit); names arm, seed and generation."""

    def __init__(self, arm: str, seed: int | str, generation: int, what: str) -> None:
        self.arm, self.seed, self.generation, self.what = arm, seed, generation, what
        which = f"seeds {seed}" if isinstance(seed, str) and "-" in seed else f"seed {seed}"
        super().__init__(f"arm {arm!r}, {which}, generation {generation}: {what}")

    def __reduce__(self):  # picklable across worker processes
        return ChainError, (self.arm, self.seed, self.generation, self.what)


class StoreError(RuntimeError):
    """A write of the run store failed (ENOSPC, EIO, ...); the message names the path."""


class Interrupted(BaseException):
    """Raised in the main thread by SIGINT / SIGTERM (a ``BaseException``, like ``KeyboardInterrupt``)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class NumericalError(ArithmeticError):
    """A fit or metric that cannot be computed (e.g. a loss that gives every sample weight 0).

    ``chain`` is the index of the offending chain within its batch, when known.
    """

    def __init__(self, message: str, chain: int | None = None) -> None:
        self.chain = chain
        super().__init__(message)

    def __reduce__(self):
        return NumericalError, (str(self), self.chain)
