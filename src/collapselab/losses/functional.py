"""u-losses for PyTorch with ``torch.nn.functional.cross_entropy`` semantics.

Every loss here evaluates the definitions of :mod:`collapselab.losses.ulosses` (the single source of truth)
on ``log u = z_y - logsumexp(z)``, the log-probability of the target class, and differentiates them exactly:
the gradient with respect to the logits is ``w(u) (softmax(z) - onehot(y))``, written by one autograd
Function shared by all u-losses.

Common arguments (as ``F.cross_entropy``):

- ``input``: logits ``[N, C]`` or ``[N, C, d1, ...]`` (class dimension 1, torch's layout), or any layout
  with the class dimension given by ``class_dim`` (``class_dim=-1`` for ``[B, T, C]`` language-model logits).
- ``target``: integer class indices, ``input``'s shape without the class dimension.
- ``weight``: optional per-class weights ``[C]``; ``ignore_index`` (default -100) targets contribute nothing.
- ``reduction``: ``"mean"`` (sum of weighted losses over the sum of the weights of the non-ignored targets),
  ``"sum"`` or ``"none"``; anything else raises ``ValueError``.

Numerics: log-sum-exp, the loss and the gradient are computed in float32 (float64 for float64 inputs), also
for float16/bfloat16 logits. The loss is returned in that accumulation dtype (float32 for half logits, as
``transformers``' ``ForCausalLMLoss``, which upcasts; ``F.cross_entropy`` would round it to the logits'
dtype, where a float16 sum over ~8k tokens overflows); the gradient is rounded once to the logits' dtype.
The work streams over chunks of rows, so no temporary of the logits' size is made; this is also why these
losses are faster than ``F.cross_entropy`` on CPU (three fewer logits-sized allocations). A batch whose
targets are all ignored gives 0 with ``mean`` (``F.cross_entropy`` gives NaN) and a zero gradient.

``gradient``: ``"backward"`` (default) recomputes softmax in the backward pass from the saved logits;
``"forward"`` computes the gradient during the forward pass and keeps only it (the logits may then be freed);
``"inplace"`` writes it into the logits' own storage (the logits are overwritten: use it when nothing else
needs them, as Liger Kernel's fused losses do). The last two need ``reduction`` ``"mean"`` or ``"sum"`` and
support one backward pass.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch

from collapselab.losses import ulosses as U

Reduction = Literal["mean", "sum", "none"]
Normalize = Literal["all", "kept"]
GradientMode = Literal["backward", "forward", "inplace"]
_REDUCTIONS = ("mean", "sum", "none")
_GRADIENTS = ("backward", "forward", "inplace")
#: elements per chunk of rows (~4 MB in float32): small enough to stay in cache, large enough for threads.
CHUNK_ELEMENTS = 1 << 20

#: ``weigh(log_u, valid) -> (loss per target, weight w(u) per target, kept mask or None)``
Weigh = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]


def _check(reduction: str, gradient: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if gradient not in _GRADIENTS:
        raise ValueError(f"gradient must be 'backward', 'forward' or 'inplace', got {gradient!r}")
    if gradient != "backward" and reduction == "none":
        raise ValueError(f"gradient={gradient!r} needs reduction 'mean' or 'sum' "
                         "(the upstream gradient must be a scalar)")


def _flatten(input: torch.Tensor, target: torch.Tensor, class_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(logits [M, C], targets [M])`` for any layout; a view when the class dimension is last."""
    if not input.is_floating_point():
        raise TypeError(f"input must hold floating-point logits, got {input.dtype}")
    if target.is_floating_point() or target.dtype == torch.bool:
        raise TypeError(f"target must hold integer class indices, got {target.dtype}")
    if input.dim() == 1:  # unbatched [C] logits with a scalar target
        input, target, class_dim = input[None], target.reshape(1), -1
    nd = input.dim()
    if not -nd <= class_dim < nd:
        raise ValueError(f"class_dim={class_dim} is out of range for input with {nd} dimensions")
    cd = class_dim % nd
    expected = input.shape[:cd] + input.shape[cd + 1:]
    if target.shape != expected:
        raise ValueError(f"target shape {tuple(target.shape)} does not match input shape {tuple(input.shape)} "
                         f"with class_dim={class_dim} (expected {tuple(expected)})")
    x = input if cd == nd - 1 else input.movedim(cd, -1)
    return x.reshape(-1, input.shape[cd]), target.reshape(-1)


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _chunk_rows(x: torch.Tensor) -> int:
    return max(1, CHUNK_ELEMENTS // max(1, x.shape[1]))


def row_logsumexp(x: torch.Tensor) -> torch.Tensor:
    """``logsumexp`` of each row of ``x [M, C]`` in the accumulation dtype, chunk by chunk."""
    acc = _acc_dtype(x)
    out = torch.empty(x.shape[0], dtype=acc, device=x.device)
    step = _chunk_rows(x)
    for i in range(0, x.shape[0], step):
        out[i:i + step] = torch.logsumexp(x[i:i + step].to(acc), dim=1)
    return out


def write_gradient(x: torch.Tensor, lse: torch.Tensor, coef: torch.Tensor, target: torch.Tensor,
                   out: torch.Tensor, shift: torch.Tensor | None = None,
                   target_coef: torch.Tensor | None = None) -> torch.Tensor:
    """``out = coef * softmax(x) + shift``, then ``target_coef`` (default ``-coef``) added at each row's target.

    Row by row in chunks (``out`` may be ``x`` itself). With the defaults this is the u-loss gradient
    ``coef * (softmax(x) - onehot(target))``. Everything is computed in ``lse``'s dtype (float32 for half
    logits) and rounded to ``out``'s dtype once, the target term included.
    """
    step = _chunk_rows(x)
    same = out.dtype == lse.dtype
    tc = -coef if target_coef is None else target_coef
    for i in range(0, x.shape[0], step):
        j = min(i + step, x.shape[0])
        # in the output's own rows when dtypes agree; else through a float32 chunk (half/bfloat16 logits)
        g = torch.sub(x[i:j], lse[i:j, None], out=out[i:j]) if same else x[i:j].to(lse.dtype) - lse[i:j, None]
        g.exp_().mul_(coef[i:j, None])
        if shift is not None:
            g.add_(shift[i:j, None])
        g[torch.arange(j - i, device=x.device), target[i:j]] += tc[i:j]
        if not same:
            out[i:j].copy_(g)
    return out


def target_weights(target: torch.Tensor, ignore_index: int, weight: torch.Tensor | None,
                   acc: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(valid mask, targets with ignored ones set to 0, per-target class weight (0 where ignored))``."""
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    cw = valid.to(acc) if weight is None else weight.to(acc)[safe] * valid
    return valid, safe, cw


def mean_scale(denom: torch.Tensor) -> torch.Tensor:
    """``1 / denom``, or 0 when nothing counts (an all-ignored batch gives loss 0 and a zero gradient)."""
    return torch.where(denom > 0, 1.0 / denom.clamp_min(torch.finfo(denom.dtype).tiny), 0.0)


@dataclass(frozen=True)
class _Spec:
    weigh: Weigh
    ignore_index: int
    reduction: str
    gradient: str


class _ULossFunction(torch.autograd.Function):
    """Forward: loss from ``log u``; backward: ``w(u) (softmax - onehot)`` scaled by the reduction.

    The loss stays in the accumulation dtype (float32 for half logits), so the upstream gradient arrives in
    float32 too (e.g. ``1 / num_items_in_batch`` unrounded); the gradient returned has the logits' dtype.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None, spec: _Spec):
        m, c = x.shape
        valid, safe, cw = target_weights(target, spec.ignore_index, weight, _acc_dtype(x))
        if m and valid.any() and (int(safe.max()) >= c or int(safe.min()) < 0):
            bad = target[valid & ((safe >= c) | (safe < 0))][0]
            raise IndexError(f"Target {int(bad)} is out of bounds for {c} classes.")
        xd = x.detach()
        lse = row_logsumexp(xd)
        log_u = xd.gather(1, safe[:, None])[:, 0].to(lse.dtype) - lse
        value, w, kept = spec.weigh(log_u, valid)
        per = value * cw
        if spec.reduction == "none":
            loss, coef = per, w * cw
        elif spec.reduction == "sum":
            loss, coef = per.sum(), w * cw
        else:
            denom = (cw * kept).sum() if kept is not None else cw.sum()
            scale = mean_scale(denom)
            loss, coef = per.sum() * scale, w * cw * scale
        if spec.gradient == "backward":
            ctx.save_for_backward(x, safe, lse, coef)
        else:
            out = xd if spec.gradient == "inplace" else torch.empty_like(xd)
            ctx.save_for_backward(write_gradient(xd, lse, coef, safe, out))
        ctx.spec = spec
        return loss

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        if ctx.spec.gradient == "backward":
            x, safe, lse, coef = ctx.saved_tensors
            up = grad_output.to(coef.dtype)
            coef = coef * up
            grad = write_gradient(x.detach(), lse, coef, safe, torch.empty_like(x))
        else:
            (grad,) = ctx.saved_tensors
            up = float(grad_output)  # 0-dim; a Python scalar multiplies half tensors in float32 on any device
            if up != 1.0:
                grad = grad.mul_(up)
        return grad, None, None, None


def uloss(input: torch.Tensor, target: torch.Tensor, weigh: Weigh, weight: torch.Tensor | None = None,
          ignore_index: int = -100, reduction: Reduction = "mean", class_dim: int = 1,
          gradient: GradientMode = "backward") -> torch.Tensor:
    """The generic u-loss: ``weigh(log_u, valid)`` gives per-target losses, weights ``w(u)`` and the kept mask."""
    _check(reduction, gradient)
    x, t = _flatten(input, target, class_dim)
    loss = _ULossFunction.apply(x, t, weight, _Spec(weigh, ignore_index, reduction, gradient))
    if reduction == "none":
        shape = target.shape
        return loss.reshape(shape)
    return loss


def weigh_for(loss: U.ULoss, normalize: Normalize = "all", generator: torch.Generator | None = None,
              batch_dynamic: float | None = None, seq_len: int = 1) -> Weigh:
    """The per-target weighing of the u-loss ``loss`` for :func:`uloss`.

    ``normalize``: ``"all"`` (a mean over every non-ignored target) or ``"kept"`` (over the targets the loss keeps,
    ``w(u) > 0``). A loss that drops targets at random (``random_drop``) draws its mask from ``generator`` (default:
    torch's global generator). ``batch_dynamic`` (TCE only): the per-batch variant of ForTIFAI's rule, gamma =
    mean + ``batch_dynamic`` x std of this batch's per-sequence mean confidence (a sequence = ``seq_len``
    consecutive targets; ignored targets and empty sequences left out), resolved at every call; ForTIFAI's own
    ``{dynamic: k}`` is resolved once per epoch on a fixed clip set
    (:class:`~collapselab.losses.training.AppliedLoss`).
    """
    if normalize not in ("all", "kept"):
        raise ValueError(f"normalize must be 'all' or 'kept', got {normalize!r}")
    rule = None if batch_dynamic is None else U.GammaDynamic(dynamic=float(batch_dynamic))

    def weigh(log_u: torch.Tensor, valid: torch.Tensor):
        active = loss
        if rule is not None:
            u = log_u.exp() * valid
            n = valid.reshape(-1, seq_len).sum(dim=1)
            per_seq = u.reshape(-1, seq_len).sum(dim=1)[n > 0] / n[n > 0]
            g = float(rule.of_means(per_seq)) if per_seq.numel() else 1.0
            if not g > 0:  # a threshold <= 0 keeps nothing
                zero = torch.zeros_like(log_u)
                return zero, zero, zero
            active = U.TCE(gamma=min(g, 1.0))
        value, w = active.value_and_weight(log_u)
        m = active.keep_mask(log_u, generator)
        if m is not None:
            value, w = value * m, w * m
        return value, w, ((w > 0).to(w.dtype) if normalize == "kept" else None)

    weigh.needs_all_targets = rule is not None  # type: ignore[attr-defined]  # fused.py: one call, every target
    return weigh


def _u(loss: U.ULoss, input, target, weight, ignore_index, reduction, class_dim, gradient) -> torch.Tensor:
    return uloss(input, target, weigh_for(loss), weight, ignore_index, reduction, class_dim, gradient)


def _seq_len(target_shape: tuple[int, ...]) -> int:
    """Targets per sequence (all but the first dimension of the target), for the per-batch dynamic rule."""
    return max(1, math.prod(target_shape[1:])) if len(target_shape) > 1 else 1


#: the keywords of a functional or module form that are not the loss's own fields
WEIGH_OPTIONS = ("normalize", "k", "generator")


def build(cls: type[U.ULoss], args: Sequence = (), params: dict | None = None) -> tuple[U.ULoss, dict]:
    """The loss ``cls`` from positional ``args`` (its fields in order) and keyword ``params`` (its fields and the
    weigh options ``normalize``, ``generator`` and, for TCE's ``gamma="batch_dynamic"``, ``k``), validated by the
    class itself; returns ``(loss, weigh options)``. A bad value is a one-line ``ValueError`` naming the field, an
    unknown parameter a ``TypeError``."""
    from pydantic import ValidationError

    params = dict(params or {})
    fields = [k for k in cls.model_fields if k != "name"]
    if len(args) > len(fields):
        raise TypeError(f"{cls.model_fields['name'].default}: takes {len(fields)} positional parameters "
                        f"({', '.join(fields)}), got {len(args)}")
    params.update(zip(fields, args, strict=False))
    options = {k: params.pop(k) for k in WEIGH_OPTIONS if k in params}
    unknown = set(params) - set(fields)
    name = cls.model_fields["name"].default
    if unknown:
        raise TypeError(f"{name} got unexpected parameters {sorted(unknown)}; allowed: {sorted(fields)}")
    k = options.pop("k", None)
    if params.get("gamma") == "batch_dynamic" and "gamma" in fields:
        params.pop("gamma")
        options["batch_dynamic"] = 1.0 if k is None else k
    elif k is not None:
        raise TypeError(f"{name}: k applies to gamma='batch_dynamic' only")
    try:
        loss = cls.model_validate(params)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"] if x not in U.GAMMA_TAGS)
        raise ValueError(f"{name}: {where} {err['msg'].replace('Value error, ', '')}") from None
    if "normalize" in options and options["normalize"] not in ("all", "kept"):
        raise ValueError(f"normalize must be 'all' or 'kept', got {options['normalize']!r}")
    return loss, options


#: the torch forms of the built-in u-losses: loss name -> (function name here, module name in ``modules``); the
#: forms are made from the loss classes, whose fields are their parameters, defaults and validation
FORMS: dict[str, tuple[str, str]] = {
    "ce": ("cross_entropy", "CrossEntropy"), "tce": ("truncated_cross_entropy", "TruncatedCrossEntropy"),
    "focal": ("focal_loss", "FocalLoss"), "linear": ("linear_weighted_loss", "LinearWeightedLoss"),
    "poly1": ("poly1_loss", "Poly1Loss"), "gce": ("gce_loss", "GCELoss"), "sce": ("sce_loss", "SCELoss"),
    "agce": ("agce_loss", "AGCELoss"), "ael": ("ael_loss", "AELLoss"), "vce": ("vce_loss", "VCELoss"),
    "random_drop": ("random_drop_loss", "RandomDropLoss"),
}

_COMMON = """

Torch form of :class:`collapselab.losses.ulosses.{cls}` (its fields are the parameters after ``target``, with their
defaults and validation). Common arguments as ``F.cross_entropy`` (see the module docstring): ``weight``,
``ignore_index``, ``reduction``, ``class_dim``, ``gradient``; ``normalize`` ``"all"`` (ForTIFAI's code: a mean over
every non-ignored target, dropped ones counted) or ``"kept"``; ``generator`` for a random mask.{extra}"""

_TCE_EXTRA = """ ``gamma="batch_dynamic"`` with
``k`` resolves gamma = mean + k std of this batch's per-sequence mean confidence at every call (a per-batch variant;
ForTIFAI's ``{dynamic: k}`` is resolved once per epoch on a clip set by
:class:`~collapselab.losses.training.AppliedLoss`)."""


def _functional(cls: type[U.ULoss], fname: str) -> Callable[..., torch.Tensor]:
    import inspect

    P = inspect.Parameter
    fields = [k for k in cls.model_fields if k != "name"]
    tce = cls is U.TCE
    params = [P("input", P.POSITIONAL_OR_KEYWORD), P("target", P.POSITIONAL_OR_KEYWORD),
              *(P(k, P.POSITIONAL_OR_KEYWORD, default=cls.model_fields[k].default) for k in fields),
              P("weight", P.KEYWORD_ONLY, default=None), P("ignore_index", P.KEYWORD_ONLY, default=-100),
              P("reduction", P.KEYWORD_ONLY, default="mean"), P("class_dim", P.KEYWORD_ONLY, default=1),
              P("gradient", P.KEYWORD_ONLY, default="backward"), P("normalize", P.KEYWORD_ONLY, default="all"),
              P("generator", P.KEYWORD_ONLY, default=None), *([P("k", P.KEYWORD_ONLY, default=1.0)] if tce else [])]
    sig = inspect.Signature(params)

    def fn(*args: Any, **kwargs: Any) -> torch.Tensor:
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        a = dict(bound.arguments)
        input, target = a.pop("input"), a.pop("target")
        common = {k: a.pop(k) for k in ("weight", "ignore_index", "reduction", "class_dim", "gradient")}
        _check(common["reduction"], common["gradient"])
        if tce and a.get("gamma") != "batch_dynamic":
            a.pop("k")
        loss, options = build(cls, (), a)
        weigh = weigh_for(loss, options.get("normalize", "all"), options.get("generator"),
                          options.get("batch_dynamic"), _seq_len(tuple(target.shape)))
        return uloss(input, target, weigh, **common)

    fn.__signature__ = sig  # type: ignore[attr-defined]
    fn.__name__ = fn.__qualname__ = fname
    fn.__module__ = __name__
    fn.__doc__ = (cls.__doc__ or "").strip() + _COMMON.format(cls=cls.__name__, extra=_TCE_EXTRA if tce else "")
    return fn


cross_entropy = _functional(U.CE, "cross_entropy")
truncated_cross_entropy = _functional(U.TCE, "truncated_cross_entropy")
focal_loss = _functional(U.Focal, "focal_loss")
linear_weighted_loss = _functional(U.Linear, "linear_weighted_loss")
poly1_loss = _functional(U.Poly1, "poly1_loss")
gce_loss = _functional(U.GCE, "gce_loss")
sce_loss = _functional(U.SCE, "sce_loss")
agce_loss = _functional(U.AGCE, "agce_loss")
ael_loss = _functional(U.AEL, "ael_loss")
vce_loss = _functional(U.VCE, "vce_loss")
random_drop_loss = _functional(U.RandomDrop, "random_drop_loss")


def make_weigh(name: str, target_shape: tuple[int, ...] = (), **params: Any) -> Weigh:
    """The weighing of the u-loss ``name`` (built-in, plugin or ``module:Class``) with ``params`` (its fields and the
    weigh options of :func:`build`), for targets of ``target_shape`` (the per-batch dynamic rule groups by its
    first dimension); validates them."""
    if name == "nce_rce":
        raise ValueError("nce_rce is not a u-loss (it depends on every class probability)")
    from collapselab.errors import ConfigError

    try:
        cls = U.LOSSES.entry(name).obj
    except ConfigError:
        raise ValueError(f"unknown u-loss {name!r}; allowed: {', '.join(U.LOSSES.names())}") from None
    loss, options = build(cls, (), params)
    return weigh_for(loss, options.get("normalize", "all"), options.get("generator"), options.get("batch_dynamic"),
                     _seq_len(tuple(target_shape)))


def target_confidence(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = -100, shift: bool = True,
                      per: Literal["sequence", "batch"] = "sequence") -> torch.Tensor:
    """Mean probability of the correct next token, per sequence (``[B']``) or over the batch (``[1]``).

    ``logits [B, T, C]`` (class dimension last; ``[T, C]`` is one sequence), ``labels [B, T]``. With ``shift``
    the logits at position t score label t + 1, as ForTIFAI's ``get_probability_of_correct_class``
    (``shift=False``: labels already aligned with the logits). Ignored targets are left out, as are sequences
    without any valid target (so ``B' <= B``). ``per="batch"`` is ForTIFAI's exact unit: their clip statistic
    is ``prob.mean()`` over each clip batch, which equals the mean of the per-sequence means when every
    sequence has the same number of valid targets (their fixed-length blocks). No gradient; float32.
    """
    if per not in ("sequence", "batch"):
        raise ValueError(f"per must be 'sequence' or 'batch', got {per!r}")
    if labels.dim() == 1:
        logits, labels = logits[None], labels[None]
    if logits.dim() != 3 or labels.shape != logits.shape[:-1]:
        raise ValueError(f"expected logits [B, T, C] and labels [B, T], got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    if shift:
        labels = torch.nn.functional.pad(labels, (0, 1), value=ignore_index)[..., 1:]
    with torch.no_grad():
        x, t = _flatten(logits.detach(), labels.to(logits.device), -1)
        valid, safe, _ = target_weights(t, ignore_index, None, _acc_dtype(x))
        u = (x.gather(1, safe[:, None])[:, 0].to(_acc_dtype(x)) - row_logsumexp(x)).exp() * valid
        if per == "batch":
            n = valid.sum()
            return (u.sum() / n)[None] if n > 0 else u.new_empty(0)
        n = valid.reshape(labels.shape).sum(dim=1)
        return u.reshape(labels.shape).sum(dim=1)[n > 0] / n[n > 0]


def epoch_dynamic_gamma(confidences: torch.Tensor | Sequence[float | torch.Tensor], k: float = 1.0) -> float:
    """ForTIFAI's dynamic TCE threshold from the mean confidences of a fixed clip set's batches (a tensor, or a list
    of floats or tensors, e.g. :func:`target_confidence` of each clip batch): :meth:`GammaDynamic.of_means
    <collapselab.losses.ulosses.GammaDynamic.of_means>`, ``mean + k * std`` (population), in float64.

    ForTIFAI (``plt_model.on_train_epoch_start``) recomputes it once per epoch with ``k`` = their ``alpha`` and
    trains the epoch with ``p > gamma`` clipped; call it once per epoch and pass ``gamma=min(g, 1.0)`` to TCE (a value
    >= 1 keeps every target, as in their code; <= 0 would keep none); :class:`~collapselab.losses.training.AppliedLoss`
    does this for a training loop. Deliberate difference: their "dynamic" loss also multiplies the clipped CE by
    ``alpha`` (= ``k``); ours does not.
    """
    if isinstance(confidences, torch.Tensor):
        c = confidences.detach().to("cpu", torch.float64).reshape(-1)
    else:
        parts = [torch.as_tensor(v).detach().to("cpu", torch.float64).reshape(-1) for v in confidences]
        c = torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64)
    if c.numel() == 0:
        raise ValueError("epoch_dynamic_gamma: no confidences given")
    return float(U.GammaDynamic(dynamic=float(k)).of_means(c))


class _NCERCEFunction(torch.autograd.Function):
    """NCE+RCE with its exact gradient ``p (C c2 - c1) + onehot c1 - c2`` per row, where
    ``c1 = alpha/S + beta A u`` and ``c2 = alpha log u / S^2`` (``S = sum_k log p_k``), streamed like the u-losses."""

    @staticmethod
    def forward(ctx, x, target, weight, alpha, beta, A, ignore_index, reduction):
        m, c = x.shape
        valid, safe, cw = target_weights(target, ignore_index, weight, _acc_dtype(x))
        xd = x.detach()
        lse = row_logsumexp(xd)
        acc = lse.dtype
        step = _chunk_rows(xd)
        row_sum = torch.cat([xd[i:i + step].to(acc).sum(dim=1) for i in range(0, m, step)]) if m else lse
        total = row_sum - c * lse  # S = sum_k log p_k (< 0)
        log_u = xd.gather(1, safe[:, None])[:, 0].to(acc) - lse
        u = log_u.exp()
        per = alpha * log_u / total - beta * A * (1 - u)
        if reduction == "mean":
            cw = cw * mean_scale(cw.sum())
        loss = per * cw if reduction == "none" else (per * cw).sum()
        c1 = alpha / total + beta * A * u
        c2 = alpha * log_u / total**2
        ctx.save_for_backward(x, safe, lse, cw * (c * c2 - c1), cw * c1, -cw * c2)
        ctx.none = reduction == "none"
        return loss  # in the accumulation dtype (float32 for half logits), as the u-losses

    @staticmethod
    def backward(ctx, grad_output):
        x, safe, lse, a, b, shift = ctx.saved_tensors
        up = grad_output.to(a.dtype)
        grad = write_gradient(x.detach(), lse, a * up, safe, torch.empty_like(x), shift=shift * up,
                              target_coef=b * up)
        return grad, None, None, None, None, None, None, None


def nce_rce_loss(input, target, alpha: float = 1.0, beta: float = 1.0, A: float = -4.0, weight=None,
                 ignore_index: int = -100, reduction: Reduction = "mean", class_dim: int = 1) -> torch.Tensor:
    """NCE+RCE (Ma et al. 2020): ``alpha log u / sum_k log p_k - beta A (1 - u)``.

    Not a u-loss: the normalized CE depends on every class probability, so its gradient is not ``w(u)``
    times CE's; it is written out exactly (``sum_k log p_k = sum_k z_k - C lse``) and streamed in chunks.
    Default ``A = -4`` (SCE paper's value). The Active-Passive-Losses code (Ma et al.'s ``NCEandRCE``) clamps
    the one-hot label at 1e-4 and takes the natural log, i.e. ``A = log(1e-4) ~ -9.21`` (it also clamps the
    softmax at 1e-7); pass ``A=math.log(1e-4)`` to match it. Its CIFAR-10 configs use ``alpha = beta = 1``.
    """
    _check(reduction, "backward")
    x, t = _flatten(input, target, class_dim)
    loss = _NCERCEFunction.apply(x, t, weight, float(alpha), float(beta), float(A), ignore_index, reduction)
    return loss.reshape(target.shape) if reduction == "none" else loss
