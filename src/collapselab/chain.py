"""Runs one chain batch (one arm, a block of seeds) generation by generation; persistence and resume.

Generation 0 fits the family on real data; generation g >= 1 draws from model g-1 through the curator,
lets the regime build the training set and refits under the arm's loss. After each fit the metrics are
measured against held-out real data / the truth. The engine never looks at what a sample is.

Random streams are addressed by (chain batch, generation, purpose) in the run's seed tree, **not** by arm:
arms draw common random numbers, so two arms whose settings agree up to generation g have identical
chains up to g, and arms that differ are coupled as tightly as their settings allow (the classic variance
reduction for paired comparisons; real data are shared the same way).

With a run directory, every ``checkpoint_every`` generations and at the last one the chain writes a
checkpoint through :mod:`collapselab.store` (model state and the metric values since the previous
checkpoint, in safetensors; the regime's state; a commit record with their sha256). A killed run resumes
from its newest checkpoint that verifies; checkpoints fall on a fixed grid and every stream is addressed
as above, so the resumed run ends with exactly the files of an uninterrupted one.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from collapselab.curators import CurationError, CuratorContext
from collapselab.errors import ChainError, ConfigError, NumericalError
from collapselab.experiments.schema import Experiment
from collapselab.families import make_family
from collapselab.families.base import Family
from collapselab.metrics import MetricContext, compute
from collapselab.regimes import State
from collapselab.samples import SampleSet
from collapselab.seeding import SeedTree
from collapselab.store import ChainStore, Writer, chain_folder

Progress = Callable[[str, int, int], None]  # arm, batch, generation just finished


def drain(events: Any, progress: Callable | None) -> None:
    """Pass every progress event waiting in ``events`` (a multiprocessing or Ray queue) to ``progress``."""
    while True:
        try:
            item = events.get_nowait()
        except (queue.Empty, OSError, ValueError):
            return
        if progress:
            progress(*item)


#: exceptions of numerical origin inside a fit or a metric: they take the chain-error path.
NUMERICAL = (np.linalg.LinAlgError, ArithmeticError, NumericalError)
CURATOR = "__curator__."  # prefix of a curator's kept arrays in the checkpoint's state file


@dataclass(frozen=True)
class ChainTask:
    """One unit of work: an arm's chain batch (picklable, for process pools and distributed backends)."""

    experiment: Experiment
    arm: str
    batch: int
    run_dir: str | None = None

    @property
    def chain_indices(self) -> list[int]:
        """The seed indices of this batch's chains."""
        return self.experiment.chain_indices(self.batch)

    @property
    def folder(self) -> Path | None:
        return None if self.run_dir is None else chain_folder(Path(self.run_dir), self.arm, self.batch)

    def store(self, writer: Writer | None = None) -> ChainStore | None:
        return None if self.run_dir is None else ChainStore(self.folder, Path(self.run_dir), writer)

    def label(self) -> str:
        s = self.chain_indices
        return f"{s[0]}" if len(s) == 1 else f"{s[0]}-{s[-1]}"


def checkpoint_info(task: ChainTask) -> dict:
    """What a checkpoint record says about its chain batch (checked on resume)."""
    s = task.chain_indices
    return {"arm": task.arm, "batch": task.batch, "seed_indices": [s[0], s[-1]], "n_chains": len(s),
            "metrics": list(task.experiment.metrics)}


def _runtime(model: Family) -> dict[str, dict[str, str]]:
    """``{"runtime": ...}``: where a torch family computed this checkpoint (device, precision), or nothing."""
    rt = model.runtime()
    return {"runtime": rt} if rt else {}


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
    """The newest generation with a checkpoint record in ``folder`` (unverified), or ``None``."""
    gens = ChainStore(folder).record_generations()
    return gens[-1] if gens else None


def _bad_chain(task: ChainTask, err: Exception) -> int | str:
    chain = getattr(err, "chain", None)
    return task.chain_indices[chain] if chain is not None else task.label()


def run_chain(task: ChainTask, progress: Progress | None = None, stop_after: int | None = None) -> np.ndarray:
    """Run (or resume) one chain batch; returns its metric values ``[generations + 1, metrics, chains]``.

    ``stop_after`` ends the run after that generation (used to test resumption); the values returned then
    cover only the generations run. Checkpoints are written on a background thread (:class:`Writer`); all of
    them are on disk when this returns or raises.
    """
    writer = Writer() if task.run_dir is not None else None
    try:
        return _run_chain(task, progress, stop_after, writer)
    finally:
        if writer is not None:
            writer.close()


