"""Benchmark of the causal_lm family on real Wikipedia text.

    python benchmarks/bench_lm.py [--layers 4] [--d-model 256] [--steps 30] [--repeats 3] [--smollm2] [--fortifai]

1. **Training throughput** (tokens per second): :func:`collapselab.families.lm.train` under our TCE (gamma 0.9,
   per token, through :mod:`collapselab.losses`) against a bare loop that trains the same GPT-2 on the same
   blocks with the model's built-in Hugging Face loss (``labels=input_ids``), both AdamW with the same
   schedule-free settings, ``--steps`` steps, interleaved, median of ``--repeats``. Target: overhead <= 5%.
2. **Rewrite throughput** (new tokens per second): ForTIFAI's rewrite of 64 windows (32 new tokens after 96
   of context), batched (64 windows per ``generate`` call, left padding, attention masks, KV cache) against
   one ``generate`` call per window, greedy and sampling. Target: >= 5x.
3. **Knowledge-probe scoring** (items per second, each a true and a false text):
   :func:`collapselab.families.lm.continuation_logprobs` (pairs in order of length, batches of ~2k tokens, the output
   layer applied only at the scored positions) against the straightforward loop it replaced (batches of 32 pairs in
   item order, full logits and log-softmax), on the probe items of `fortifai-tiny`'s seed 0 (4 chunks of 200
   windows) under its pretrained 2 x 128 model. Target: >= 2x, scores equal to 1e-4.
4. ``--smollm2``: peak memory of one SmolLM2-135M training step (batch 4 x 256 tokens; CUDA peak allocated on
   a GPU, else the growth of the process's peak RSS).
5. ``--fortifai``: the wall time of ``collapselab run fortifai-tiny`` (the CPU default; target <= 30 minutes).
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from collapselab.data.text import Wikipedia, WikipediaConfig
from collapselab.decoding import Decoding
from collapselab.families.lm import pack, rewrite, train
from collapselab.losses.training import AppliedLoss
from collapselab.losses.ulosses import TCE
from collapselab.metrics.kr import source_items
from collapselab.torch_runtime import apply_threads, usable_cores


def gpt2(layers: int, d_model: int, vocab: int, eos: int):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_positions=256, n_embd=d_model, n_layer=layers,
                                      n_head=max(1, d_model // 64), bos_token_id=eos, eos_token_id=eos,
                                      pad_token_id=eos))


def bare_hf(model, blocks: np.ndarray, steps: int, batch: int, lr: float) -> float:
    """Seconds for ``steps`` AdamW steps with the model's built-in loss (what a plain HF script does)."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    ids_all = torch.from_numpy(blocks)
    model.train()
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        ids = ids_all[torch.randperm(len(ids_all), generator=g)[:batch]]
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return time.perf_counter() - t0


def ours(model, blocks: np.ndarray, steps: int, batch: int, lr: float) -> float:
    """Seconds for ``steps`` steps of the family's trainer under TCE (gamma 0.9)."""
    t0 = time.perf_counter()
    train(model, blocks, None, AppliedLoss(TCE(gamma=0.9)), epochs=1, steps=steps, lr=lr, batch=batch, grad_accum=1,
          weight_decay=0.0, warmup=0.0, generator=torch.Generator().manual_seed(0), precision="no", label="bench")
    return time.perf_counter() - t0


def training(source: Wikipedia, layers: int, d_model: int, steps: int, repeats: int, batch: int = 16) -> None:
    tok = source.tokenizer
    blocks, _ = pack(source.streams["pool"][None][:, : 400 * 128], None, 128)
    vocab, eos = len(tok), int(tok.eos_token_id)
    tokens = steps * batch * 128
    rows = {"HF built-in loss": [], "collapselab TCE": []}
    for _ in range(repeats):
        rows["HF built-in loss"].append(tokens / bare_hf(gpt2(layers, d_model, vocab, eos), blocks, steps, batch, 1e-3))
        rows["collapselab TCE"].append(tokens / ours(gpt2(layers, d_model, vocab, eos), blocks, steps, batch, 1e-3))
    base = statistics.median(rows["HF built-in loss"])
    print(f"\n1. training, GPT-2 {layers}x{d_model}, batch {batch} x 128 tokens, {steps} steps, median of {repeats}")
    for name, rates in rows.items():
        m = statistics.median(rates)
        print(f"   {name:<18} {m:9.0f} tokens/s   overhead {base / m - 1:+.1%}")


def rewriting(source: Wikipedia, layers: int, d_model: int, windows: int = 64) -> None:
    tok = source.tokenizer
    eos = int(tok.eos_token_id)
    model = gpt2(layers, d_model, len(tok), eos).eval()
    x = source.windows("pool")[:windows]
    print(f"\n2. rewrite, {windows} windows of 32 new tokens after 96 of context, GPT-2 {layers}x{d_model}")
    for mode in ("greedy", "sample"):
        dec = Decoding(mode=mode)
        rates = {}
        for name, b in (("batched (64 per call)", 64), ("one call per window", 1)):
            torch.manual_seed(0)
            t0 = time.perf_counter()
            rewrite(model, x, 96, dec, bos=eos, pad=eos, eos=eos, device="cpu", batch=b)
            rates[name] = windows * 32 / (time.perf_counter() - t0)
        a, b_ = rates.values()
        print(f"   {mode:<7} batched {a:7.0f} tokens/s, per window {b_:6.0f} tokens/s: x{a / b_:.1f}")


