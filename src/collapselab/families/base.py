"""The one protocol every family implements (sklearn's fit / sample / score spirit).

A family object holds the parameters of ``C`` chains at once (a leading chain axis on every array),
so cheap families run many seeds as one array program; a torch family is simply one with ``C = 1``.

- ``fit_loss(data, loss, rng, init=None)`` fits under a u-loss: closed-form families by weighted refits
  (:class:`~collapselab.families.closed_form.ClosedFormFamily`), gradient-trained ones
  (:class:`~collapselab.families.gradient.GradientFamily`) inside each training step; the engine calls only this.
- ``fit(data, weights=None, init=None, rng=...)`` refits **in place** and returns ``self``. ``weights``
  (``[C, n]`` or per token ``[C, n, ...]``) are per-sample loss weights ``w(u)``, multiplied with the
  data's own curation weights. ``init`` is a model to warm start from (the regime decides); context
  fixed at the first fit (e.g. the real design of ``linear``) is kept for the chain's life.
- ``sample(n, rng)`` draws ``n`` samples per chain; ``resample(like, rng)`` draws fresh samples with the
  same conditioning as ``like`` (covariates, prompts) - for unconditional families, ``sample(like.n)``.
- ``log_prob(data)`` is the per-sample (or per-token) log-likelihood; ``confidence(data)`` is ``u`` in
  [0, 1] (the probability of the observed symbol, or the density-quantile confidence
  ``u(x) = P_model(p(X) < p(x))`` for continuous families).
- ``state_dict()`` / ``load_state_dict()``: arrays only, each with the leading chain axis.

Data may carry a chain axis of 1 (e.g. a shared held-out set); it broadcasts against the model's C.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from collapselab.dataspec import DataSpec
from collapselab.exhibits import Exhibit
from collapselab.losses.training import LossRecord
from collapselab.losses.ulosses import ULoss
from collapselab.registry import ClassRegistry
from collapselab.samples import SampleSet
from collapselab.settings import SettingContext


class Resources(BaseModel):
    """What one chain task asks a Ray cluster for: CPUs and GPUs, fractions allowed (``num_gpus: 0.25`` packs four
    small models on one GPU). A family states its own (:meth:`FamilyConfig.resources`); an experiment's
    ``resources:`` overrides the fields it sets. The local backend does not read it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    num_cpus: float | None = Field(None, gt=0, le=1024, description="CPUs reserved per chain task")
    num_gpus: float | None = Field(None, ge=0, le=64, description="GPUs per chain task (a fraction shares one)")

    def over(self, base: Resources) -> Resources:
        """These settings where they are set, ``base``'s elsewhere."""
        return Resources(num_cpus=base.num_cpus if self.num_cpus is None else self.num_cpus,
                         num_gpus=base.num_gpus if self.num_gpus is None else self.num_gpus)


