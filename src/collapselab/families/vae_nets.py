"""The VAE's networks in plain torch (no torchvision): an MLP and Yi et al.'s convolutional architecture.

- ``mlp``: 784-400-latent encoder (ReLU) and its mirror, the classic Kingma & Welling MNIST VAE.
- ``conv``: Conv(1->32, k4 s2 p1) -> GELU -> Conv(32->64, k4 s2 p1) -> GELU -> linear heads; the decoder
  mirrors it with ConvTranspose layers (Yi et al.'s conditional VAE). Needs H and W divisible by 4.

With ``classes > 0`` the model is conditional (a CVAE): the one-hot label is concatenated to the encoder's
flattened features and to the latent code before decoding. The decoder returns Bernoulli logits shaped
like the image ``[N, 1, H, W]``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class VAENet(nn.Module):
    """Encoder ``q(z | x, y)`` (diagonal Gaussian) and Bernoulli decoder ``p(x | z, y)``."""

    def __init__(self, arch: str, shape: tuple[int, int, int], latent: int, hidden: int, classes: int) -> None:
        super().__init__()
        c, h, w = shape
        self.arch, self.shape, self.latent, self.classes = arch, shape, latent, classes
        if arch == "mlp":
            self.enc = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, hidden), nn.ReLU())
            feat = hidden
            self.dec_in = nn.Sequential(nn.Linear(latent + classes, hidden), nn.ReLU())
            self.dec = nn.Linear(hidden, c * h * w)
        elif arch == "conv":
            if h % 4 or w % 4:
                raise ValueError(f"family.arch: 'conv' needs image sides divisible by 4, got {h}x{w}; use 'mlp'")
            self.enc = nn.Sequential(nn.Conv2d(c, 32, 4, 2, 1), nn.GELU(), nn.Conv2d(32, 64, 4, 2, 1), nn.GELU(),
                                     nn.Flatten())
            feat = 64 * (h // 4) * (w // 4)
            self.dec_in = nn.Sequential(nn.Linear(latent + classes, feat), nn.GELU())
            self.dec = nn.Sequential(nn.Unflatten(1, (64, h // 4, w // 4)), nn.ConvTranspose2d(64, 32, 4, 2, 1),
                                     nn.GELU(), nn.ConvTranspose2d(32, c, 4, 2, 1))
        else:
            raise ValueError(f"family.arch: unknown {arch!r}; allowed: mlp, conv")
        self.mu = nn.Linear(feat + classes, latent)
        self.logvar = nn.Linear(feat + classes, latent)

    def _onehot(self, y: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
        if not self.classes:
            return None
        return F.one_hot(y.clamp_min(0), self.classes).to(like.dtype)

    def encode(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mu, logvar)`` of ``q(z | x, y)``."""
        f = self.enc(x)
        oh = self._onehot(y, f)
        if oh is not None:
            f = torch.cat([f, oh], dim=1)
        return self.mu(f), self.logvar(f)

    def decode(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Bernoulli logits ``[N, C, H, W]`` of ``p(x | z, y)``."""
        oh = self._onehot(y, z)
        h = self.dec_in(z if oh is None else torch.cat([z, oh], dim=1))
        return self.dec(h).reshape(-1, *self.shape)


def kl_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """``KL(N(mu, exp(logvar)) || N(0, I))`` per row."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(dim=1)


def image_nelbo(net: Any, x: Any, y: Any, g: Any, iw: int = 1) -> tuple[Any, Any]:
    """``(reconstruction, KL)`` per image; with ``iw > 1``: ``(-IWAE bound - KL, KL)``."""
    import torch
    import torch.nn.functional as F

    mu, logvar = net.encode(x, y)
    kl = kl_standard_normal(mu, logvar)
    std = (0.5 * logvar).exp()
    if iw == 1:
        z = mu + std * torch.randn(mu.shape, generator=g, device=mu.device)
        rec = F.binary_cross_entropy_with_logits(net.decode(z, y), x, reduction="none").flatten(1).sum(1)
        return rec, kl
    terms = []
    for _ in range(iw):
        eps = torch.randn(mu.shape, generator=g, device=mu.device)
        z = mu + std * eps
        log_px = -F.binary_cross_entropy_with_logits(net.decode(z, y), x, reduction="none").flatten(1).sum(1)
        log_pz = -0.5 * (z.pow(2) + math.log(2 * math.pi)).sum(1)
        log_qz = -0.5 * (eps.pow(2) + logvar + math.log(2 * math.pi)).sum(1)
        terms.append(log_px + log_pz - log_qz)
    bound = torch.logsumexp(torch.stack(terms), dim=0) - math.log(iw)
    return -bound - kl, kl
