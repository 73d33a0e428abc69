"""u-losses: objectives written as a function of ``u``, the model's probability of the observed target.

Each loss ``l(u)`` is cross entropy re-weighted by ``w(u) = -u * dl/du``: for token/pixel models the
gradient of ``l(u)`` w.r.t. the logits is ``w(u)`` times the gradient of CE; continuous families fit with
per-sample weights ``w(u)`` (detached). This module is the single source of truth for every loss: the
numpy fits of the closed-form families and the torch losses evaluate these same definitions.

All functions take ``log_u`` (natural log of u; clamped below at ``log(tiny)`` of its dtype) so that u near
0 and near 1 are handled exactly, and work on numpy arrays and torch tensors alike.

| loss | l(u) | w(u) | down-weights |
|---|---|---|---|
| ce | -log u | 1 | nothing |
| tce(gamma) | 1[u <= gamma] (-log u) | 1[u <= gamma] | confident targets (u > gamma) |
| focal(gamma) | -(1-u)^gamma log u | (1-u)^gamma (1 + gamma u (-log u)/(1-u)) | confident (*) |
| linear(beta) | -log u + beta u | 1 - beta u | confident |
| poly1(epsilon) | -log u + epsilon (1-u) | 1 + epsilon u | unconfident (epsilon > 0) |
| gce(q) | (1 - u^q) / q | u^q | unconfident |
| sce(alpha, beta, A) | alpha (-log u) - beta A (1-u) | alpha - beta A u | unconfident |
| agce(a, q) | ((a+1)^q - (a+u)^q) / q | u (a+u)^(q-1) | unconfident |
| ael(a) | exp(-u/a) | (u/a) exp(-u/a) | unconfident |
| vce(a) | -log(a + u) | u / (a + u) | unconfident |
| random_drop(q) | m (-log u), m ~ Bernoulli(1 - q) per target | m | a random q share (the control) |

(*) focal's weight rises a little for small u before it falls to 0 at u = 1.

**Gamma that follows the model.** TCE's ``gamma`` is a number, or ``{quantile: q}`` (drop the most confident
``q`` share of the targets: gamma is the ``1 - q`` quantile of their u) or ``{dynamic: k}`` (ForTIFAI's rule:
gamma = mean + k std of the mean confidence of groups of targets). Each rule is written once, here
(:meth:`GammaQuantile.resolve`, :meth:`GammaDynamic.resolve`); :meth:`ULoss.resolved` fixes it from a clip set's
confidences. Training applies it through :class:`collapselab.losses.training.AppliedLoss`, which resolves it once per
epoch on a fixed clip set, as ForTIFAI does (closed-form families: per chain, on the training set before each refit).
A loss with an unresolved rule evaluated directly on an array takes that array as its clip set.

**The matched control.** ``random_drop(q)`` drops a random ``q`` share of the targets whatever their u (a fresh
Bernoulli mask per use: per token, pixel or sample), with TCE's normalisation (the mean over all targets, the
dropped ones counted), so a truncating loss can be compared with dropping as much at random: the mask is drawn
by whoever applies the loss (:meth:`ULoss.keep_mask`), from the run's seed tree.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, TypeAdapter, field_validator

from collapselab.losses._xp import is_torch, namespace
from collapselab.registry import SettingRegistry

Direction = Literal["none", "confident", "unconfident"]


class ULoss(BaseModel):
    """Base class: a loss as a function of the target probability u (see the module docstring).

    A plugin loss needs only a ``name`` (a ``Literal``), its hyper-parameters as pydantic fields and
    ``value(log_u)`` written with operators and :func:`ops` (valid for numpy arrays and torch tensors); ``w(u)``
    is then derived by autograd (:meth:`value_and_weight`), and the loss works in every family.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    name: str
    #: which targets the loss down-weights relative to CE.
    direction: ClassVar[Direction] = "none"
    #: where the hyper-parameter defaults come from.
    source: ClassVar[str] = ""

    # -- the definitions (subclasses override) ------------------------------------------------
    def _value(self, xp: Any, log_u: Any, u: Any, one_minus_u: Any) -> Any:
        raise NotImplementedError

    def _weight(self, xp: Any, log_u: Any, u: Any, one_minus_u: Any) -> Any:
        raise NotImplementedError

    # -- public evaluation --------------------------------------------------------------------
    def _prep(self, log_u: Any) -> tuple[Any, Any, Any, Any]:
        xp = namespace(log_u)
        log_u = xp.as_float(log_u)
        log_u = xp.clamp_min(log_u, math.log(xp.tiny(log_u)))
        return xp, log_u, xp.exp(log_u), -xp.expm1(log_u)

    def value(self, log_u: Any) -> Any:
        """``l(u)`` evaluated from ``log u`` (numpy array or torch tensor)."""
        xp, log_u, u, om = self._prep(log_u)
        return self._value(xp, log_u, u, om)

    def weight(self, log_u: Any) -> Any:
        """``w(u) = -u * dl/du`` evaluated from ``log u`` (derived by autograd where the loss gives no formula)."""
        if self.derives_weight():
            return self.value_and_weight(log_u)[1]
        xp, log_u, u, om = self._prep(log_u)
        return self._weight(xp, log_u, u, om)

    @classmethod
    def derives_weight(cls) -> bool:
        """Whether ``w(u)`` comes from autograd (a loss defining only :meth:`value`)."""
        return cls._weight is ULoss._weight and cls.weight is ULoss.weight

    def value_and_weight(self, log_u: Any) -> tuple[Any, Any]:
        """``(l(u), w(u))`` together; for a loss without a ``w`` formula ``w = -dl/dlog u`` by torch autograd
        (float64 for numpy input, so the closed-form families get it to rounding)."""
        if not self.derives_weight():
            return self.value(log_u), self.weight(log_u)
        import torch

        numpy_in = not is_torch(log_u)
        t = torch.from_numpy(np.asarray(log_u, dtype=np.float64)) if numpy_in else log_u.detach()
        t = t if t.is_floating_point() else t.double()
        with torch.enable_grad():
            x = t.clamp_min(math.log(torch.finfo(t.dtype).tiny)).requires_grad_(True)
            v = self.value(x)
            if not isinstance(v, torch.Tensor):
                raise TypeError(f"loss {self.name!r}: value(log_u) must return an array like log_u, got "
                                f"{type(v).__name__}")
            (g,) = torch.autograd.grad(v.sum(), x, allow_unused=True)
        w = -g if g is not None else torch.zeros_like(x)
        v = v.detach()
        return (v.numpy(), w.numpy()) if numpy_in else (v, w.detach())

    def check(self, ctx: Any) -> str | None:
        """Why this loss cannot serve the arm of ``ctx`` (one line), or ``None``; checked at validation (a plugin
        loss: its ``w(u)`` must be finite and >= 0 on (0, 1], :func:`collapselab.testing.weight_problem`)."""
        if type(self).__module__.startswith("collapselab."):
            return None
        why = weight_problem(self)
        return f"loss {self.name!r}: {why}" if why else None

    def properties(self) -> dict[str, Any]:
        """What the loss does, computed numerically from its definition: the targets it down-weights (``confident``:
        w(1) below w(0+); ``unconfident``: the reverse; ``both ends`` / ``the middle``: equal ends and a bump / a dip
        between; ``none``: constant w; ``random``: a random mask), the range of ``w(u)`` on (0, 1] and Wang et al.'s
        variation ratio ``sup |l'(u)| / inf |l'(u)|`` over (0, 1] (``inf`` when ``|l'|`` is unbounded as u -> 0 or
        reaches 0)."""
        return loss_properties(self)

    def weight_u(self, u: Any) -> Any:
        """``w(u)`` from ``u`` itself (u = 0 allowed); used by the continuous families."""
        if isinstance(u, np.ndarray) or np.isscalar(u):
            with np.errstate(divide="ignore"):
                return self.weight(np.log(np.asarray(u, dtype=np.float64)))
        return self.weight(u.clamp_min(0).log())

    @property
    def is_ce(self) -> bool:
        """True when the loss is plain cross entropy (w == 1), so a weighted fit is not needed."""
        return False

    @property
    def adaptive(self) -> bool:
        """Whether a setting follows the model (resolved from its confidences on a clip set, :meth:`resolved`)."""
        return False

    def resolved(self, u: Any, groups: int | None = None) -> ULoss:
        """The loss with every setting that follows the model fixed from the clip set's confidences ``u``
        (``groups``: its rows, for a rule over groups of targets); itself when nothing follows the model."""
        return self

    @property
    def threshold(self) -> float | None:
        """The confidence above which the loss drops a target (TCE's gamma; 1 for cross entropy, which drops
        none); ``None`` for a loss that does not truncate by confidence, or whose threshold is not yet resolved."""
        return None

    @property
    def keep_share(self) -> float:
        """The expected share of targets a random mask keeps (1 for a loss without one)."""
        return 1.0

    def keep_mask(self, like: Any, generator: Any) -> Any:
        """A random 0/1 mask shaped like ``like`` (numpy array with a numpy ``Generator``, or torch tensor with a
        ``torch.Generator``, ``None``: torch's global one) for a loss that drops targets at random; ``None`` (the
        default): no mask."""
        return None

    def label(self) -> str:
        """Short human name, e.g. ``tce(gamma=0.99)``."""
        params = ", ".join(f"{k}={v}" for k, v in self.model_dump().items() if k != "name")
        return f"{self.name}({params})" if params else self.name


