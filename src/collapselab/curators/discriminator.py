"""Yi et al.'s verifier for images: an MLP real-vs-synthetic classifier (784-512-256-128-64-1, LeakyReLU 0.2).

It is trained with binary cross entropy on real training images (label 1) against the current generator's
samples (label 0), by Adam; its score for an image is the logit of "real". Every input is binarized at 0.5
(as in the authors' code): real MNIST pixels are grey levels and Bernoulli samples are binary, so without
it the verifier would separate them by that alone instead of by what the digits look like. The ``discriminator`` curator
(:class:`Discriminator`, below) keeps the best-scored share of each class.

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

import math
from typing import Any, Literal

import numpy as np
from pydantic import Field

from collapselab.curators.base import (
    CURATORS,
    CurationError,
    CuratorConfig,
    CuratorContext,
    SettingContext,
    draw,
    request_size,
)
from collapselab.families.base import Family
from collapselab.samples import SampleSet, concat
from collapselab.torch_runtime import infer, seeded, torch_generator

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


def train_net(real: np.ndarray, fake: np.ndarray, rng: np.random.Generator, epochs: int, lr: float,
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


def net_state(net: Any) -> dict[str, np.ndarray]:
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


@CURATORS.register
class Discriminator(CuratorConfig):
    """Yi et al.'s image verifier: keep the ``keep`` share of each class that a real-vs-synthetic MLP
    (above) scores as most real, drawing until every class's quota is filled.

    The discriminator trains on ``real`` real training images (default: the whole training split) against
    ``synthetic`` samples of the current model (default: as many), for ``epochs`` epochs, at every generation
    (``train: every_generation``) or once, against generation 0's model (``train: once``; kept in the
    checkpoints). Quotas: the request's labels (a class-balanced draw for a conditional model; one pool for
    an unconditional one). ``keep: 1.0`` keeps every sample and trains nothing: the unfiltered arm.
    ``conditional: true`` (Yi et al.'s choice; needs a conditional family) feeds the one-hot label to the
    discriminator with the pixels, so it also rejects samples that do not show their label.
    """

    name: Literal["discriminator"] = "discriminator"
    keep: float = Field(0.1, gt=0, le=1)
    train: Literal["every_generation", "once"] = "every_generation"
    real: int | None = Field(None, ge=1)
    synthetic: int | None = Field(None, ge=1)
    epochs: int = Field(2, ge=1, le=10_000)
    lr: float = Field(2e-4, gt=0, le=1)
    batch: int = Field(128, ge=1)
    max_rounds: int = Field(100, ge=1)
    conditional: bool = False
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout after the first two hidden layers (Yi: 0.1)")
    spectral_norm: bool = Field(False, description="spectral norm on the output layer (Yi: true)")
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0, description="targets t (1 - eps) + eps / 2 (Yi: 0.05)")
    patience: int | None = Field(None, ge=1, le=10_000, description="early stopping on the validation loss "
                                                                   "(epochs without improvement; None: all epochs)")
    validation: float = Field(0.1, gt=0.0, lt=1.0, description="share held out for early stopping")

    def check(self, ctx: SettingContext) -> str | None:
        if ctx.kind != "images":
            return f"curator discriminator needs image data; source {ctx.data.source!r} gives {ctx.kind}"
        if self.conditional and not getattr(ctx.arm.family, "conditional", False):
            return "a conditional discriminator needs a conditional family (family.conditional: true)"
        return None
    beta1: float = Field(0.5, ge=0.0, lt=1.0, description="Adam's beta1 (GAN practice 0.5; Yi et al.: 0.9)")

    def _classes(self, ctx: CuratorContext) -> int:
        return int(ctx.source.spec.get("classes", 0)) if self.conditional else 0

    def _nets(self, model: Family, rng: np.random.Generator, ctx: CuratorContext) -> list:
        pixels, classes = int(np.prod(ctx.source.spec["shape"])), self._classes(ctx)
        if self.train == "once" and "nets" in ctx.cache:
            return ctx.cache["nets"]
        if self.train == "once" and ctx.state:
            nets = [from_state({k.split(".", 1)[1]: v for k, v in ctx.state.items() if k.startswith(f"c{c}.")},
                                 pixels, classes, self.dropout, self.spectral_norm) for c in range(model.n_chains)]
        else:
            pool = ctx.source.load()
            n_real = min(self.real or len(pool["x"]), len(pool["x"]))
            pick = np.sort(rng.permutation(len(pool["x"]))[:n_real])
            real, real_y = pool["x"][pick], pool["y"][pick]
            fake = model.sample(self.synthetic or n_real, rng)
            nets = [train_net(real, fake["x"][c], rng, self.epochs, self.lr, self.batch, real_y, fake["y"][c], classes,
                            self.dropout, self.spectral_norm, self.label_smoothing, self.patience, self.validation,
                            (self.beta1, 0.999))
                    for c in range(model.n_chains)]
            if self.train == "once":
                ctx.state.update({f"c{c}.{k}": v for c, net in enumerate(nets) for k, v in net_state(net).items()})
        if self.train == "once":
            ctx.cache["nets"] = nets
        return nets

    def curate(self, model, request, rng, ctx):
        if self.keep == 1.0:
            return draw(model, request, rng)
        nets = self._nets(model, rng, ctx)
        want = request["y"] if not isinstance(request, int) else None
        kept: list[list[SampleSet]] = [[] for _ in range(model.n_chains)]
        need = None
        for _ in range(self.max_rounds):
            cand = draw(model, request, rng, 1.0 / self.keep)
            if need is None:  # quotas per chain and class: the request's labels, else balanced over the classes
                need = [_quotas(want[c % len(want)]) if want is not None else
                        _balanced(np.unique(cand["y"][c]), request_size(request)) for c in range(model.n_chains)]
            for c in range(model.n_chains):
                y = cand["y"][c]
                s = score(nets[c], cand["x"][c], y, self._classes(ctx))
                sel = []
                for label, quota in need[c].items():
                    idx = np.flatnonzero(y == label)
                    top = idx[np.argsort(-s[idx], kind="stable")[:min(quota, math.ceil(len(idx) * self.keep))]]
                    need[c][label] = quota - len(top)
                    sel.append(top)
                kept[c].append(cand.chains([c]).take(np.sort(np.concatenate(sel))))
            if all(q == 0 for d in need for q in d.values()):
                break
        else:
            raise CurationError(f"discriminator: class quotas still unfilled after {self.max_rounds} rounds of "
                                f"{1 / self.keep:.3g}x oversampling")
        per_chain = [concat(k) for k in kept]  # every chain holds exactly the requested count
        return SampleSet({k: np.concatenate([p[k] for p in per_chain]) for k in per_chain[0].arrays})


def _quotas(labels: np.ndarray) -> dict[int, int]:
    return {int(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True), strict=True)}


def _balanced(classes: np.ndarray, count: int) -> dict[int, int]:
    """``count`` spread over ``classes`` as evenly as possible (the first ones get the remainder)."""
    return _quotas(classes[np.arange(count) % len(classes)])
