"""Family vae: settings, shapes and state, seeded training, curation weights, image confidence, the loss records;
its runs (kill and resume, workers), its sample grid and Shumailov et al.'s signal on real digits."""

from __future__ import annotations

import json

import numpy as np
import pytest

from collapselab.exhibits import ImageGrid
from collapselab.families.vae import GRID, VAE, VAEConfig
from collapselab.losses.ulosses import CE, TCE
from collapselab.report.exhibits import mosaic, thinned
from collapselab.runs import assemble, execute
from collapselab.samples import SampleSet
from collapselab.seeding import SeedTree

from .helpers import DIGITS, SMALL_VAE, digits_images, killed_and_uninterrupted, make_experiment


@pytest.mark.parametrize(("family", "message"), [
    ({"arch": "resnet"}, "family.vae.arch"),
    ({"latent": 0}, "family.vae.latent"),
    ({"granularity": "token"}, "family.vae.granularity"),
])
def test_bad_vae_settings_name_the_field(family, message):
    with pytest.raises(ValueError, match=message.replace(".vae", "")):
        make_experiment(family={**SMALL_VAE, **family}, data=DIGITS, n=10, metrics=["test_nelbo"])



def test_vae_shapes_labels_and_state_roundtrip():
    src, real = digits_images()
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
    src, real = digits_images(n=400)
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
    src, real = digits_images(n=200)
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

    from collapselab.losses.ulosses import get_uloss

    src, real = digits_images(400)
    cfg = VAEConfig(**{**SMALL_VAE, "granularity": granularity, "max_epochs": 4, "threads": 1})
    uloss = get_uloss(**loss)
    fam = VAE(cfg, 1, src.spec).fit_loss(real, uloss, np.random.default_rng(0))
    record = fam.loss_records[0]
    if kept is not None:  # a random share: within 4 binomial SE of 1 - q over the last epoch's training targets
        targets = int(400 * (1 - cfg.validation)) * (64 if granularity == "pixel" else 1)
        assert abs(record.kept - kept) <= 4 * np.sqrt(kept * (1 - kept) / targets), record
    else:
        assert 0.0 < record.kept < 1.0 and 0.0 < record.gamma < 1.0
    if uloss.adaptive:  # the seam resolves the quantile on the family's per-pixel confidences of a clip set
        from collapselab.losses import AppliedLoss

        clip = real.head(256)
        u = fam.confidence(clip)[0].reshape(256, -1)
        epoch_loss = AppliedLoss(uloss).start_epoch((u, 256))
        assert np.mean(u > epoch_loss.gamma) == pytest.approx(0.25, abs=2 / u.size)













IMAGE_EXP = {
    "family": {"name": "vae", "hidden": 32, "latent": 4, "max_epochs": 3, "batch": 64, "conditional": True},
    "data": {"source": "digits", "form": "images"}, "n": 200, "heldout": 100, "generations": 3, "seeds": 1,
    "metrics": ["test_nelbo", "class_entropy"],
    "arms": [{"name": "tce-pixel", "loss": {"name": "tce", "gamma": 0.9}},
             {"name": "verifier-once", "curator": {"name": "discriminator", "keep": 0.5, "train": "once",
                                                    "epochs": 1, "real": 300}},
             {"name": "fortifai-image", "regime": {"name": "fortifai", "chunks": 2},
              "loss": {"name": "tce", "gamma": 0.9}, "family": {"granularity": "image"}}],
}



def test_killed_image_run_resumes_to_identical_files(tmp_path):
    """Every arm killed after generation 1 and resumed gives the files of an uninterrupted run, byte for byte:
    metrics, checkpoints (torch weights, the verifier trained once), tables, report and sample grid."""
    exp = make_experiment(**IMAGE_EXP)
    full_files, part_files, _ = killed_and_uninterrupted(exp, tmp_path)
    assert "figures/samples.png" in full_files and "figures/samples.png" in part_files
    assert full_files == part_files
    assert "figures/samples.png" in (tmp_path / "full" / "report.html").read_text()
    import torch

    record = json.loads(full_files["chains/tce-pixel/b0000/g00001.json"])  # where the checkpoint was computed
    assert record["runtime"] == ({"device": "cuda", "gpu": torch.cuda.get_device_name()} if torch.cuda.is_available()
                                 else {"device": "cpu"})



def test_the_sample_grid_shows_generations_thinned_evenly():
    gens = thinned(list(range(41)), ImageGrid.max_rows)
    assert gens[0] == 0 and gens[-1] == 40 and len(gens) == ImageGrid.max_rows
    assert gens == sorted(set(gens)) and thinned([0, 1, 2, 3], ImageGrid.max_rows) == [0, 1, 2, 3]
    rows = [np.full((GRID, 8, 8), v, np.float32) for v in (0.0, 1.0)]
    grid = mosaic(rows, gap=1, fill=0.5)
    assert grid.shape == (2 * 8 + 1, GRID * 9 - 1)
    assert (grid[:8, :8] == 0).all() and (grid[9:, :8] == 1).all() and (grid[8] == 0.5).all()



