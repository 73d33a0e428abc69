"""Benchmarks of the torch losses against PyTorch's cross entropy, in one process (times) and one
subprocess per variant (peak memory: the process's resident-set high-water mark ``VmHWM``, reset just
before the measured step through ``/proc/self/clear_refs``; tracemalloc cannot see torch's allocations, and
``ru_maxrss`` keeps the parent's high-water mark across fork + exec).

    python benchmarks/bench_losses.py [--repeats 15] [--fused-repeats 2] [--skip-fused] [--only-plugin]

1. Forward + backward at N = 2,048 targets, V = 32,000 classes, float32, CPU: ``F.cross_entropy(mean)``,
   ForTIFAI's reference TCE (``log_softmax`` + ``gather`` + ``where`` + ``mean``), our TCE and every other
   u-loss, and TCE with the gradient computed in the forward pass (kept alone, or written into the
   logits). Targets: TCE <= 1.0x ``F.cross_entropy``; the in-place variant <= 0.8x and half its peak memory.
2. Fused linear + loss at N = 4,096, H = 2,048, V = 128,256 (a Llama-3 vocabulary), float32: peak memory
   <= 25% of the materialized path (``h @ W.T`` then ``F.cross_entropy``), time <= 1.3x.

3. A plugin loss (TCE written as a plugin: ``value`` only, ``w(u)`` by autograd) against the built-in TCE, the
   way each family trains: (a) forward + backward of the cross-entropy form at N = 2,048, V = 32,000 (the causal
   LM's per-token path); (b) a closed-form fit (the GMM's weighted refits, 3 steps, 64 chains x 2,000 points).
   Target: the plugin within 1.2x of the built-in.

Variants run interleaved and each time is a median. Large-tensor timings on shared machines are noisy
(page faults dominate allocation-heavy code): compare ratios taken in the same run.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import time
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from collapselab.losses import ULoss, ops
from collapselab.losses import functional as LF
from collapselab.losses.fused import linear_cross_entropy

N, V = 2048, 32000
NF, HF, VF = 4096, 2048, 128256
GAMMA = 0.99


def fortifai_tce(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """ForTIFAI's released TCE (src/losses.py): log_softmax, gather, where on p, detached mask, mean."""
    log_p = torch.log_softmax(x, dim=-1).gather(-1, t[:, None])[:, 0]
    mask = torch.where(log_p.exp() > GAMMA, 0.0, 1.0)
    return (-mask.detach() * log_p).mean()


LOSSES = {
    "F.cross_entropy (reference)": lambda x, t: F.cross_entropy(x, t),
    "ForTIFAI-style TCE": fortifai_tce,
    "tce": lambda x, t: LF.truncated_cross_entropy(x, t, gamma=GAMMA),
    "tce, gradient in forward": lambda x, t: LF.truncated_cross_entropy(x, t, gamma=GAMMA, gradient="forward"),
    "tce, gradient in place": lambda x, t: LF.truncated_cross_entropy(x, t, gamma=GAMMA, gradient="inplace"),
    "ce": lambda x, t: LF.cross_entropy(x, t),
    "focal(2)": lambda x, t: LF.focal_loss(x, t),
    "linear(1)": lambda x, t: LF.linear_weighted_loss(x, t),
    "poly1(1)": lambda x, t: LF.poly1_loss(x, t),
    "gce(0.7)": lambda x, t: LF.gce_loss(x, t),
    "sce": lambda x, t: LF.sce_loss(x, t),
    "agce": lambda x, t: LF.agce_loss(x, t),
    "ael": lambda x, t: LF.ael_loss(x, t),
    "vce": lambda x, t: LF.vce_loss(x, t),
    "nce_rce (not a u-loss)": lambda x, t: LF.nce_rce_loss(x, t),
}


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, V, generator=g).mul_(2), torch.randint(0, V, (N,), generator=g)  # no temporaries


def step(name: str, x: torch.Tensor, t: torch.Tensor) -> float:
    """Time one forward + backward of ``name`` on a private copy of ``x`` (the copy is made before timing)."""
    xr = x.clone().requires_grad_()
    start = time.perf_counter()
    LOSSES[name](xr, t).backward()
    return time.perf_counter() - start