#: every u-loss by name: the built-ins below, plugins (entry points ``collapselab.losses``, ``plugins:``)
LOSSES = SettingRegistry("loss", ULoss)


class CE(ULoss):
    """Cross entropy, ``l = -log u``, ``w = 1``."""

    name: Literal["ce"] = "ce"

    def _value(self, xp, log_u, u, om):
        return -log_u

    def _weight(self, xp, log_u, u, om):
        return log_u * 0 + 1

    @property
    def is_ce(self) -> bool:
        return True

    @property
    def threshold(self) -> float:
        return 1.0


class GammaQuantile(BaseModel):
    """Drop the most confident ``quantile`` share of the targets (gamma = the ``1 - quantile`` quantile of u)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    quantile: float = Field(gt=0.0, lt=1.0)

    def resolve(self, u: np.ndarray, groups: int | None = None) -> float:
        return float(np.quantile(np.asarray(u, dtype=np.float64), 1.0 - self.quantile))


class GammaDynamic(BaseModel):
    """ForTIFAI's rule (``plt_model.on_train_epoch_start``): gamma = mean + ``dynamic`` x std (population, as
    ``np.std``) of the groups' mean confidences (their ``alpha``; a group is one clip batch of theirs)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    dynamic: float = Field(ge=-10.0, le=10.0)

    def resolve(self, u: np.ndarray, groups: int | None = None) -> float:
        a = np.asarray(u, dtype=np.float64)
        means = a.reshape(groups or len(a), -1).mean(axis=1) if a.ndim else a.reshape(1)
        return float(self.of_means(means))

    def of_means(self, means: Any) -> Any:
        """The rule on the groups' mean confidences (numpy array or torch tensor, 1-D): the one place it is
        written."""
        std = means.std() if isinstance(means, np.ndarray) else means.std(unbiased=False)
        return means.mean() + self.dynamic * std


