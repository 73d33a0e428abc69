"""Benchmark of the vae family and the discriminator verifier on real MNIST.

    python benchmarks/bench_vae.py [--images 10000] [--epochs 3] [--repeats 3] [--yi] [--device cpu]

1. **Training throughput** (images per second, per architecture): the family's fit under TCE (gamma 0.9,
   per pixel; ``VAE.fit_loss``, with a 10% validation split evaluated every epoch, as the family trains)
   against a bare PyTorch loop training the same network on the same images with the same loss (TCE + KL,
   written as ForTIFAI's code writes it; Adam, batch 128, no validation), and that bare loop against one
   with plain BCE + KL (the price of the loss itself). All run ``--epochs`` epochs (no early stop),
   interleaved, median of ``--repeats``; the family's rate counts the images it trains on (90%).
   Target: overhead <= 5%.
2. **Sampling + discriminator filtering** (images kept per second): the ``discriminator`` curator (keep 0.1)
   (conditional) drawing a class-balanced set of 5,000 from a conditional conv VAE (50,000 candidates generated and
   scored), with the discriminator already trained; its training time is reported beside.
3. ``--yi``: the wall time of ``collapselab run yi-vae`` (the CPU default; about 15-20 minutes).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import tempfile
import time

import numpy as np
import torch
import torch.nn.functional as F

from collapselab.curators import CuratorContext, Discriminator
from collapselab.data import MNISTConfig, make_source
from collapselab.families.vae import VAE, VAEConfig
from collapselab.families.vae_nets import VAENet, kl_standard_normal
from collapselab.losses.ulosses import CE, TCE
from collapselab.samples import SampleSet
from collapselab.torch_runtime import apply_threads, usable_cores


def bare_loop(arch: str, x: torch.Tensor, epochs: int, device: str, gamma: float | None = None) -> float:
    """Seconds for a plain BCE + KL training loop on ``x`` (what a paper's script does); with ``gamma``, TCE per
    pixel written as ForTIFAI's reference code writes it (the BCE of pixels with ``u > gamma`` masked out)."""
    torch.manual_seed(0)
    net = VAENet(arch, (1, 28, 28), 20, 400, 0).to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = x.to(device)
    t0 = time.perf_counter()
    for _ in range(epochs):
        perm = torch.randperm(len(x), device=device)
        for i in range(0, len(x), 128):
            xb = x[perm[i:i + 128]]
            mu, logvar = net.encode(xb, None)
            z = mu + (0.5 * logvar).exp() * torch.randn_like(mu)
            bce = F.binary_cross_entropy_with_logits(net.decode(z, None), xb, reduction="none")
            rec = (bce if gamma is None else torch.where(bce >= -math.log(gamma), bce, 0.0)).sum()
            loss = (rec + kl_standard_normal(mu, logvar).sum()) / len(xb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def family_fit(arch: str, data: SampleSet, epochs: int, device: str) -> float:
    """Seconds for the family's fit under TCE per pixel (validation split included)."""
    cfg = VAEConfig(arch=arch, max_epochs=epochs, patience=epochs + 1, device=device,
                    threads=torch.get_num_threads())
    model = VAE(cfg, 1, {"shape": [1, 28, 28], "classes": 10})
    t0 = time.perf_counter()
    model.fit_loss(data, TCE(gamma=0.9), np.random.default_rng(0))
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def training(images: int, epochs: int, repeats: int, device: str) -> None:
    x = make_source(MNISTConfig(), 10_000).load()["x"][:images]
    data = SampleSet({"x": x[None], "y": np.full((1, images), -1, np.int64)})
    xt = torch.as_tensor(x[: int(images * 0.9)])  # the bare loop trains on as many images as the family
    print(f"\n1. training throughput: {images:,} MNIST images ({int(images * 0.9):,} trained on), {epochs} epochs, "
          f"median of {repeats}")
    print(f"{'arch':6} {'bare BCE loop':>16} {'bare TCE loop':>16} {'family, TCE pixel':>19} {'overhead':>9} "
          f"{'TCE cost':>9}")
    for arch in ("mlp", "conv"):
        bare, bare_tce, fam = [], [], []
        for _ in range(repeats):
            bare.append(bare_loop(arch, xt, epochs, device))
            bare_tce.append(bare_loop(arch, xt, epochs, device, gamma=0.9))
            fam.append(family_fit(arch, data, epochs, device))
        rate_b, rate_t, rate_f = (len(xt) * epochs / statistics.median(t) for t in (bare, bare_tce, fam))
        print(f"{arch:6} {rate_b:12,.0f} im/s {rate_t:12,.0f} im/s {rate_f:14,.0f} im/s {rate_t / rate_f - 1:+8.1%} "
              f"{rate_b / rate_t - 1:+8.1%}")
    print("overhead: the family (validation every epoch, early stopping, stats) against the bare loop with the same "
          "loss (target <= 5%); TCE cost: the bare TCE loop against the bare BCE loop")


def filtering(device: str) -> None:
    source = make_source(MNISTConfig(), 10_000)
    train = source.load()
    idx = np.concatenate([np.flatnonzero(train["y"] == k)[:50] for k in range(10)])
    real = SampleSet({"x": train["x"][idx][None], "y": train["y"][idx][None].astype(np.int64)})
    cfg = VAEConfig(arch="conv", conditional=True, max_epochs=30, device=device, threads=torch.get_num_threads())
    model = VAE(cfg, 1, source.spec).fit_loss(real, CE(), np.random.default_rng(0))
    settings = {"keep": 0.1, "conditional": True, "real": 10_000, "synthetic": 10_000, "epochs": 2}
    ctx = CuratorContext(source)
    t0 = time.perf_counter()
    nets = Discriminator(**settings)._nets(model, np.random.default_rng(1), ctx)
    t_train = time.perf_counter() - t0
    curator = Discriminator(**settings, train="once")  # reuse the trained nets: time sampling + scoring only
    ctx.cache["nets"] = nets
    t0 = time.perf_counter()
    kept = curator.curate(model, 5000, np.random.default_rng(2), ctx)
    dt = time.perf_counter() - t0
    print("\n2. sampling + discriminator filtering (conditional conv VAE, keep 0.1, 5,000 kept from 50,000)")
    print(f"   {kept.n / dt:,.0f} images kept/s ({dt:.1f} s; {kept.n * 10 / dt:,.0f} candidates generated and "
          f"scored/s)\n   training the discriminator (drawing 10k synthetic, 2 epochs on 10k real + 10k synthetic): "
          f"{t_train:.1f} s")


def yi(device: str) -> None:
    from collapselab.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        try:
            main(["run", "yi-vae", "--out", f"{tmp}/yi", "-q", "--set", f"family.device={device}"])
        except SystemExit as e:
            if e.code:
                raise
        print(f"\n3. collapselab run yi-vae (CPU default): {time.perf_counter() - t0:.0f} s wall")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--yi", action="store_true", help="also time `collapselab run yi-vae`")
    args = ap.parse_args()
    apply_threads(usable_cores())
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}, device {args.device}")
    training(args.images, args.epochs, args.repeats, args.device)
    filtering(args.device)
    if args.yi:
        yi(args.device)


if __name__ == "__main__":
    main()
