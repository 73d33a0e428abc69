"""The causal-LM operations the ``causal_lm`` family is made of: packing, training, scoring, generation.

- **Packing** (:func:`pack`): a chain's windows are concatenated in order into one token stream (with their
  per-token curation weights) and cut into blocks of ``block_size`` tokens (the tail is dropped, as in
  transformers' ``group_texts``).
- **Training** (:func:`train`): AdamW over the blocks in a seeded random order, ``epochs`` passes or ``steps``
  optimizer steps; every epoch cuts the stream into blocks at a new random offset (below), gradient accumulation, the
  u-loss applied per token through :mod:`collapselab.losses` (labels shifted like transformers' ``ForCausalLMLoss``:
  the logits are never sliced), run under Hugging Face Accelerate: ``accelerate launch`` spreads it over several
  GPUs, bf16 where the device supports it.
- **Scoring** (:func:`token_logprobs`): the log-probability of every token of a stream; each block is
  scored after an ``eos`` token, so every token (also a block's first) is predicted.
- **Generation** (:func:`rewrite`, :func:`free_run`): ForTIFAI's rewrite protocol and free-running sampling,
  batched with the KV cache, left padding and attention masks.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from collapselab.decoding import Decoding
from collapselab.losses.training import AppliedLoss

#: tokens per inference forward pass (rows x length): keeps the logits of a 49k-vocabulary model < 1 GB.
SCORE_TOKENS = 8192


def pack(x: np.ndarray, weight: np.ndarray | None, block: int) -> tuple[np.ndarray, np.ndarray | None]:
    """One chain's windows ``x [n, W]`` (weights ``[n]``) as blocks ``[B, block]`` (and per-token weights)."""
    stream = x.reshape(-1)
    b = len(stream) // block
    blocks = stream[: b * block].reshape(b, block)
    if weight is None:
        return blocks, None
    w = np.repeat(np.asarray(weight, dtype=np.float32), x.shape[1])[: b * block].reshape(b, block)
    return blocks, w


def _progress(label: str, done: int, total: int, t0: float, unit: str, every: float = 10.0,
              state: dict | None = None) -> None:
    """Print ``label: done/total``, the elapsed time, the rate (per second, or seconds per item when slower than
    one a second) and an ETA to stderr, at most every ``every`` seconds (long stages show life)."""
    if state is None or total <= 0:
        return
    now = time.monotonic()
    if now - state.get("last", t0) >= every or done == total and now - t0 >= every:
        state["last"] = now
        print(f"  {label}: {progress_line(done, total, now - t0, unit)}", file=sys.stderr, flush=True)


def progress_line(done: int, total: int, elapsed: float, unit: str) -> str:
    """``154/444 steps, 2m05s, 1.2 s/step, ETA 5m52s``: a rate that reads for slow steps, and what is left."""
    rate = done / max(elapsed, 1e-9)
    singular = unit[:-1] if unit.endswith("s") else unit
    pace = f"{rate:,.1f} {unit}/s" if rate >= 1 else (f"{1 / rate:,.1f} s/{singular}" if rate > 0 else "starting")
    left = f", ETA {_clock((total - done) / rate)}" if 0 < done < total else ""
    return f"{done}/{total} {unit}, {_clock(elapsed)}, {pace}{left}"


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def resolve_precision(precision: str, device: Any) -> str:
    """The mixed precision ``precision`` means on ``device``: ``auto`` is bf16 autocast on a CUDA device that
    supports it (the losses accumulate in float32 all the same), else ``no`` (float32)."""
    import torch

    if precision != "auto":
        return precision
    return "bf16" if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported() else "no"


def accelerator(precision: str = "auto", device: Any = None) -> Any:
    """An Accelerate ``Accelerator`` on ``device`` (default: CUDA when there is one) in :func:`resolve_precision`."""
    import torch
    from accelerate import Accelerator

    dev = torch.device(device if device is not None else "cuda" if torch.cuda.is_available() else "cpu")
    return Accelerator(mixed_precision=resolve_precision(precision, dev), cpu=dev.type != "cuda")