def _gamma_tag(v: Any) -> str:
    if isinstance(v, dict):
        return "gamma-dynamic" if "dynamic" in v and "quantile" not in v else "gamma-quantile"
    if isinstance(v, (GammaQuantile, GammaDynamic)):
        return "gamma-quantile" if isinstance(v, GammaQuantile) else "gamma-dynamic"
    return "gamma-number"


#: a number, ``{quantile: q}`` or ``{dynamic: k}``; tagged so that an error names ``gamma.<field>`` only
Gamma = Annotated[Annotated[float, Tag("gamma-number")] | Annotated[GammaQuantile, Tag("gamma-quantile")]
                  | Annotated[GammaDynamic, Tag("gamma-dynamic")], Discriminator(_gamma_tag)]
#: the tags above (pydantic puts them in error locations; users never write them)
GAMMA_TAGS = ("gamma-number", "gamma-quantile", "gamma-dynamic")


def _clip_gamma(g: float) -> float:
    """A resolved gamma as TCE takes it: >= 1 keeps every target (ForTIFAI's code), <= 0 none."""
    return min(max(g, 1e-12), 1.0)


class TCE(ULoss):
    """Truncated cross entropy (ForTIFAI): ``1[u <= gamma] (-log u)``, ``w = 1[u <= gamma]``.

    The mask is taken in log space (``-log u >= -log gamma``), so u close to 1 is handled exactly;
    gamma = 1 keeps every target (equals CE). ``gamma`` may follow the model (``{quantile: q}``,
    ``{dynamic: k}``; see the module docstring).
    """

    name: Literal["tce"] = "tce"
    gamma: Gamma = Field(0.99)
    direction: ClassVar[Direction] = "confident"
    source: ClassVar[str] = "ForTIFAI (arXiv 2509.08972): gamma 0.9-0.99"

    @field_validator("gamma")
    @classmethod
    def _range(cls, g: Any) -> Any:
        if isinstance(g, float) and not 0.0 < g <= 1.0:
            raise ValueError(f"must be in (0, 1], {{quantile: q}} or {{dynamic: k}}; got {g!r}")
        return g

    @property
    def adaptive(self) -> bool:
        """Whether gamma follows the model (resolved from confidences) rather than being a number."""
        return not isinstance(self.gamma, float)

    def resolve(self, u: Any, groups: int | None = None) -> float:
        """The gamma this loss uses for confidences ``u`` (``groups``: rows of ``u`` for the dynamic rule)."""
        if not self.adaptive:
            return float(self.gamma)
        return _clip_gamma(self.gamma.resolve(u, groups))

    def at(self, gamma: float) -> TCE:
        """The same loss with a fixed ``gamma`` (how an adaptive one is trained for an epoch)."""
        return TCE(gamma=_clip_gamma(float(gamma)))

    def resolved(self, u: Any, groups: int | None = None) -> TCE:
        return self.at(self.resolve(u, groups)) if self.adaptive else self

    @property
    def threshold(self) -> float | None:
        return None if self.adaptive else float(self.gamma)

    def _fixed(self, log_u: Any) -> TCE:
        if not self.adaptive:
            return self
        xp = namespace(log_u)
        u = np.asarray(xp.to_numpy(xp.exp(log_u)), dtype=np.float64)
        return self.resolved(u.reshape(-1))

    def _keep(self, log_u: Any) -> Any:
        return -log_u >= -math.log(self.gamma)

    def _value(self, xp, log_u, u, om):
        t = self._fixed(log_u)
        return xp.where(t._keep(log_u), -log_u, log_u * 0)

    def _weight(self, xp, log_u, u, om):
        t = self._fixed(log_u)
        return xp.where(t._keep(log_u), log_u * 0 + 1, log_u * 0)

    @property
    def is_ce(self) -> bool:
        return self.gamma == 1.0


