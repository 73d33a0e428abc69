"""Memory-lean fused linear projection + u-loss (the idea of Liger Kernel's fused linear cross entropy and
Apple's Cut Cross-Entropy, in plain torch).

``linear_cross_entropy(hidden, weight, target)`` equals ``loss(hidden @ weight.T + bias, target)`` but never
holds the ``[N, V]`` logits: rows are processed in chunks; for each chunk the logits are formed, turned into
the loss and into their gradient ``w(u) (softmax - onehot)``, and immediately contracted into the gradients
of ``hidden`` (``g @ W``) and ``weight`` (``g^T @ h``). With ``reduction`` ``mean``/``sum`` this happens in the
forward pass (three matrix products in all, as the unfused path); with ``none`` the chunks are recomputed in
the backward pass. Peak extra memory is one chunk of logits plus the gradient of ``weight``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from collapselab.losses.functional import (
    Reduction,
    _acc_dtype,
    _check,
    make_weigh,
    mean_scale,
    row_logsumexp,
    target_weights,
    write_gradient,
)

#: logits elements per chunk (256 MB in float32): matrix products of this size run at full speed on CPU,
#: while smaller chunks (e.g. Liger's ``N / ceil(V / H)`` rows) lose throughput (README, benchmarks).
CHUNK_LOGITS = 1 << 26


def default_chunk_rows(n: int, vocab: int) -> int:
    """Rows per chunk: a power of two with about ``CHUNK_LOGITS`` logits, at most ``n``."""
    rows = 1 << max(0, math.floor(math.log2(max(1, CHUNK_LOGITS // max(1, vocab)))))
    return max(1, min(n, rows))


class _LinearULoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, b, target, class_weight, weigh, ignore_index, reduction, chunk):
        m = h.shape[0]
        acc = _acc_dtype(h)
        valid, safe, cw = target_weights(target, ignore_index, class_weight, acc)
        needs_grad = ctx.needs_input_grad[0] or ctx.needs_input_grad[1] or ctx.needs_input_grad[2]
        eager = reduction != "none" and needs_grad
        log_u = torch.empty(m, dtype=acc, device=h.device)
        lse = torch.empty(m, dtype=acc, device=h.device)
        per_w = torch.empty(m, dtype=acc, device=h.device)
        per_l = torch.empty(m, dtype=acc, device=h.device)
        kept_sum = None
        two_pass = getattr(weigh, "needs_all_targets", False)
        gh = torch.zeros_like(h) if eager else None
        gw = torch.zeros_like(w) if eager else None
        gb = torch.zeros_like(b) if (eager and b is not None) else None

        def logits(i, j):
            z = h[i:j] @ w.T
            return z if b is None else z + b

        def contract(i, j, z, coef):
            g = write_gradient(z, lse[i:j], coef, safe[i:j], z)  # in place over the chunk's logits
            gh[i:j] = g @ w
            gw.addmm_(g.T, h[i:j])
            if gb is not None:
                gb.add_(g.sum(dim=0))

        for phase in ((0, 1) if two_pass else (None,)):
            for i in range(0, m, chunk):
                j = min(i + chunk, m)
                z = logits(i, j)
                if phase != 1:
                    lse[i:j] = row_logsumexp(z)  # in sub-chunks: no second chunk-sized temporary
                    log_u[i:j] = z.gather(1, safe[i:j, None])[:, 0].to(acc) - lse[i:j]
                if phase == 0:
                    continue
                if phase is None:  # one pass: weigh this chunk now
                    l_c, w_c, k_c = weigh(log_u[i:j], valid[i:j])
                    per_l[i:j], per_w[i:j] = l_c, w_c
                    if k_c is not None:
                        kept_sum = (kept_sum or 0) + (cw[i:j] * k_c).sum()
                if eager:
                    contract(i, j, z, per_w[i:j] * cw[i:j])
                del z  # free this chunk's logits before the next chunk is made (else two are alive)
            if phase == 0:  # the weighing needs every target (dynamic gamma)
                l_all, w_all, k_all = weigh(log_u, valid)
                per_l.copy_(l_all)
                per_w.copy_(w_all)
                if k_all is not None:
                    kept_sum = (cw * k_all).sum()
        loss_rows = per_l * cw
        if reduction == "none":
            loss, scale = loss_rows, None
        elif reduction == "sum":
            loss, scale = loss_rows.sum(), torch.ones((), dtype=acc, device=h.device)
        else:
            denom = kept_sum if kept_sum is not None else cw.sum()
            scale = mean_scale(denom)
            loss = loss_rows.sum() * scale
        if eager:
            s = float(scale)  # a Python scalar multiplies half tensors in float32 (1/n is not rounded to half)
            grads = (gh.mul_(s), gw.mul_(s), None if gb is None else gb.mul_(s))
            ctx.save_for_backward(*[g for g in grads if g is not None])
            ctx.has_bias = gb is not None
        else:
            ctx.save_for_backward(h, w, b if b is not None else torch.empty(0), safe, lse, per_w * cw)
            ctx.has_bias = b is not None
        ctx.eager, ctx.chunk = eager, chunk
        return loss  # float32 for half inputs (as transformers' losses): the mean is not rounded to half

    @staticmethod
    def backward(ctx, grad_output):
        if ctx.eager:
            saved = ctx.saved_tensors
            gh, gw = saved[0], saved[1]
            gb = saved[2] if ctx.has_bias else None
            if not bool((grad_output == 1).all()):
                up = float(grad_output) if grad_output.dim() == 0 else grad_output.to(gh.dtype)
                gh, gw = gh * up, gw * up
                gb = None if gb is None else gb * up
            return gh, gw, gb, None, None, None, None, None, None
        h, w, b, safe, lse, coef = ctx.saved_tensors
        b = b if ctx.has_bias else None
        gh, gw = torch.zeros_like(h), torch.zeros_like(w)
        gb = torch.zeros_like(b) if b is not None else None
        up = grad_output.to(coef.dtype).expand_as(coef) if grad_output.dim() == 0 else grad_output.to(coef.dtype)
        for i in range(0, h.shape[0], ctx.chunk):
            j = min(i + ctx.chunk, h.shape[0])
            z = h[i:j] @ w.T
            if b is not None:
                z = z + b
            g = write_gradient(z, lse[i:j], coef[i:j] * up[i:j], safe[i:j], z)
            gh[i:j] = g @ w
            gw.addmm_(g.T, h[i:j])
            if gb is not None:
                gb.add_(g.sum(dim=0))
            del z, g
        return gh, gw, gb, None, None, None, None, None, None


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, target: torch.Tensor, loss: str = "ce",
                         bias: torch.Tensor | None = None, class_weight: torch.Tensor | None = None,
                         ignore_index: int = -100, reduction: Reduction = "mean", chunk_size: int | None = None,
                         **params: Any) -> torch.Tensor:
    """``loss(hidden @ weight.T + bias, target)`` without materializing the logits.

    ``hidden [..., H]``, ``weight [V, H]`` (an ``nn.Linear``/LM-head weight), ``target [...]`` class indices
    (``ignore_index`` skipped). ``loss`` is any u-loss name (``ce``, ``tce``, ``focal``, ...) with its
    ``params`` (e.g. ``gamma=0.9``; TCE also ``normalize``, ``k``). ``chunk_size``: rows per chunk (default:
    a power of two with about 64M logits, i.e. 256 MB in float32).
    """
    _check(reduction, "backward")
    if hidden.shape[-1] != weight.shape[-1]:
        raise ValueError(f"hidden size {hidden.shape[-1]} does not match weight {tuple(weight.shape)}")
    if target.shape != hidden.shape[:-1]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match hidden {tuple(hidden.shape)}")
    h = hidden.reshape(-1, hidden.shape[-1])
    t = target.reshape(-1)
    weigh = make_weigh(loss, tuple(target.shape), **params)
    chunk = chunk_size or default_chunk_rows(h.shape[0], weight.shape[0])
    if chunk < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    out = _LinearULoss.apply(h, weight, bias, t, class_weight, weigh, ignore_index, reduction, chunk)
    return out.reshape(target.shape) if reduction == "none" else out
