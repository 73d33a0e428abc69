"""Benchmarks of the chain engine against straightforward references, in one process.

    python benchmarks/bench_chains.py [--repeats 5] [--quick]

1. Gaussian d = 1, n = 100, 1,000 chains x 200 fits: the vectorized engine (``run_chain``, in memory, with
   the variance-ratio and mean-error metrics) vs a per-chain Python loop doing the same math (numpy
   ``normal`` / ``mean`` / ``var`` per chain and generation, as published collapse code does), and vs the
   floor: drawing the 20 million normal samples alone. All three use the engine's bit generator (SFC64),
   so the ratios measure vectorization only; the loop is also timed with numpy's default PCG64.
   Targets: >= 8x faster than the loop, <= 1.5x the floor.
2. GMM K = 2, d = 2, n = 1,000, 64 chains x 50 fits: batched weighted EM (k-means++ start) vs a
   scikit-learn ``GaussianMixture`` refit loop (same tol, max_iter, reg_covar, ``init_params="k-means++"``)
   that also samples the next generation and scores the held-out set. Target: >= 5x faster, mean held-out
   log-likelihood within 1%, judged paired (both fitted to the same real training sets); the mean over the
   two independent sets of 64 collapsing chains is reported too, with its standard errors.

Variants run interleaved; each reported time is the median of ``--repeats`` runs. Timings on shared
machines are noisy: compare ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np

from collapselab.chain import ChainTask, run_chain
from collapselab.experiments.resolver import resolve


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def gaussian_case(chains: int, n: int, fits: int):
    exp = resolve({"name": "bench-gaussian", "family": {"name": "gaussian"}, "data": {"source": "gaussian", "dim": 1},
                   "n": n, "generations": fits - 1, "seeds": chains, "batch_size": chains, "heldout": 10,
                   "metrics": ["variance_ratio", "param_error"]})

    def ours():
        return run_chain(ChainTask(exp, exp.arms[0].name, 0))

    def loop(bit_generator=np.random.SFC64):
        out = np.empty((fits, 2, chains))
        for c in range(chains):
            rng = np.random.Generator(bit_generator(c))
            mu, var = 0.0, 1.0  # generation 0 draws the real data from the truth N(0, 1)
            for g in range(fits):
                x = rng.normal(mu, np.sqrt(var), n)
                mu, var = x.mean(), x.var()
                out[g, 0, c], out[g, 1, c] = var, mu * mu
        return out

    def floor():
        rng = np.random.Generator(np.random.SFC64(0))
        for _ in range(fits):
            rng.standard_normal((chains, n))

    return {"engine": ours, "per-chain loop": loop, "floor (normals only)": floor,
            "per-chain loop, PCG64": lambda: loop(np.random.PCG64)}, exp


def gmm_case(chains: int, n: int, fits: int):
    from sklearn.mixture import GaussianMixture

    exp = resolve({"name": "bench-gmm", "family": {"name": "gmm", "components": 2, "tol": 1e-3, "max_iter": 100},
                   "data": {"source": "gmm", "weights": [0.4, 0.6], "means": [[-2.0, 0.0], [1.5, 1.0]],
                            "stds": [1.0, 0.7]},
                   "n": n, "generations": fits - 1, "seeds": chains, "batch_size": chains, "heldout": 2000,
                   "metrics": ["heldout_nll"]})
    from collapselab.data import make_source
    from collapselab.seeding import SeedTree

    source = make_source(exp.data, exp.heldout)
    tree = SeedTree(exp.seed)
    heldout = source.heldout(tree)["x"][0]
    real = source.pool(tree, 0, chains).take(0, n)["x"]

    def ours():
        return -run_chain(ChainTask(exp, exp.arms[0].name, 0))[:, 0, :]  # held-out log-likelihood

    def sklearn_loop():
        ll = np.empty((fits, chains))
        for c in range(chains):
            x = real[c]
            for g in range(fits):
                gm = GaussianMixture(2, tol=1e-3, max_iter=100, reg_covar=1e-6, init_params="k-means++",
                                     random_state=c * 1000 + g).fit(x)
                ll[g, c] = gm.score(heldout)
                x = gm.sample(n)[0]
        return ll

    return {"engine (batched EM)": ours, "scikit-learn loop": sklearn_loop}, (exp, real, heldout)


def paired_accuracy(exp, real, heldout) -> tuple[float, float]:
    """Mean held-out log-likelihood of ours vs scikit-learn fitted to the same 64 real training sets."""
    from sklearn.mixture import GaussianMixture

    from collapselab.families import make_family
    from collapselab.samples import SampleSet

    model = make_family(exp.arms[0].family, real.shape[0], {"dim": 2}).fit(SampleSet({"x": real}),
                                                                          rng=np.random.default_rng(0))
    ours = model.log_prob(SampleSet({"x": heldout[None]})).mean()
    sk = np.mean([GaussianMixture(2, tol=1e-3, max_iter=100, init_params="k-means++", random_state=c)
                  .fit(real[c]).score(heldout) for c in range(real.shape[0])])
    return float(ours), float(sk)


def run(variants: dict, repeats: int) -> tuple[dict[str, float], dict]:
    times: dict[str, list[float]] = {k: [] for k in variants}
    outputs = {}
    for _ in range(repeats):
        for name, fn in variants.items():
            t, out = timed(fn)
            times[name].append(t)
            outputs[name] = out
    return {k: statistics.median(v) for k, v in times.items()}, outputs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, not the targets)")
    args = ap.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, numpy {np.__version__}, "
          f"repeats {args.repeats} (median)")

    chains, fits = (100, 50) if args.quick else (1000, 200)
    variants, _ = gaussian_case(chains, 100, fits)
    med, _ = run(variants, args.repeats)
    eng, loop, floor = med["engine"], med["per-chain loop"], med["floor (normals only)"]
    print(f"\n[1] Gaussian d=1, n=100, {chains} chains x {fits} fits")
    for k, v in med.items():
        print(f"    {k:24s} {v:8.3f} s")
    print(f"    loop / engine  = {loop / eng:6.1f}x   (target >= 8x)   {'PASS' if loop / eng >= 8 else 'FAIL'}"
          f"   [loop with PCG64: {med['per-chain loop, PCG64'] / eng:.1f}x]")
    print(f"    engine / floor = {eng / floor:6.2f}x   (target <= 1.5x) {'PASS' if eng / floor <= 1.5 else 'FAIL'}")

    chains, fits = (16, 10) if args.quick else (64, 50)
    variants, (exp, real, heldout) = gmm_case(chains, 1000, fits)
    med, outs = run(variants, max(1, args.repeats // 2))
    ours_t, sk_t = med["engine (batched EM)"], med["scikit-learn loop"]
    ours_c, sk_c = outs["engine (batched EM)"].mean(axis=0), outs["scikit-learn loop"].mean(axis=0)
    ours_ll, sk_ll = ours_c.mean(), sk_c.mean()
    se = np.hypot(ours_c.std(ddof=1), sk_c.std(ddof=1)) / np.sqrt(chains)
    paired = paired_accuracy(exp, real, heldout)
    print(f"\n[2] GMM K=2, d=2, n=1000, {chains} chains x {fits} fits")
    for k, v in med.items():
        print(f"    {k:24s} {v:8.3f} s")
    print(f"    sklearn / engine = {sk_t / ours_t:6.1f}x (target >= 5x)  {'PASS' if sk_t / ours_t >= 5 else 'FAIL'}")
    rel = abs(ours_ll - sk_ll) / abs(sk_ll)
    print(f"    held-out log-lik, mean over all generations of independent chains: engine {ours_ll:.4f}, "
          f"sklearn {sk_ll:.4f} ({rel:.2%} apart = {abs(ours_ll - sk_ll) / se:.1f} standard errors)")
    prel = abs(paired[0] - paired[1]) / abs(paired[1])
    print(f"    paired (same {chains} real training sets): engine {paired[0]:.4f}, sklearn {paired[1]:.4f} "
          f"({prel:.3%} apart; target <= 1%) {'PASS' if prel <= 0.01 else 'FAIL'}")


if __name__ == "__main__":
    main()