class Focal(ULoss):
    """Focal loss (Lin et al. 2017): ``-(1-u)^gamma log u``, the modulating factor differentiated too;
    ``w = (1-u)^gamma (1 + gamma u (-log u)/(1-u))``."""

    name: Literal["focal"] = "focal"
    gamma: float = Field(2.0, ge=0.0)
    direction: ClassVar[Direction] = "confident"
    source: ClassVar[str] = "Lin et al. 2017: gamma = 2"

    def _value(self, xp, log_u, u, om):
        return om**self.gamma * -log_u

    def _weight(self, xp, log_u, u, om):
        # (-log u)/(1-u) -> 1 as u -> 1; written as a ratio guarded at u == 1 to avoid 0/0.
        safe = xp.where(om > 0, om, log_u * 0 + 1)
        ratio = xp.where(om > 0, -log_u / safe, log_u * 0 + 1)
        return om**self.gamma * (1 + self.gamma * u * ratio)

    @property
    def is_ce(self) -> bool:
        return self.gamma == 0.0


class Linear(ULoss):
    """Linear re-weighting ("entropy" in ForTIFAI's code): ``-log u + beta u``; ``w = 1 - beta u``, beta in [0, 1].

    Same gradient as ForTIFAI's ``entropy_loss`` (``-(alpha (1 - gamma p)).detach() log p`` with ``alpha = 1``,
    ``gamma = beta``), different value: theirs is ``-(1 - beta u) log u``, ours is the antiderivative
    ``-log u + beta u``, so logged losses differ while training is identical.
    """

    name: Literal["linear"] = "linear"
    beta: float = Field(1.0)
    direction: ClassVar[Direction] = "confident"
    source: ClassVar[str] = "ForTIFAI released code ('entropy' loss)"

    @field_validator("beta", mode="before")
    @classmethod
    def _beta(cls, b: Any) -> Any:
        ok = isinstance(b, (int, float)) and not isinstance(b, bool) and 0.0 <= float(b) <= 1.0
        if not ok:
            raise ValueError(f"must be in [0, 1] (w = 1 - beta*u >= 0), got {b!r}")
        return float(b)

    def _value(self, xp, log_u, u, om):
        return -log_u + self.beta * u

    def _weight(self, xp, log_u, u, om):
        return 1 - self.beta * u


