"""The GPU check: one table of what collapselab does on this machine's accelerator, in under 8 minutes.

    python benchmarks/gpu_check.py [--device cuda] [--quick]      (or: bash benchmarks/gpu_check.sh)

1. **CUDA tests**: the suite's tests that run on a GPU (``-k cuda``), passed / failed / skipped.
2. **Losses**: TCE forward + backward at N = 2,048, V = 32,000 (float32 and bf16 logits) against
   ``F.cross_entropy``, CUDA-synchronised, median of 15.
3. **VAE training** (images/s on 10,000 MNIST images, 3 epochs): the family's fit under TCE per pixel against
   the bare loop with the same loss (``bench_vae.py``), MLP and conv.
4. **SmolLM2-135M** (the model of ``fortifai-smollm2``): training tokens/s through the family's trainer (bf16
   autocast where supported, TCE 0.9 per token, batch 8 x 512) and ForTIFAI's rewrite, new tokens/s (beam 5,
   repetition penalty 3, 32 new tokens after 512 of context, 64 windows per call).
5. **Smoke run**: ``collapselab run fortifai-smollm2 --set scale=smoke`` (2 stages), its wall time and exit code.
6. **Estimates**: the wall time of the GPU presets on this device, from the rates measured above and the work
   each preset does (the model is in :func:`estimates`; an estimate, not a run).

``--quick`` shrinks every size (a check that the script runs, e.g. on a CPU; its rates mean nothing).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

Row = tuple[str, str, str]  # what, measured, note
ROWS: list[Row] = []


def row(what: str, value: str, note: str = "") -> None:
    ROWS.append((what, value, note))
    print(f"  {what}: {value}  {note}", flush=True)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def cuda_tests(quick: bool) -> None:
    """The suite's CUDA cases (``-k cuda``): passed / failed / skipped."""
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider",
                           str(ROOT / "tests" / ("test_losses_functional.py" if quick else ""))],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    last = (done.stdout.strip().splitlines() or ["no output"])[-1]
    row("CUDA tests (pytest -k cuda)", last.strip("= "), f"exit {done.returncode}")


def losses(device: str, quick: bool) -> None:
    from collapselab.losses import functional as LF

    n, v = (256, 4000) if quick else (2048, 32000)
    g = torch.Generator().manual_seed(0)
    x32 = (torch.randn(n, v, generator=g) * 2).to(device)
    t = torch.randint(0, v, (n,), generator=g).to(device)
    for dtype in (torch.float32, torch.bfloat16):
        x = x32.to(dtype)

        def ref(x=x):
            xr = x.detach().requires_grad_()
            F.cross_entropy(xr.float(), t).backward()  # .float(): a no-op for float32, bf16 upcast as usual

        def tce(x=x):
            xr = x.detach().requires_grad_()
            LF.truncated_cross_entropy(xr, t, gamma=0.99).backward()

        a, b = timed(tce, device, 15), timed(ref, device, 15)
        name = str(dtype).removeprefix("torch.")
        row(f"TCE fwd+bwd N={n}, V={v}, {name}", f"{a * 1e3:.2f} ms",
            f"F.cross_entropy {b * 1e3:.2f} ms, ratio {a / b:.2f}x")


def vae(device: str, quick: bool) -> dict[str, float]:
    from bench_vae import bare_loop, family_fit

    from collapselab.data import MNISTConfig, make_source
    from collapselab.samples import SampleSet

    images, epochs = (1000, 1) if quick else (10_000, 3)
    x = make_source(MNISTConfig(), 10_000).load()["x"][:images]
    data = SampleSet({"x": x[None], "y": np.full((1, images), -1, np.int64)})
    xt = torch.as_tensor(x[: int(images * 0.9)])
    rates = {}
    for arch in ("mlp", "conv"):
        bare = statistics.median(bare_loop(arch, xt, epochs, device, gamma=0.9) for _ in range(2))
        fam = statistics.median(family_fit(arch, data, epochs, device) for _ in range(2))
        rates[arch] = len(xt) * epochs / fam
        row(f"VAE {arch} training, TCE 0.9 per pixel", f"{rates[arch]:,.0f} im/s",
            f"bare loop {len(xt) * epochs / bare:,.0f} im/s, overhead {fam / bare - 1:+.1%}")
    return rates


