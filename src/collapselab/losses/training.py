"""The one seam a training loop calls to apply an arm's loss, and the record of what the loss did.

Every family applies its arm's loss through :class:`AppliedLoss` (the causal LM per token, the VAE per pixel or per
image, the closed-form families in their weighted refits), and reads back a :class:`LossRecord` per chain: the
share of the targets the loss kept (the mean of its weight ``w(u)``, a random mask included), the confidence
threshold it used when it has one (TCE's gamma; 1 for cross entropy) and the loss as applied, its settings that
follow the model resolved. No family reads a loss's fields: what a loss is and does it declares itself
(:attr:`~collapselab.losses.ulosses.ULoss.adaptive`, :meth:`~collapselab.losses.ulosses.ULoss.resolved`,
:attr:`~collapselab.losses.ulosses.ULoss.threshold`, :meth:`~collapselab.losses.ulosses.ULoss.keep_mask`).

A loss whose setting follows the model (TCE's ``{quantile: q}`` or ForTIFAI's ``{dynamic: k}``) is resolved at
:meth:`AppliedLoss.start_epoch` from the confidences of a fixed clip set under the current model (ForTIFAI's
schedule: once per epoch); the family says how to score its clip set, the seam resolves. A loss that drops
targets at random (``random_drop``) draws its masks from the generator it is given (the run's seed tree): a fresh
mask per use, or, for the closed-form refits, one mask for the whole fit (``fixed_mask``).

Typical use in a gradient training loop (one chain)::

    applied = AppliedLoss(loss, generator=torch_generator(rng.child("masks")))
    for epoch in range(epochs):
        applied.start_epoch(lambda: clip_confidences(model))   # scored only when the loss needs it
        for batch in batches:
            per_target = applied.targets(logits, labels, class_dim=-1)   # or applied.pixels(logits, x)
            ...
    record = applied.record()
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from collapselab.losses.ulosses import CE, ULoss


@dataclass(frozen=True)
class LossRecord:
    """What a loss did in a fit's last epoch (one chain)."""

    #: the loss as applied (a setting that follows the model fixed at the value it took)
    loss: ULoss
    #: share of the training targets kept: the mean of ``w(u)`` (times a random mask) over them
    kept: float
    #: the confidence threshold used (TCE's gamma, 1 for cross entropy); ``None`` for a loss without one
    gamma: float | None

    @classmethod
    def unweighted(cls, loss: ULoss | None = None) -> LossRecord:
        """The record of a fit that kept every target (cross entropy)."""
        loss = loss or CE()
        return cls(loss, 1.0, loss.threshold)


class _Tally:
    """Sums of ``w(u)`` and target counts, kept as they come (torch tensors stay on their device: no sync per
    step) and read once."""

    def __init__(self) -> None:
        self.weight: Any = 0.0
        self.count: Any = 0

    def add(self, w: Any, count: Any) -> None:
        self.weight = self.weight + w
        self.count = self.count + count

    def share(self) -> float:
        count = float(self.count)
        return float(self.weight) / count if count else 1.0


