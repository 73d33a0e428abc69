"""Simulations of the real engine against closed forms (Yi, Gerstgrasser, Dohmatob, Shumailov, Bertrand,
Ferbach). Each check states its tolerance; replicate counts make it at least ~3 Monte Carlo standard
errors, and every run is seeded, so a check passes or fails deterministically."""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file

from collapselab.chain import ChainTask, run_chain
from collapselab.experiments.resolver import resolve
from collapselab.runs import assemble, execute
from collapselab.theory import curation, gaussian_chain, regression, yi


def simulate(raw: dict) -> tuple[object, np.ndarray]:
    exp = resolve({"name": "theory", "heldout": 100, **raw})
    return exp, assemble(exp, execute(exp, None))


# -- Yi et al. ---------------------------------------------------------------------------------
ORTHO = np.sqrt(100) * np.vstack([np.eye(8), np.zeros((92, 8))])  # X0^T X0 = 100 I


def test_yi_reference_points():
    X0 = np.random.default_rng(12345).normal(size=(100, 8))
    assert yi.real_baseline(X0) == pytest.approx(0.0837387182667820, rel=1e-12)
    e1 = np.eye(8)[0]
    assert yi.one_round_mse(ORTHO, 0.05, 0.0, e1, 100) == pytest.approx(0.02118, abs=5e-6)
    assert yi.one_round_mse(ORTHO, 0.5, 0.0, e1, 100) == pytest.approx(0.05165, abs=5e-6)
    assert yi.one_round_mse(ORTHO, 0.05, 0.5, e1, 100) == pytest.approx(0.17511, abs=5e-6)
    m1, m2, m3 = yi.truncated_moments(np.array(-0.3), np.array(1.2))
    from scipy.stats import truncnorm

    mean, var, skew = truncnorm.stats(-0.3, 1.2, moments="mvs")
    np.testing.assert_allclose([m1, m2, m3], [mean, var, skew * var**1.5], rtol=1e-10)


YI = {"family": {"name": "linear", "design": "block", "noise": "fixed", "sigma": 1.0},
      "data": {"source": "linear", "dim": 8, "sigma": 1.0, "design": "orthogonal"},
      "n": 100, "n_synthetic": 800, "curator": {"name": "knowledge_ball"}, "metrics": ["param_error"]}


def test_yi_one_round_simulation_matches_theorem_3_1():
    """4,000 chains; tolerance 3% (the per-chain relative SD is ~0.5, so 3% is ~4 standard errors)."""
    exp, v = simulate({**YI, "generations": 1, "seeds": 4000, "batch_size": 4000,
                       "arms": [{"name": "a", "curator": {"delta": 0.0, "radius": 0.05}},
                                {"name": "b", "curator": {"delta": 0.0, "radius": 0.5}},
                                {"name": "c", "curator": {"delta": 0.5, "radius": 0.05}}]})
    mean = v[..., 0].mean(axis=1)
    assert mean[:, 0] == pytest.approx(np.full(3, yi.real_baseline(ORTHO)), rel=0.03)
    np.testing.assert_allclose(mean[:, 1], [0.02118, 0.05165, 0.17511], rtol=0.03)


def test_yi_long_run_plateau_and_center():
    """Theta_t converges to theta_c: ||theta - theta_c||^2 within 5% of p sigma^2 rho/(n(1-rho^2)) and
    ||theta - theta*||^2 within 5% of the plateau (generations 15..30 averaged, 600 chains)."""
    exp, v = simulate({**YI, "generations": 30, "seeds": 600, "metrics": ["param_error", "param_error_center"],
                       "arms": [{"name": "d0.5", "curator": {"delta": 0.5, "radius": 0.05}},
                                {"name": "d0", "curator": {"delta": 0.0, "radius": 0.5}}]})
    late = v[:, :, 15:, :].mean(axis=(1, 2))
    for a, (delta, r) in enumerate([(0.5, 0.05), (0.0, 0.5)]):
        plateau = yi.plateau(delta, r, 100, 8)
        assert late[a, 0] == pytest.approx(plateau, rel=0.05)
        assert late[a, 1] == pytest.approx(plateau - delta**2, rel=0.05)
        bound = yi.contraction_bound(np.arange(31), yi.real_baseline(ORTHO) + delta**2, r, 100, 8)
        assert np.all(v[a, :, :, 1].mean(axis=0) <= bound * 1.1)  # Theorem 4.1, up to MC noise


