"""Experiment schema: catalog, arm resolution, grid expansion, overrides, resolved dumps."""

from __future__ import annotations

import pytest

from collapselab.errors import ConfigError
from collapselab.experiments import (
    apply_overrides,
    catalog_names,
    dump_experiment,
    load_experiment,
    parse_resolved,
    resolve,
)

from .helpers import make_experiment

CATALOG = ["quickstart", "shumailov-gaussian", "shumailov-gmm", "gerstgrasser-linear", "dohmatob-linear",
           "yi-linear-one-round", "yi-linear-long-run", "bertrand-mix", "ferbach-curation", "fortifai-gmm",
           "quickstart-images", "yi-vae", "shumailov-vae", "fortifai-vae", "quickstart-text", "fortifai-tiny",
           "fortifai-smollm2", "yi-text", "text-replace-vs-accumulate"]


@pytest.mark.heavy
def test_catalog_is_complete_and_round_trips():
    assert sorted(catalog_names()) == sorted(CATALOG)
    for name in CATALOG:
        exp = load_experiment(name)
        assert parse_resolved(dump_experiment(exp)) == exp, name
        assert exp.description


def test_a_scale_preset_is_one_set_away_and_explicit_sets_win():
    paper = load_experiment("yi-vae", ["scale=paper"])
    assert (paper.scale, paper.generations, [paper.arms[1].synthetic(g) for g in (1, 2, 50)]) == \
        ("paper", 50, [5_000, 10_000, 250_000])  # Yi et al.'s ELBO_experiment.py: delta 5,000 x round, 50 rounds
    assert paper.arms[1].curator.real == 50_000 and paper.arms[0].curator.keep == 1.0
    assert paper.arms[1].curator.synthetic == 60_000 and paper.arms[1].curator.patience == 5
    assert paper.overrides == ["scale=paper"]
    assert load_experiment("yi-vae", ["generations=7", "scale=paper"]).generations == 7
    default = load_experiment("yi-vae")
    assert (default.scale, default.generations, [default.arms[1].synthetic(g) for g in (1, 2, 3, 4)]) == \
        (None, 4, [1000, 2000, 3000, 4000])
    with pytest.raises(ConfigError, match=r"^scale: 'huge' is not one of the experiment's scales \(paper\)$"):
        load_experiment("yi-vae", ["scale=huge"])


def test_arms_merge_or_replace_base_settings():
    exp = make_experiment(family={"name": "gmm", "components": 3, "tol": 1e-4}, data={"source": "gmm"},
                          metrics=["tail_mass"],
                          arms=[{"name": "a"}, {"name": "b", "family": {"components": 2}},
                                {"name": "c", "loss": {"name": "tce", "gamma": 0.9}, "regime": {"name": "mix"}},
                                {"name": "d", "n_synthetic": 7}])
    a, b, c, d = exp.arms
    assert (a.family.components, b.family.components, b.family.tol) == (3, 2, 1e-4)
    assert c.loss.gamma == 0.9 and c.regime.lam == 1.0 and a.loss.name == "ce"
    assert (a.n_synthetic, d.n_synthetic) == (50, 7)


def test_grid_expands_every_arm():
    exp = make_experiment(arms=[{"name": "x"}, {"name": "y", "regime": {"name": "accumulate"}}],
                          grid={"family.estimator": ["mle", "unbiased"], "n_synthetic": [10, 20]})
    names = [a.name for a in exp.arms]
    assert names[:2] == ["x,estimator=mle,n_synthetic=10", "x,estimator=mle,n_synthetic=20"]
    assert len(names) == 8 and exp.axes == {"family.estimator": ["mle", "unbiased"], "n_synthetic": [10, 20]}
    assert exp.arms[-1].regime.name == "accumulate" and exp.arms[-1].family.estimator == "unbiased"


def test_overrides_and_cli_shortcuts():
    raw = {"name": "t", "n": 5, "arms": [{"name": "a", "loss": {"name": "tce"}}]}
    out = apply_overrides(raw, ["arms.0.loss.gamma=0.5", "family={name: gmm}", "description=two words"],
                          seeds=3, generations=4)
    assert out["arms"][0]["loss"] == {"name": "tce", "gamma": 0.5} and out["family"] == {"name": "gmm"}
    assert (out["seeds"], out["generations"], out["description"]) == (3, 4, "two words")
    assert raw["arms"][0]["loss"] == {"name": "tce"}  # the input is not modified
    with pytest.raises(ConfigError, match="is not key=value"):
        apply_overrides(raw, ["n"])
    with pytest.raises(ConfigError, match="index out of range"):
        apply_overrides(raw, ["arms.3.loss=1"])


@pytest.mark.parametrize("override, message", [
    ({"arms": [{"name": "a"}, {"name": "a"}]}, "duplicate arm names"),
    ({"arms": [{"name": "bad name"}]}, "arm names use letters"),
    ({"reference_arm": "zzz"}, "reference_arm: 'zzz' is not an arm"),
    ({"family": {"name": "linear"}}, "family 'linear' models regression"),
    ({"metrics": ["entropy"]}, "metric 'entropy' applies to tokens data"),
    ({"metrics": ["nope"]}, "unknown metric 'nope'"),
    ({"failure": {"metric": "param_error", "threshold": 1, "direction": "sideways"}}, "failure.direction"),
    ({"theory": ["astrology"]}, "theory: unknown ['astrology']"),
    ({"curator": {"name": "knowledge_ball"}}, "knowledge_ball needs the linear family"),
    ({"grid": {"colour": [1]}}, "grid keys start with one of"),
    ({"regime": {"name": "mix", "lam": -1}}, "regime.lam: Input should be greater than 0"),
])
def test_invalid_experiments_name_the_field(override, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(")):
        make_experiment(**override)


def test_block_design_needs_a_multiple_of_p():
    with pytest.raises(ValueError, match="multiple of data.dim"):
        resolve({"name": "y", "family": {"name": "linear", "design": "block"}, "data": {"source": "linear", "dim": 8},
                 "n": 100, "n_synthetic": 801, "generations": 1, "seeds": 2, "metrics": ["param_error"]})
