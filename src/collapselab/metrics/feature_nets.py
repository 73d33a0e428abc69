"""Reference networks for image metrics, trained once on a source's real training split and cached.

- :func:`classifier`: a small CNN (two conv blocks, a 128-d feature layer, 10 logits) trained on the real
  training images, early-stopped on the real validation split. Its 128-d features define the Fréchet
  distance and the k-NN precision/recall/density/coverage; its predictions the class metrics. (It is not
  Inception: distances in its features are comparable only with each other, never with published FIDs.)
- :func:`reference_encoder`: an MLP VAE trained on the same real images; the spread of its posterior means
  over a model's samples is ``latent_std`` (Shumailov et al.'s signal, in one fixed encoder for every arm).

Both are trained from fixed seeds and cached in the user cache directory
(``$COLLAPSELAB_CACHE`` or ``$XDG_CACHE_HOME/collapselab`` or ``~/.cache/collapselab``) under the sha256 of
the training data and of the recipe, as safetensors; a cached file whose checksum fails is retrained.
A lock file makes concurrent workers train each network once.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np

from collapselab.cache import cached_state_dict
from collapselab.data.images import ImageSource
from collapselab.torch_runtime import infer

#: 3 epochs of Adam under a one-cycle schedule (its accuracy and cost: the README's benchmark section).
#: Small data sets (the 8x8 digits) get at least ``min_steps`` optimizer steps.
CLASSIFIER_RECIPE = {"net": "cnn-32-64-128", "epochs": 3, "min_steps": 1500, "max_lr": 3e-3, "batch": 128, "seed": 0}
ENCODER_RECIPE = {"net": "vae-mlp-400-20", "epochs": 10, "min_steps": 1500, "lr": 1e-3, "batch": 128, "patience": 2,
                  "seed": 0}


def _n_epochs(recipe: dict, n: int) -> int:
    return max(recipe["epochs"], -(-recipe["min_steps"] // -(-n // recipe["batch"])))


def _net_classifier(shape: tuple[int, int, int], classes: int) -> Any:
    from torch import nn

    c, h, w = shape
    return nn.Sequential(
        nn.Conv2d(c, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * (h // 4) * (w // 4), 128), nn.ReLU(),  # features: the 128-d output here
        nn.Linear(128, classes))


def _epochs(net: Any, x: Any, y: Any, xv: Any, yv: Any, recipe: dict, step: Callable, score: Callable) -> None:
    """Adam epochs with early stopping on ``score`` of the validation split (lower is better)."""
    import torch

    g = torch.Generator().manual_seed(recipe["seed"])
    opt = torch.optim.Adam(net.parameters(), lr=recipe["lr"])
    best, best_state, bad = float("inf"), None, 0
    for _ in range(_n_epochs(recipe, len(x))):
        net.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), recipe["batch"]):
            b = perm[i:i + recipe["batch"]]
            loss = step(net, x[b], None if y is None else y[b], g)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        with torch.inference_mode():
            s = float(score(net, xv, yv))
        if s < best:
            best, best_state, bad = s, {k: v.clone() for k, v in net.state_dict().items()}, 0
        else:
            bad += 1
            if bad >= recipe["patience"]:
                break
    net.load_state_dict(best_state)


class Classifier:
    """The trained reference CNN of a source: ``features(x)`` (128-d) and ``predict(x)`` (class)."""

    def __init__(self, net: Any) -> None:
        self.net = net.eval()
        self.body = net[:-1]

    def features(self, x: np.ndarray) -> np.ndarray:
        """``[N, 128]`` float64 features of images ``[N, 1, H, W]``."""
        return infer(self.body, x)

    def logits(self, x: np.ndarray) -> np.ndarray:
        return infer(self.net, x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.logits(x).argmax(axis=1)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.predict(x) == y).mean())


def _as_tensors(split: tuple[np.ndarray, np.ndarray]) -> tuple[Any, Any]:
    import torch

    return torch.as_tensor(split[0]), torch.as_tensor(split[1])


def classifier(source: ImageSource) -> Classifier:
    """The reference classifier of ``source`` (trained on its real training split once, then cached)."""
    return _classifier(type(source), source.config)


@cache
def _classifier(cls: type[ImageSource], config: Any) -> Classifier:
    import torch.nn.functional as F

    source = cls(config, 1)

    shape, classes = source.spec["shape"], source.classes

    def train() -> dict[str, Any]:
        import torch

        r = CLASSIFIER_RECIPE
        net = _net_classifier(shape, classes)
        x, y = _as_tensors(source.splits()["train"])
        g = torch.Generator().manual_seed(r["seed"])
        opt = torch.optim.Adam(net.parameters(), lr=r["max_lr"])
        epochs = _n_epochs(r, len(x))
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=r["max_lr"],
                                                    total_steps=epochs * -(-len(x) // r["batch"]))
        net.train()
        for _ in range(epochs):
            perm = torch.randperm(len(x), generator=g)
            for i in range(0, len(x), r["batch"]):
                b = perm[i:i + r["batch"]]
                loss = F.cross_entropy(net(x[b]), y[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        return net.state_dict()

    net = _net_classifier(shape, classes)
    net.load_state_dict(cached_state_dict("classifier", source, CLASSIFIER_RECIPE, train))
    return Classifier(net)


def reference_encoder(source: ImageSource) -> Callable[[np.ndarray], np.ndarray]:
    """``encode(x) -> [N, 20]`` posterior means of an MLP VAE trained once on ``source``'s real training split."""
    return _reference_encoder(type(source), source.config)


@cache
def _reference_encoder(cls: type[ImageSource], config: Any) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    source = cls(config, 1)

    from collapselab.families.vae_nets import VAENet, kl_standard_normal

    def build() -> Any:
        return VAENet("mlp", tuple(source.spec["shape"]), 20, 400, 0)

    def step(net, xb, yb, g):
        mu, logvar = net.encode(xb)
        z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=g)
        rec = torch.nn.functional.binary_cross_entropy_with_logits(net.decode(z), xb, reduction="sum")
        return (rec + kl_standard_normal(mu, logvar).sum()) / len(xb)

    def score(net, xv, yv):
        mu, logvar = net.encode(xv)
        rec = torch.nn.functional.binary_cross_entropy_with_logits(net.decode(mu), xv, reduction="sum")
        return (rec + kl_standard_normal(mu, logvar).sum()) / len(xv)

    def train() -> dict[str, Any]:
        net = build()
        (x, _), (xv, _) = _as_tensors(source.splits()["train"]), _as_tensors(source.validation())
        _epochs(net, x, None, xv, None, ENCODER_RECIPE, step, score)
        return net.state_dict()

    net = build()
    net.load_state_dict(cached_state_dict("reference-encoder", source, ENCODER_RECIPE, train))
    net.eval()

    def encode(x: np.ndarray) -> np.ndarray:
        return infer(lambda t: net.encode(t)[0], x)

    return encode