def naive_continuation_logprobs(model, contexts, continuations, pad: int, batch: int = 32) -> np.ndarray:
    """The reference: batches of ``batch`` pairs in item order, full logits and log-softmax."""
    out = np.empty(len(contexts))
    with torch.inference_mode():
        for i in range(0, len(contexts), batch):
            ctx, cont = contexts[i:i + batch], continuations[i:i + batch]
            L = max(len(a) + len(b) for a, b in zip(ctx, cont, strict=True))
            ids = np.full((len(ctx), L), pad, dtype=np.int64)
            mask = np.zeros((len(ctx), L), dtype=np.int64)
            for r, (a, b) in enumerate(zip(ctx, cont, strict=True)):
                ids[r, :len(a) + len(b)] = np.concatenate([a, b])
                mask[r, :len(a) + len(b)] = 1
            t_ids = torch.from_numpy(ids)
            logits = model(input_ids=t_ids, attention_mask=torch.from_numpy(mask)).logits.float()
            lp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, t_ids[:, 1:, None])[..., 0].numpy()
            for r, (a, b) in enumerate(zip(ctx, cont, strict=True)):
                out[i + r] = lp[r, len(a) - 1:len(a) + len(b) - 1].sum()
    return out


def probe_scoring(repeats: int) -> None:
    from collapselab.experiments import load_experiment
    from collapselab.families import make_family
    from collapselab.families.lm import continuation_logprobs
    from collapselab.seeding import SeedTree

    exp = load_experiment("fortifai-tiny")
    source = exp.make_source()
    fam = make_family(exp.arms[0].family, 1, source.spec).pretrained()
    items = source_items(source, SeedTree(exp.seed), 0)
    captured = {}

    def capture(model, contexts, continuations, pad, device):
        captured.update(model=model, contexts=contexts, continuations=continuations, pad=pad)
        return continuation_logprobs(model, contexts, continuations, pad, device)

    import collapselab.families.lm as lm

    orig, lm.continuation_logprobs = lm.continuation_logprobs, capture
    try:
        fam.compare_continuations([i.context for i in items], [i.true for i in items], [i.false for i in items])
    finally:
        lm.continuation_logprobs = orig
    c = captured
    runs = {"ours": lambda: continuation_logprobs(c["model"], c["contexts"], c["continuations"], c["pad"], "cpu"),
            "reference": lambda: naive_continuation_logprobs(c["model"], c["contexts"], c["continuations"], c["pad"])}
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):  # interleaved
        for k, fn in runs.items():
            t0 = time.perf_counter()
            out = fn()
            times[k].append(time.perf_counter() - t0)
            c[k] = out
    diff = float(np.max(np.abs(c["ours"] - c["reference"])))
    a, b = (statistics.median(times[k]) for k in runs)
    n = len(items)  # each item scores two texts (true and false)
    print(f"\n3. knowledge probe, {n} items: ours {n / a:.0f} items/s, reference {n / b:.0f} items/s: x{b / a:.2f} "
          f"(target >= 2x); max |difference| {diff:.1e}")


def smollm2_step() -> None:
    from transformers import AutoModelForCausalLM

    from collapselab.lm_models import smollm2_folder

    folder = smollm2_folder()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="float32").to(device)
    ids = torch.randint(0, model.config.vocab_size, (4, 256), generator=torch.Generator().manual_seed(0)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(2):  # the second step holds the optimizer state too
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    dt = (time.perf_counter() - t0) / 2
    if device == "cuda":
        peak = f"{torch.cuda.max_memory_allocated() / 2**20:.0f} MiB CUDA peak allocated"
    else:
        peak = f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before:.0f} MiB growth of the peak RSS"
    print(f"\n4. SmolLM2-135M training step (batch 4 x 256, AdamW, {device}): {peak}, {dt:.2f} s per step")


def fortifai_wall() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "collapselab", "run", "fortifai-tiny", "-o", f"{tmp}/run", "-w", "2",
                        "-q"], check=True)
        print(f"\n5. collapselab run fortifai-tiny -w 2: {(time.perf_counter() - t0) / 60:.1f} minutes")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--smollm2", action="store_true")
    ap.add_argument("--fortifai", action="store_true")
    args = ap.parse_args()
    apply_threads(usable_cores())
    print(f"bench_lm: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    source = Wikipedia(WikipediaConfig(tokenizer="tiny", vocab=8000), heldout=64)
    training(source, args.layers, args.d_model, args.steps, args.repeats)
    rewriting(source, args.layers, args.d_model)
    probe_scoring(args.repeats)
    if args.smollm2:
        smollm2_step()
    if args.fortifai:
        fortifai_wall()


if __name__ == "__main__":
    main()
