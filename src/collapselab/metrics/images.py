"""Image metrics against real held-out test images: the negative ELBO and its parts.

(The metrics in the features of a real-MNIST classifier - a Fréchet distance, precision/recall/density/
coverage, class coverage and entropy, latent spread - live in :mod:`collapselab.metrics.features`.)
"""

from __future__ import annotations

import numpy as np

from collapselab.families.base import Family
from collapselab.metrics.base import MetricContext, metric

IMAGES = ("images",)


def _parts(model: Family, ctx: MetricContext) -> tuple[np.ndarray, np.ndarray]:
    """``(reconstruction, KL)`` per held-out image, computed once per generation."""
    if "nelbo_parts" not in ctx.cache:
        ctx.cache["nelbo_parts"] = model.nelbo_parts(ctx.heldout)
    return ctx.cache["nelbo_parts"]


@metric("test_nelbo", IMAGES, "negative ELBO of the real held-out test images (nats per image; reconstruction "
        "+ KL, one posterior sample per image)", needs="nelbo_parts",
        title="Negative ELBO of real test images", axis="test NELBO (nats per image)")
def test_nelbo(model: Family, ctx: MetricContext) -> np.ndarray:
    rec, kl = _parts(model, ctx)
    return (rec + kl).mean(axis=1)


@metric("test_recon", IMAGES, "reconstruction part of test_nelbo: -log p(x | z), nats per image",
        needs="nelbo_parts", title="Reconstruction term on real test images", axis="-log p(x|z) (nats per image)")
def test_recon(model: Family, ctx: MetricContext) -> np.ndarray:
    return _parts(model, ctx)[0].mean(axis=1)


@metric("test_kl", IMAGES, "KL part of test_nelbo: KL(q(z|x) || p(z)), nats per image", needs="nelbo_parts",
        title="KL term on real test images", axis="KL (nats per image)")
def test_kl(model: Family, ctx: MetricContext) -> np.ndarray:
    return _parts(model, ctx)[1].mean(axis=1)