def epoch_blocks(stream: np.ndarray, block: int, epoch_rng: np.random.Generator | None) -> tuple[int, int]:
    """``(offset, blocks)``: where an epoch's cut of ``stream`` into blocks of ``block`` tokens starts, and how
    many blocks it takes. The count is the same for every epoch (one less than fit without shifting, so that
    every offset has room); the offset is drawn from ``epoch_rng`` (``None``: 0, every whole block).

    Cutting each epoch at a new offset keeps a model that sees a small set for several epochs from memorising
    tokens by their position in a fixed block (measured: a 2 x 128 model trained 200 steps on 20 fixed blocks
    reached NLL 2.4 on them but 5.8 on the same text shifted by one position)."""
    T = len(stream)
    n = (T - block + 1) // block if epoch_rng is not None and 2 * block - 1 <= T else T // block
    slack = T - n * block
    offset = int(epoch_rng.integers(0, slack + 1)) if epoch_rng is not None and slack > 0 else 0
    return offset, n


def train(model: Any, blocks: np.ndarray, weights: np.ndarray | None, loss: AppliedLoss | None, *, epochs: int,
          steps: int | None, lr: float, batch: int, grad_accum: int, weight_decay: float, warmup: float,
          generator: Any, precision: str = "auto", label: str = "train",
          clip: Callable[[Any], Any] | None = None, block: int | None = None,
          shift_rng: np.random.Generator | None = None, device: Any = None) -> dict[str, Any]:
    """Train ``model`` in place under ``loss`` (the arm's loss as applied in this fit; ``None``: cross entropy) on
    ``blocks [B, L]`` or, with ``block``, on a token stream ``blocks [T]`` cut into blocks of ``block`` tokens at a
    new offset drawn from ``shift_rng`` every epoch (:func:`epoch_blocks`).

    ``weights`` (the shape of ``blocks``) are per-token curation weights (0 drops a token). The learning rate
    warms up linearly over the first ``warmup`` share of the steps and decays linearly to 0. Every epoch starts with
    :meth:`AppliedLoss.start_epoch`, given ``clip(model)``, the confidences of the family's clip set under the
    current model (scored only when the loss follows the model). Returns ``{"steps", "tokens", "loss", "record"}``:
    the last epoch's mean training loss and the loss's :class:`~collapselab.losses.training.LossRecord`.
    """
    import torch

    from collapselab.losses.hf import shift_labels

    acc = accelerator(precision, device)
    if block is None:
        stream, block = np.asarray(blocks).reshape(-1), int(np.asarray(blocks).shape[-1])
        shift_rng = None
    else:
        stream = np.asarray(blocks).reshape(-1)
    w_stream = None if weights is None else np.asarray(weights, dtype=np.float32).reshape(-1)
    _, n = epoch_blocks(stream, block, shift_rng)
    if n == 0:
        raise ValueError("no complete training block: the training set holds fewer tokens than block_size")
    per_epoch = max(1, math.ceil(n / (batch * grad_accum)))
    total = steps if steps is not None else epochs * per_epoch
    n_epochs = math.ceil(total / per_epoch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    warm = max(1, int(warmup * total)) if warmup > 0 else 0

    def schedule(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        return max(0.0, (total - step) / max(1, total - warm))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    model, opt = acc.prepare(model, opt)
    model.train()
    applied = loss if loss is not None else AppliedLoss(None)
    step, tokens, t0, shown = 0, 0, time.monotonic(), {"last": time.monotonic()}
    last_loss = float("nan")
    for _ in range(n_epochs):
        if applied.adaptive and clip is not None:
            applied.start_epoch(lambda: clip(model))
            model.train()
        else:
            applied.start_epoch()
        offset, _ = epoch_blocks(stream, block, shift_rng)
        cut = slice(offset, offset + n * block)
        ids_all = torch.from_numpy(np.ascontiguousarray(stream[cut], dtype=np.int64).reshape(n, block))
        w_all = None if w_stream is None else torch.from_numpy(np.ascontiguousarray(w_stream[cut]).reshape(n, block))
        order = torch.randperm(n, generator=generator)
        sums = [0.0, 0]
        for first in range(0, n, batch * grad_accum):
            if step >= total:
                break
            group = order[first:first + batch * grad_accum]
            micro = [group[i:i + batch] for i in range(0, len(group), batch)]
            labels_g = [shift_labels(ids_all[m]) for m in micro]
            if w_all is not None:
                wts = [shift_labels(w_all[m], 0) for m in micro]
                items = sum(float(((lab != -100) * w).sum()) for lab, w in zip(labels_g, wts, strict=True))
            else:
                wts = [None] * len(micro)
                items = sum(int((lab != -100).sum()) for lab in labels_g)
            if items <= 0:
                continue
            for m, lab, w in zip(micro, labels_g, wts, strict=True):
                ids = ids_all[m].to(acc.device)
                lab = lab.to(acc.device)
                with acc.autocast():
                    logits = model(input_ids=ids).logits
                if applied.is_ce and w is None:
                    per_sum = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), lab.flatten(),
                                                                reduction="sum")
                else:
                    per = (applied.targets(logits, lab, class_dim=-1) if not applied.is_ce
                           else torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), lab.flatten(),
                                                                  reduction="none").view_as(lab))
                    per_sum = (per * w.to(per.device)).sum() if w is not None else per.sum()
                part = per_sum.float() / items
                acc.backward(part)
                sums[0] += float(part.detach()) * items
                tokens += int(ids.numel())
            sums[1] += items
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            _progress(label, step, total, t0, "steps", state=shown)
        last_loss = sums[0] / max(sums[1], 1)
    model.eval()
    acc.free_memory()
    return {"steps": float(step), "tokens": float(tokens), "loss": last_loss, "record": applied.record()}