def rss_now_kb() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * (resource.getpagesize() // 1024)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_high_water() -> None:
    """Set the RSS high-water mark to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def high_water_kb() -> int:
    return _status_kb("VmHWM")


def child_memory(name: str) -> None:
    """Peak RSS of one forward + backward above the RSS holding the logits (the gradient is kept, as in training)."""
    x, t = data()
    LOSSES[name](x[:8].clone().requires_grad_(), t[:8]).backward()  # warm up the code paths on a tiny slice
    xr = x.requires_grad_()
    reset_high_water()
    base = rss_now_kb()
    before = high_water_kb()
    LOSSES[name](xr, t).backward()
    print(json.dumps({"base_mb": base / 1024, "peak_mb": high_water_kb() / 1024,
                      "high_water_before_mb": before / 1024}))


def child_fused(variant: str, repeats: int) -> None:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(NF, HF, generator=g).requires_grad_()
    w = torch.randn(VF, HF, generator=g).mul_(0.02).requires_grad_()
    t = torch.randint(0, VF, (NF,), generator=g)
    reset_high_water()
    base = rss_now_kb()
    times = []
    for _ in range(repeats):
        h.grad = w.grad = None
        start = time.perf_counter()
        if variant == "materialized":
            F.cross_entropy(h @ w.T, t).backward()
        elif variant == "fused tce":
            linear_cross_entropy(h, w, t, "tce", gamma=GAMMA).backward()
        else:
            linear_cross_entropy(h, w, t).backward()
        times.append(time.perf_counter() - start)
    print(json.dumps({"base_mb": base / 1024, "peak_mb": high_water_kb() / 1024, "time_s": statistics.median(times)}))


def run_child(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


class PluginTCE(ULoss):
    """TCE as a user would write it as a plugin: its value only."""

    name: Literal["bench_plugin_tce"] = "bench_plugin_tce"
    gamma: float = GAMMA

    def value(self, log_u):
        return ops(log_u).where(-log_u >= -math.log(self.gamma), -log_u, log_u * 0)


def plugin_section(repeats: int) -> None:
    """Section 3: the plugin TCE against the built-in, in the torch and the closed-form paths."""
    from collapselab.data.truth import GMMTruthConfig
    from collapselab.families.closed_form import fit_with_loss
    from collapselab.families.gmm import GMM, GMMConfig
    from collapselab.losses.ulosses import TCE
    from collapselab.seeding import SeedTree

    builtin, plugin = TCE(gamma=GAMMA), PluginTCE()
    x, t = data()
    torch_times: dict[str, list[float]] = {"built-in": [], "plugin": []}

    def torch_step(loss) -> float:
        xr = x.clone().requires_grad_()
        start = time.perf_counter()
        LF._u(loss, xr, t, None, -100, "mean", 1, "backward").backward()
        return time.perf_counter() - start

    from collapselab.data import make_source

    source = make_source(GMMTruthConfig(), 100, 2000)
    tree = SeedTree(0)
    pts = source.take(tree, 0, 64, 0, 2000)
    cfg = GMMConfig(components=3)
    fit_times: dict[str, list[float]] = {"built-in": [], "plugin": []}

    def fit(loss) -> tuple[float, np.ndarray]:
        model = GMM(cfg, 64, source.spec)
        start = time.perf_counter()
        fit_with_loss(model, pts, loss, np.random.default_rng(0), steps=3)
        return time.perf_counter() - start, model.state_dict()["means"]

    for loss in (builtin, plugin):  # warm up (and the plugin's first torch import)
        torch_step(loss)
        fit(loss)
    for _ in range(repeats):
        for name, loss in (("built-in", builtin), ("plugin", plugin)):
            torch_times[name].append(torch_step(loss))
            fit_times[name].append(fit(loss)[0])
    same = np.array_equal(fit(builtin)[1], fit(plugin)[1])
    print(f"\n[3] a plugin TCE (value only, w by autograd) vs the built-in TCE (gamma {GAMMA})")
    for label, times in (("(a) torch: forward + backward, N=2048, V=32000", torch_times),
                         ("(b) closed form: GMM weighted refits, 64 chains x 2000 points", fit_times)):
        b, p = statistics.median(times["built-in"]), statistics.median(times["plugin"])
        print(f"    {label}: built-in {b * 1e3:.1f} ms, plugin {p * 1e3:.1f} ms, {p / b:.2f}x "
              f"{'PASS' if p / b <= 1.2 else 'FAIL'} (target <= 1.2x)")
    print(f"    closed-form fits bitwise equal: {same}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--fused-repeats", type=int, default=2)
    ap.add_argument("--skip-fused", action="store_true")
    ap.add_argument("--child", nargs="+")
    ap.add_argument("--only-plugin", action="store_true", help="only section 3")
    args = ap.parse_args()
    if args.child:
        if args.child[0] == "memory":
            child_memory(args.child[1])
        else:
            child_fused(args.child[1], int(args.child[2]))
        return
    print(f"machine: {platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"medians of {args.repeats} interleaved runs")
    if args.only_plugin:
        plugin_section(args.repeats)
        return
    x, t = data()
    for name in LOSSES:  # warm up at full size (the first large call pays one-time thread and allocator costs)
        step(name, x, t)
    times: dict[str, list[float]] = {name: [] for name in LOSSES}
    for _ in range(args.repeats):
        for name in LOSSES:
            times[name].append(step(name, x, t))
    ref = statistics.median(times["F.cross_entropy (reference)"])
    memory = {name: run_child("memory", name) for name in ("F.cross_entropy (reference)", "ForTIFAI-style TCE", "tce",
                                                            "tce, gradient in forward", "tce, gradient in place")}
    ref_mem = memory["F.cross_entropy (reference)"]["peak_mb"] - memory["F.cross_entropy (reference)"]["base_mb"]
    print(f"\n[1] forward + backward, N={N}, V={V}, float32 (logits {N * V * 4 / 2**20:.0f} MB)")
    print(f"    {'loss':30s} {'median ms':>10s} {'x F.ce':>7s} {'peak extra MB':>14s} {'x F.ce':>7s}")
    for name, mem in memory.items():
        if mem["high_water_before_mb"] > mem["base_mb"] + 16:
            print(f"    (warning: {name}: high-water mark {mem['high_water_before_mb']:.0f} MB before the step)")
    for name, ts in times.items():
        med = statistics.median(ts)
        mem = memory.get(name)
        used = None if mem is None else mem["peak_mb"] - mem["base_mb"]
        extra = "" if used is None else f"{used:14.0f} {used / ref_mem:7.2f}"
        print(f"    {name:30s} {med * 1e3:10.1f} {med / ref:7.2f} {extra}")
    tce = statistics.median(times["tce"]) / ref
    inplace = statistics.median(times["tce, gradient in place"]) / ref
    inplace_mem = (memory["tce, gradient in place"]["peak_mb"] - memory["tce, gradient in place"]["base_mb"]) / ref_mem
    print(f"    TCE <= 1.0x F.cross_entropy: {tce:.2f}x {'PASS' if tce <= 1.0 else 'FAIL'}; "
          f"in place <= 0.8x time and <= 0.5x peak memory: {inplace:.2f}x, {inplace_mem:.2f}x "
          f"{'PASS' if inplace <= 0.8 and inplace_mem <= 0.5 else 'FAIL'}")
    plugin_section(args.repeats)
    if args.skip_fused:
        return
    res = {v: run_child("fused", v, str(args.fused_repeats)) for v in ("materialized", "fused ce", "fused tce")}
    m = res["materialized"]
    m_extra = m["peak_mb"] - m["base_mb"]
    print(f"\n[2] linear + cross entropy, N={NF}, H={HF}, V={VF}, float32 (logits {NF * VF * 4 / 2**30:.2f} GB)")
    head = ("variant", "time s", "x", "peak MB", "extra MB", "x extra", "x peak")
    print("    {:14s} {:>8s} {:>6s} {:>9s} {:>9s} {:>8s} {:>7s}".format(*head))
    for v, r in res.items():
        extra = r["peak_mb"] - r["base_mb"]
        print(f"    {v:14s} {r['time_s']:8.1f} {r['time_s'] / m['time_s']:6.2f} {r['peak_mb']:9.0f} {extra:9.0f} "
              f"{extra / m_extra:8.2f} {r['peak_mb'] / m['peak_mb']:7.2f}")
    f = res["fused ce"]
    ok = (f["peak_mb"] - f["base_mb"]) / m_extra <= 0.25 and f["time_s"] / m["time_s"] <= 1.3
    print(f"    fused: extra memory <= 25% of the materialized path's and time <= 1.3x: {'PASS' if ok else 'FAIL'} "
          f"(extra = peak RSS above the inputs h and W; both paths also hold W's gradient)")


if __name__ == "__main__":
    main()
