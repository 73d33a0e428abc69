"""Image sources: MNIST and its split, balanced pools, Fashion-MNIST missing, the held-out size."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from collapselab.data import images as I
from collapselab.data import make_source
from collapselab.experiments.capacity import check_data
from collapselab.families.vae import VAE, VAEConfig
from collapselab.losses.ulosses import CE
from collapselab.seeding import SeedTree

from .helpers import DIGITS, SMALL_VAE, digits_images, make_experiment


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



def test_sampleset_of_images_concatenates_with_real():
    src, real = digits_images(n=50)
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


