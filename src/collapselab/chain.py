"""Runs one chain batch (one arm, a block of seeds) generation by generation; persistence and resume.

Generation 0 fits the family on real data; generation g >= 1 draws from model g-1 through the curator,
lets the regime build the training set and refits under the arm's loss. After each fit the metrics are
measured against held-out real data / the truth. The engine never looks at what a sample is.

On disk (``<run>/chains/<arm>/b<batch>/``), every ``checkpoint_every`` generations and at the last:
``gNNNNN.safetensors`` (model state), ``regime.gNNNNN.safetensors`` (the regime's state, kept for the
latest checkpoint only) and ``gNNNNN.json`` (written last: the metric values of the generations since the
previous checkpoint).
A killed run resumes from its last complete checkpoint; since every random stream is addressed by
(arm, batch, generation, purpose) in the seed tree, the resumed run produces exactly the same results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from collapselab.curators import CurationError, CuratorContext
from collapselab.data import make_source
from collapselab.errors import ChainError
from collapselab.experiments.schema import Experiment
from collapselab.families import make_family
from collapselab.fitting import fit_with_loss
from collapselab.io import atomic_write_json, load_arrays, read_json, remove_stale_temps, save_arrays
from collapselab.metrics import MetricContext, compute
from collapselab.regimes import State
from collapselab.samples import SampleSet
from collapselab.seeding import SeedTree

Progress = Callable[[str, int, int], None]  # arm, batch, generation just finished


@dataclass(frozen=True)
class ChainTask:
    """One unit of work: an arm's chain batch (picklable, for process pools and distributed backends)."""

    experiment: Experiment
    arm: str
    batch: int
    run_dir: str | None = None

    @property
    def seeds(self) -> list[int]:
        return self.experiment.batch_seeds(self.batch)

    @property
    def folder(self) -> Path | None:
        return None if self.run_dir is None else chain_folder(Path(self.run_dir), self.arm, self.batch)


def chain_folder(run_dir: Path, arm: str, batch: int) -> Path:
    return run_dir / "chains" / arm / f"b{batch:04d}"


def _state_flat(state: State) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, s in state.items():
        out.update(s.to_flat(prefix=f"{key}."))
    return out


def _state_unflat(flat: dict[str, np.ndarray]) -> State:
    keys = sorted({k.split(".", 1)[0] for k in flat})
    return {k: SampleSet.from_flat({n: v for n, v in flat.items() if n.startswith(f"{k}.")}, prefix=f"{k}.")
            for k in keys}


def last_checkpoint(folder: Path) -> int | None:
    """The last generation with a complete checkpoint in ``folder``, or ``None``."""
    if not folder.is_dir():
        return None
    gens = [int(p.stem[1:]) for p in folder.glob("g*.json") if p.stem[1:].isdigit()]
    return max(gens) if gens else None


def _load(task: ChainTask, g: int, model) -> tuple[State, list[np.ndarray]]:
    folder = task.folder
    model.load_state_dict(load_arrays(folder / f"g{g:05d}.safetensors"))
    regime_file = folder / f"regime.g{g:05d}.safetensors"
    state = _state_unflat(load_arrays(regime_file)) if regime_file.exists() else {}
    values: list[np.ndarray] = []
    for p in sorted(folder.glob("g*.json")):
        if int(p.stem[1:]) <= g:
            values.extend(np.array(v, dtype=np.float64) for v in read_json(p)["values"])
    return state, values


def _save(task: ChainTask, g: int, model, state: State, values: list[np.ndarray]) -> None:
    folder = task.folder
    folder.mkdir(parents=True, exist_ok=True)
    save_arrays(folder / f"g{g:05d}.safetensors", model.state_dict(), {"generation": str(g)})
    if state:
        save_arrays(folder / f"regime.g{g:05d}.safetensors", _state_flat(state), {"generation": str(g)})
    atomic_write_json(folder / f"g{g:05d}.json",
                      {"arm": task.arm, "batch": task.batch, "generation": g, "seeds": task.seeds,
                       "metrics": task.experiment.metrics, "first_generation": g - len(values) + 1,
                       "values": [v.tolist() for v in values]})
    for old in folder.glob("regime.g*.safetensors"):  # only the latest regime state is needed
        if old.name != f"regime.g{g:05d}.safetensors":
            old.unlink(missing_ok=True)


def run_chain(task: ChainTask, progress: Progress | None = None, stop_after: int | None = None) -> np.ndarray:
    """Run (or resume) one chain batch; returns its metric values ``[generations, metrics, chains]``.

    ``stop_after`` ends the run after that generation (used to test resumption).
    """
    exp = task.experiment
    arm = exp.arm(task.arm)
    seeds = task.seeds
    c = len(seeds)
    tree = SeedTree(exp.seed)
    source = make_source(exp.data, exp.heldout)
    real = source.pool(tree, task.batch, c)
    heldout = source.heldout(tree)
    model = make_family(arm.family, c, source.spec)
    ctx = CuratorContext(source)
    mctx = MetricContext.make(source, heldout, None, arm.curator, c)
    n, m = exp.n, arm.n_synthetic

    start, state, saved = 0, {}, []
    done = None
    if task.folder is not None:
        remove_stale_temps(task.folder)  # a kill during an atomic write leaves its temp file
        done = last_checkpoint(task.folder)
    if done is not None:
        state, saved = _load(task, done, model)
        start = done + 1
        for g in range(start):
            if progress:
                progress(task.arm, task.batch, g)
    pending: list[np.ndarray] = []  # [metrics, chains] per generation since the last checkpoint
    last = exp.generations if stop_after is None else min(stop_after, exp.generations)
    for g in range(start, last + 1):
        def stream(purpose: str, g: int = g) -> np.random.Generator:
            return tree.lazy_rng("model", task.arm, task.batch, g, purpose)  # type: ignore[return-value]

        try:
            if g == 0:
                train, state = arm.regime.initial(real, n)
            else:
                synthetic = arm.curator.curate(model, arm.regime.request(g, n, m, state), stream("synthetic"), ctx)
                train, state = arm.regime.build(g, n, m, real, state, synthetic, stream("regime"))
        except CurationError as e:
            raise ChainError(task.arm, f"{seeds[0]}-{seeds[-1]}", g, str(e)) from None
        init = model if (g > 0 and arm.regime.warm_start) else None
        fit_with_loss(model, train, arm.loss, stream("fit"), init=init, steps=exp.loss_steps)
        finite = model.finite_chains()
        if not finite.all():
            bad = seeds[int(np.argmin(finite))]
            raise ChainError(task.arm, bad, g, "the fit is not finite (NaN or inf parameters)")
        mctx.rng, mctx.cache = stream("metrics"), {}
        values = compute(exp.metrics, model, mctx)
        pending.append(np.stack([values[name] for name in exp.metrics]))
        # checkpoints fall on a fixed grid, so a resumed run writes exactly the files of an uninterrupted one
        if task.folder is not None and (g % exp.checkpoint_every == 0 or g == exp.generations):
            _save(task, g, model, state, pending)
            saved.extend(pending)
            pending = []
        if progress:
            progress(task.arm, task.batch, g)
    return np.stack(saved + pending) if saved or pending else np.empty((0, len(exp.metrics), c))
