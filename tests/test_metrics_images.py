"""Image metrics and the discriminator curator: Fréchet distance vs scipy, PRDC, verifier, quotas."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg

from collapselab.curators import CuratorContext, Discriminator
from collapselab.curators import discriminator as D
from collapselab.data import make_source
from collapselab.families.vae import VAE, VAEConfig
from collapselab.losses.ulosses import CE
from collapselab.metrics.feature_nets import classifier
from collapselab.metrics.features import frechet_distance, prdc
from collapselab.seeding import SeedTree

from .helpers import make_experiment

DIGITS = {"source": "digits", "form": "images"}


def _source():
    exp = make_experiment(family={"name": "vae"}, data=DIGITS, n=300, heldout=400, metrics=["test_nelbo"])
    return make_source(exp.data, 400)


def _scipy_frechet(a, b):
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s_a @ s_b).real
    return np.sum((a.mean(0) - b.mean(0)) ** 2) + np.trace(s_a + s_b - 2 * covmean)


def test_frechet_distance_matches_a_scipy_reference_on_random_features():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16))
    b = rng.normal(loc=0.3, size=(400, 16)) @ rng.normal(size=(16, 16))
    assert frechet_distance(a, b) == pytest.approx(_scipy_frechet(a, b), rel=1e-6)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-8)


def test_prdc_of_a_set_against_itself_and_against_a_far_set():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(300, 8))
    same = prdc(real, real)
    assert same["precision"] == 1 and same["recall"] == 1 and same["coverage"] == 1
    far = prdc(real, rng.normal(loc=10, size=(300, 8)))
    assert far["precision"] == 0 and far["coverage"] == 0 and far["density"] == 0


def test_frechet_real_halves_far_below_real_vs_noise_in_classifier_features():
    src = _source()
    clf = classifier(src)
    x, y = src.splits()["test"]
    assert clf.accuracy(x, y) > 0.95  # the 8x8 digits' reference classifier
    f = clf.features(x)
    noise = clf.features(np.random.default_rng(0).random(x.shape).astype(np.float32))
    halves = frechet_distance(f[::2], f[1::2])
    assert halves < 0.1 * frechet_distance(f[::2], noise[1::2])


def test_discriminator_separates_real_digits_from_noise():
    src = _source()
    real = src.splits()["train"][0]
    rng = np.random.default_rng(0)
    noise = (rng.random(real.shape) < 0.3).astype(np.float32)
    net = D.train_net(real, noise, rng, epochs=5, lr=1e-3, batch=64)
    held = src.splits()["test"][0]
    s_real, s_noise = D.score(net, held), D.score(net, (rng.random(held.shape) < 0.3).astype(np.float32))
    assert (s_real[:, None] > s_noise[None, :]).mean() > 0.99  # AUC


def test_discriminator_with_yi_et_al_regularisers_and_early_stopping():
    """Dropout after the first two hidden layers, spectral norm on the output layer, label smoothing and early
    stopping on a held-out share (the best epoch kept): the network is built as stated, stops well before its epoch
    limit on an easy task, and still separates real digits from noise."""
    import torch

    net = D.build(64, 10, dropout=0.1, spectral_norm=True)
    assert sum(isinstance(m, torch.nn.Dropout) for m in net) == 2 and isinstance(net[2], torch.nn.Dropout)
    assert hasattr(net[-1], "parametrizations") and not hasattr(net[0], "parametrizations")
    src = _source()
    real = src.splits()["train"][0]
    rng = np.random.default_rng(0)
    noise = (rng.random(real.shape) < 0.3).astype(np.float32)
    calls = []
    orig = torch.optim.Adam.step

    def counting(self, *a, **k):
        calls.append(1)
        return orig(self, *a, **k)

    torch.optim.Adam.step = counting
    try:
        net = D.train_net(real, noise, rng, epochs=200, lr=1e-3, batch=64, dropout=0.1, spectral_norm=True,
                      label_smoothing=0.05, patience=2)
    finally:
        torch.optim.Adam.step = orig
    per_epoch = -(-int(0.9 * (2 * len(real)) + 1) // 64)
    assert len(calls) < 50 * per_epoch  # stopped early, far before 200 epochs
    held = src.splits()["test"][0]
    s_real, s_noise = D.score(net, held), D.score(net, (rng.random(held.shape) < 0.3).astype(np.float32))
    assert (s_real[:, None] > s_noise[None, :]).mean() > 0.99
    assert not net.training  # scoring in eval mode: no dropout


@pytest.mark.parametrize("keep", [0.25, 1.0])
def test_discriminator_curation_fills_every_class_quota_exactly(keep):
    src = _source()
    real = src.take(SeedTree(0), 0, 1, 0, 300)
    cfg = VAEConfig(name="vae", hidden=32, latent=4, max_epochs=5, conditional=True)
    model = VAE(cfg, 1, src.spec).fit_loss(real, CE(), np.random.default_rng(0))
    cur = Discriminator(keep=keep, epochs=2, real=500, synthetic=500)
    out = cur.curate(model, 103, np.random.default_rng(1), CuratorContext(src))
    assert out.n == 103
    assert np.bincount(out["y"][0], minlength=10).tolist() == [11, 11, 11, 10, 10, 10, 10, 10, 10, 10]


def test_discriminator_once_keeps_its_network_in_the_context_state():
    src = _source()
    real = src.take(SeedTree(0), 0, 1, 0, 200)
    cfg = VAEConfig(name="vae", hidden=32, latent=4, max_epochs=3, conditional=True)
    model = VAE(cfg, 1, src.spec).fit_loss(real, CE(), np.random.default_rng(0))
    ctx = CuratorContext(src)
    cur = Discriminator(keep=0.5, epochs=1, real=200, synthetic=200, train="once")
    a = cur.curate(model, 40, np.random.default_rng(3), ctx)
    assert ctx.state and all(k.startswith("c0.") for k in ctx.state)
    restored = CuratorContext(src, state=dict(ctx.state))  # as after a resume: arrays only
    b = cur.curate(model, 40, np.random.default_rng(3), restored)
    c = cur.curate(model, 40, np.random.default_rng(3), ctx)
    np.testing.assert_array_equal(b["x"], c["x"])
    assert a.n == 40


def test_discriminator_needs_image_data():
    with pytest.raises(ValueError, match="curator discriminator needs image data"):
        make_experiment(curator={"name": "discriminator"})
    with pytest.raises(ValueError, match="curator.keep"):
        make_experiment(family={"name": "vae"}, data=DIGITS, n=50, metrics=["test_nelbo"],
                        curator={"name": "discriminator", "keep": 1.5})