def _run_chain(task: ChainTask, progress: Progress | None, stop_after: int | None,
               writer: Writer | None) -> np.ndarray:
    exp = task.experiment
    arm = exp.arm(task.arm)
    seeds = task.chain_indices
    c = len(seeds)
    tree = SeedTree(exp.seed)
    source = exp.make_source()
    real = source.pool(tree, task.batch, c)
    heldout = source.heldout(tree, task.batch)
    model = make_family(arm.family, c, source.spec)
    ctx = CuratorContext(source)
    mctx = MetricContext.make(source, heldout, None, arm.curator, c, n=exp.n, tree=tree, batch=task.batch,
                              loss=arm.loss)
    n = exp.n

    start, state, values = 0, {}, []
    shown: dict[int, dict] = {}  # the family's exhibits of the generations since the last checkpoint
    store = task.store(writer)
    if store is not None:
        scan = store.scan(exp.metrics, c, last=exp.generations)
        if scan.problem is not None and scan.resume is None:  # execute() repairs this before any task starts
            raise ConfigError(f"{scan.problem}; `collapselab resume` falls back to the newest checkpoint "
                              f"that verifies")
        # a task run again after its worker died (a Ray retry) drops what that worker left half-written and goes
        # on from the newest checkpoint that verifies; for a first run this finds nothing to remove
        store.prune(scan.resume)
        if scan.resume is not None:
            model_state, regime_state = store.load(scan.resume)
            files = store.model_files(scan.resume)
            if files:
                model.load_export(files)
            else:
                model.load_state_dict(model_state)
            regime_state = regime_state or {}
            ctx.state.update({k[len(CURATOR):]: v for k, v in regime_state.items() if k.startswith(CURATOR)})
            regime_state = {k: v for k, v in regime_state.items() if not k.startswith(CURATOR)}
            state = _state_unflat(regime_state) if regime_state else {}
            values = list(scan.values)
            start = scan.resume + 1
            if progress:
                for g in range(start):
                    progress(task.arm, task.batch, g)
    first = start  # first generation not yet in a checkpoint
    last = exp.generations if stop_after is None else min(stop_after, exp.generations)
    for g in range(start, last + 1):
        def stream(purpose: str, g: int = g) -> np.random.Generator:
            return tree.lazy_rng("model", task.batch, g, purpose)  # type: ignore[return-value]

        try:
            if g == 0:
                train, state = arm.regime.initial(real, n)
            else:
                m = arm.synthetic(g)
                request = arm.regime.request(g, n, m, state)
                synthetic = None if request is None else arm.curator.curate(model, request, stream("synthetic"), ctx)
                train, state = arm.regime.build(g, n, m, real, state, synthetic, stream("regime"))
        except CurationError as e:
            raise ChainError(task.arm, task.label(), g, str(e)) from None
        init = model if (g > 0 and arm.regime.warm_start) else None
        try:
            model.fit_loss(train, arm.loss, stream("fit"), init=init, steps=exp.loss_steps)
        except NUMERICAL as e:
            raise ChainError(task.arm, _bad_chain(task, e), g, f"the fit failed ({_describe(e)})") from None
        finite = model.finite_chains()
        if not finite.all():
            bad = seeds[int(np.argmin(finite))]
            raise ChainError(task.arm, bad, g, "the fit is not finite (NaN or inf parameters)")
        mctx.rng, mctx.cache, mctx.real_seen = stream("metrics"), {}, arm.regime.real_needed(n, g)
        try:
            measured = compute(exp.metrics, model, mctx)
        except NUMERICAL as e:
            raise ChainError(task.arm, _bad_chain(task, e), g, f"a metric failed ({_describe(e)})") from None
        values.append(np.stack([measured[name] for name in exp.metrics]))
        if model.exhibits:  # what the family shows in the report (chain 0), saved with the next checkpoint
            shown[g] = model.exhibit(heldout, stream("exhibits"))
        # checkpoints fall on a fixed grid, so a resumed run writes exactly the files of an uninterrupted one
        if store is not None and (g % exp.checkpoint_every == 0 or g == exp.generations):
            files = model.export()
            store.save(g, first, {} if files else model.state_dict(), np.stack(values[first:]),
                       {**_state_flat(state), **{CURATOR + k: v for k, v in ctx.state.items()}} or None,
                       {**checkpoint_info(task), **_runtime(model)}, model_files=files,
                       keep_model=best_checkpoint(exp, values) if files else None, exhibits=shown)
            first, shown = g + 1, {}
        if progress:
            progress(task.arm, task.batch, g)
    return np.stack(values) if values else np.empty((0, len(exp.metrics), c))


def best_checkpoint(exp: Experiment, values: list[np.ndarray]) -> int:
    """The checkpointed generation with the best seed-mean value of the failure metric (else the first metric),
    by the metric's direction; the newest on ties."""
    from collapselab.metrics import METRICS

    name = exp.primary_rule.metric if exp.primary_rule is not None else exp.metrics[0]
    col = np.array([np.nanmean(v[exp.metrics.index(name)]) for v in values])
    sign = -1.0 if METRICS[name].better == "higher" else 1.0
    gens = [g for g in range(len(values)) if g % exp.checkpoint_every == 0 or g == exp.generations]
    score = np.where(np.isnan(col[gens]), np.inf, sign * col[gens])
    return gens[len(gens) - 1 - int(np.argmin(score[::-1]))]


def _describe(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text and not isinstance(e, NumericalError) else text or type(e).__name__
