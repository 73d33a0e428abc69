"""The VAE's image-level confidence: how much more the model likes an image than a frozen reference does,
ranked among real images it never trained on.

``u(x) = P_real(s(X) < s(x))`` with ``s(x) = ELBO_model(x) - ELBO_ref(x)``: the share of a **ranking set** of
real images (of the same class for a conditional model, where the set holds enough of each class) whose score is
below x's. ``ELBO_ref`` is a VAE of the
same architecture trained once on one half of the source's real validation split and cached; the ranking set is
the other half. So:

- under the model, real images the model did not train on have u ~ Uniform(0, 1): TCE with gamma drops
  ``1 - gamma`` of them **by construction**;
- the reference cancels what makes an image easy for any VAE (a raw NELBO tracks the ink: measured on an MLP
  VAE trained on 500 MNIST images, 41 of the 50 images with the lowest NELBO were 1s, and the model's own
  Bernoulli samples had a higher NELBO (199.8) than real held-out images (138.9), so "confidence" by raw NELBO
  was inverted: TCE 0.9 dropped 75% of the real training images and 10% of the model's own samples);
- an image the model is over-confident on, as ForTIFAI assumes of its own samples, has a high ``s`` and u near
  1; whether that holds is measured (``image_confidence_gap``), not assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

#: the reference VAE's recipe (Adam, early stopping on the ranking half; part of the cache key)
#: a conditional model ranks among its class when the ranking set holds at least this many of each class (the
#: quantiles of a handful of images are too noisy: scikit-learn's 8x8 digits have ~10 per class; MNIST ~500)
MIN_PER_CLASS = 50
REFERENCE_RECIPE = {"net": "same-as-arm", "epochs": 100, "min_steps": 1500, "lr": 1e-3, "batch": 128, "patience": 5,
                    "seed": 0, "split": "validation, first half (by a fixed permutation)",
                    "streams": "named sub-streams (run format 2)"}  # the family's draws: part of what it is built from


def confidence_split(source: Any) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """The source's real validation split in two fixed halves: ``(train the reference, rank)``."""
    x, y = source.validation()
    order = np.random.default_rng(0).permutation(len(y))
    half = len(y) // 2
    a, b = np.sort(order[:half]), np.sort(order[half:])
    return (x[a], y[a]), (x[b], y[b])


def nelbo(net: Any, x: np.ndarray, y: np.ndarray | None, device: Any, batch: int = 500) -> np.ndarray:
    """Per-image negative ELBO ``[n]`` (nats) with fixed codes (a generator seeded 0: repeatable)."""
    import torch

    from collapselab.families.vae_nets import image_nelbo

    out = np.empty(len(x))
    g = torch.Generator(device=device).manual_seed(0)
    net.eval()
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            xb = torch.as_tensor(np.ascontiguousarray(x[i:i + batch], dtype=np.float32), device=device)
            yb = None if y is None else torch.as_tensor(np.asarray(y[i:i + batch], dtype=np.int64), device=device)
            r, k = image_nelbo(net, xb, yb, g)
            out[i:i + len(r)] = (r + k).cpu().numpy()
    return out


@dataclass
class Reference:
    """A frozen reference VAE and the ranking set (real images, labels, and the reference's NELBO of them)."""

    net: Any
    rank_x: np.ndarray
    rank_y: np.ndarray
    rank_ref: np.ndarray
    conditional: bool
    device: Any
    #: rank among the same class (a conditional model whose ranking set holds >= MIN_PER_CLASS of each class)
    by_class: bool = False

    def ref_nelbo(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The reference's NELBO of images ``x`` (labels ``y``, used when conditional)."""
        return nelbo(self.net, x, y if self.conditional else None, self.device)

    def ranking(self, model_net: Any) -> dict[int, np.ndarray]:
        """Sorted scores ``s = NELBO_ref - NELBO_model`` of the ranking set under ``model_net``, per class
        (conditional) or under key -1 (all images)."""
        s = self.rank_ref - nelbo(model_net, self.rank_x, self.rank_y if self.conditional else None, self.device)
        if not self.by_class:
            return {-1: np.sort(s)}
        return {int(c): np.sort(s[self.rank_y == c]) for c in np.unique(self.rank_y)}

    def u(self, scores: np.ndarray, labels: np.ndarray, ranking: dict[int, np.ndarray]) -> np.ndarray:
        """Confidence of images with ``scores`` (``s``) and ``labels``: the share of their class's ranking
        scores strictly below theirs (unconditional: of all)."""
        out = np.empty(len(scores))
        keys = np.full(len(scores), -1) if not self.by_class else np.asarray(labels)
        for c in np.unique(keys):
            ref = ranking.get(int(c), ranking.get(-1))
            if ref is None:  # an unlabelled image of a conditional model: rank among every class
                ref = np.sort(np.concatenate(list(ranking.values())))
            sel = keys == c
            out[sel] = np.searchsorted(ref, scores[sel], side="left") / len(ref)
        return out


def reference(family: Any) -> Reference:
    """The cached reference VAE of ``family``'s architecture on its source, with the ranking set."""
    import torch

    from collapselab.cache import cached_state_dict
    from collapselab.families.vae_nets import VAENet

    source = family.spec.source
    cfg = family.config
    (xa, ya), (xb, yb) = confidence_split(source)
    cond = bool(family.classes)
    ranked_by_class = cond and int(np.bincount(yb).min()) >= MIN_PER_CLASS
    arch = {"arch": cfg.arch, "latent": cfg.latent, "hidden": cfg.hidden, "classes": family.classes}
    recipe = {**REFERENCE_RECIPE, **arch, "lr": cfg.lr, "batch": cfg.batch}

    def train() -> dict[str, Any]:
        ref = type(family)(cfg.model_copy(update={"max_epochs": recipe["epochs"], "patience": recipe["patience"],
                                          "validation": 0.1, "granularity": "pixel"}), 1, family.spec)
        from collapselab.losses.ulosses import CE
        from collapselab.samples import SampleSet

        data = SampleSet({"x": xa[None], "y": (ya if cond else np.full(len(ya), -1))[None]})
        ref._train(data, CE(), np.random.default_rng(recipe["seed"]), None, None)
        return ref.nets[0].state_dict()

    state = cached_state_dict("confidence-reference-vae", source, recipe, train)
    net = VAENet(cfg.arch, family.shape, cfg.latent, cfg.hidden, family.classes)
    net.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    net = net.to(family.device).eval()
    rank_ref = nelbo(net, xb, yb if cond else None, family.device)
    return Reference(net, xb, yb, rank_ref, cond, family.device, ranked_by_class)
