"""Image runs through the engine: bitwise resume (checkpointed verifier state included) and the report's
sample grid."""

from __future__ import annotations

import json

import numpy as np
import pytest

from collapselab.exhibits import ImageGrid
from collapselab.families.vae import GRID
from collapselab.report.exhibits import mosaic, thinned
from collapselab.runs import assemble, execute

from .conftest import killed_and_uninterrupted, make_experiment

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

    from .conftest import run_files

    exp = make_experiment(**{**IMAGE_EXP, "family": {**IMAGE_EXP["family"], "arch": "conv", "max_epochs": 2},
                             "arms": IMAGE_EXP["arms"][:1], "n": 100, "generations": 1, "seeds": 2, "batch_size": 1})
    for workers in (1, 2):
        with create_run(exp, tmp_path / f"w{workers}") as store:
            finish(exp, store, assemble(exp, execute(exp, store, workers)))
    assert run_files(tmp_path / "w1") == run_files(tmp_path / "w2")
