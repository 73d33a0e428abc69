"""The chain engine: determinism, bitwise resume, non-finite fits, backends."""

from __future__ import annotations

import numpy as np
import pytest

from collapselab.chain import ChainTask, last_checkpoint, run_chain
from collapselab.errors import ChainError
from collapselab.families.gaussian import Gaussian
from collapselab.runs import assemble, create_run, execute, finish
from collapselab.store import RunStore

from .helpers import make_experiment, run_files

GMM_EXP = {"family": {"name": "gmm", "components": 2}, "data": {"source": "gmm"}, "n": 120, "generations": 6,
           "seeds": 6, "batch_size": 3, "metrics": ["tail_mass", "kl_to_truth"],
           "arms": [{"name": "ce"}, {"name": "tce", "loss": {"name": "tce", "gamma": 0.9},
                                     "regime": {"name": "fortifai", "chunks": 3}},
                    {"name": "acc", "regime": {"name": "accumulate"}}],
           "failure": {"metric": "tail_mass", "threshold": 0.05}}




def test_same_experiment_same_results_and_seed_changes_them():
    exp = make_experiment(**GMM_EXP)
    a = assemble(exp, execute(exp, None))
    b = assemble(exp, execute(exp, None))
    np.testing.assert_array_equal(a, b)
    c = assemble(exp, execute(make_experiment(**GMM_EXP, seed=1), None))
    assert not np.array_equal(a, c)


def test_real_data_are_shared_across_arms():
    """Generation 0 of two arms with the same loss fits the same real data: identical Gaussian fits."""
    exp = make_experiment(arms=[{"name": "a"}, {"name": "b", "regime": {"name": "accumulate"}}])
    v = assemble(exp, execute(exp, None))
    np.testing.assert_array_equal(v[0, :, 0], v[1, :, 0])
    assert not np.array_equal(v[0, :, 1], v[1, :, 1])


def test_killed_run_resumes_to_identicalrun_files(tmp_path):
    exp = make_experiment(**GMM_EXP, checkpoint_every=2)
    with create_run(exp, tmp_path / "full") as full:
        finish(exp, full, assemble(exp, execute(exp, full)))
    with create_run(exp, tmp_path / "part") as part:
        for arm in exp.arms:  # interrupt every chain at a different point, one mid-way between checkpoints
            for b in range(exp.n_batches):
                run_chain(ChainTask(exp, arm.name, b, str(part.root)), stop_after=3 if b else 4)
        assert last_checkpoint(part.root / "chains" / "ce" / "b0001") == 2  # generation 3 was lost with the kill
        assert last_checkpoint(part.root / "chains" / "ce" / "b0000") == 4
        finish(exp, part, assemble(exp, execute(exp, part)))
    assert run_files(tmp_path / "full") == run_files(tmp_path / "part")


def test_workers_do_not_change_results(tmp_path):
    exp = make_experiment(**GMM_EXP)
    serial = assemble(exp, execute(exp, None, workers=1))
    pooled = assemble(exp, execute(exp, None, workers=2))
    np.testing.assert_array_equal(serial, pooled)


def test_non_finite_fit_stops_the_chain_and_keeps_finished_generations(tmp_path, monkeypatch):
    exp = make_experiment(generations=6, seeds=4)
    with create_run(exp, tmp_path / "run") as store:
        run_dir = store.root
    original = Gaussian.fit
    calls = {"n": 0}

    def broken(self, data, weights=None, init=None, rng=None):
        original(self, data, weights, init, rng)
        calls["n"] += 1
        if calls["n"] == 4:  # generation 3
            self.cov[2] = np.nan
        return self

    monkeypatch.setattr(Gaussian, "fit", broken)
    with pytest.raises(ChainError) as err:
        run_chain(ChainTask(exp, exp.arms[0].name, 0, str(run_dir)))
    assert (err.value.arm, err.value.seed, err.value.generation) == (exp.arms[0].name, 2, 3)
    assert "seed 2, generation 3" in str(err.value)
    assert last_checkpoint(run_dir / "chains" / exp.arms[0].name / "b0000") == 2


def test_resume_removes_temp_files_of_interrupted_writes(tmp_path):
    exp = make_experiment(generations=4)
    with create_run(exp, tmp_path / "run") as store:
        run_dir = store.root
    task = ChainTask(exp, exp.arms[0].name, 0, str(run_dir))
    run_chain(task, stop_after=2)
    stale = task.folder / ".g00003.json.abc123.tmp"
    stale.write_text("{half a file")
    with RunStore.open(run_dir) as store:
        execute(exp, store)
    assert not stale.exists() and last_checkpoint(task.folder) == 4


@pytest.mark.parametrize(("metrics", "rule", "series", "best"), [
    (["w1"], None, [3.0, 0.1, 1.0, 0.5, 2.0], 2),  # lower is better: the smallest checkpointed seed mean
    (["variance_ratio"], None, [0.1, 5.0, 0.2, 0.9, 0.9], 4),  # higher is better: the largest
    # the primary failure metric decides, not the first metric: tail_mass (lower is better) in column 1
    (["variance_ratio", "tail_mass"], {"metric": "tail_mass", "threshold": 0.5, "direction": "above"},
     [0.4, 0.0, 0.1, 0.3, 0.2], 2),
])
def test_the_best_checkpoint_follows_the_metric_direction(metrics, rule, series, best):
    """Which generation is kept as the best model: by the primary failure metric (else the first metric), the
    lowest seed mean for a lower-is-better metric, the highest for a higher-is-better one, among checkpointed
    generations only (generation 1 holds the extreme but is not checkpointed), the newest on ties."""
    from collapselab.chain import best_checkpoint

    from .helpers import make_experiment

    exp = make_experiment(metrics=metrics, generations=4, checkpoint_every=2, **({"failure": rule} if rule else {}))
    col = len(metrics) - 1
    values = []
    for v in series:  # generations 0..4, [metrics, chains]: the scored column varies around v, the other is noise
        g = np.full((len(metrics), 3), 7.0)
        g[col] = [v - 0.01, v, v + 0.01]
        values.append(g)
    assert best_checkpoint(exp, values) == best
    assert best_checkpoint(exp, [np.ones((len(metrics), 3)) for _ in range(5)]) == 4  # the newest on ties