class AppliedLoss:
    """An arm's loss applied in one fit (see the module docstring).

    ``loss``: the arm's loss; ``generator``: where a random mask comes from (a ``torch.Generator`` for torch
    inputs, a numpy ``Generator`` for numpy ones; ``None``: torch's global generator); ``chains``: how many chains
    :meth:`chain_weights` weighs at once; ``fixed_mask``: draw a random mask once and reuse it (closed-form
    refits) instead of a fresh one per use.
    """

    def __init__(self, loss: ULoss | None, generator: Any = None, chains: int = 1, fixed_mask: bool = False) -> None:
        self.loss = loss if loss is not None else CE()
        self.generator = generator
        self.chains = int(chains)
        self.fixed_mask = fixed_mask
        self._mask: Any = None
        self._current: list[ULoss] = [self.loss] * self.chains
        self._tallies = [_Tally() for _ in range(self.chains)]

    # -- what the loss is -------------------------------------------------------------------------------------
    @property
    def is_ce(self) -> bool:
        """Whether the loss is plain cross entropy (a training loop may take its own unweighted path)."""
        return self.loss.is_ce

    @property
    def adaptive(self) -> bool:
        """Whether a setting follows the model: :meth:`start_epoch` then needs the clip set's confidences."""
        return self.loss.adaptive

    @property
    def current(self) -> ULoss:
        """The loss of this epoch (chain 0), its settings that follow the model resolved."""
        return self._current[0]

    # -- epochs ------------------------------------------------------------------------------------------------
    def start_epoch(self, confidences: Callable[[], Any] | Any = None, groups: int | None = None) -> ULoss:
        """Start an epoch: an adaptive loss resolved from the clip set's confidences (an array, ``[groups, m]`` or
        flat, or a callable giving ``(u, groups)`` or ``u``, called only when the loss needs it); the tally of kept
        targets restarts. Returns the epoch's loss."""
        self._tallies = [_Tally() for _ in range(self.chains)]
        if not self.loss.adaptive:
            return self.current
        if confidences is None:
            raise ValueError(f"loss {self.loss.label()}: follows the model, so each epoch needs the clip set's "
                             f"confidences")
        u = confidences() if callable(confidences) else confidences
        if isinstance(u, tuple):
            u, groups = u
        self._current = [self.loss.resolved(np.asarray(u, dtype=np.float64), groups)] * self.chains
        return self.current

    # -- applying it -----------------------------------------------------------------------------------------------
    def _random_mask(self, like: Any) -> Any:
        if self.fixed_mask and self._mask is not None:
            return self._mask
        mask = self.current.keep_mask(like, self.generator)
        if self.fixed_mask:
            self._mask = mask
        return mask

    def weigh(self, log_u: Any, valid: Any) -> tuple[Any, Any, Any]:
        """Per target (torch): ``(l(u), w(u), None)`` of this epoch's loss, a random mask applied, the kept share
        tallied over the ``valid`` targets; the ``weigh`` argument of :func:`collapselab.losses.functional.uloss`."""
        loss = self.current
        value, w = loss.value_and_weight(log_u)
        mask = self._random_mask(log_u)
        if mask is not None:
            value, w = value * mask, w * mask
        self._tallies[0].add((w * valid).sum().detach(), valid.sum())
        return value, w, None

    def targets(self, logits: Any, target: Any, class_dim: int = 1, ignore_index: int = -100) -> Any:
        """The loss of every target of categorical ``logits`` (``F.cross_entropy`` layout, ``class_dim``), no
        reduction; ignored targets give 0."""
        from collapselab.losses.functional import uloss

        return uloss(logits, target, self.weigh, ignore_index=ignore_index, reduction="none", class_dim=class_dim)

    def pixels(self, logits: Any, target: Any, sample_weight: Any = None) -> Any:
        """The loss of every element of Bernoulli ``logits`` for ``target`` in [0, 1], no reduction
        (:func:`collapselab.losses.binary.binary_uloss`)."""
        from collapselab.losses.binary import binary_uloss

        tally = self._tallies[0]
        return binary_uloss(logits, target, self.current, reduction="none", sample_weight=sample_weight,
                            generator=self.generator, tally=lambda w: tally.add(w.sum(), w.numel()))

    def weights(self, u: Any) -> Any:
        """``w(u)`` of this epoch's loss for confidences ``u`` (numpy or torch, any shape), a random mask applied,
        tallied: per-sample weights for a loop that weighs whole samples (e.g. a VAE per image)."""
        w = self.current.weight_u(u)
        mask = self._random_mask(w)
        w = w if mask is None else w * mask
        self._tallies[0].add(w.sum(), int(np.prod(w.shape)))
        return w

    def chain_weights(self, u: np.ndarray) -> np.ndarray:
        """``w(u)`` for the confidences ``[C, n, ...]`` of ``chains`` chains at once (closed-form refits): an
        adaptive loss resolved per chain from its own ``u`` (each sample a group), a random mask applied, the
        tallies restarted (one refit is one epoch)."""
        u = np.asarray(u, dtype=np.float64)
        if self.loss.adaptive:
            self._current = [self.loss.resolved(uc.reshape(len(uc), -1), len(uc)) for uc in u]
            w = np.stack([loss.weight_u(uc) for loss, uc in zip(self._current, u, strict=True)])
        else:
            w = self.loss.weight_u(u)
        mask = self._random_mask(w)
        w = w if mask is None else w * mask
        per = w.reshape(len(w), -1)
        self._tallies = [_Tally() for _ in range(self.chains)]
        for t, row in zip(self._tallies, per, strict=True):
            t.add(float(row.sum()), row.size)
        return w

    # -- what it did -----------------------------------------------------------------------------------------------
    def record(self, chain: int = 0) -> LossRecord:
        """What the loss did in the last epoch on ``chain``."""
        loss = self._current[chain]
        return LossRecord(loss, self._tallies[chain].share(), loss.threshold)

    def records(self) -> list[LossRecord]:
        """:meth:`record` of every chain."""
        return [self.record(c) for c in range(self.chains)]