class Poly1(ULoss):
    """Poly-1 (Leng et al. 2022): ``-log u + epsilon (1-u)``; ``w = 1 + epsilon u``."""

    name: Literal["poly1"] = "poly1"
    epsilon: float = Field(1.0, ge=-1.0)
    direction: ClassVar[Direction] = "unconfident"
    source: ClassVar[str] = "Leng et al. 2022 (PolyLoss): epsilon = 1 (ImageNet: 2)"

    def _value(self, xp, log_u, u, om):
        return -log_u + self.epsilon * om

    def _weight(self, xp, log_u, u, om):
        return 1 + self.epsilon * u


class GCE(ULoss):
    """Generalized cross entropy (Zhang & Sabuncu 2018): ``(1 - u^q)/q``; ``w = u^q``."""

    name: Literal["gce"] = "gce"
    q: float = Field(0.7, gt=0.0, le=1.0)
    direction: ClassVar[Direction] = "unconfident"
    source: ClassVar[str] = "Zhang & Sabuncu 2018: q = 0.7"

    def _value(self, xp, log_u, u, om):
        return -xp.expm1(self.q * log_u) / self.q

    def _weight(self, xp, log_u, u, om):
        return xp.exp(self.q * log_u)


class SCE(ULoss):
    """Symmetric cross entropy (Wang et al. 2019): ``alpha CE + beta RCE`` with ``RCE = -A (1-u)``.

    ``A`` is the clipped ``log 0`` of the one-hot label (A < 0); ``w = alpha - beta A u``. ``A = -4`` is the
    paper's value; the Active-Passive-Losses code's ``SCELoss`` clamps the one-hot label at 1e-4 and takes the
    natural log, i.e. ``A = log(1e-4) ~ -9.21`` (pass ``A=math.log(1e-4)`` to match it).
    """

    name: Literal["sce"] = "sce"
    alpha: float = Field(0.1, ge=0.0)
    beta: float = Field(1.0, ge=0.0)
    A: float = Field(-4.0, lt=0.0)
    direction: ClassVar[Direction] = "unconfident"
    source: ClassVar[str] = "Wang et al. 2019 (CIFAR-10): alpha 0.1, beta 1.0, A = -4"

    def _value(self, xp, log_u, u, om):
        return self.alpha * -log_u - self.beta * self.A * om

    def _weight(self, xp, log_u, u, om):
        return self.alpha - self.beta * self.A * u


