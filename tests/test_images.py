"""Image data sources and the VAE family: shapes, splits, balance, determinism, state, bad input."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from collapselab.data import images as I
from collapselab.data import make_source
from collapselab.experiments.capacity import check_data
from collapselab.families.vae import VAE, VAEConfig
from collapselab.losses.ulosses import CE, TCE
from collapselab.samples import SampleSet
from collapselab.seeding import SeedTree

from .conftest import make_experiment

DIGITS = {"source": "digits", "form": "images"}
SMALL_VAE = {"name": "vae", "hidden": 32, "latent": 4, "max_epochs": 3, "batch": 64}


def _digits(n=300, seed=0):
    src = make_source(make_experiment(family=SMALL_VAE, data=DIGITS, n=n, heldout=100,
                                      metrics=["test_nelbo"]).data, 100)
    return src, src.take(SeedTree(seed), 0, 1, 0, n)


def test_mnist_has_the_official_70k_split_and_pixel_scale():
    s = I.load_mnist()
    assert {k: len(v[1]) for k, v in s.items()} == {"train": 50_000, "validation": 10_000, "test": 10_000}
    x, y = s["train"]
    assert x.shape == (50_000, 1, 28, 28) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0 and set(np.unique(y)) == set(range(10))
    np.testing.assert_array_equal(np.unique(x), np.arange(256, dtype=np.float32) / np.float32(255))  # byte / 255


def test_mnist_pickle_loader_refuses_anything_but_arrays():
    evil = pickle.dumps(print)  # a global that is not a numpy array constructor
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        I._ArraysOnly(__import__("io").BytesIO(evil)).load()


def test_balanced_pool_gives_exactly_50_per_digit_in_the_first_500():
    src = make_source(make_experiment(family=SMALL_VAE, data={"source": "mnist"}, n=500, heldout=1000,
                                      metrics=["test_nelbo"]).data, 1000)
    real = src.take(SeedTree(0), 0, 2, 0, 500)
    for c in range(2):
        assert np.bincount(real["y"][c], minlength=10).tolist() == [50] * 10
    assert not np.array_equal(real["x"][0], real["x"][1])  # chains draw different real images
    held = src.heldout(SeedTree(0))
    assert held["x"].shape == (1, 1000, 1, 28, 28)


def test_stratified_order_prefixes_are_balanced_with_unequal_classes():
    y = np.repeat(np.arange(3), [5, 50, 20])
    order = I.stratified_order(y, np.random.default_rng(1))
    assert sorted(order.tolist()) == list(range(75))
    first = y[order[:15]]
    assert np.bincount(first, minlength=3).tolist() == [5, 5, 5]


def test_missing_fashion_mnist_is_one_line_naming_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(I, "FASHION_DIR", tmp_path)
    I.load_fashion_mnist.cache_clear()
    try:
        with pytest.raises(ValueError, match=r"^data: Fashion-MNIST is not installed.*dataset-fashion-mnist"):
            check_data(make_experiment(family=SMALL_VAE, data={"source": "fashion_mnist"}, n=10,
                                       metrics=["test_nelbo"]))
    finally:
        I.load_fashion_mnist.cache_clear()


def test_heldout_beyond_the_test_split_names_heldout():
    with pytest.raises(ValueError, match=r"^heldout: 'digits' has 400 test images; allowed: 1 to 400"):
        check_data(make_experiment(family=SMALL_VAE, data=DIGITS, n=10, heldout=401, metrics=["test_nelbo"]))


@pytest.mark.parametrize(("family", "message"), [
    ({"arch": "resnet"}, "family.vae.arch"),
    ({"latent": 0}, "family.vae.latent"),
    ({"granularity": "token"}, "family.vae.granularity"),
])
def test_bad_vae_settings_name_the_field(family, message):
    with pytest.raises(ValueError, match=message.replace(".vae", "")):
        make_experiment(family={**SMALL_VAE, **family}, data=DIGITS, n=10, metrics=["test_nelbo"])


def test_vae_shapes_labels_and_state_roundtrip():
    src, real = _digits()
    cfg = VAEConfig(**{**SMALL_VAE, "conditional": True})
    model = VAE(cfg, 1, src.spec).fit_loss(real, TCE(gamma=0.9), np.random.default_rng(0))
    s = model.sample(25, np.random.default_rng(1))
    assert s["x"].shape == (1, 25, 1, 8, 8) and set(np.unique(s["x"])) <= {0.0, 1.0}
    assert np.bincount(s["y"][0]).tolist() == [3, 3, 3, 3, 3, 2, 2, 2, 2, 2]
    lp = model.log_prob(real.head(20))
    rec, kl = model.nelbo_parts(real.head(20))
    np.testing.assert_allclose(lp, -(rec + kl))
    assert (kl > 0).all() and (rec > 0).all()
    u = model.confidence(real.head(5))
    assert u.shape == (1, 5, 1, 8, 8) and ((u > 0) & (u <= 1)).all()
    ui = model.image_confidence(real.head(50))
    assert ui.shape == (1, 50) and ((ui >= 0) & (ui <= 1)).all()
    copy = VAE(cfg, 1, src.spec).load_state_dict(model.state_dict())
    np.testing.assert_array_equal(copy.log_prob(real.head(20)), lp)


def test_vae_training_is_seeded_and_learns():
    src, real = _digits(n=400)
    cfg = VAEConfig(**{**SMALL_VAE, "max_epochs": 15})
    a = VAE(cfg, 1, src.spec).fit_loss(real, CE(), np.random.default_rng(5))
    b = VAE(cfg, 1, src.spec).fit_loss(real, CE(), np.random.default_rng(5))
    c = VAE(cfg, 1, src.spec).fit_loss(real, CE(), np.random.default_rng(6))
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    assert not np.array_equal(a.log_prob(real), c.log_prob(real))
    held = src.heldout(SeedTree(0))
    untrained = VAE(cfg, 1, src.spec)
    untrained.nets = untrained.fresh(np.random.default_rng(5))
    # 64 pixels: an untrained decoder costs ~64 log 2 = 44 nats; training must do clearly better
    assert -untrained.log_prob(held).mean() > 40
    assert -a.log_prob(held).mean() < 0.85 * -untrained.log_prob(held).mean()


def test_curation_weight_zero_images_are_not_trained_on():
    """Whatever a dropped (weight 0) image holds, the trained model is the same."""
    src, real = _digits(n=200)
    cfg = VAEConfig(**SMALL_VAE)
    w = np.ones((1, 200))
    w[0, 100:] = 0
    x1, x2 = real["x"].copy(), real["x"].copy()
    x1[0, 100:], x2[0, 100:] = 0.0, 1.0
    a = VAE(cfg, 1, src.spec).fit_loss(SampleSet({"x": x1, "y": real["y"]}, w), CE(), np.random.default_rng(2))
    b = VAE(cfg, 1, src.spec).fit_loss(SampleSet({"x": x2, "y": real["y"]}, w), CE(), np.random.default_rng(2))
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(v, b.state_dict()[k])
    from collapselab.errors import NumericalError

    with pytest.raises(NumericalError, match="empty"):
        VAE(cfg, 1, src.spec).fit_loss(real.with_weight(np.zeros((1, 200))), CE(), np.random.default_rng(2))


def test_sampleset_of_images_concatenates_with_real():
    src, real = _digits(n=50)
    model = VAE(VAEConfig(**SMALL_VAE), 1, src.spec).fit_loss(real, CE(), np.random.default_rng(0))
    syn = model.sample(10, np.random.default_rng(0))
    assert (syn["y"] == -1).all()  # unconditional: unlabelled
    from collapselab.samples import concat

    both = concat([real, syn])
    assert both.n == 60 and both["x"].shape == (1, 60, 1, 8, 8) and both["x"].dtype == np.float32
    np.testing.assert_array_equal(both["x"][:, :50], real["x"])  # real first, then the synthetic, unchanged
    np.testing.assert_array_equal(both["x"][:, 50:], syn["x"])
    np.testing.assert_array_equal(both["y"][0], np.concatenate([real["y"][0], np.full(10, -1)]))
    assert set(np.unique(syn["x"]).tolist()) <= {0.0, 1.0}  # Bernoulli draws
    assert float(real["x"].min()) >= 0.0 and float(real["x"].max()) <= 1.0 and len(np.unique(real["x"])) > 2


def test_image_confidence_drops_one_minus_gamma_of_unseen_real_images():
    """The image-level u (rank of ELBO_model - ELBO_ref among real images the model never saw) is uniform on
    held-out real images, so TCE with gamma drops 1 - gamma of them by construction (within 2.5 SE of the held-out
    and ranking-set sampling); the reference makes it track fit, not ink."""
    exp = make_experiment(family={**SMALL_VAE, "hidden": 64, "latent": 8, "max_epochs": 40, "patience": 4,
                                  "batch": 32, "threads": 1},
                          data=DIGITS, n=500, heldout=400, metrics=["test_nelbo"])
    src = exp.make_source()
    fam = VAE(exp.family, 1, src.spec).fit(src.take(SeedTree(0), 0, 1, 0, 500), rng=np.random.default_rng(0))
    u = fam.image_confidence(src.heldout(SeedTree(0)))[0]
    ranked = len(fam.reference().rank_x)
    for gamma in (0.5, 0.75, 0.9):
        q = 1 - gamma
        se = np.sqrt(q * (1 - q) * (1 / len(u) + 1 / ranked))
        dropped = 1 - TCE(gamma=gamma).weight_u(u).mean()
        assert abs(dropped - q) <= 2.5 * se, (gamma, dropped)
    assert ((u >= 0) & (u <= 1)).all() and fam.loss_confidence(src.heldout(SeedTree(0))).shape[-1] == 8


@pytest.mark.parametrize("loss, granularity, kept", [
    ({"name": "random_drop", "q": 0.25}, "pixel", 0.75), ({"name": "random_drop", "q": 0.25}, "image", 0.75),
    ({"name": "tce", "gamma": 0.5}, "image", None), ({"name": "tce", "gamma": {"quantile": 0.25}}, "pixel", None)])
def test_vae_training_records_the_loss_gamma_and_kept_share(loss, granularity, kept):
    """The fit records, per chain, the last epoch's share of targets kept and its gamma: random_drop keeps 1 - q
    of the pixels (or images) at random; a quantile gamma is resolved per epoch on a fixed clip set of training
    images, where it drops exactly the stated share of pixels (ties aside)."""
    import torch

    from collapselab.families.vae import _Trainer
    from collapselab.losses.ulosses import get_uloss

    src, real = _digits(400)
    cfg = VAEConfig(**{**SMALL_VAE, "granularity": granularity, "max_epochs": 4, "threads": 1})
    uloss = get_uloss(**loss)
    fam = VAE(cfg, 1, src.spec).fit_loss(real, uloss, np.random.default_rng(0))
    record = fam.loss_records[0]
    if kept is not None:  # a random share: within 4 binomial SE of 1 - q over the last epoch's training targets
        targets = int(400 * (1 - cfg.validation)) * (64 if granularity == "pixel" else 1)
        assert abs(record.kept - kept) <= 4 * np.sqrt(kept * (1 - kept) / targets), record
    else:
        assert 0.0 < record.kept < 1.0 and 0.0 < record.gamma < 1.0
    if uloss.adaptive:
        from collapselab.losses import AppliedLoss
        from collapselab.losses.binary import log_u_binary

        x = torch.as_tensor(real["x"][0, :256])
        applied = AppliedLoss(uloss)
        trainer = _Trainer(fam, fam.nets[0], applied, None)
        epoch_loss = applied.start_epoch(lambda: trainer._clip_confidences((x, None, None), None))
        with torch.no_grad():
            mu, _ = fam.nets[0].encode(x, None)
            u = log_u_binary(fam.nets[0].decode(mu, None), x).exp().double().numpy()
        assert np.mean(u > epoch_loss.gamma) == pytest.approx(0.25, abs=2 / u.size)
