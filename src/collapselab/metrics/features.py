"""Image metrics in the features of a reference classifier trained on real images (see ``feature_nets``).

Each generation draws as many images from the model as there are held-out real test images (one draw
shared by every metric here), and compares them with those real images:

- ``frechet_cnn``: Fréchet distance between Gaussians fitted to the two feature sets (Heusel et al.'s FID
  formula, but in a small MNIST-trained CNN's 128-d features: not comparable with Inception FIDs).
- ``precision``, ``recall``, ``density``, ``coverage``: Naeem et al. (2020)'s k-NN estimates, k = 5.
- ``class_coverage``: share of the classes that receive at least half their expected share of the samples
  (by the classifier's prediction); ``class_entropy``: entropy (nats) of the predicted-class histogram
  (log 10 = 2.303 for balanced digits); ``label_accuracy``: for a conditional model, how often the classifier
  recognises the class the sample was drawn for.
- ``latent_std``: the spread of the samples in the latent space of a fixed encoder trained on real images
  (mean over latent dimensions of the standard deviation of the posterior means): Shumailov et al.'s signal
  that a VAE's samples lose their spread.
"""

from __future__ import annotations

import numpy as np

from collapselab.families.base import Family
from collapselab.metrics.base import MetricContext, metric

IMAGES = ("images",)
K_NN = 5


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a [n, d]`` and ``b [m, d]``.

    ``tr sqrt(S_a S_b)`` is computed as the trace of the square root of the symmetric PSD matrix
    ``S_a^1/2 S_b S_a^1/2`` (eigendecompositions; stabler and faster than ``scipy.linalg.sqrtm`` of the
    non-symmetric product, and never complex).
    """
    mu_a, mu_b = a.mean(axis=0), b.mean(axis=0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(s_a)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root @ s_b @ root)
    tr_sqrt = np.sqrt(np.clip(inner, 0, None)).sum()
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2.0 * tr_sqrt)


def prdc(real: np.ndarray, fake: np.ndarray, k: int = K_NN) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` against ``real`` features (Naeem et al., 2020)."""
    from sklearn.metrics import pairwise_distances

    def kth(d: np.ndarray) -> np.ndarray:  # distance to the k-th nearest other point (column 0 is itself)
        return np.partition(d, k, axis=1)[:, k]

    r_r = kth(pairwise_distances(real))
    r_f = kth(pairwise_distances(fake))
    d = pairwise_distances(real, fake)  # [n_real, n_fake]
    inside = d <= r_r[:, None]  # fake j inside real i's ball
    return {"precision": float(inside.any(axis=0).mean()),
            "recall": float((d <= r_f[None, :]).any(axis=1).mean()),
            "density": float(inside.sum() / (k * fake.shape[0])),
            "coverage": float(inside.any(axis=1).mean())}


def _clf(ctx: MetricContext):
    from collapselab.metrics.feature_nets import classifier

    return classifier(ctx.source)


def _generated(model: Family, ctx: MetricContext) -> list:
    """The model's samples for this generation, one ``SampleSet`` chain at a time (drawn once)."""
    if "generated" not in ctx.cache:
        ctx.cache["generated"] = model.sample(ctx.heldout.n, ctx.rng)
    return ctx.cache["generated"]


def _real_features(ctx: MetricContext) -> np.ndarray:
    if "real_features" not in ctx.static:
        ctx.static["real_features"] = _clf(ctx).features(ctx.heldout["x"][0])
    return ctx.static["real_features"]


def _fake_features(model: Family, ctx: MetricContext) -> list[np.ndarray]:
    if "fake_features" not in ctx.cache:
        x = _generated(model, ctx)["x"]
        ctx.cache["fake_features"] = [_clf(ctx).features(x[c]) for c in range(len(x))]
    return ctx.cache["fake_features"]


def _predicted(model: Family, ctx: MetricContext) -> list[np.ndarray]:
    if "predicted" not in ctx.cache:
        x = _generated(model, ctx)["x"]
        ctx.cache["predicted"] = [_clf(ctx).predict(x[c]) for c in range(len(x))]
    return ctx.cache["predicted"]


def _prdc(model: Family, ctx: MetricContext, name: str) -> np.ndarray:
    if "prdc" not in ctx.cache:
        real = _real_features(ctx)
        ctx.cache["prdc"] = [prdc(real, f) for f in _fake_features(model, ctx)]
    return np.array([p[name] for p in ctx.cache["prdc"]])


