"""Benchmark of a whole run through the CLI path against the in-memory engine and a per-chain loop.

    python benchmarks/bench_runs.py [--repeats 5] [--seeds 1000] [--generations 200]

``shumailov-gaussian`` (2 arms: unbiased and MLE variance; n = 100; metrics variance_ratio, param_error,
kl_to_truth) with 1,000 chains x 200 generations per arm, three ways, interleaved, in one process:

1. **execute**: the in-memory engine, ``assemble(exp, execute(exp, None))``: the simulation alone.
2. **CLI**: ``collapselab run shumailov-gaussian --seeds 1000 --out DIR --overwrite -q`` called in this process
   (``collapselab.cli.main``): run directory, checksummed checkpoints every 10 generations, the tidy table
   (``metrics.parquet``), summary, figures and report; and the same with ``--csv`` (``metrics.csv`` too).
3. **per-chain loop**: a plain numpy loop over arms and chains doing the same math (draw n normals from
   the current fit, refit mean and variance, compute the three metrics), as published collapse code does.

Targets: CLI <= 1.5x execute; CLI >= 3x faster than the loop. Also reported: the bytes the run directory
holds per (chain, generation, metric), in all and by part. Each time is the median of ``--repeats`` runs.

``--ray`` adds the Ray backend against the local process pool at the same core count, each a fresh
``collapselab`` process (start-up included), interleaved, median of ``--ray-repeats``:

4. ``fortifai-gmm`` (all arms, 16 seeds): ``-w CORES`` against ``--backend ray`` (a local instance sized to the
   machine). Target: <= 1.25x.
5. tiny chains: ``shumailov-gaussian`` with one chain per task (``batch_size: 1``), 200 seeds x 1 generation
   (400 tasks): tasks per second of each backend, start-up excluded (a run of 2 seeds is subtracted).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from collapselab.cli import main as cli_main
from collapselab.experiments import load_experiment
from collapselab.runs import assemble, execute


def loop(seeds: int, generations: int, n: int = 100) -> np.ndarray:
    """Both arms, chain by chain: values [arms, seeds, generations + 1, 3]."""
    out = np.empty((2, seeds, generations + 1, 3))
    for a, ddof in enumerate((1, 0)):  # unbiased, MLE
        for c in range(seeds):
            rng = np.random.Generator(np.random.SFC64(c))
            mu, var = 0.0, 1.0
            for g in range(generations + 1):
                x = rng.normal(mu, np.sqrt(var), n)
                mu, var = x.mean(), x.var(ddof=ddof)
                kl = 0.5 * ((1.0 + mu * mu) / var - 1.0 + np.log(var)) if var > 0 else np.inf
                out[a, c, g] = (var, mu * mu, kl)
    return out


def run_dir_bytes(root: Path) -> dict[str, int]:
    parts = {"checkpoints": 0, "tables": 0, "report": 0}
    for p in root.rglob("*"):
        if p.is_file():
            rel = p.relative_to(root).as_posix()
            key = "checkpoints" if rel.startswith("chains/") else "tables" if rel.startswith("metrics.") else "report"
            parts[key] += p.stat().st_size
    return parts


def _wall(*args: str) -> float:
    """Seconds of one ``collapselab run`` in a fresh process (imports and backend start-up included)."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "collapselab", "run", *args, "--out", f"{tmp}/run", "-q"],
                              capture_output=True, text=True)
        if done.returncode:
            raise RuntimeError(f"collapselab run {' '.join(args)} failed: {done.stderr.strip()}")
        return time.perf_counter() - t0


def ray_section(repeats: int) -> None:
    from collapselab.torch_runtime import usable_cores

    cores = usable_cores()
    local, ray = ["-w", str(cores)], ["--backend", "ray"]
    gmm = ["fortifai-gmm", "--seeds", "16"]
    times: dict[str, list[float]] = {"local": [], "ray": []}
    for _ in range(repeats):
        times["local"].append(_wall(*gmm, *local))
        times["ray"].append(_wall(*gmm, *ray))
    lo, ra = statistics.median(times["local"]), statistics.median(times["ray"])
    print(f"\nfortifai-gmm, all arms, 16 seeds, {cores} cores (fresh process each, median of {repeats})")
    print(f"  local process pool (-w {cores})  {lo:7.2f} s")
    print(f"  --backend ray (local instance) {ra:7.2f} s")
    print(f"  ray / local          {ra / lo:6.2f}x   (target <= 1.25x)")
    tiny = ["shumailov-gaussian", "--generations", "1", "--set", "batch_size=1"]
    print("tiny chains (one chain per task, 1 generation): tasks per second, start-up excluded")
    for name, backend in (("local", local), ("ray", ray)):
        big = statistics.median(_wall(*tiny, "--seeds", "200", *backend) for _ in range(repeats))
        small = statistics.median(_wall(*tiny, "--seeds", "2", *backend) for _ in range(repeats))
        rate = 396 / max(big - small, 1e-9)
        print(f"  {name:<6} {rate:8.1f} tasks/s   (400 tasks {big:.1f} s, 4 tasks {small:.1f} s)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=1000)
    ap.add_argument("--generations", type=int, default=200)
    ap.add_argument("--ray", action="store_true", help="also the Ray backend against the local process pool")
    ap.add_argument("--ray-repeats", type=int, default=3)
    args = ap.parse_args()
    if args.ray:
        ray_section(args.ray_repeats)
    exp = load_experiment("shumailov-gaussian", seeds=args.seeds, generations=args.generations)
    out = Path(tempfile.mkdtemp(prefix="bench-runs-")) / "run"
    argv = ["run", "shumailov-gaussian", "--seeds", str(args.seeds), "--generations", str(args.generations),
            "--out", str(out), "--overwrite", "-q"]

    def engine():
        return assemble(exp, execute(exp, None))

    def cli(extra: tuple[str, ...] = ()):
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                cli_main(argv + list(extra))
            except SystemExit as e:
                if e.code:
                    raise RuntimeError(f"the CLI run failed with exit code {e.code}") from None

    def per_chain():
        return loop(args.seeds, args.generations)

    variants = {"execute (in memory)": engine, "CLI run --csv": lambda: cli(("--csv",)),
                "CLI run (end to end)": cli, "per-chain loop": per_chain}
    for fn in variants.values():  # warm-up: imports, caches, the first figure
        fn()
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(args.repeats):
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"shumailov-gaussian: 2 arms x {args.seeds} chains x {args.generations} generations "
          f"({platform.machine()}, median of {args.repeats})")
    for name, t in med.items():
        print(f"  {name:<24}{t:8.3f} s   (min {min(times[name]):.3f}, max {max(times[name]):.3f})")
    e, c, lp = med["execute (in memory)"], med["CLI run (end to end)"], med["per-chain loop"]
    print(f"  CLI / execute        {c / e:6.2f}x   (target <= 1.5x)")
    print(f"  loop / CLI           {lp / c:6.2f}x   (target >= 3x)")
    print(f"  CLI --csv / execute  {med['CLI run --csv'] / e:6.2f}x   (metrics.csv is opt-in)")
    cli()  # the run directory measured below is the default one (no metrics.csv)
    cells = 2 * args.seeds * (args.generations + 1) * len(exp.metrics)
    parts = run_dir_bytes(out)
    total = sum(parts.values())
    print(f"  run directory {total / 1e6:.1f} MB = {total / cells:.1f} bytes per (chain, generation, metric): "
          + ", ".join(f"{k} {v / cells:.1f}" for k, v in parts.items()))


if __name__ == "__main__":
    main()