# -- Gerstgrasser et al. / Dohmatob et al. -------------------------------------------------------
LIN = {"data": {"source": "linear", "dim": 5, "sigma": 1.0, "design": "gaussian"}, "n": 30,
       "metrics": ["param_error"], "generations": 5, "seeds": 10000, "batch_size": 10000}


def test_gerstgrasser_replace_and_accumulate():
    """10,000 chains (d = 5, T = 30); tolerance 3% per generation (~3.5 standard errors)."""
    exp, v = simulate({**LIN, "family": {"name": "linear", "design": "fixed", "noise": "fixed"},
                       "arms": [{"name": "replace"}, {"name": "accumulate", "regime": {"name": "accumulate"}}]})
    g = np.arange(6)
    np.testing.assert_allclose(v[0, :, :, 0].mean(0), regression.replace_error(g, 5, 30, 1.0), rtol=0.03)
    np.testing.assert_allclose(v[1, :, :, 0].mean(0), regression.accumulate_error(g, 5, 30, 1.0), rtol=0.03)


def test_dohmatob_fresh_synthetic_generations():
    """sigma^2 d/(T-d-1) + g sigma0^2 d/(T0-d-1) with T0 = 20, sigma0 = 0.7; 10,000 chains, 3%."""
    exp, v = simulate({**LIN, "family": {"name": "linear", "design": "fresh", "noise": "fixed", "sigma": 0.7},
                       "n_synthetic": 20})
    g = np.arange(6)
    np.testing.assert_allclose(v[0, :, :, 0].mean(0), regression.dohmatob_error(g, 5, 30, 1.0, 20, 0.7), rtol=0.03)


# -- Shumailov et al. / Bertrand et al. ----------------------------------------------------------
GAUSS = {"data": {"source": "gaussian", "dim": 1}, "n": 100, "generations": 20, "seeds": 20000,
         "batch_size": 20000, "metrics": ["variance_ratio", "param_error"]}


def test_shumailov_gaussian_chain():
    """20,000 chains, M = 100, g = 0..20: means within 3%, E log variance within 0.02, median within 3%."""
    exp, v = simulate({**GAUSS, "family": {"name": "gaussian", "estimator": "unbiased"},
                       "arms": [{"name": "unbiased"}, {"name": "mle", "family": {"estimator": "mle"}}]})
    g = np.arange(21)
    var_u, err_u, var_m = v[0, :, :, 0], v[0, :, :, 1], v[1, :, :, 0]
    np.testing.assert_allclose(var_u.mean(0), gaussian_chain.expected_variance(g, 100, unbiased=True), rtol=0.03)
    np.testing.assert_allclose(var_m.mean(0), gaussian_chain.expected_variance(g, 100, unbiased=False), rtol=0.03)
    np.testing.assert_allclose(err_u.mean(0), gaussian_chain.expected_mean_error(g, 100), rtol=0.03)
    np.testing.assert_allclose(v[1, :, :, 1].mean(0), gaussian_chain.expected_mean_error(g, 100, unbiased=False),
                               rtol=0.03)
    np.testing.assert_allclose(np.log(var_u).mean(0), gaussian_chain.expected_log_variance(g, 100), atol=0.02)
    median = gaussian_chain.median_variance(g, 100)
    np.testing.assert_allclose(np.median(var_u, axis=0), median, rtol=0.03)
    assert median[-1] < 0.85 and abs(var_u[:, -1].mean() - 1) < 0.03  # the mean stays, the median falls


