"""Metrics against independent computations; collapse timing and bootstrap."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import integrate, stats

from collapselab.curators import NoCurator
from collapselab.data import make_source
from collapselab.data.truth import CategoricalTruthConfig, GaussianTruthConfig, GMMTruthConfig
from collapselab.families import GMM, Categorical, Gaussian, GaussianConfig
from collapselab.metrics import METRICS, FailureRule, MetricContext, compute
from collapselab.metrics.timing import boot_means, bootstrap_weights, crossing_times, order_stat_interval
from collapselab.seeding import SeedTree


def _ctx(source_cfg, heldout=4000, chains=2, seed=0):
    src = make_source(source_cfg, heldout)
    tree = SeedTree(seed)
    return MetricContext.make(src, src.heldout(tree), tree.rng("m"), NoCurator(), chains)


def test_kl_gaussian_closed_form_matches_monte_carlo():
    ctx = _ctx(GaussianTruthConfig(dim=2, mean=0.5, std=1.5), heldout=200_000, chains=1)
    model = Gaussian.from_params([[0.2, 0.9]], [[[2.0, 0.3], [0.3, 1.0]]])
    closed = METRICS["kl_to_truth"].fn(model, ctx)[0]
    mc = np.mean(ctx.truth.log_prob(ctx.heldout) - model.log_prob(ctx.heldout))
    assert closed == pytest.approx(mc, rel=0.02)


@pytest.mark.heavy
def test_gmm_l2_closed_form_matches_numerical_integration():
    truth_cfg = GMMTruthConfig(weights=[0.6, 0.4], means=[[0.0, 0.0], [2.0, 1.0]], stds=[1.0, 0.6])
    ctx = _ctx(truth_cfg, chains=1)
    model = GMM.from_params([[0.5, 0.5]], [[[0.3, 0.0], [1.5, 1.5]]], [[np.eye(2), np.eye(2) * 0.5]])
    closed = METRICS["gmm_l2_to_truth"].fn(model, ctx)[0]
    from collapselab.samples import SampleSet

    def sq(y, x):
        pt = np.exp(ctx.truth.log_prob(SampleSet({"x": np.array([[[x, y]]])})))[0, 0]
        pm = np.exp(model.log_prob(SampleSet({"x": np.array([[[x, y]]])})))[0, 0]
        return (pt - pm) ** 2

    numeric = integrate.dblquad(sq, -8, 10, -8, 10, epsabs=1e-9)[0]
    assert closed == pytest.approx(np.sqrt(numeric), rel=1e-4)


def test_w1_tail_mass_and_variance_ratio_on_the_truth():
    ctx = _ctx(GaussianTruthConfig(dim=1), heldout=20_000, chains=2)
    truth = ctx.truth
    vals = compute(["w1", "tail_mass", "variance_ratio", "param_error", "kl_to_truth"], truth, ctx)
    np.testing.assert_array_equal(vals["variance_ratio"], 1.0)
    np.testing.assert_array_equal(vals["param_error"], 0.0)
    np.testing.assert_allclose(vals["kl_to_truth"], 0.0, atol=1e-12)
    # a correct model puts 1% of the real mass in its 1% tail: binomial SE = 0.0007
    np.testing.assert_allclose(vals["tail_mass"], 0.01, atol=0.003)
    assert np.all(vals["w1"] < 0.03)
    own = ctx.cache["own"]["x"][0, :, 0]
    assert vals["w1"][0] == pytest.approx(stats.wasserstein_distance(own, ctx.heldout["x"][0, :, 0]), rel=1e-12)
    narrow = Gaussian.from_params([[0.0]], [[[0.25]]]).tile(2)
    # N(0, 0.5^2)'s 1% tail is |x| > 0.5 z_0.995; N(0, 1) puts 2 sf(0.5 z_0.995) = 0.198 there
    expected = 2 * stats.norm.sf(0.5 * stats.norm.isf(0.005))
    assert METRICS["tail_mass"].fn(narrow, ctx)[0] == pytest.approx(expected, abs=0.01)


def test_categorical_metrics_are_exact():
    ctx = _ctx(CategoricalTruthConfig(vocab=4, probs=[0.4, 0.3, 0.2, 0.1]), chains=1)
    model = Categorical.from_probs([[0.5, 0.5, 0.0, 0.0]])
    vals = compute(["support_fraction", "entropy", "kl_to_truth"], model, ctx)
    assert vals["support_fraction"][0] == 0.5
    assert vals["entropy"][0] == pytest.approx(np.log(2))
    assert vals["kl_to_truth"][0] == np.inf  # real symbols of probability 0 under the model
    vals = compute(["kl_to_truth"], Categorical.from_probs([[0.25] * 4]), ctx)
    p = np.array([0.4, 0.3, 0.2, 0.1])
    assert vals["kl_to_truth"][0] == pytest.approx(np.sum(p * np.log(p / 0.25)))


def test_crossing_times_interpolate_and_censor():
    rule = FailureRule(metric="m", threshold=0.5, direction="below")
    curves = np.array([[1, 0.8, 0.6, 0.4, 0.2], [1, 1, 1, 1, 1], [0.4, 0.3, 0.2, 0.1, 0], [1, 0.9, np.inf, 0, 0]])
    np.testing.assert_array_equal(crossing_times(curves, rule), [2.5, np.inf, 0.0, 3.0])  # no interpolation past inf
    up = FailureRule(metric="m", threshold=2.0, direction="above")
    assert crossing_times(np.array([0.0, 1.0, 3.0]), up) == pytest.approx(1.5)
    assert crossing_times(np.array([0.0, 1.0, np.inf]), up) == 2.0


def test_a_relative_rule_reads_each_seed_as_a_ratio_to_its_generation_0():
    from collapselab.metrics.timing import arm_timing

    rule = FailureRule(metric="perplexity", threshold=2.0, relative=True)
    # seed 0 doubles at generation 2, seed 1 (starting 4x higher) at generation 1.5: the absolute levels differ
    curves = np.array([[100.0, 150.0, 200.0, 300.0], [400.0, 600.0, 1000.0, 1200.0]])
    t = arm_timing(rule.curves(curves), rule, bootstrap_weights(2, np.random.default_rng(0)))
    np.testing.assert_allclose(t["per_seed"], [2.0, 1.5])
    same = FailureRule(metric="perplexity", threshold=2.0, baseline="generation0")
    np.testing.assert_array_equal(same.curves(curves), rule.curves(curves))
    # the mean ratio curve (1, 1.5, 2.25, 2.75) crosses 2 at 1 + (2 - 1.5) / (2.25 - 1.5)
    assert t["ttf"] == pytest.approx(1 + 0.5 / 0.75)
    assert rule.label() == "perplexity above 2x generation 0"
    assert FailureRule(metric="kl", threshold=1.0).label() == "kl above 1"


def test_a_rule_anchored_at_chance_reads_the_share_of_the_level_above_chance_kept():
    from collapselab.metrics.timing import arm_timing

    rule = FailureRule(metric="kr_split_0", threshold=0.5, direction="below", baseline="chance")
    assert rule.label() == "kr_split_0 below 0.5 of its generation-0 level above chance"
    # seed 0 starts 0.3 above chance (0.8): half lost at 0.65, reached between g1 (0.7) and g2 (0.6);
    # seed 1 starts 0.1 above chance (0.6): half lost at 0.55, reached between g0 (0.6) and g1 (0.52)
    values = np.array([[0.8, 0.7, 0.6, 0.5], [0.6, 0.52, 0.51, 0.5]])
    curves = rule.curves(values, chance=0.5)
    np.testing.assert_allclose(curves, [[1, 2 / 3, 1 / 3, 0], [1, 0.2, 0.1, 0]])
    t = arm_timing(curves, rule, bootstrap_weights(2, np.random.default_rng(0)))
    np.testing.assert_allclose(t["per_seed"], [1 + (0.5 - 2 / 3) / (1 / 3 - 2 / 3), (0.5 - 1) / (0.2 - 1)])
    assert t["per_seed"] == pytest.approx([1.5, 0.625])
    # the mean share curve (1, 0.4333, 0.2167, 0) crosses 0.5 at (0.5 - 1) / (0.4333 - 1)
    assert t["ttf"] == pytest.approx(0.5 / (1 - (2 / 3 + 0.2) / 2))
    # a fixed threshold on the raw values would say both seeds failed before g1 whatever came after
    raw = FailureRule(metric="kr_split_0", threshold=0.75, direction="below")
    assert arm_timing(values, raw, bootstrap_weights(2, np.random.default_rng(0)))["per_seed"][1] == 0.0
    # a number or another metric's generation-0 value as the baseline
    num = FailureRule(metric="m", threshold=0.5, direction="below", baseline=0.4)
    np.testing.assert_allclose(num.curves(values)[0], (values[0] - 0.4) / 0.4)
    other = FailureRule(metric="m", threshold=0.5, direction="below", baseline="kr_unseen")
    base = np.array([[0.55, 0.5, 0.5, 0.5], [0.45, 0.5, 0.5, 0.5]])
    np.testing.assert_allclose(other.curves(values, baseline_values=base)[1], (values[1] - 0.45) / 0.15)
    # a seed that does not start above its baseline has no share: NaN, left out of the mean curve
    low = rule.curves(np.array([[0.8, 0.65], [0.45, 0.5]]), chance=0.5)
    assert np.isnan(low[1]).all()
    t = arm_timing(low, rule, bootstrap_weights(2, np.random.default_rng(0)))
    assert t["ttf"] == pytest.approx(1.0)  # seed 0 alone: 1 -> 0.5 at g1


def test_rules_that_measure_nothing_are_flagged():
    from collapselab.metrics.timing import arm_timing, rule_flags

    w = bootstrap_weights(4, np.random.default_rng(0))
    # the fortifai-tiny pattern: every seed starts at ~0.79 and drops to ~0.67 at stage 1, so a fixed 0.75
    # threshold is crossed in the first interval, and 0.75 is within one seed-to-seed SD of the start
    values = np.array([[0.79, 0.67, 0.6, 0.5], [0.84, 0.66, 0.6, 0.55], [0.72, 0.68, 0.6, 0.5],
                       [0.80, 0.67, 0.62, 0.52]])
    raw = FailureRule(metric="kr_split_0", threshold=0.75, direction="below")
    t = arm_timing(values, raw, w)
    flags = rule_flags(raw, values, values, t["per_seed"])
    assert any("first generation interval for 4 of 4 seeds" in f for f in flags)
    assert any("within one standard error" in f for f in flags)
    # anchored at chance with a slow decline: informative
    slow = np.array([[0.8, 0.75, 0.7, 0.6], [0.85, 0.8, 0.75, 0.65], [0.78, 0.74, 0.7, 0.6], [0.82, 0.78, 0.7, 0.62]])
    rule = FailureRule(metric="kr_split_0", threshold=0.5, direction="below", baseline="chance")
    curves = rule.curves(slow, chance=0.5)
    t = arm_timing(curves, rule, w)
    assert rule_flags(rule, slow, curves, t["per_seed"], np.full(4, 0.5)) == []
    # a start within noise of chance is flagged
    near = np.array([[0.52, 0.5], [0.47, 0.5], [0.55, 0.5], [0.49, 0.5]])
    curves = rule.curves(near, chance=0.5)
    flags = rule_flags(rule, near, curves, arm_timing(curves, rule, w)["per_seed"], np.full(4, 0.5))
    assert any("baseline" in f for f in flags)


def test_bootstrap_means_equal_explicit_resampling():
    rng = np.random.default_rng(3)
    values = rng.normal(size=(9, 5))
    values[2, 1] = np.inf
    w = bootstrap_weights(9, rng, b=200)
    fast = boot_means(values, w)
    idx = [np.repeat(np.arange(9), (w[b] * 9).round().astype(int)) for b in range(200)]
    slow = np.stack([values[i].mean(axis=0) for i in idx])
    np.testing.assert_allclose(fast, slow, rtol=1e-12)
    lo, hi = order_stat_interval(fast[:, 0])
    assert lo < values[:, 0].mean() < hi


def test_unbiased_gaussian_metric_rows_are_per_chain():
    """An unbiased-variance Gaussian's metric rows are its own chain's: heldout_nll equals the closed-form Gaussian
    NLL of the held-out data under that chain's fitted mean and (n - 1)-normalised variance, to 1e-10, and the
    chains (fitted on different real data) differ."""
    from scipy.stats import norm

    ctx = _ctx(GaussianTruthConfig(dim=1), chains=3)
    data = make_source(GaussianTruthConfig(dim=1), 10).pool(SeedTree(1), 0, 3).take(0, 30)
    model = Gaussian(GaussianConfig(estimator="unbiased"), 3, {"dim": 1}).fit(data)
    x = data["x"][..., 0]
    np.testing.assert_allclose(model.state_dict()["cov"][:, 0, 0], x.var(axis=1, ddof=1), rtol=1e-12)
    vals = compute(["heldout_nll", "confidence_gap"], model, ctx)
    held = ctx.heldout["x"][0, :, 0]
    want = [-norm.logpdf(held, x[c].mean(), np.sqrt(x[c].var(ddof=1))).mean() for c in range(3)]
    np.testing.assert_allclose(vals["heldout_nll"], want, rtol=1e-10)
    assert len(set(np.round(vals["heldout_nll"], 12).tolist())) == 3
    assert np.all(np.abs(vals["confidence_gap"]) < 0.2)


def test_an_uninformative_rule_is_flagged_in_the_summary_and_the_caption(tmp_path):
    """A fixed threshold every seed crosses in the first generation interval (here at generation 0 already) is
    reported as measuring nothing."""
    from collapselab.experiments import load_experiment
    from collapselab.report import summarize
    from collapselab.report.table import caption
    from collapselab.runs import assemble, execute

    exp = load_experiment("quickstart", seeds=4, generations=6,
                          sets=["failure=[{metric: variance_ratio, threshold: 5, direction: below}, "
                                "{metric: heldout_nll, threshold: 2, baseline: generation0}]"])
    summary, _ = summarize(exp, assemble(exp, execute(exp)))
    first, second = summary["rules"]
    assert not first["informative"] and any("first generation interval" in f for f in first["flags"])
    assert "NOT INFORMATIVE" in caption(exp, summary)
    assert summary["flags"] and summary["flags"][0].startswith("rule 'variance_ratio below 5'")
    assert summary["arms"]["tce-0.99"]["rules"][1]["label"] == second["label"]
