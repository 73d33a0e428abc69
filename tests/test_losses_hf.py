"""The Hugging Face adapter (losses/hf.py): parity with transformers' ``ForCausalLMLoss`` in float32, bfloat16 and
float16, float32 losses for half logits, ForTIFAI's per-epoch dynamic gamma, argument checks and reference
forms; and a Trainer run on a tiny randomly initialised GPT-2 (nothing is downloaded)."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments
from transformers.loss.loss_utils import ForCausalLMLoss

from collapselab.losses import functional as LF
from collapselab.losses import modules as LM
from collapselab.losses.hf import causal_lm_loss, shift_labels

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
# (name, params) pairs that equal cross entropy
CE_LIKE = [("ce", {}), ("tce", {"gamma": 1.0})]


def _batch(seed: int = 0, b: int = 3, t: int = 17, v: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    logits = torch.randn(b, t, v) * 3
    labels = torch.randint(0, v, (b, t))
    labels[0, -4:] = -100  # right padding
    labels[2, :2] = -100  # a masked prompt
    return logits, labels


def _tols(dtype: torch.dtype) -> dict[str, float]:
    """Gradient tolerances: float32 to 1e-5 relative; half gradients are one rounding of the same float32 value
    (one ulp = eps relative, plus one float16 subnormal step absolute)."""
    if dtype == torch.float32:
        return {"rtol": 1e-5, "atol": 1e-7}
    return {"rtol": torch.finfo(dtype).eps, "atol": 1e-7}


def _both(fn, logits: torch.Tensor, dtype: torch.dtype, **kwargs):
    ours_x = logits.to(dtype).requires_grad_()
    ref_x = logits.to(dtype).requires_grad_()
    ours = fn(ours_x, **kwargs)
    ref = ForCausalLMLoss(ref_x, vocab_size=logits.shape[-1], **kwargs)
    return ours, ref, torch.autograd.grad(ours, ours_x)[0], torch.autograd.grad(ref, ref_x)[0]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, params", CE_LIKE)
@pytest.mark.parametrize("n_items", [None, 41, 3001])
def test_loss_and_gradient_equal_for_causal_lm_loss(dtype, name, params, n_items):
    """Loss (float32, 1e-6) and gradient w.r.t. the logits (in their dtype) equal ForCausalLMLoss's, with and
    without num_items_in_batch (41, 3001: not powers of two, so 1/n is not exact in half precision)."""
    logits, labels = _batch()
    n = None if n_items is None else torch.tensor(n_items)
    ours, ref, g_ours, g_ref = _both(causal_lm_loss(name, **params), logits, dtype, labels=labels,
                                     num_items_in_batch=n)
    assert ours.dtype == ref.dtype == torch.float32
    assert g_ours.dtype == g_ref.dtype == dtype
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_ours, g_ref, **_tols(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_shift_labels_are_used_as_given_and_labels_not_shifted_again(dtype):
    logits, labels = _batch(seed=1)
    shifted = shift_labels(labels).contiguous()  # ForCausalLMLoss views it
    shifted[1, 3] = -100  # differs from shift(labels): proves which labels were used
    fn = causal_lm_loss("tce", gamma=1.0)
    for lab in (None, labels, torch.zeros_like(labels)):  # labels are ignored when shift_labels is given
        ours, ref, g_ours, g_ref = _both(fn, logits, dtype, labels=lab, shift_labels=shifted,
                                         num_items_in_batch=torch.tensor(40))
        torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(g_ours, g_ref, **_tols(dtype))
    x = logits.to(dtype)
    flat = fn(x, None, shift_labels=shifted.reshape(-1))  # ForCausalLMLoss flattens; so may the caller
    torch.testing.assert_close(flat, fn(x, None, shift_labels=shifted))
    assert not torch.allclose(fn(x, labels), flat)
    with pytest.raises(ValueError, match="labels or shift_labels"):
        fn(x, None)
    with pytest.raises(ValueError, match="shift_labels shape"):
        fn(x, None, shift_labels=shifted[:, :-1])
    # per-call ignore_index, as ForCausalLMLoss
    other = torch.where(shifted == -100, -1, shifted)
    torch.testing.assert_close(fn(x, None, shift_labels=other, ignore_index=-1), fn(x, None, shift_labels=shifted))


@pytest.mark.parametrize("name, params", CE_LIKE)
def test_float16_sum_of_8192_tokens_does_not_overflow(name, params):
    """The float16 sum of 8,192 token losses (~1e5 > 65504) used to overflow to inf before the division."""
    torch.manual_seed(2)
    v = 512
    logits = torch.randn(1, 8193, v) * 4
    labels = torch.randint(0, v, (1, 8193))
    n = torch.tensor(8192)
    ours, ref, g_ours, g_ref = _both(causal_lm_loss(name, **params), logits, torch.float16, labels=labels,
                                     num_items_in_batch=n)
    assert torch.isfinite(ours) and ours.item() * 8192 > torch.finfo(torch.float16).max
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(g_ours, g_ref, **_tols(torch.float16))


FUNCTIONAL = [(LF.cross_entropy, {}), (LF.truncated_cross_entropy, {"gamma": 0.3}), (LF.focal_loss, {}),
              (LF.linear_weighted_loss, {"beta": 0.8}), (LF.poly1_loss, {}), (LF.gce_loss, {}), (LF.sce_loss, {}),
              (LF.agce_loss, {}), (LF.ael_loss, {}), (LF.vce_loss, {}), (LF.nce_rce_loss, {})]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("fn, params", FUNCTIONAL)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_functional_losses_return_float32_for_half_logits(dtype, fn, params, reduction):
    """The loss equals the float32 loss of the same (rounded) logits to 1e-6; the gradient has the logits' dtype
    and equals the float32 gradient rounded once (eps relative)."""
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(2, 9, 30, generator=g) * 3).to(dtype)
    t = torch.randint(0, 30, (2, 9), generator=g)
    t[0, 0] = -100
    xh, x32 = x.clone().requires_grad_(), x.float().requires_grad_()
    out = fn(xh, t, class_dim=-1, reduction=reduction, **params)
    ref = fn(x32, t, class_dim=-1, reduction=reduction, **params)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
    up = torch.rand(ref.shape, generator=g) / 3001 if reduction == "none" else torch.tensor(1 / 3001)
    (gh,) = torch.autograd.grad(out, xh, up)
    (g32,) = torch.autograd.grad(ref, x32, up)
    assert gh.dtype == dtype
    torch.testing.assert_close(gh, g32.to(dtype), rtol=torch.finfo(dtype).eps, atol=1e-7)


@pytest.mark.parametrize("mode", ["forward", "inplace"])
def test_eager_gradient_modes_scale_half_gradients_by_the_unrounded_factor(mode):
    """The gradient kept from the forward pass (bf16) is scaled by the float32 upstream factor (e.g.
    1/num_items_in_batch) itself, not by its bf16 rounding: exactly ``bf16(G * float32(1/3001))``."""
    g = torch.Generator().manual_seed(4)
    x = (torch.randn(40, 50, generator=g) * 3).bfloat16()
    t = torch.randint(0, 50, (40,), generator=g)

    def grad(scale: float) -> torch.Tensor:
        xe = x.clone().requires_grad_()
        loss = LF.cross_entropy(xe if mode == "forward" else xe * 1, t, reduction="sum", gradient=mode)
        return torch.autograd.grad(loss / scale if scale != 1 else loss, xe)[0]

    unscaled, scaled = grad(1), grad(3001)
    assert scaled.dtype == torch.bfloat16
    assert torch.equal(scaled, (unscaled.float() * torch.tensor(1 / 3001)).bfloat16())


# -- ForTIFAI's per-epoch dynamic gamma --------------------------------------------------------------------
def _np_correct_prob(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """ForTIFAI's ``get_probability_of_correct_class``, in numpy float64: [B, T-1]."""
    z = logits[:, :-1].astype(np.float64)
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    return np.exp(np.take_along_axis(logp, labels[:, 1:, None], -1)[..., 0])