def test_the_sample_grid_is_legible_labelled_and_shows_means_beside_draws():
    """Each sample at least 56 px wide, a conditional model's columns labelled by class, and the decoder's means
    of the same codes beside the Bernoulli draws passed on."""
    import io

    from PIL import Image

    from collapselab.families import make_family
    from collapselab.report.figures import SAMPLE_PX, image_grid_png
    from collapselab.seeding import SeedTree

    exp = make_experiment(**IMAGE_EXP)
    src = exp.make_source()
    fam = make_family(exp.arms[0].family, 1, src.spec)
    fam.fit(src.take(SeedTree(0), 0, 1, 0, 200), rng=np.random.default_rng(0))
    assert fam.exhibits == {"samples": ImageGrid}
    shown = fam.exhibit(src.heldout(SeedTree(0)), np.random.default_rng(1))["samples"]
    assert shown.draws.shape == shown.means.shape == (GRID, 8, 8)
    assert set(np.unique(shown.draws)) <= {0.0, 1.0} and 0 < shown.means.mean() < 1
    assert shown.labels.tolist() == list(range(GRID))
    png = image_grid_png(exp, {a.name: [(0, shown), (3, shown)] for a in exp.arms})
    width, height = Image.open(io.BytesIO(png)).size
    assert width >= GRID * SAMPLE_PX and height >= len(exp.arms) * 4 * SAMPLE_PX



@pytest.mark.heavy
def test_shumailov_vae_loses_spread_and_classes_generation_after_generation():
    """Shumailov et al.'s signal, on real digits: a fresh VAE per generation on its predecessor's decoder
    means. Measured (shumailov-vae on MNIST): latent_std 0.83 -> 0.08 and class_entropy 2.23 -> 1.16 in 8
    generations; here 8x8 digits, 3 generations, 2 seeds (measured: latent_std 0.22 -> 0.01, class_entropy
    2.14 -> 0): both must fall, latent_std by at least a third."""
    exp = make_experiment(family={"name": "vae", "hidden": 128, "latent": 8, "samples": "mean", "max_epochs": 60,
                                  "batch": 32}, data={"source": "digits", "form": "images"}, n=500, heldout=400,
                          generations=3, seeds=2, metrics=["latent_std", "class_entropy"], arms=[{"name": "replace"}])
    v = assemble(exp, execute(exp, None))[0].mean(axis=0)  # [generations + 1, metrics], seed mean
    latent_std, entropy = v[:, 0], v[:, 1]
    assert latent_std[-1] < latent_std[0] * 2 / 3, latent_std
    assert entropy[-1] < entropy[0] - 0.05, entropy



def test_image_and_loss_metrics_meet_their_identities():
    """The image metrics and the metrics of what a loss drops, on a conditional VAE: the NELBO is its
    reconstruction plus KL parts; cross entropy realises gamma 1, keeps every target and drops none; TCE(0.5)
    realises gamma 0.5 exactly and keeps a share in (0, 1); shares, accuracies and distances lie in their ranges."""
    names = ["test_nelbo", "test_recon", "test_kl", "frechet_cnn", "class_coverage", "label_accuracy", "loss_gamma",
             "loss_kept", "drop_own", "drop_real", "image_confidence_gap", "image_confidence_gap_mean"]
    exp = make_experiment(family={**IMAGE_EXP["family"], "max_epochs": 2}, data=IMAGE_EXP["data"], n=200,
                          heldout=100, generations=1, seeds=1, metrics=names,
                          arms=[{"name": "ce"}, {"name": "tce", "loss": {"name": "tce", "gamma": 0.5}}])
    v = assemble(exp, execute(exp, None))[:, 0]  # [arms, generations + 1, metrics]
    m = {name: v[:, :, i] for i, name in enumerate(names)}
    np.testing.assert_allclose(m["test_nelbo"], m["test_recon"] + m["test_kl"], rtol=1e-6)
    assert (m["test_kl"] > 0).all() and (m["frechet_cnn"] >= 0).all()
    for share in ("class_coverage", "label_accuracy", "loss_kept", "drop_own", "drop_real"):
        assert ((m[share] >= 0) & (m[share] <= 1)).all(), share
    assert (m["loss_gamma"][0] == 1.0).all() and (m["loss_kept"][0] == 1.0).all()
    assert (m["drop_own"][0] == 0).all() and (m["drop_real"][0] == 0).all()
    assert (m["loss_gamma"][1] == 0.5).all() and (m["loss_kept"][1] > 0).all() and (m["loss_kept"][1] < 1).all()
    assert np.isfinite(m["image_confidence_gap"]).all() and np.isfinite(m["image_confidence_gap_mean"]).all()



def test_conv_vae_runs_are_byte_identical_with_one_worker_or_two(tmp_path):
    """A conv net's results depend on its torch thread count; every chain uses family.threads (default 1) on every
    backend, so one worker and two write the same bytes (they used 2 and 1 threads before)."""
    from collapselab.runs import create_run, finish

    from .helpers import run_files

    exp = make_experiment(**{**IMAGE_EXP, "family": {**IMAGE_EXP["family"], "arch": "conv", "max_epochs": 2},
                             "arms": IMAGE_EXP["arms"][:1], "n": 100, "generations": 1, "seeds": 2, "batch_size": 1})
    for workers in (1, 2):
        with create_run(exp, tmp_path / f"w{workers}") as store:
            finish(exp, store, assemble(exp, execute(exp, store, workers)))
    assert run_files(tmp_path / "w1") == run_files(tmp_path / "w2")