def token_logprobs(model: Any, stream: np.ndarray, block: int, bos: int, device: Any) -> np.ndarray:
    """``log p`` of every token of ``stream [T]`` (float64 ``[T]``), scored in blocks of ``block`` after ``bos``."""
    import torch

    T = len(stream)
    out = np.empty(T, dtype=np.float64)
    starts = list(range(0, T, block))
    rows = max(1, SCORE_TOKENS // (block + 1))
    model.eval()
    with torch.inference_mode():
        for i in range(0, len(starts), rows):
            chunk = starts[i:i + rows]
            length = min(block, T - chunk[0])
            lens = [min(block, T - s) for s in chunk]
            ids = np.full((len(chunk), length + 1), bos, dtype=np.int64)
            mask = np.zeros((len(chunk), length + 1), dtype=np.int64)
            for r, (s, ln) in enumerate(zip(chunk, lens, strict=True)):
                ids[r, 1:1 + ln] = stream[s:s + ln]
                mask[r, :1 + ln] = 1
            t_ids = torch.from_numpy(ids).to(device)
            logits = model(input_ids=t_ids, attention_mask=torch.from_numpy(mask).to(device)).logits.float()
            lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, t_ids[:, 1:, None])[..., 0].cpu().numpy()
            for r, (s, ln) in enumerate(zip(chunk, lens, strict=True)):
                out[s:s + ln] = lp[r, :ln]
    return out