def test_epoch_dynamic_gamma_matches_fortifai_numpy():
    torch.manual_seed(5)
    clip = [(torch.randn(4, 12, 50) * 2, torch.randint(0, 50, (4, 12))) for _ in range(5)]
    k = 0.7
    # ForTIFAI's unit: prob.mean() of each clip batch; gamma = np.mean + alpha * np.std (population)
    per_batch = np.array([_np_correct_prob(z.numpy(), y.numpy()).mean() for z, y in clip])
    want = per_batch.mean() + k * per_batch.std()
    got = [LF.target_confidence(z, y, per="batch") for z, y in clip]
    np.testing.assert_allclose(torch.cat(got).numpy(), per_batch, rtol=1e-5)
    assert LF.epoch_dynamic_gamma(got, k) == pytest.approx(want, rel=1e-5)
    # per sequence
    per_seq = np.concatenate([_np_correct_prob(z.numpy(), y.numpy()).mean(1) for z, y in clip])
    seq = torch.cat([LF.target_confidence(z, y) for z, y in clip])
    np.testing.assert_allclose(seq.numpy(), per_seq, rtol=1e-5)
    assert LF.epoch_dynamic_gamma(seq, k) == pytest.approx(per_seq.mean() + k * per_seq.std(), rel=1e-5)
    assert LF.epoch_dynamic_gamma(per_seq.tolist(), k) == pytest.approx(per_seq.mean() + k * per_seq.std())
    with pytest.raises(ValueError, match="no confidences"):
        LF.epoch_dynamic_gamma([])


