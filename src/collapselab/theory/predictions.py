"""Theory curves for experiments: ``theory: [name, ...]`` overlays closed-form predictions on the report.

Each prediction takes the experiment, an arm and its data source and returns ``{metric: values over
generations 0..G}`` (NaN where the theory says nothing), or ``{}`` when it does not apply to that arm.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from collapselab.curators import KnowledgeBall, LuceChoice, NoCurator
from collapselab.data.base import Source
from collapselab.theory import curation, gaussian_chain, regression, yi

Curves = dict[str, np.ndarray]
Prediction = Callable[..., Curves]
PREDICTIONS: dict[str, Prediction] = {}
#: (prediction, metric) pairs whose curve is an upper bound on the expectation, not the expectation itself.
UPPER_BOUNDS = {("yi_long_run", "param_error_center")}


def prediction(name: str) -> Callable[[Prediction], Prediction]:
    def deco(fn: Prediction) -> Prediction:
        PREDICTIONS[name] = fn
        return fn

    return deco


def _plain(arm) -> bool:
    """Cross entropy, no curator, and a constant synthetic size (what the closed forms assume)."""
    return arm.loss.is_ce and isinstance(arm.curator, NoCurator) and isinstance(arm.n_synthetic, int)


@prediction("shumailov")
def shumailov(exp, arm, source: Source) -> Curves:
    """1-D Gaussian chain with replace: E variance ratio and E (mu_g - mu)^2 (Shumailov et al.)."""
    if not (arm.family.name == "gaussian" and exp.data.source == "gaussian" and exp.data.dim == 1
            and arm.regime.name == "replace" and _plain(arm) and arm.n_synthetic == exp.n):
        return {}
    g = np.arange(exp.generations + 1)
    unbiased = arm.family.estimator == "unbiased"
    s2 = exp.data.std**2
    return {"variance_ratio": gaussian_chain.expected_variance(g, exp.n, 1.0, unbiased),
            "param_error": gaussian_chain.expected_mean_error(g, exp.n, s2, unbiased)}


@prediction("bertrand")
def bertrand(exp, arm, source: Source) -> Curves:
    """1-D Gaussian MLE chain under mix(lam): exact E (mu_g - mu)^2 and E variance ratio."""
    if not (arm.family.name == "gaussian" and arm.family.estimator == "mle" and exp.data.source == "gaussian"
            and exp.data.dim == 1 and arm.regime.name == "mix" and _plain(arm)):
        return {}
    n, s2 = exp.n, exp.data.std**2
    sr2 = s2 * (n - 1) / n  # E of the real data's MLE variance (the recursion is linear in it)
    e, v = gaussian_chain.mix_recursion(exp.generations, n, arm.regime.lam, sr2)
    # E (mu_g - mu)^2 = E (mu_g - m)^2 + E (m - mu)^2: the cross term vanishes since E[mu_g - m | m] = 0
    return {"param_error": e + s2 / n, "variance_ratio": v / s2}


@prediction("gerstgrasser")
def gerstgrasser(exp, arm, source: Source) -> Curves:
    """Linear regression, design reused: replace grows linearly, accumulate stays below pi^2/6 times g=0."""
    if not (arm.family.name == "linear" and arm.family.design == "fixed" and arm.family.noise == "fixed"
            and exp.data.source == "linear" and exp.data.design == "gaussian" and _plain(arm)
            and arm.family.ridge == 0 and arm.family.sigma == exp.data.sigma and arm.n_synthetic == exp.n):
        return {}
    g = np.arange(exp.generations + 1)
    d, T, s = exp.data.dim, exp.n, exp.data.sigma
    if arm.regime.name == "replace":
        return {"param_error": regression.replace_error(g, d, T, s)}
    if arm.regime.name == "accumulate":
        return {"param_error": regression.accumulate_error(g, d, T, s)}
    return {}


@prediction("dohmatob")
def dohmatob(exp, arm, source: Source) -> Curves:
    """Linear regression, fresh synthetic designs: sigma^2 d/(T-d-1) + g sigma0^2 d/(T0-d-1)."""
    if not (arm.family.name == "linear" and arm.family.design == "fresh" and arm.family.noise == "fixed"
            and exp.data.source == "linear" and exp.data.design == "gaussian" and _plain(arm)
            and arm.family.ridge == 0 and arm.regime.name == "replace"):
        return {}
    g = np.arange(exp.generations + 1)
    return {"param_error": regression.dohmatob_error(g, exp.data.dim, exp.n, exp.data.sigma, arm.n_synthetic,
                                                     arm.family.sigma)}


def _yi_setting(exp, arm, source: Source):
    ok = (isinstance(arm.n_synthetic, int) and arm.family.name == "linear" and arm.family.design == "block"
          and arm.family.noise == "fixed"
          and isinstance(arm.curator, KnowledgeBall) and arm.curator.mode == "quota" and arm.loss.is_ce
          and arm.regime.name == "replace" and exp.data.source == "linear"
          and exp.data.design in ("fixed_gaussian", "orthogonal") and arm.family.sigma == exp.data.sigma)
    if not ok:
        return None
    X0 = source.design_rows(0, exp.n, 1, np.random.default_rng(0))[0]
    p = exp.data.dim
    u = arm.curator.center(np.zeros(p)) / arm.curator.delta if arm.curator.delta > 0 else np.eye(p)[0]
    return X0, u, arm.n_synthetic // p


@prediction("yi_one_round")
def yi_one_round(exp, arm, source: Source) -> Curves:
    """Yi et al.: E||theta - theta*||^2 on real data (g = 0) and after one verified round (g = 1)."""
    setting = _yi_setting(exp, arm, source)
    if setting is None:
        return {}
    X0, u, per_dir = setting
    s = exp.data.sigma
    out = np.full(exp.generations + 1, np.nan)
    out[0] = yi.real_baseline(X0, s)
    if exp.generations >= 1:
        out[1] = yi.one_round_mse(X0, arm.curator.radius, arm.curator.delta, u, per_dir, s)
    return {"param_error": out}


@prediction("yi_long_run")
def yi_long_run(exp, arm, source: Source) -> Curves:
    """Yi et al.: Theorem 4.1's bound on E||theta_g - theta_c||^2 and the plateau of E||theta_g - theta*||^2."""
    setting = _yi_setting(exp, arm, source)
    if setting is None:
        return {}
    X0, _, per_dir = setting
    s, p, kb = exp.data.sigma, exp.data.dim, arm.curator
    g = np.arange(exp.generations + 1)
    d0 = yi.real_baseline(X0, s) + kb.delta**2  # E||theta_0 - theta_c||^2 (theta_0 unbiased for theta*)
    plateau = np.where(g >= 1, yi.plateau(kb.delta, kb.radius, per_dir, p, s), np.nan)
    return {"param_error_center": yi.contraction_bound(g, d0, kb.radius, per_dir, p, s), "param_error": plateau}


@prediction("ferbach")
def ferbach(exp, arm, source: Source) -> Curves:
    """Ferbach et al.: exact infinite-sample K-choice curation trajectory -> expected reward per generation."""
    if not (arm.family.name == "categorical" and arm.family.order == 1 and exp.data.source == "categorical"
            and isinstance(arm.curator, LuceChoice) and arm.loss.is_ce
            and arm.regime.name in ("replace", "mix") and arm.family.smoothing == 0):
        return {}
    p0 = source.truth.distribution()[0]
    values = np.asarray(arm.curator.reward.values, dtype=np.float64)
    lam = arm.regime.lam if arm.regime.name == "mix" else None
    traj = curation.curation_trajectory(p0, values, arm.curator.K, exp.generations, lam)
    return {"mean_reward": traj @ values}
