"""Yi et al.'s verifier for images: an MLP real-vs-synthetic classifier (784-512-256-128-64-1, LeakyReLU 0.2).

It is trained with binary cross entropy on real training images (label 1) against the current generator's
samples (label 0), by Adam; its score for an image is the logit of "real". Every input is binarized at 0.5
(as in the authors' code): real MNIST pixels are grey levels and Bernoulli samples are binary, so without
it the verifier would separate them by that alone instead of by what the digits look like. The ``discriminator`` curator
(:mod:`collapselab.curators`) keeps the best-scored share of each class.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.families.gradient import infer, seeded, torch_generator

WIDTHS = (512, 256, 128, 64)


def build(pixels: int) -> Any:
    """The discriminator network for images of ``pixels`` values."""
    from torch import nn

    layers: list[Any] = [nn.Flatten()]
    width = pixels
    for w in WIDTHS:
        layers += [nn.Linear(width, w), nn.LeakyReLU(0.2)]
        width = w
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def train(real: np.ndarray, fake: np.ndarray, rng: np.random.Generator, epochs: int, lr: float,
          batch: int) -> Any:
    """A discriminator trained on ``real`` (label 1) vs ``fake`` (label 0) images ``[N, 1, H, W]``."""
    import torch
    import torch.nn.functional as F

    with seeded(rng):
        net = build(int(np.prod(real.shape[1:])))
    g = torch_generator(rng)
    x = torch.as_tensor(np.concatenate([real, fake]) > 0.5).float()
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


def score(net: Any, x: np.ndarray) -> np.ndarray:
    """The logit of "real" for images ``[N, 1, H, W]`` (higher: more real-looking)."""
    return infer(lambda t: net((t > 0.5).float())[:, 0], x, 2000)


def state(net: Any) -> dict[str, np.ndarray]:
    """The network's parameters as arrays (for the run store)."""
    return {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}


def from_state(arrays: dict[str, np.ndarray], pixels: int) -> Any:
    """A network restored from :func:`state`."""
    import torch

    with torch.random.fork_rng(devices=[]):
        net = build(pixels)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    return net.eval()