def smollm2(device: str, quick: bool) -> dict[str, float]:
    from transformers import AutoModelForCausalLM

    from collapselab.decoding import Decoding
    from collapselab.families.lm import resolve_precision, rewrite, train
    from collapselab.lm_models import load_tokenizer, smollm2_folder
    from collapselab.losses.training import AppliedLoss
    from collapselab.losses.ulosses import TCE

    folder = smollm2_folder()
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="float32").to(device)
    eos = int(load_tokenizer(folder).eos_token_id)
    rng = np.random.default_rng(0)
    block, batch, steps = (128, 2, 2) if quick else (512, 8, 20)
    blocks = rng.integers(0, model.config.vocab_size, (batch * steps, block))
    precision = resolve_precision("auto", device)
    sync(device)
    t0 = time.perf_counter()
    train(model, blocks, None, AppliedLoss(TCE(gamma=0.9)), epochs=1, steps=steps, lr=5e-5, batch=batch, grad_accum=1,
          weight_decay=0.0, warmup=0.0, generator=torch.Generator().manual_seed(0), precision=precision,
          label="gpu check", device=device)
    sync(device)
    train_rate = steps * batch * block / (time.perf_counter() - t0)
    row("SmolLM2-135M training (family trainer, TCE 0.9)", f"{train_rate:,.0f} tokens/s",
        f"batch {batch} x {block}, precision {precision}")
    windows, context = (8, 64) if quick else (64, 512)
    stream = rng.integers(0, model.config.vocab_size, (windows + context // 32 + 1) * 32)
    x = stream[-windows * 32:].reshape(windows, 32)
    decoding = Decoding(mode="greedy") if quick else Decoding(mode="beam", num_beams=5, repetition_penalty=3.0)
    sync(device)
    t0 = time.perf_counter()
    rewrite(model, x, context, decoding, eos, eos, eos, torch.device(device), windows)
    sync(device)
    gen_rate = windows * 32 / (time.perf_counter() - t0)
    how = "greedy (--quick)" if quick else "ForTIFAI: beam 5, penalty 3"
    row(f"SmolLM2-135M rewrite, {how}", f"{gen_rate:,.0f} new tokens/s",
        f"{windows} windows of 32 after {context} tokens")
    return {"train": train_rate, "generate": gen_rate}


def smoke(device: str, quick: bool) -> None:
    what = "fortifai-smollm2 --set scale=smoke (2 stages)"
    if quick:  # minutes on a CPU: the suite's test_smollm2 covers the pipeline there
        row(what, "skipped", "--quick")
        return
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            done = subprocess.run([sys.executable, "-m", "collapselab", "run", "fortifai-smollm2", "--set",
                                   "scale=smoke", "--set", f"family.device={device}", "-o", f"{tmp}/run", "-q"],
                                  cwd=ROOT, capture_output=True, text=True, timeout=240)
        except subprocess.TimeoutExpired:
            row(what, "> 240 s", "timed out")
            return
        wall = time.perf_counter() - t0
    tail = (done.stderr.strip().splitlines() or [""])[-1][:80]
    row(what, f"{wall:.0f} s", "exit 0" if done.returncode == 0 else f"exit {done.returncode}: {tail}")


def estimates(vae_rates: dict[str, float], lm: dict[str, float]) -> None:
    """Wall time of the GPU presets, one chain task after another on this device, from the measured rates.

    - ``fortifai-smollm2`` (7 arms x 3 seeds x 6 stages): per stage the model trains on ~2 x 1,000 windows of 32
      tokens (a rewrite plus a fresh real chunk) and rewrites as many (beam 5); scoring (memorization, probes,
      perplexity) is taken as 3x the training tokens at 3x the training rate (forward only).
    - ``fortifai-vae --set scale=gpu`` (12 arms x 16 seeds x 6 stages, MLP VAE): 500 images x ~40 epochs (early
      stopping at patience 5 stops the CPU runs after 25-60) per fit, plus ~2,000 held-out images through the
      metric networks, taken as 4 fits' worth.
    - ``yi-vae --set scale=paper`` (2 arms x 50 rounds, conv VAE): round g trains on 5,000 g images for ~30 epochs;
      the filtered arm draws 10x its set as candidates and retrains the discriminator on 110,000 images for
      ~20 epochs (taken at 4x the conv VAE rate: an MLP).
    """
    tokens = 2 * 1000 * 32
    stage = tokens / lm["train"] + tokens / lm["generate"] + 3 * tokens / (3 * lm["train"])
    smol = 7 * 3 * 6 * stage
    fvae = 12 * 16 * 6 * (500 * 40 * 5) / vae_rates["mlp"]
    rounds = np.arange(1, 51)
    train_images = (5000 * rounds * 30).sum()
    candidates = (50000 * rounds).sum()
    disc = 50 * 110_000 * 20 / (4 * vae_rates["conv"])
    yi = (2 * train_images + candidates * 3) / vae_rates["conv"] + disc
    for name, sec in (("fortifai-smollm2 (estimate)", smol), ("fortifai-vae --set scale=gpu (estimate)", fvae),
                      ("yi-vae --set scale=paper (estimate)", yi)):
        row(name, f"{sec / 3600:.1f} h" if sec >= 3600 else f"{sec / 60:.0f} min", "one chain task at a time")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a check that the script runs")
    args = ap.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: --device cuda but torch sees no CUDA device (is this the GPU machine?)")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    name = torch.cuda.get_device_name() if args.device == "cuda" else "cpu"
    print(f"collapselab GPU check on {name} (torch {torch.__version__}{', quick' if args.quick else ''})", flush=True)
    start = time.perf_counter()
    cuda_tests(args.quick)
    losses(args.device, args.quick)
    vae_rates = vae(args.device, args.quick)
    lm = smollm2(args.device, args.quick)
    smoke(args.device, args.quick)
    estimates(vae_rates, lm)
    width = max(len(w) for w, _, _ in ROWS)
    print(f"\n| {'check':<{width}} | measured | note |\n|{'-' * (width + 2)}|---|---|")
    for what, value, note in ROWS:
        print(f"| {what:<{width}} | {value} | {note} |")
    print(f"\n{name}; {time.perf_counter() - start:.0f} s in all")


if __name__ == "__main__":
    main()
