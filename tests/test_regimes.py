"""Regimes: training-set sizes, accumulate, mix, fresh real data, fortifai stages, growing synthetic schedules."""

from __future__ import annotations

import numpy as np
import pytest

from collapselab.data import make_source
from collapselab.data.digits import DigitsConfig
from collapselab.data.truth import GaussianTruthConfig
from collapselab.regimes import Accumulate, AccumulateSubsample, Fortifai, FreshReal, Mix, Replace
from collapselab.samples import SampleSet
from collapselab.seeding import SeedTree


def _pool(source_cfg=None, chains=2):
    src = make_source(source_cfg or GaussianTruthConfig(dim=1), 100)
    return src, src.pool(SeedTree(0), 0, chains)


def _synthetic(chains, n, tag):
    return SampleSet({"x": np.full((chains, n, 1), float(tag))})



@pytest.mark.parametrize("regime, sizes", [
    (Replace(), [10, 7, 7]), (Accumulate(), [10, 17, 24]), (AccumulateSubsample(), [10, 10, 10]),
    (Mix(lam=0.5), [10, 15, 15]), (FreshReal(alpha=0.3), [10, 10, 10]), (Fortifai(chunks=2), [10, 20, 20]),
])
def test_training_set_sizes(regime, sizes):
    _, real = _pool()
    n, m = 10, 7
    train, state = regime.initial(real, n)
    got = [train.n]
    for g in (1, 2):
        req = regime.request(g, n, m, state)
        syn = _synthetic(2, req if isinstance(req, int) else req.n, g)
        train, state = regime.build(g, n, m, real, state, syn, np.random.default_rng(g))
        got.append(train.n)
    assert got == sizes



def test_accumulate_keeps_everything_and_mix_reuses_the_same_real():
    _, real = _pool()
    first, state = Accumulate().initial(real, 5)
    t1, state = Accumulate().build(1, 5, 3, real, state, _synthetic(2, 3, 1), None)
    t2, _ = Accumulate().build(2, 5, 3, real, state, _synthetic(2, 3, 2), None)
    np.testing.assert_array_equal(t2["x"][:, :5], first["x"])
    np.testing.assert_array_equal(t2["x"][:, 5:8], 1.0)
    mix, _ = Mix(lam=1.0).build(4, 5, 5, real, {}, _synthetic(2, 5, 9), None)
    np.testing.assert_array_equal(mix["x"][:, :5], first["x"])



def test_accumulate_subsample_draws_without_replacement():
    """Every sample of the accumulated pool carries a distinct id, so a draw with replacement would show a
    repeated id: n distinct ids, all from the chain's own pool, over many draws."""
    _, real = _pool()
    _, state = AccumulateSubsample().initial(real, 5)
    state = {"pool": SampleSet({"x": np.arange(2 * 5, dtype=np.float64).reshape(2, 5, 1)})}
    for g in range(1, 30):
        ids = 1000.0 * g + np.arange(2 * 5, dtype=np.float64).reshape(2, 5, 1)
        train, state = AccumulateSubsample().build(g, 5, 5, real, state, SampleSet({"x": ids}),
                                                   np.random.default_rng(g))
        pool = state["pool"]["x"][..., 0]
        for c in range(2):
            picked = train["x"][c, :, 0]
            assert len(set(picked.tolist())) == 5, picked
            assert set(picked.tolist()) <= set(pool[c].tolist())



def test_fresh_real_and_fortifai_use_new_disjoint_real_data():
    src, real = _pool(DigitsConfig(dims=2))
    n = 20
    _, _ = FreshReal(alpha=0.25).initial(real, n)
    t1, _ = FreshReal(alpha=0.25).build(1, n, n, real, {}, SampleSet({"x": np.zeros((2, 15, 2))}), None)
    t2, _ = FreshReal(alpha=0.25).build(2, n, n, real, {}, SampleSet({"x": np.zeros((2, 15, 2))}), None)
    g0 = real.take(0, n)["x"]
    new1, new2 = t1["x"][:, :5], t2["x"][:, :5]
    for c in range(2):
        rows = {tuple(r) for r in g0[c]}
        assert not ({tuple(r) for r in new1[c]} & rows) and not ({tuple(r) for r in new2[c]} & rows)
        assert not ({tuple(r) for r in new1[c]} & {tuple(r) for r in new2[c]})
    assert FreshReal(alpha=0.25).real_needed(20, 10) == 20 + 10 * 5
    f = Fortifai(chunks=3)
    train, state = f.initial(real, n)
    req = f.request(1, n, n, state)
    assert req is state["train"] and f.warm_start
    t, state = f.build(1, n, n, real, state, SampleSet({"x": np.ones((2, n, 2))}), None)
    np.testing.assert_array_equal(t["x"][:, n:], real.take(n, n)["x"])  # real chunk 1
    assert f.real_needed(n, 10) == 3 * n



def test_fortifai_oracle_trains_on_the_real_chunks_and_draws_nothing():
    _, real = _pool(DigitsConfig(dims=2))
    n, f = 10, Fortifai(chunks=3, oracle=True)
    train, state = f.initial(real, n)
    assert not f.rewrites and f.warm_start and f.request(1, n, n, state) is None
    for g, size in ((1, 20), (2, 30), (3, 30)):
        train, state = f.build(g, n, n, real, state, None, None)
        np.testing.assert_array_equal(train["x"], real.take(0, size)["x"])  # real chunks 0..g (3 at most)



def test_a_growing_synthetic_schedule_draws_start_plus_step_per_generation(tmp_path):
    """Yi et al.'s delta x round: ``n_synthetic: {start, step}`` (or a list) sets each generation's synthetic size;
    under accumulate the pool grows by exactly those sizes (read back from the checkpoints' regime state)."""
    from collapselab.chain import ChainTask, run_chain
    from collapselab.store import ChainStore

    from .helpers import make_experiment

    for size, want in (({"start": 5, "step": 5}, [5, 10, 15]), ([7, 3, 11], [7, 3, 11]), (6, [6, 6, 6])):
        exp = make_experiment(n=20, n_synthetic=size, regime={"name": "accumulate"}, seeds=2)
        assert [exp.arms[0].synthetic(g) for g in (1, 2, 3)] == want
        run = tmp_path / f"run{len(list(tmp_path.iterdir()))}"
        from collapselab.runs import create_run

        chain = ChainStore(run / "chains" / exp.arms[0].name / "b0000", run)
        sizes = []
        with create_run(exp, run) as store:
            for g in (1, 2, 3):  # the regime's state is kept for the newest two checkpoints: read each in turn
                run_chain(ChainTask(exp, exp.arms[0].name, 0, str(store.root)), stop_after=g)
                sizes.append(chain.load(g)[1]["pool.x"].shape[1])
        assert np.diff([20, *sizes]).tolist() == want


