"""The Hugging Face adapter with a tiny randomly initialised GPT-2 (nothing is downloaded)."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

from collapselab.losses import functional as LF
from collapselab.losses.hf import causal_lm_loss, shift_labels

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
