"""``categorical``: a distribution over V symbols, or an n-gram of order k over token sequences.

Samples are token sequences ``x [C, n, L]`` (``L = 1`` for a plain categorical). The model is
``p(x_t | x_{t-k+1..t-1})`` with the context padded by a start symbol; it is fitted by weighted counts
(per-sample or per-token weights) with optional additive ``smoothing``. A context never seen in training
backs off to the model's own unigram distribution. Sampling keeps the vocabulary fixed, so a symbol whose
probability reached 0 is never drawn again ("lost symbols stay lost").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, Self

import numpy as np
from pydantic import Field

from collapselab.families.base import FAMILIES, Family, FamilyConfig, check_keys, combine_weights
from collapselab.families.closed_form import ClosedFormFamily
from collapselab.samples import SampleSet


class CategoricalConfig(FamilyConfig):
    """Settings of the ``categorical`` family (``order`` 1 = unigram)."""

    name: Literal["categorical"] = "categorical"
    order: int = Field(1, ge=1, le=4)
    smoothing: float = Field(0.0, ge=0)


def draw_categorical(cum: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse-CDF draws: row ``rows[i]`` of the normalised cumulative table ``cum [R, V]`` at ``u[i]``.

    Rows are offset by their index so one ``np.searchsorted`` serves all of them; equal cumulative
    values (zero-probability symbols) can never be selected.
    """
    v = cum.shape[1]
    flat = (cum + np.arange(cum.shape[0])[:, None]).ravel()
    idx = np.searchsorted(flat, u + rows, side="right") - rows * v
    return np.minimum(idx, v - 1)


@FAMILIES.register
class Categorical(ClosedFormFamily):
    """Per-chain conditional tables ``[C, contexts, V]`` plus the unigram ``[C, V]``."""
    config_class = CategoricalConfig

    name = "categorical"
    sample_keys = ("x",)
    kind = "tokens"
    config: CategoricalConfig

    def __init__(self, config: CategoricalConfig, n_chains: int, spec: Mapping[str, Any]) -> None:
        super().__init__(config, n_chains, spec)
        self.vocab = int(spec["vocab"])
        self.seq_len = int(spec.get("seq_len", 1))
        self.probs: np.ndarray | None = None  # [C, n_ctx, V]
        self.unigram: np.ndarray | None = None  # [C, V]

    @classmethod
    def from_probs(cls, probs: np.ndarray, seq_len: int = 1) -> Categorical:
        """A fitted unigram model from explicit probabilities ``[C, V]``."""
        probs = np.atleast_2d(np.asarray(probs, dtype=np.float64))
        probs = probs / probs.sum(axis=1, keepdims=True)
        model = cls(CategoricalConfig(), probs.shape[0], {"vocab": probs.shape[1], "seq_len": seq_len})
        return model.load_state_dict({"probs": probs[:, None, :], "unigram": probs})

    @property
    def n_contexts(self) -> int:
        return (self.vocab + 1) ** (self.config.order - 1)

    def contexts(self, x: np.ndarray) -> np.ndarray:
        """Context index of every position of ``x [C, n, L]`` (start-padded), same shape."""
        k, base = self.config.order, self.vocab + 1
        ctx = np.zeros(x.shape, dtype=np.int64)
        for i in range(1, k):  # the token i steps back, or the start symbol (index V)
            prev = np.full(x.shape, self.vocab, dtype=np.int64)
            prev[..., i:] = x[..., :-i]
            ctx = ctx * base + prev
        return ctx

    # -- fitting -----------------------------------------------------------------------------
    def fit(self, data: SampleSet, weights: np.ndarray | None = None, init: Family | None = None,
            rng: np.random.Generator | None = None) -> Self:
        check_keys(self, data)
        x = np.asarray(data["x"], dtype=np.int64)
        c = x.shape[0]
        w = combine_weights(data, weights)
        w = np.broadcast_to(w.reshape(w.shape + (1,) * (x.ndim - w.ndim)), x.shape)
        nc, v = self.n_contexts, self.vocab
        flat = (np.arange(c)[:, None, None] * nc + self.contexts(x)) * v + x
        counts = np.bincount(flat.ravel(), weights=w.ravel(), minlength=c * nc * v).reshape(c, nc, v)
        alpha = self.config.smoothing
        uni = counts.sum(axis=1) + alpha
        with np.errstate(invalid="ignore", divide="ignore"):
            unigram = uni / uni.sum(axis=1, keepdims=True)
            row = counts.sum(axis=2, keepdims=True)
            probs = np.where(row > 0, (counts + alpha) / (row + alpha * v), unigram[:, None, :])
        self.probs, self.unigram = probs, unigram
        return self

    # -- sampling and scoring ------------------------------------------------------------------
    def sample(self, n: int, rng: np.random.Generator) -> SampleSet:
        c, nc, v = self.probs.shape
        cum = np.cumsum(self.probs, axis=2).reshape(c * nc, v)
        cum /= cum[:, -1:]
        x = np.zeros((c, n, self.seq_len), dtype=np.int64)
        chain_rows = np.arange(c)[:, None] * nc
        u = rng.random((c, n, self.seq_len))
        for t in range(self.seq_len):
            ctx = self.contexts(x[..., : t + 1])[..., t] if self.config.order > 1 else 0
            rows = np.broadcast_to(chain_rows + ctx, (c, n)).ravel()
            x[..., t] = draw_categorical(cum, rows, u[..., t].ravel()).reshape(c, n)
        return SampleSet({"x": x})

    def log_prob(self, data: SampleSet) -> np.ndarray:
        """Per-token ``log p(x_t | context)``, ``[C, n, L]``."""
        x = np.asarray(data["x"], dtype=np.int64)
        ctx = self.contexts(x)
        rows = np.arange(self.probs.shape[0]).reshape((-1,) + (1,) * (x.ndim - 1))
        with np.errstate(divide="ignore"):
            return np.log(self.probs[rows, ctx, x])

    def confidence(self, data: SampleSet) -> np.ndarray:
        """The model's probability of each observed token, ``[C, n, L]``."""
        return np.exp(self.log_prob(data))

    # -- views used by metrics ---------------------------------------------------------------
    def distribution(self) -> np.ndarray:
        """The unigram distribution ``[C, V]`` (for order 1, the model itself)."""
        return self.unigram

    # -- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        return {} if self.probs is None else {"probs": self.probs, "unigram": self.unigram}

    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> Self:
        self.probs = np.array(state["probs"], dtype=np.float64)
        self.unigram = np.array(state["unigram"], dtype=np.float64)
        self.n_chains = self.probs.shape[0]
        return self