def continuation_logprobs(model: Any, contexts: list[np.ndarray], continuations: list[np.ndarray], pad: int,
                          device: Any, tokens: int = 2048) -> np.ndarray:
    """Summed ``log p`` of each continuation given its context.

    Pairs are scored in order of length (right-padded batches of about ``tokens`` tokens, attention masks), and
    the output layer is applied only at the continuations' positions: for a small model with a large vocabulary
    the output layer is most of the cost of a forward pass.
    """
    import torch

    out = np.empty(len(contexts), dtype=np.float64)
    lens = np.array([len(a) + len(b) for a, b in zip(contexts, continuations, strict=True)])
    order = np.argsort(lens, kind="stable")
    head = model.get_output_embeddings()
    model.eval()
    with torch.inference_mode():
        i = 0
        while i < len(order):
            m = 1  # as many of the next pairs (ascending length) as fit in the token budget
            while i + m < len(order) and (m + 1) * lens[order[i + m]] <= tokens:
                m += 1
            rows = order[i:i + m]
            L = int(lens[rows].max())
            ids = np.full((len(rows), L), pad, dtype=np.int64)
            mask = np.zeros((len(rows), L), dtype=np.int64)
            where_r, where_t, targets = [], [], []
            for r, k in enumerate(rows):
                a, b = contexts[k], continuations[k]
                ids[r, :len(a) + len(b)] = np.concatenate([a, b])
                mask[r, :len(a) + len(b)] = 1
                where_r += [r] * len(b)
                where_t += range(len(a) - 1, len(a) + len(b) - 1)
                targets += list(b)
            t_ids = torch.from_numpy(ids).to(device)
            t_mask = torch.from_numpy(mask).to(device)
            sel = (torch.as_tensor(where_r, device=device), torch.as_tensor(where_t, device=device))
            if head is not None:  # hidden states, then the output layer at the scored positions only
                hidden = model.base_model(input_ids=t_ids, attention_mask=t_mask).last_hidden_state
                logits = head(hidden[sel]).float()
            else:
                logits = model(input_ids=t_ids, attention_mask=t_mask).logits[sel].float()
            tgt = torch.as_tensor(targets, device=device, dtype=torch.int64)
            lp = (logits.gather(-1, tgt[:, None])[:, 0] - torch.logsumexp(logits, dim=-1)).double().cpu().numpy()
            sums = np.bincount(np.asarray(where_r, dtype=np.int64), weights=lp, minlength=len(rows))
            out[rows] = sums
            i += len(rows)
    return out


def generate_after(model: Any, prompts: list[np.ndarray], new: int, decoding: Decoding, pad: int, eos: int,
                   device: Any, batch: int, label: str) -> np.ndarray:
    """``new`` tokens after each prompt (left-padded batches, KV cache), ``[len(prompts), new]`` int64."""
    import torch

    out = np.empty((len(prompts), new), dtype=np.int64)
    model.eval()
    t0, shown = time.monotonic(), {"last": time.monotonic()}
    for i in range(0, len(prompts), batch):
        part = prompts[i:i + batch]
        L = max(len(p) for p in part)
        ids = np.full((len(part), L), pad, dtype=np.int64)
        mask = np.zeros((len(part), L), dtype=np.int64)
        for r, p in enumerate(part):
            ids[r, L - len(p):] = p
            mask[r, L - len(p):] = 1
        with torch.inference_mode():
            gen = model.generate(input_ids=torch.from_numpy(ids).to(device),
                                 attention_mask=torch.from_numpy(mask).to(device),
                                 max_new_tokens=new, min_new_tokens=new, pad_token_id=pad, eos_token_id=eos,
                                 **decoding.kwargs())
        out[i:i + len(part)] = gen[:, L:L + new].cpu().numpy()
        _progress(label, i + len(part), len(prompts), t0, "windows", state=shown)
    return out


def rewrite(model: Any, x: np.ndarray, context: int, decoding: Decoding, bos: int, pad: int, eos: int,
            device: Any, batch: int) -> np.ndarray:
    """ForTIFAI's rewrite of one chain's windows ``x [n, W]``: window i is regenerated (W new tokens) from the
    ``context`` tokens before it in the chain's stream (the first windows see what there is, after ``bos``)."""
    n, W = x.shape
    stream = x.reshape(-1)
    prompts = [np.concatenate([[bos], stream[max(0, i * W - context):i * W]]) if i * W < context
               else stream[i * W - context:i * W] for i in range(n)]
    return generate_after(model, prompts, W, decoding, pad, eos, device, batch, "rewrite")


def free_run(model: Any, n: int, W: int, length: int, decoding: Decoding, bos: int, pad: int, eos: int,
             device: Any, batch: int) -> np.ndarray:
    """``n`` windows of ``W`` tokens cut from free-running sequences of ``length`` tokens started at ``bos``."""
    per = max(1, length // W)
    k = math.ceil(n / per)
    seqs = generate_after(model, [np.array([bos])] * k, per * W, decoding, pad, eos, device, batch, "sample")
    return seqs.reshape(-1, W)[:n]
