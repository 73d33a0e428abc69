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

(*) focal's weight rises a little for small u before it falls to 0 at u = 1.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, ClassVar, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from collapselab.losses._xp import namespace

Direction = Literal["none", "confident", "unconfident"]


class ULoss(BaseModel):
    """Base class: a loss as a function of the target probability u (see the module docstring)."""

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
        """``w(u) = -u * dl/du`` evaluated from ``log u``."""
        xp, log_u, u, om = self._prep(log_u)
        return self._weight(xp, log_u, u, om)

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

    def label(self) -> str:
        """Short human name, e.g. ``tce(gamma=0.99)``."""
        params = ", ".join(f"{k}={v}" for k, v in self.model_dump().items() if k != "name")
        return f"{self.name}({params})" if params else self.name


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


class TCE(ULoss):
    """Truncated cross entropy (ForTIFAI): ``1[u <= gamma] (-log u)``, ``w = 1[u <= gamma]``.

    The mask is taken in log space (``-log u >= -log gamma``), so u close to 1 is handled exactly;
    gamma = 1 keeps every target (equals CE).
    """

    name: Literal["tce"] = "tce"
    gamma: float = Field(0.99, gt=0.0, le=1.0)
    direction: ClassVar[Direction] = "confident"
    source: ClassVar[str] = "ForTIFAI (arXiv 2509.08972): gamma 0.9-0.99"

    def _keep(self, log_u: Any) -> Any:
        return -log_u >= -math.log(self.gamma)

    def _value(self, xp, log_u, u, om):
        return xp.where(self._keep(log_u), -log_u, log_u * 0)

    def _weight(self, xp, log_u, u, om):
        return xp.where(self._keep(log_u), log_u * 0 + 1, log_u * 0)

    @property
    def is_ce(self) -> bool:
        return self.gamma == 1.0


class Focal(ULoss):
    """Focal loss (Lin et al. 2017): ``-(1-u)^gamma log u``; ``w = (1-u)^gamma (1 + gamma u (-log u)/(1-u))``."""

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
    """Linear re-weighting ("entropy" in ForTIFAI's code): ``-log u + beta u``; ``w = 1 - beta u``."""

    name: Literal["linear"] = "linear"
    beta: float = Field(1.0, ge=0.0, le=1.0)
    direction: ClassVar[Direction] = "confident"
    source: ClassVar[str] = "ForTIFAI released code ('entropy' loss)"

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

    ``A`` is the clipped ``log 0`` of the one-hot label (A < 0); ``w = alpha - beta A u``.
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


ULOSS_CLASSES: tuple[type[ULoss], ...] = (CE, TCE, Focal, Linear, Poly1, GCE, SCE, AGCE, AEL, VCE)
LossConfig = Annotated[CE | TCE | Focal | Linear | Poly1 | GCE | SCE | AGCE | AEL | VCE,
                       Field(discriminator="name")]
_ADAPTER: TypeAdapter[Any] = TypeAdapter(LossConfig)
ULOSS_NAMES: tuple[str, ...] = tuple(c.model_fields["name"].default for c in ULOSS_CLASSES)


def get_uloss(name: str, **params: Any) -> ULoss:
    """The u-loss called ``name`` with ``params`` (validated; raises ``pydantic.ValidationError``)."""
    return _ADAPTER.validate_python({"name": name, **params})