def test_target_confidence_skips_ignored_targets_and_matches_the_per_batch_rule():
    torch.manual_seed(6)
    z, y = torch.randn(5, 10, 20) * 2, torch.randint(0, 20, (5, 10))
    y[1, 4:] = -100
    y[3, 1:] = -100  # nothing to predict in sequence 3 (its only label is the first, never predicted)
    conf = LF.target_confidence(z, y)
    assert conf.shape == (4,) and conf.dtype == torch.float32
    p = _np_correct_prob(z.numpy(), y.clamp_min(0).numpy())
    valid = (y[:, 1:] != -100).numpy()
    want = [p[i][valid[i]].mean() for i in range(5) if valid[i].any()]
    np.testing.assert_allclose(conf.numpy(), want, rtol=1e-5)
    aligned = LF.target_confidence(z[:, :-1], shift_labels(y)[:, :-1], shift=False)
    torch.testing.assert_close(aligned, conf)
    # the per-batch rule of gamma="batch_dynamic" is the epoch rule with the current batch as the clip set
    t = shift_labels(y)
    per_batch = LF.truncated_cross_entropy(z, t, gamma="batch_dynamic", k=0.5, class_dim=-1)
    at_epoch_rule = LF.truncated_cross_entropy(z, t, gamma=min(LF.epoch_dynamic_gamma(conf, 0.5), 1.0),
                                               class_dim=-1)
    torch.testing.assert_close(per_batch, at_epoch_rule)
    # a trainer then trains the epoch with a fixed gamma
    g = min(LF.epoch_dynamic_gamma(conf, 0.5), 1.0)
    assert torch.isfinite(causal_lm_loss("tce", gamma=g)(z, y))


# -- argument checks and reference forms ---------------------------------------------------------------------
@pytest.mark.parametrize("beta", [-0.1, 1.5, float("nan"), "high"])
def test_linear_beta_is_validated_at_construction(beta):
    x, t = torch.randn(3, 4), torch.tensor([0, 1, 2])
    for build in (lambda: LF.linear_weighted_loss(x, t, beta=beta), lambda: LM.LinearWeightedLoss(beta=beta),
                  lambda: LM.LinearWeightedLoss(beta), lambda: causal_lm_loss("linear", beta=beta),
                  lambda: LF.make_weigh("linear", beta=beta), lambda: LM.get_loss("linear", beta=beta)):
        with pytest.raises(ValueError, match=r"beta must be in \[0, 1\]"):
            build()