class AGCE(ULoss):
    """Asymmetric GCE (Zhou et al. 2021): ``((a+1)^q - (a+u)^q)/q``; ``w = u (a+u)^(q-1)``."""

    name: Literal["agce"] = "agce"
    a: float = Field(1.0, gt=0.0)
    q: float = Field(2.0, gt=0.0)
    direction: ClassVar[Direction] = "unconfident"
    source: ClassVar[str] = "Zhou et al. 2021 (CIFAR-10): a = 1, q = 2 (a = 6, q = 1.5 at high noise)"

    def _value(self, xp, log_u, u, om):
        return ((self.a + 1) ** self.q - (self.a + u) ** self.q) / self.q

    def _weight(self, xp, log_u, u, om):
        return u * (self.a + u) ** (self.q - 1)


class AEL(ULoss):
    """Asymmetric exponential loss (Zhou et al. 2021): ``exp(-u/a)``; ``w = (u/a) exp(-u/a)``."""

    name: Literal["ael"] = "ael"
    a: float = Field(2.5, gt=0.0)
    direction: ClassVar[Direction] = "unconfident"
    source: ClassVar[str] = "Zhou et al. 2021 (CIFAR-10): a = 2.5"

    def _value(self, xp, log_u, u, om):
        return xp.exp(-u / self.a)

    def _weight(self, xp, log_u, u, om):
        return u / self.a * xp.exp(-u / self.a)


class VCE(ULoss):
    """Bounded-variation cross entropy: ``-log(a + u)``; ``w = u / (a + u)``.

    The form is reconstructed from reviews of the Variation-Bounded Loss paper (Wang et al. 2025):
    shifting u by ``a`` bounds the loss's total variation on [0, 1] by ``log((1+a)/a)``.
    """

    name: Literal["vce"] = "vce"
    a: float = Field(0.5, gt=0.0)
    direction: ClassVar[Direction] = "unconfident"
    source: ClassVar[str] = "Variation-Bounded Loss (Wang et al. 2025), form reconstructed"

    def _value(self, xp, log_u, u, om):
        return -xp.log(self.a + u)

    def _weight(self, xp, log_u, u, om):
        return u / (self.a + u)


class RandomDrop(ULoss):
    """The control of a truncating loss: cross entropy with a random ``q`` share of the targets dropped, whatever
    their u (``l = m (-log u)``, ``w = m``, ``m ~ Bernoulli(1 - q)``), normalised over all targets as TCE."""

    name: Literal["random_drop"] = "random_drop"
    q: float = Field(0.25, ge=0.0, lt=1.0)
    source: ClassVar[str] = "matched control (drops as many targets as a truncating loss, at random)"

    def _value(self, xp, log_u, u, om):
        return -log_u

    def _weight(self, xp, log_u, u, om):
        return log_u * 0 + 1

    @property
    def keep_share(self) -> float:
        return 1.0 - self.q

    def keep_mask(self, like: Any, generator: Any) -> Any:
        if isinstance(like, np.ndarray) or np.isscalar(like):
            return (generator.random(np.shape(like)) >= self.q).astype(np.float64)
        import torch

        device = generator.device if generator is not None else like.device
        draw = torch.rand(like.shape, generator=generator, device=device, dtype=torch.float32)
        return (draw >= self.q).to(device=like.device, dtype=like.dtype)

    @property
    def is_ce(self) -> bool:
        return self.q == 0.0


for _cls in (CE, TCE, Focal, Linear, Poly1, GCE, SCE, AGCE, AEL, VCE, RandomDrop):
    LOSSES.register(_cls)
#: the built-in u-losses (plugins: :data:`LOSSES`)
ULOSS_CLASSES: tuple[type[ULoss], ...] = tuple(LOSSES.builtins())
ULOSS_NAMES: tuple[str, ...] = tuple(LOSSES.names(builtin_only=True))
#: an experiment's ``loss:`` setting: any registered loss by ``name``
LossConfig = LOSSES.field()
_ADAPTER: TypeAdapter[Any] = TypeAdapter(LossConfig)