def test_bertrand_mix_recursion_and_contraction():
    """Exact moment recursion of the mix regime (n = 20, lam = 0.5 and 3); 20,000 chains, 3%."""
    exp, v = simulate({**GAUSS, "n": 20, "family": {"name": "gaussian"},
                       "arms": [{"name": "0.5", "regime": {"name": "mix", "lam": 0.5}},
                                {"name": "3", "regime": {"name": "mix", "lam": 3.0}}]})
    for a, lam in enumerate([0.5, 3.0]):
        e, var = gaussian_chain.mix_recursion(20, 20, lam, 19 / 20)
        np.testing.assert_allclose(v[a, :, :, 1].mean(0), e + 1 / 20, rtol=0.03)
        np.testing.assert_allclose(v[a, :, :, 0].mean(0), var, rtol=0.03)
        e_star, v_star = gaussian_chain.mix_fixed_point(20, lam, 19 / 20)
        e_long, v_long = gaussian_chain.mix_recursion(500, 20, lam, 19 / 20)
        assert e_long[-1] == pytest.approx(e_star, rel=1e-9) and v_long[-1] == pytest.approx(v_star, rel=1e-9)
    assert gaussian_chain.mix_contraction(3.0) == 0.75


# -- Ferbach et al. ------------------------------------------------------------------------------
FERBACH = {"family": {"name": "categorical"}, "data": {"source": "categorical", "vocab": 5, "zipf": 0.7},
           "curator": {"name": "luce_choice", "K": 3, "reward": {"name": "symbol_values",
                                                                 "values": [0.0, 0.5, 1.0, 1.5, 2.0]}},
           "metrics": ["mean_reward"]}


def test_ferbach_one_step_conditional_law(tmp_path):
    """E[p_1 | p_0] = curate(p_0) chain by chain (the categorical MLE is unbiased for its sampling law):
    400 chains of n = 2000; the mean deviation is within 0.002 (~4 standard errors)."""
    exp = resolve({"name": "f", **FERBACH, "n": 2000, "generations": 1, "seeds": 400, "heldout": 10})
    run_chain(ChainTask(exp, exp.arms[0].name, 0, str(tmp_path)))
    folder = tmp_path / "chains" / exp.arms[0].name / "b0000"
    p0 = load_file(folder / "g00000.safetensors")["model.unigram"]
    p1 = load_file(folder / "g00001.safetensors")["model.unigram"]
    values = np.array(FERBACH["curator"]["reward"]["values"])
    expected = np.stack([curation.curate_step(p, values, 3) for p in p0])
    np.testing.assert_allclose((p1 - expected).mean(axis=0), 0.0, atol=0.002)


def test_ferbach_reward_trajectory():
    """Expected reward per generation vs the exact infinite-sample trajectory (n = 20000): within 1%."""
    from collapselab.report import theory_curves

    exp, v = simulate({**FERBACH, "n": 20000, "generations": 8, "seeds": 40, "theory": ["ferbach"],
                       "arms": [{"name": "replace"}, {"name": "mix", "regime": {"name": "mix", "lam": 1.0}}]})
    th = theory_curves(exp)
    for a, name in enumerate(["replace", "mix"]):
        np.testing.assert_allclose(v[a, :, :, 0].mean(0), th[name]["mean_reward"].values, rtol=0.01)


def test_yi_normal_functions_are_scipys_bitwise():
    """theory.yi computes N(0, 1)'s density and distribution function without importing scipy.stats (its import
    cost every CLI call): the values are scipy.stats.norm's to the bit."""
    from scipy.stats import norm

    from collapselab.theory.yi import C

    a, b = np.linspace(-8, 0, 100_001), np.linspace(0.1, 8, 100_001)
    assert np.array_equal(C(a, b), (norm.pdf(b) - norm.pdf(a)) / (norm.cdf(b) - norm.cdf(a)))