def test_linear_has_fortifai_entropy_gradient_but_not_its_value():
    """ForTIFAI's entropy loss ``-(1 - gamma p).detach() log p`` (alpha = 1): same gradient, different value."""
    g = torch.Generator().manual_seed(7)
    x = (torch.randn(6, 11, generator=g, dtype=torch.float64) * 2).requires_grad_()
    t = torch.randint(0, 11, (6,), generator=g)
    logp = torch.log_softmax(x, -1).gather(-1, t[:, None])[:, 0]
    theirs = (-(1 - 0.6 * logp.exp()).detach() * logp).mean()
    ours = LF.linear_weighted_loss(x, t, beta=0.6)
    torch.testing.assert_close(torch.autograd.grad(ours, x)[0], torch.autograd.grad(theirs, x)[0])
    assert abs(ours.item() - theirs.item()) > 1e-3


def test_nce_rce_with_a_log_1e4_is_the_active_passive_losses_form():
    """APL's NCEandRCE (one-hot clamped at 1e-4, softmax at 1e-7) equals ours with A = log(1e-4)."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(16, 10, generator=g, dtype=torch.float64) * 2
    t = torch.randint(0, 10, (16,), generator=g)
    logp = torch.log_softmax(x, 1)
    nce = (-logp.gather(1, t[:, None])[:, 0] / -logp.sum(1)).mean()
    onehot = torch.nn.functional.one_hot(t, 10).double().clamp(1e-4, 1.0)
    rce = (-(torch.softmax(x, 1).clamp(1e-7, 1.0) * onehot.log()).sum(1)).mean()
    ours = LF.nce_rce_loss(x, t, alpha=1.0, beta=1.0, A=math.log(1e-4))
    torch.testing.assert_close(ours, nce + rce, rtol=1e-6, atol=1e-6)







VOCAB, LENGTH = 64, 16
GAMMA = 0.0157  # about the median target probability of the random model (1/64 = 0.0156): cuts a real share


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_positions=32, n_embd=32, n_layer=2, n_head=2, resid_pdrop=0.0,
                     embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg)


class Sequences(torch.utils.data.Dataset):
    """Random token sequences, right-padded to different lengths (labels -100 on the padding)."""

    def __init__(self, n: int, seed: int = 1) -> None:
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, VOCAB, (n, LENGTH), generator=g)
        lengths = torch.randint(4, LENGTH + 1, (n,), generator=g)
        self.mask = (torch.arange(LENGTH)[None] < lengths[:, None]).long()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        labels = torch.where(self.mask[i] == 1, self.ids[i], -100)
        return {"input_ids": self.ids[i], "attention_mask": self.mask[i], "labels": labels}

    def batch(self) -> dict[str, torch.Tensor]:
        return {k: torch.stack([self[i][k] for i in range(len(self))]) for k in ("input_ids", "attention_mask",
                                                                                  "labels")}


def test_ce_adapter_equals_transformers_causal_lm_loss_and_tce_equals_the_functional():
    model, data = tiny_gpt2(), Sequences(4).batch()
    out = model(**data)  # transformers computes its own ForCausalLMLoss from the labels
    torch.testing.assert_close(causal_lm_loss("ce")(out, data["labels"]), out.loss, rtol=1e-6, atol=1e-6)
    shifted = shift_labels(data["labels"])
    assert torch.equal(shifted[:, :-1], data["labels"][:, 1:]) and (shifted[:, -1] == -100).all()
    valid = data["labels"][:, 1:] != -100
    u = torch.softmax(out.logits[:, :-1].detach(), -1).gather(-1, data["labels"][:, 1:].clamp_min(0)[..., None])[..., 0]
    gamma = u[valid].median().item()  # a random model is unconfident: cut its most confident half
    tce = causal_lm_loss("tce", gamma=gamma)(out, data["labels"])
    ref = LF.truncated_cross_entropy(out.logits[:, :-1], data["labels"][:, 1:], gamma=gamma, class_dim=-1)
    torch.testing.assert_close(tce, ref)
    n_items = int(valid.sum())
    summed = causal_lm_loss("tce", gamma=gamma)(out, data["labels"], num_items_in_batch=torch.tensor(n_items))
    torch.testing.assert_close(summed, ref)  # one micro-batch holding everything: sum / count == mean
    assert tce.item() < out.loss.item()  # the truncation removed the confident tokens' losses


def test_accumulated_micro_batches_give_the_big_batch_gradient():
    """With num_items_in_batch, micro-batch gradients add up to the full batch's; a per-micro-batch mean does not."""
    data = Sequences(4, seed=3).batch()
    n_items = torch.tensor(int((data["labels"][:, 1:] != -100).sum()))
    loss_fn = causal_lm_loss("tce", gamma=GAMMA)

    def grads(model, parts, items):
        model.zero_grad()
        for idx in parts:
            sub = {k: v[idx] for k, v in data.items()}
            loss_fn(model(**sub), sub["labels"], num_items_in_batch=items).backward()
        return [p.grad.clone() for p in model.parameters()]

    model = tiny_gpt2()
    full = grads(model, [slice(0, 4)], n_items)
    split = grads(model, [slice(0, 1), slice(1, 4)], n_items)
    for a, b in zip(full, split, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    naive = grads(model, [slice(0, 1), slice(1, 4)], None)  # mean per micro-batch (what must not happen)
    assert max((a - 2 * b).abs().max().item() for a, b in zip(full, naive, strict=True)) > 1e-4


def _train(model, dataset, tmp_path, batch: int, accumulation: int, steps: int, name: str, seen=None):
    args = TrainingArguments(output_dir=str(tmp_path / name), per_device_train_batch_size=batch,
                             gradient_accumulation_steps=accumulation, max_steps=steps, learning_rate=0.5,
                             optim="sgd", lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
                             max_grad_norm=0.0, logging_steps=1, report_to="none", save_strategy="no",
                             use_cpu=True, disable_tqdm=True, dataloader_num_workers=0, seed=7)
    loss_fn = causal_lm_loss("tce", gamma=GAMMA)

    def recording(outputs, labels, num_items_in_batch=None):
        if seen is not None:
            seen.append(float(num_items_in_batch))
        return loss_fn(outputs, labels, num_items_in_batch=num_items_in_batch)

    trainer = Trainer(model=model, args=args, train_dataset=dataset, compute_loss_func=recording)
    trainer.train()
    return trainer


def test_trainer_reports_our_loss_and_accumulation_is_invariant(tmp_path):
    dataset = Sequences(4, seed=5)
    model = tiny_gpt2()
    start = copy.deepcopy(model)
    seen = []
    trainer = _train(model, dataset, tmp_path, batch=4, accumulation=1, steps=3, name="big", seen=seen)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))
    data = dataset.batch()
    n_items = seen[0]  # what the Trainer counted (transformers counts unshifted labels for this GPT-2)
    with torch.no_grad():
        logits = start(**{k: v for k, v in data.items() if k != "labels"}).logits
    u = torch.softmax(logits[:, :-1], -1).gather(-1, data["labels"][:, 1:].clamp_min(0)[..., None])[..., 0]
    cut = (u > GAMMA)[data["labels"][:, 1:] != -100].float().mean().item()
    assert 0.2 < cut < 0.8, cut
    first = LF.truncated_cross_entropy(logits[:, :-1], data["labels"][:, 1:], gamma=GAMMA, class_dim=-1,
                                       reduction="sum") / n_items
    assert losses[0] == pytest.approx(first.item(), rel=1e-5)  # the first step's loss, before any update
    assert losses[-1] < losses[0]
    # the same optimizer step from 2 micro-batches of 2 equals one batch of 4
    one = _train(copy.deepcopy(start), dataset, tmp_path, batch=4, accumulation=1, steps=1, name="one").model
    acc = _train(copy.deepcopy(start), dataset, tmp_path, batch=2, accumulation=2, steps=1, name="acc").model
    for (n1, p1), (_, p2) in zip(one.named_parameters(), acc.named_parameters(), strict=True):
        torch.testing.assert_close(p1, p2, rtol=1e-5, atol=1e-6, msg=n1)
    assert any(not torch.equal(p, q) for p, q in zip(one.parameters(), start.parameters(), strict=True))


def test_kept_normalization_is_rejected():
    with pytest.raises(ValueError, match="normalize='kept' cannot be made invariant"):
        causal_lm_loss("tce", normalize="kept")
    with pytest.raises(ValueError, match="gamma must be in"):
        causal_lm_loss("tce", gamma=2.0)
