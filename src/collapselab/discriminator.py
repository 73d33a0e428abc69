"""Yi et al.'s verifier for images: an MLP real-vs-synthetic classifier (784-512-256-128-64-1, LeakyReLU 0.2).

It is trained with binary cross entropy on real training images (label 1) against the current generator's
samples (label 0), by Adam; its score for an image is the logit of "real". Every input is binarized at 0.5
(as in the authors' code): real MNIST pixels are grey levels and Bernoulli samples are binary, so without
it the verifier would separate them by that alone instead of by what the digits look like. The ``discriminator`` curator
(:mod:`collapselab.curators`) keeps the best-scored share of each class.

With ``classes > 0`` the discriminator is conditional, as in Yi et al.'s code: the one-hot label is
concatenated to the pixels, so it scores (image, label) pairs and a conditional generator's sample that
does not show its label looks fake even when it is a good digit.

Yi et al.'s regularisers are settings (their ``ConditionalDiscriminator(dropout=0.1, label_smoothing=0.05)``):
``dropout`` after the first two hidden layers, ``spectral_norm`` on the output layer, ``label_smoothing``
(targets ``t (1 - eps) + eps / 2``), and early stopping with ``patience`` on a held-out ``validation`` share of
both sets, keeping the best epoch. (Their code stops on the training loss and records the validation loss; we
stop on the validation loss, which does not reward memorising the training set.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from collapselab.families.gradient import infer, seeded, torch_generator

WIDTHS = (512, 256, 128, 64)


def build(pixels: int, classes: int = 0, dropout: float = 0.0, spectral_norm: bool = False) -> Any:
    """The discriminator network for images of ``pixels`` values (plus a one-hot label of ``classes``)."""
    from torch import nn

    layers: list[Any] = []
    width = pixels + classes
    for i, w in enumerate(WIDTHS):
        layers += [nn.Linear(width, w), nn.LeakyReLU(0.2)]
        if dropout > 0 and i < 2:
            layers.append(nn.Dropout(dropout))
        width = w
    out = nn.Linear(width, 1)
    layers.append(nn.utils.parametrizations.spectral_norm(out) if spectral_norm else out)
    return nn.Sequential(*layers)


def inputs(x: np.ndarray, labels: np.ndarray | None, classes: int) -> np.ndarray:
    """The network's input rows: binarized pixels, then the one-hot label when ``classes > 0``."""
    flat = (x.reshape(len(x), -1) > 0.5).astype(np.float32)
    if not classes:
        return flat
    return np.concatenate([flat, np.eye(classes, dtype=np.float32)[np.asarray(labels)]], axis=1)


def train(real: np.ndarray, fake: np.ndarray, rng: np.random.Generator, epochs: int, lr: float,
          batch: int, real_labels: np.ndarray | None = None, fake_labels: np.ndarray | None = None,
          classes: int = 0, dropout: float = 0.0, spectral_norm: bool = False, label_smoothing: float = 0.0,
          patience: int | None = None, validation: float = 0.1, betas: tuple[float, float] = (0.5, 0.999)) -> Any:
    """A discriminator trained on ``real`` (label 1) vs ``fake`` (label 0) images ``[N, 1, H, W]`` (conditional on
    their class labels when ``classes > 0``), for ``epochs`` epochs or, with ``patience``, until the loss on a
    held-out ``validation`` share of both sets has not improved for ``patience`` epochs (the best epoch kept)."""
    import torch
    import torch.nn.functional as F

    with seeded(rng):
        net = build(int(np.prod(real.shape[1:])), classes, dropout, spectral_norm)
    g = torch_generator(rng)
    x = torch.as_tensor(np.concatenate([inputs(real, real_labels, classes), inputs(fake, fake_labels, classes)]))
    y = torch.cat([torch.ones(len(real)), torch.zeros(len(fake))])
    if patience is not None:
        perm = torch.randperm(len(x), generator=g)
        n_val = max(1, int(len(x) * validation))
        xv, yv, x, y = x[perm[:n_val]], y[perm[:n_val]], x[perm[n_val:]], y[perm[n_val:]]
    target = y * (1 - label_smoothing) + 0.5 * label_smoothing
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=betas)
    best, best_state, bad = float("inf"), None, 0
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), batch):
            b = perm[i:i + batch]
            loss = F.binary_cross_entropy_with_logits(net(x[b])[:, 0], target[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if patience is None:
            continue
        net.eval()
        with torch.inference_mode():
            v = float(F.binary_cross_entropy_with_logits(net(xv)[:, 0], yv))
        if v < best - 1e-6:
            best, bad, best_state = v, 0, {k: t.detach().clone() for k, t in net.state_dict().items()}
        else:
            bad += 1
            if bad >= patience:
                break
    if best_state is not None:
        net.load_state_dict(best_state)
    return net.eval()


def score(net: Any, x: np.ndarray, labels: np.ndarray | None = None, classes: int = 0) -> np.ndarray:
    """The logit of "real" for images ``[N, 1, H, W]`` (with their labels if conditional; higher: more
    real-looking)."""
    return infer(lambda t: net(t)[:, 0], inputs(x, labels, classes), 2000)


def state(net: Any) -> dict[str, np.ndarray]:
    """The network's parameters as arrays (for the run store)."""
    return {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}


def from_state(arrays: dict[str, np.ndarray], pixels: int, classes: int = 0, dropout: float = 0.0,
               spectral_norm: bool = False) -> Any:
    """A network restored from :func:`state`."""
    import torch

    with torch.random.fork_rng(devices=[]):
        net = build(pixels, classes, dropout, spectral_norm)
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()})
    return net.eval()
