"""The conformance kit (collapselab.testing) run over every registered built-in: a new built-in without an entry in
the tables below fails here, so none can skip the bar plugins are held to."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from collapselab import testing as T
from collapselab.curators import CURATORS
from collapselab.data import SOURCES, make_source
from collapselab.families import FAMILIES
from collapselab.losses.ulosses import LOSSES, get_uloss
from collapselab.metrics import METRICS
from collapselab.regimes import REGIMES

# -- losses: every built-in, plus the adaptive gammas --------------------------------------------------
LOSS_CASES = [(n, {}) for n in LOSSES.names(builtin_only=True)] + [
    ("tce", {"gamma": 0.5}), ("tce", {"gamma": {"quantile": 0.25}}), ("tce", {"gamma": {"dynamic": 1.0}}),
    ("focal", {"gamma": 0.0}), ("gce", {"q": 1.0}), ("random_drop", {"q": 0.5})]


@pytest.mark.parametrize(("name", "params"), LOSS_CASES, ids=[f"{n}{p or ''}" for n, p in LOSS_CASES])
def test_every_builtin_loss_conforms(name, params):
    T.check_loss(get_uloss(name, **params))


def test_check_loss_catches_a_bad_loss():
    from typing import Literal

    from collapselab.losses import ULoss

    class Rising(ULoss):  # l = u: pushes the target's probability down, w(u) = -u < 0
        name: Literal["rising"] = "rising"

        def value(self, log_u):
            return T.np.exp(log_u) if isinstance(log_u, np.ndarray) else log_u.exp()

    with pytest.raises(AssertionError, match=r"loss 'rising': w\(u\) = -\S+ < 0 at u = "):
        T.check_loss(Rising())


# -- curators ------------------------------------------------------------------------------------------
def _linear():
    from collapselab.data.truth import LinearTruthConfig
    from collapselab.families import make_family
    from collapselab.families.linear import LinearConfig
    from collapselab.seeding import SeedTree

    tree, source = SeedTree(0), make_source(LinearTruthConfig(dim=4), 100, 40)
    model = make_family(LinearConfig(), 2, source.spec).fit(source.take(tree, 0, 2, 0, 40), rng=tree.rng("f"))
    return model, source


COORD = {"name": "coordinate", "index": 0}
CURATOR_CASES = {
    "none": ({}, None),
    "likelihood_truncation": ({"q": 0.2}, None),
    "top_k": ({"reward": COORD, "fraction": 0.5}, None),
    "luce_choice": ({"reward": COORD, "K": 3}, None),
    "subsample": ({"keep": 0.5}, None),
    "knowledge_ball": ({"delta": 0.5, "radius": 0.5}, _linear),
    "knowledge_ball-filter": ({"delta": 0.5, "radius": 0.5, "mode": "filter"}, _linear),
    # needing a trained image or language model: covered by their own tests (tests/test_vae.py,
    # tests/test_causal_lm.py); listed here so that a new curator must be added deliberately
    "discriminator": None,
    "rouge_oracle": None,
}


def test_every_builtin_curator_has_a_case():
    assert {k.split("-")[0] for k in CURATOR_CASES} == set(CURATORS.names(builtin_only=True))


@pytest.mark.parametrize("case", [k for k, v in CURATOR_CASES.items() if v is not None])
def test_every_builtin_curator_conforms(case):
    params, setup = CURATOR_CASES[case]
    curator = CURATORS.config_class(CURATORS[case.split("-")[0]]).model_validate(
        {"name": case.split("-")[0], **params})
    model, source = setup() if setup else (None, None)
    T.check_curator(curator, model, source)


# -- regimes -------------------------------------------------------------------------------------------
REGIME_CASES = {"replace": {}, "accumulate": {}, "accumulate_subsample": {}, "mix": {"lam": 0.5},
                "fresh_real": {"alpha": 0.3}, "fortifai": {"chunks": 3}}


def test_every_builtin_regime_has_a_case():
    assert set(REGIME_CASES) == set(REGIMES.names(builtin_only=True))


@pytest.mark.parametrize("name", list(REGIME_CASES))
def test_every_builtin_regime_conforms(name):
    T.check_regime(REGIMES[name].model_validate({"name": name, **REGIME_CASES[name]}))


# -- sources -------------------------------------------------------------------------------------------
SOURCE_CASES = {
    "gaussian": {"dim": 2}, "gmm": {}, "linear": {"dim": 4}, "categorical": {"vocab": 20},
    "digits": {"dims": 4}, "digits-images": {"form": "images"}, "shakespeare": {"vocab": 100},
    "mnist": {}, "fashion_mnist": {},
    "wikipedia": {"tokenizer": "tiny", "vocab": 1000, "documents": 16, "window": 16},
    "plays": {"tokenizer": "tiny", "vocab": 1000, "window": 16},
    # a user's files: check_source runs on files the tests make, in tests/test_data_user.py
    "text_files": None, "image_folder": None, "array_file": None, "hf_dataset": None,
}


def test_every_builtin_source_has_a_case():
    assert {k.split("-")[0] for k in SOURCE_CASES} == set(SOURCES.names(builtin_only=True))


@pytest.mark.parametrize("case", [k for k, v in SOURCE_CASES.items() if v is not None])
def test_every_builtin_source_conforms(case):
    name = case.split("-")[0]
    config = SOURCES.config_class(SOURCES[name]).model_validate({"source": name, **SOURCE_CASES[case]})
    if name == "fashion_mnist" and not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST is not installed here (Debian package dataset-fashion-mnist)")
    T.check_source(make_source(config, 40, 40))


# -- families ------------------------------------------------------------------------------------------
def _source(name, **cfg):
    return make_source(SOURCES.config_class(SOURCES[name]).model_validate({"source": name, **cfg}), 60, 40)


FAMILY_CASES = {
    "gaussian": ({}, lambda: _source("gaussian", dim=2), 2),
    "gmm": ({"components": 2}, lambda: _source("gmm"), 2),
    "linear": ({}, lambda: _source("linear", dim=4), 2),
    "categorical": ({}, lambda: _source("categorical", vocab=20), 2),
    "vae": ({"hidden": 32, "latent": 4, "max_epochs": 2, "batch": 32},
            lambda: _source("digits", form="images"), 1),
    "causal_lm": None,  # trained and round-tripped in tests/test_causal_lm.py (a tiny transformer per check)
}


def test_every_builtin_family_has_a_case():
    assert set(FAMILY_CASES) == set(FAMILIES.names(builtin_only=True))


@pytest.mark.parametrize("name", [k for k, v in FAMILY_CASES.items() if v is not None])
def test_every_builtin_family_conforms(name):
    params, source, chains = FAMILY_CASES[name]
    cls = FAMILIES[name]
    T.check_family(cls, cls.config_class.model_validate({"name": name, **params}), source(), n_chains=chains)


# -- metrics -------------------------------------------------------------------------------------------
POINT_METRICS = [m for m in METRICS.names(builtin_only=True)
                 if "points" in METRICS[m].kinds and not METRICS[m].needs and METRICS[m].check is None]


@pytest.mark.parametrize("name", POINT_METRICS)
def test_every_point_metric_conforms(name):
    T.check_metric(name)


def test_noise_variance_recovers_the_true_noise():
    """The linear family's fitted noise variance (noise: estimated) on 4000 draws with sigma 2: 4 within 10%."""
    from collapselab.data.truth import LinearTruthConfig
    from collapselab.families import make_family
    from collapselab.families.linear import LinearConfig
    from collapselab.seeding import SeedTree

    tree, source = SeedTree(0), make_source(LinearTruthConfig(dim=4, sigma=2.0), 100, 4000)
    model = make_family(LinearConfig(noise="estimated"), 2, source.spec)
    model.fit(source.take(tree, 0, 2, 0, 4000), rng=tree.rng("f"))
    T.check_metric("noise_variance", model, source)
    from collapselab.metrics.base import MetricContext, compute

    ctx = MetricContext.make(source, source.heldout(tree), np.random.default_rng(0), CURATORS["none"](), 2)
    np.testing.assert_allclose(compute(["noise_variance"], model, ctx)["noise_variance"], 4.0, rtol=0.1)


def test_every_registered_metric_is_named_in_a_test():
    text = "\n".join(p.read_text() for p in Path(__file__).parent.glob("test_*.py"))
    pattern = re.compile(r"kr_split_\d+|memorization_\d+")
    missing = [m for m in METRICS.names(builtin_only=True)
               if not pattern.fullmatch(m) and not re.search(rf"\b{re.escape(m)}\b", text)]
    assert not missing, f"metrics no other test names: {missing}"
