"""Yi et al.'s verifier for images: an MLP real-vs-synthetic classifier (784-512-256-128-64-1, LeakyReLU 0.2).

It is trained with binary cross entropy on real training images (label 1) against the current generator's
samples (label 0), by Adam; its score for an image is the logit of "real". Every input is binarized at 0.5
(as in the authors' code): real MNIST pixels are grey levels and Bernoulli samples are binary, so without
it the verifier would separate them by that alone instead of by what the digits look like. The ``discriminator`` curator
(:mod:`collapselab.curators`) keeps the best-scored share of each class.

With ``classes > 0`` the discriminator is conditional, as in Yi et al.'s code: the one-hot label is
concatenated to the pixels, so it scores (image, label) pairs and a conditional generator's sample that
does not show its label looks fake even when it is a good digit.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.families.gradient import infer, seeded, torch_generator

WIDTHS = (512, 256, 128, 64)


def build(pixels: int, classes: int = 0) -> Any:
    """The discriminator network for images of ``pixels`` values (plus a one-hot label of ``classes``)."""
    from torch import nn

    layers: list[Any] = []
    width = pixels + classes
    for w in WIDTHS:
        layers += [nn.Linear(width, w), nn.LeakyReLU(0.2)]
        width = w
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def inputs(x: np.ndarray, labels: np.ndarray | None, classes: int) -> np.ndarray:
    """The network's input rows: binarized pixels, then the one-hot label when ``classes > 0``."""
    flat = (x.reshape(len(x), -1) > 0.5).astype(np.float32)
    if not classes:
        return flat
    return np.concatenate([flat, np.eye(classes, dtype=np.float32)[np.asarray(labels)]], axis=1)


def train(real: np.ndarray, fake: np.ndarray, rng: np.random.Generator, epochs: int, lr: float,
          batch: int, real_labels: np.ndarray | None = None, fake_labels: np.ndarray | None = None,
          classes: int = 0) -> Any:
    """A discriminator trained on ``real`` (label 1) vs ``fake`` (label 0) images ``[N, 1, H, W]``
    (conditional on their class labels when ``classes > 0``)."""
    import torch
    import torch.nn.functional as F

    with seeded(rng):
        net = build(int(np.prod(real.shape[1:])), classes)
    g = torch_generator(rng)
    x = torch.as_tensor(np.concatenate([inputs(real, real_labels, classes), inputs(fake, fake_labels, classes)]))
    y = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))])
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.5, 0.999))
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            b = perm[i:i + batch]
            loss = F.binary_cross_entropy_with_logits(net(x[b])[:, 0], y[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return net.eval()


def score(net: Any, x: np.ndarray, labels: np.ndarray | None = None, classes: int = 0) -> np.ndarray:
    """The logit of "real" for images ``[N, 1, H, W]`` (with their labels if conditional; higher: more
    real-looking)."""
    return infer(lambda t: net(t)[:, 0], inputs(x, labels, classes), 2000)


def state(net: Any) -> dict[str, np.ndarray]:
    """The network's parameters as arrays (for the run store)."""
    return {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}


def from_state(arrays: dict[str, np.ndarray], pixels: int, classes: int = 0) -> Any:
    """A network restored from :func:`state`."""
    import torch

    with torch.random.fork_rng(devices=[]):
        net = build(pixels, classes)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    return net.eval()