@metric("frechet_cnn", IMAGES, "Fréchet distance between model samples and real test images in the 128-d "
        "features of a CNN trained on the real training images (FID's formula; not Inception FID)",
        title="Fréchet distance to real test images (CNN features)", axis="Fréchet distance (CNN features)",
        reference="real")
def frechet_cnn(model: Family, ctx: MetricContext) -> np.ndarray:
    real = _real_features(ctx)
    return np.array([frechet_distance(real, f) for f in _fake_features(model, ctx)])


@metric("precision", IMAGES, "share of model samples inside the k-NN balls (k=5) of real test images, in CNN "
        "features (Naeem et al.)", better="higher", title="Precision (k-NN, CNN features)", axis="precision",
        reference="real")
def precision(model: Family, ctx: MetricContext) -> np.ndarray:
    return _prdc(model, ctx, "precision")


@metric("recall", IMAGES, "share of real test images inside the k-NN balls (k=5) of model samples, in CNN "
        "features", better="higher", title="Recall (k-NN, CNN features)", axis="recall",
        reference="real")
def recall(model: Family, ctx: MetricContext) -> np.ndarray:
    return _prdc(model, ctx, "recall")


@metric("density", IMAGES, "mean number of real k-NN balls (k=5) holding each model sample, over k (Naeem et "
        "al.; 1 when samples are distributed like real images)", better="higher",
        title="Density (k-NN, CNN features)", axis="density", reference="real")
def density(model: Family, ctx: MetricContext) -> np.ndarray:
    return _prdc(model, ctx, "density")


@metric("coverage", IMAGES, "share of real test images whose k-NN ball (k=5) holds at least one model sample",
        better="higher", title="Coverage (k-NN, CNN features)", axis="coverage", reference="real")
def coverage(model: Family, ctx: MetricContext) -> np.ndarray:
    return _prdc(model, ctx, "coverage")


@metric("class_coverage", IMAGES, "share of classes receiving at least half their expected share of the model's "
        "samples (by the reference classifier)", better="higher",
        title="Classes the model still generates", axis="share of classes covered", reference="real")
def class_coverage(model: Family, ctx: MetricContext) -> np.ndarray:
    k = ctx.source.classes
    return np.array([(np.bincount(p, minlength=k) >= len(p) / (2 * k)).mean() for p in _predicted(model, ctx)])


@metric("class_entropy", IMAGES, "entropy (nats) of the classes the reference classifier sees in the model's "
        "samples (log 10 = 2.303 when balanced over 10 classes)", better="higher",
        title="Class entropy of model samples", axis="entropy (nats)", reference="real")
def class_entropy(model: Family, ctx: MetricContext) -> np.ndarray:
    k = ctx.source.classes
    out = []
    for p in _predicted(model, ctx):
        q = np.bincount(p, minlength=k) / len(p)
        out.append(-np.sum(q[q > 0] * np.log(q[q > 0])))
    return np.array(out)


@metric("label_accuracy", IMAGES, "share of a conditional model's samples the reference classifier assigns to "
        "the class they were drawn for (needs family.conditional)", better="higher",
        title="Label accuracy of conditional samples", axis="accuracy",
        check=lambda ctx: None if getattr(ctx.arm.family, "conditional", False) else
        f"label_accuracy needs a conditional model (family.conditional: true); arm {ctx.arm.name!r} is unconditional")
def label_accuracy(model: Family, ctx: MetricContext) -> np.ndarray:
    y = _generated(model, ctx)["y"]
    return np.array([(p == y[c]).mean() for c, p in enumerate(_predicted(model, ctx))])


@metric("latent_std", IMAGES, "spread of the model's samples in a fixed encoder trained on real images: mean "
        "over latent dimensions of the std of the posterior means (falls as samples lose diversity)",
        better="higher", title="Spread of samples in a real-data encoder's latent space", axis="latent std",
        reference="real")
def latent_std(model: Family, ctx: MetricContext) -> np.ndarray:
    from collapselab.metrics.feature_nets import reference_encoder

    encode = reference_encoder(ctx.source)
    x = _generated(model, ctx)["x"]
    return np.array([encode(x[c]).std(axis=0).mean() for c in range(len(x))])