class FamilyConfig(BaseModel):
    """Base for family settings in an experiment (``name`` selects the family)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    name: str

    def check(self, ctx: SettingContext) -> str | None:
        """Why this family cannot model the arm of ``ctx`` (one line naming the field), or ``None``."""
        return None

    def resources(self, gpus: bool) -> Resources:
        """What one chain task of this family needs on a cluster that has GPUs (``gpus``) or not: one CPU (array
        families)."""
        return Resources(num_cpus=1.0, num_gpus=0.0)


class Family(abc.ABC):
    """Abstract base of all families; see the module docstring for the protocol."""

    name: ClassVar[str]
    #: the settings model of ``family:`` (its ``name`` field a Literal of :attr:`name`)
    config_class: ClassVar[type[FamilyConfig]] = FamilyConfig
    #: names of the arrays a sample of this family holds (checked against data sources).
    sample_keys: ClassVar[tuple[str, ...]]
    #: the kind of data it models (must match the data source's): points, regression, tokens, images.
    kind: ClassVar[str]
    #: the most chains one model object holds (torch families: one model per seed, so a few).
    max_chains: ClassVar[int] = 1024
    #: what the family shows in the report beside the metrics, by name: the kind of each exhibit
    #: (:class:`collapselab.exhibits.ImageGrid`, :class:`~collapselab.exhibits.Passage`); see :meth:`exhibit`
    exhibits: ClassVar[dict[str, type]] = {}

    def __init__(self, config: FamilyConfig, n_chains: int, spec: Mapping[str, Any]) -> None:
        self.config = config
        self.n_chains = int(n_chains)
        self.spec = spec if isinstance(spec, DataSpec) else DataSpec(spec)
        #: per chain, what the arm's loss did in the last :meth:`fit_loss` (its last epoch or refit)
        self.loss_records: list[LossRecord] = []

    # -- protocol ----------------------------------------------------------------------------
    @abc.abstractmethod
    def fit(self, data: SampleSet, weights: np.ndarray | None = None, init: Family | None = None,
            rng: np.random.Generator | None = None) -> Self:
        """Fit (in place) to ``data`` with optional per-sample weights; returns ``self``."""

    @abc.abstractmethod
    def fit_loss(self, data: SampleSet, loss: ULoss, rng: np.random.Generator, init: Family | None = None,
                 steps: int = 3) -> Self:
        """Fit (in place) under the u-loss ``loss``, applied through :class:`collapselab.losses.AppliedLoss`, and
        set :attr:`loss_records` (one per chain); returns ``self`` (``steps``: weighted refits of a closed-form
        family; a gradient-trained family applies the loss inside every training step and ignores it)."""

    @abc.abstractmethod
    def sample(self, n: int, rng: np.random.Generator) -> SampleSet:
        """``n`` samples per chain."""

    def resample(self, like: SampleSet, rng: np.random.Generator) -> SampleSet:
        """Fresh samples with the conditioning of ``like`` (unconditional: ``sample(like.n)``)."""
        return self.sample(like.n, rng)

    def exhibit(self, heldout: SampleSet, rng: np.random.Generator) -> dict[str, Exhibit]:
        """This generation's exhibits of chain 0's model (see :mod:`collapselab.exhibits`), by the names of
        :attr:`exhibits`, made from the held-out real data ``heldout`` where they need it; the chain saves them
        with its checkpoints and the report shows them. Default: none."""
        return {}

    @abc.abstractmethod
    def log_prob(self, data: SampleSet) -> np.ndarray:
        """Per-sample (or per-token) log-likelihood, ``[C, n]`` (or ``[C, n, ...]``)."""

    @abc.abstractmethod
    def confidence(self, data: SampleSet) -> np.ndarray:
        """``u`` in [0, 1] per sample (or per token), the input of every u-loss."""

    def runtime(self) -> dict[str, str]:
        """Where this model computes, for its checkpoint records (e.g. ``device``, ``precision``); empty (the
        default) for array families, whose results do not depend on it."""
        return {}

    def loss_confidence(self, data: SampleSet) -> np.ndarray:
        """The ``u`` the arm's loss acts on in training (default: :meth:`confidence`; a VAE trained per image
        uses its image-level confidence)."""
        return self.confidence(data)

    def export(self) -> dict[str, bytes] | None:
        """The fitted model in a standard on-disk form (relative path -> bytes, e.g. a Hugging Face folder)
        that checkpoints hold instead of the :meth:`state_dict` arrays; ``None`` (the default): the arrays."""
        return None

    def load_export(self, files: Mapping[str, bytes]) -> Self:
        """Restore from :meth:`export` (bitwise)."""
        raise NotImplementedError(f"{self.name} has no export")

    @abc.abstractmethod
    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameters (and kept context) as arrays with a leading chain axis."""

    @abc.abstractmethod
    def load_state_dict(self, state: Mapping[str, np.ndarray]) -> Self:
        """Restore from :meth:`state_dict` (bitwise)."""

    # -- helpers shared by all families ---------------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return bool(self.state_dict())

    def finite_chains(self) -> np.ndarray:
        """``[C]`` bool: chains whose parameters are all finite."""
        ok = np.ones(self.n_chains, dtype=bool)
        for v in self.state_dict().values():
            if np.issubdtype(v.dtype, np.floating):
                ok &= np.isfinite(v.reshape(v.shape[0], -1)).all(axis=1)
        return ok

    def chains(self, index: np.ndarray | slice) -> Self:
        """A new model holding a subset of the chains (or ``[0]*C`` to tile a single chain)."""
        state = {k: v[index] for k, v in self.state_dict().items()}
        n = len(next(iter(state.values()))) if state else self.n_chains
        return type(self)(self.config, n, self.spec).load_state_dict(state)

    def tile(self, n_chains: int) -> Self:
        """A single-chain model repeated over ``n_chains`` chains (used for the known truth)."""
        if self.n_chains != 1:
            raise ValueError("tile() needs a single-chain model")
        return self.chains(np.zeros(n_chains, dtype=np.int64))


#: every family by name: the built-ins, plugins (entry points ``collapselab.families``, ``plugins:``)
FAMILIES = ClassRegistry("family", Family)


def combine_weights(data: SampleSet, weights: np.ndarray | None) -> np.ndarray:
    """Data's curation weights times the loss weights, shaped like ``weights`` (or ``[C, n]``)."""
    if weights is None:
        return data.weight
    weights = np.asarray(weights, dtype=np.float64)
    return weights if data.w is None else data.broadcast_weight(weights) * weights


def all_unit(data: SampleSet, weights: np.ndarray | None) -> bool:
    """True when every weight is 1, judged by value (so a resumed run takes the same arithmetic path)."""
    if weights is not None and not np.all(weights == 1.0):
        return False
    return data.w is None or bool(np.all(data.w == 1.0))


def per_sample(weights: np.ndarray) -> np.ndarray:
    """Collapse per-token weights ``[C, n, ...]`` to per-sample ``[C, n]`` (mean over tokens)."""
    return weights if weights.ndim == 2 else weights.reshape(weights.shape[0], weights.shape[1], -1).mean(-1)


def check_keys(family: type[Family] | Family, data: SampleSet) -> None:
    """Raise ``ValueError`` when ``data`` lacks the arrays the family needs."""
    missing = [k for k in family.sample_keys if k not in data.arrays]
    if missing:
        raise ValueError(f"{family.name} family needs sample arrays {list(family.sample_keys)}, "
                         f"got {list(data.arrays)}")