def get_uloss(name: str, **params: Any) -> ULoss:
    """The u-loss called ``name`` (built-in, plugin or ``module:Class``) with ``params`` (validated; raises
    ``pydantic.ValidationError``)."""
    return _ADAPTER.validate_python({"name": name, **params})


def ops(x: Any) -> Any:
    """The array operations for ``x`` (numpy or torch): ``exp``, ``expm1``, ``log``, ``log1p``, ``where``,
    ``sigmoid``, ``clamp_min``; what a plugin's ``value(log_u)`` uses beyond operators."""
    return namespace(x)


#: u at which a loss's w(u) is checked: near 0 (down to 1e-30), through the middle, up to 1
U_GRID = np.concatenate([np.geomspace(1e-30, 1e-3, 60), np.linspace(1e-3, 1.0, 400)[1:]])


def weight_problem(loss: Any) -> str | None:
    """Why ``loss``'s ``w(u)`` is unusable (negative or not finite somewhere in (0, 1]), or ``None``."""
    with np.errstate(all="ignore"):
        try:
            w = np.asarray(loss.weight(np.log(U_GRID)), dtype=np.float64)
        except Exception as e:
            return f"w(u) cannot be computed ({type(e).__name__}: {e})"
    if w.shape != U_GRID.shape:
        return f"w(u) has shape {w.shape} for {U_GRID.shape} targets; value(log_u) must work element-wise"
    bad = ~np.isfinite(w)
    if bad.any():
        return f"w(u) is not finite at u = {U_GRID[bad][0]:.3g}; allowed: finite w(u) >= 0 on (0, 1]"
    if (w < 0).any():
        i = int(np.argmax(w < 0))
        return f"w(u) = {w[i]:.3g} < 0 at u = {U_GRID[i]:.3g} (the loss would push that target's probability " \
               f"down); allowed: finite w(u) >= 0 on (0, 1]"
    return None


#: u on which properties are measured: down to 1e-300, so a |l'| that grows without bound as u -> 0 shows
_GRID = np.concatenate([np.geomspace(1e-300, 1e-3, 400), np.linspace(1e-3, 1.0, 2001)[1:]])


def loss_properties(loss: ULoss) -> dict[str, Any]:
    """See :meth:`ULoss.properties`."""
    log_u = np.log(_GRID)
    with np.errstate(all="ignore"):
        w = np.asarray(loss.weight(log_u), dtype=np.float64) * loss.keep_share
        dl = w / _GRID  # |l'(u)| = w(u) / u
    finite = bool(np.all(np.isfinite(w)))
    lo_w, hi_w = (float(np.min(w)), float(np.max(w))) if finite else (float("nan"), float("nan"))
    lo_w = 0.0 if abs(lo_w) < 1e-200 else lo_w  # w(u) -> 0 as u -> 0: the infimum over (0, 1]
    w0, w1 = float(w[0]), float(w[-1])  # u -> 0 and u = 1
    tol = 1e-9 * max(1.0, abs(w0), abs(w1))
    if finite and hi_w - lo_w <= tol:
        direction = "none"
    elif abs(w1 - w0) <= tol:  # equal ends: a bump or a dip between them
        direction = "both ends" if hi_w > w0 + tol else "the middle"
    else:
        direction = "confident" if w1 < w0 else "unconfident"
    if loss.keep_share < 1.0:
        direction = "random"
    # unbounded as u -> 0: |l'| still grows between u = 1e-150 and 1e-300; reaching 0 anywhere: inf too
    i150 = int(np.argmin(np.abs(np.log10(_GRID) + 150)))
    unbounded = dl[0] > dl[i150] * (1 + 1e-9)
    ratio = float("inf") if (not finite or unbounded or np.min(dl) <= 0) else float(np.max(dl) / np.min(dl))
    return {"down_weights": direction, "w_min": lo_w, "w_max": hi_w, "variation_ratio": ratio}
