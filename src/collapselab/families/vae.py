"""Family ``vae``: a (conditional) variational autoencoder with a Bernoulli decoder, trained by Adam.

Training (:meth:`VAE.fit_loss`): the negative ELBO ``recon + KL`` per image, where ``recon`` is the arm's
u-loss of the decoder's Bernoulli likelihood of the image's pixels, recomputed from the current model at
every step through :func:`collapselab.losses.binary.binary_uloss`:

- ``granularity: pixel`` (default): ``u`` = the probability of each observed pixel given the sampled code;
  each pixel's term is ``l(u)`` (TCE drops the pixels the model is already sure of).
- ``granularity: image``: ``u`` = the image's confidence (:mod:`collapselab.families.vae_confidence`): the rank
  of ``ELBO_model(x) - ELBO_ref(x)`` (a frozen reference VAE trained on disjoint real images) among a ranking set
  of real images the model never trained on (same class for a CVAE), recomputed under the current model at the
  start of every epoch; the image's -ELBO is that of the current step. TCE with gamma then drops ``1 - gamma``
  of real unseen images by construction. The image's whole reconstruction term is weighted by ``w(u)``.

The loss is applied through :class:`collapselab.losses.AppliedLoss`. An adaptive gamma (``{quantile: q}``,
``{dynamic: k}``) is resolved at the start of every epoch on a fixed clip set of :data:`CLIP_IMAGES` training
images drawn once per fit, under the current model (their pixels' u, or their image confidences). A
``random_drop`` loss drops random pixels (or images) with a mask from the run's seed tree.

The KL term is never re-weighted by the loss (only by a curator's per-image weight): the u-losses act on the
likelihood, and a re-weighted KL would no longer bound anything. Early stopping watches the plain negative
ELBO on a validation split of the training set (``validation``, default 10%), never the training loss,
and restores the best epoch's weights. ``warm start`` (the ``fortifai`` regime) continues from the previous
generation's weights with a new optimizer; otherwise each generation starts from a fresh initialisation.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal, Self

import numpy as np
from pydantic import Field

from collapselab.exhibits import ImageGrid
from collapselab.families.base import FAMILIES, Family
from collapselab.families.gradient import GradientConfig, GradientFamily
from collapselab.losses.training import AppliedLoss
from collapselab.losses.ulosses import ULoss
from collapselab.samples import SampleSet
from collapselab.seeding import substream
from collapselab.torch_runtime import apply_threads, torch_generator

#: images per forward pass in inference (log-likelihoods, sampling, confidences).
INFER_BATCH = 500
#: samples per generation in the report's sample grid
GRID = 10
#: training images of the per-pixel clip set an adaptive gamma is resolved on (drawn once per fit)
CLIP_IMAGES = 256


class VAEConfig(GradientConfig):
    """Settings of the ``vae`` family (see the module docstring)."""

    name: Literal["vae"] = "vae"
    arch: Literal["mlp", "conv"] = "mlp"
    latent: int = Field(20, ge=1, le=4096)
    hidden: int = Field(400, ge=1, le=65536, description="mlp: hidden units")
    conditional: bool = Field(False, description="a CVAE: encoder and decoder see the one-hot label")
    granularity: Literal["pixel", "image"] = "pixel"
    samples: Literal["bernoulli", "mean"] = Field(
        "bernoulli", description="what sample() returns: Bernoulli draws of the pixels or the decoder's means")
    iw_samples: int = Field(1, ge=1, le=10_000, description="log_prob: importance samples (1 = the ELBO)")


@FAMILIES.register
class VAE(GradientFamily):
    """One VAE per chain; samples are ``{"x": [C, n, 1, H, W] in [0, 1], "y": [C, n]}`` (``y = -1``: unlabelled)."""
    config_class = VAEConfig

    name = "vae"
    kind = "images"
    sample_keys = ("x", "y")
    config: VAEConfig
    max_chains: ClassVar[int] = 1
    exhibits: ClassVar[dict[str, type]] = {"samples": ImageGrid}

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.spec["shape"])  # type: ignore[return-value]

    @property
    def classes(self) -> int:
        return int(self.spec.get("classes", 10)) if self.config.conditional else 0

    def build(self) -> Any:
        from collapselab.families.vae_nets import VAENet

        cfg = self.config
        return VAENet(cfg.arch, self.shape, cfg.latent, cfg.hidden, self.classes)

    # -- training ------------------------------------------------------------------------------------
    def _train(self, data: SampleSet, loss: ULoss, rng: np.random.Generator, init: Family | None,
               weights: np.ndarray | None) -> Self:
        import torch

        apply_threads(self.config.threads)
        if init is not None and init.is_fitted:
            self.load_state_dict(init.state_dict())
        else:
            self.nets = self.fresh(rng)
        w = data.weight if weights is None else data.weight * np.asarray(weights, dtype=np.float64)
        self.epochs_trained, self.loss_records = [], []
        ref = self.reference() if self.config.granularity == "image" and not loss.is_ce else None
        for c, net in enumerate(self.nets):
            x, y = self._tensors(data, c % data.n_chains)
            sw = torch.as_tensor(w[c % data.n_chains], dtype=torch.float32, device=self.device)
            sub = lambda purpose, c=c: substream(rng, "chain", c, purpose)  # noqa: E731
            g = torch_generator(sub("order"), self.device)  # batch order and the codes' noise
            masks = torch_generator(sub("masks"), self.device)  # drawn by every arm (common random numbers)
            clip_rng = sub("clip")
            trainer = _Trainer(self, net, AppliedLoss(loss, generator=masks), g, clip_rng, ref)
            self.nets[c] = trainer.run(x, y, sw, warm=init is not None and init.is_fitted)
            self.epochs_trained.append(trainer.epochs)  # per chain, for diagnostics (not saved)
            self.loss_records.append(trainer.applied.record())
        return self

    def _tensors(self, data: SampleSet, c: int) -> tuple[Any, Any]:
        import torch

        x = torch.as_tensor(np.ascontiguousarray(data["x"][c], dtype=np.float32), device=self.device)
        y = torch.as_tensor(np.asarray(data["y"][c], dtype=np.int64), device=self.device) if self.classes else None
        return x, y

    # -- the protocol --------------------------------------------------------------------------------
    def sample(self, n: int, rng: np.random.Generator) -> SampleSet:
        """``n`` images per chain (labels class-balanced for a CVAE: ``n // classes`` or one more of each)."""
        if self.classes:
            labels = np.arange(n, dtype=np.int64) % self.classes
            y = np.stack([substream(rng, "chain", c, "labels").permutation(labels) for c in range(self.n_chains)])
        else:
            y = np.full((self.n_chains, n), -1, dtype=np.int64)
        return self.resample(SampleSet({"x": np.zeros((self.n_chains, n, 1, 1, 1), np.float32), "y": y}), rng)

    def resample(self, like: SampleSet, rng: np.random.Generator) -> SampleSet:
        """Fresh images with the labels of ``like`` (its conditioning); unconditional: ``sample(like.n)``."""
        import torch

        if not self.classes and not (like["y"] < 0).all():
            return self.sample(like.n, rng)
        apply_threads(self.config.threads)
        out = np.empty((self.n_chains, like.n, *self.shape), dtype=np.float32)
        ys = like["y"]
        for c, net in enumerate(self.nets):
            g = torch_generator(substream(rng, "chain", c, "draws"), self.device)
            y_all = torch.as_tensor(ys[c % like.n_chains], device=self.device)
            with torch.inference_mode():
                for i in range(0, like.n, INFER_BATCH):
                    y = y_all[i:i + INFER_BATCH]
                    z = torch.randn(len(y), self.config.latent, generator=g, device=self.device)
                    p = torch.sigmoid(net.decode(z, y if self.classes else None))
                    if self.config.samples == "bernoulli":
                        p = torch.bernoulli(p, generator=g)
                    out[c, i:i + len(y)] = p.cpu().numpy()
        return SampleSet({"x": out, "y": np.broadcast_to(ys, (self.n_chains, like.n)).copy()})

    def exhibit(self, heldout: SampleSet, rng: np.random.Generator) -> dict[str, ImageGrid]:
        """``samples``: :data:`GRID` samples of chain 0 (as passed on: Bernoulli draws or means), the decoder's
        means of the same codes and, for a CVAE, the classes asked for (0, 1, 2, ...)."""
        import torch

        n = GRID
        y = np.arange(n, dtype=np.int64) % self.classes if self.classes else np.full(n, -1, dtype=np.int64)
        g = torch_generator(rng, self.device)
        net = self.nets[0]
        with torch.inference_mode():
            yt = torch.as_tensor(y, device=self.device) if self.classes else None
            z = torch.randn(n, self.config.latent, generator=g, device=self.device)
            p = torch.sigmoid(net.decode(z, yt))
            draws = torch.bernoulli(p, generator=g) if self.config.samples == "bernoulli" else p
        return {"samples": ImageGrid(draws[:, 0].cpu().numpy(), p[:, 0].cpu().numpy(),
                                     y if self.classes else None)}

    def nelbo_parts(self, data: SampleSet, iw: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """``(reconstruction, KL)`` per image ``[C, n]`` in nats (one code per image from a fixed stream, so
        repeated calls agree); with ``iw > 1`` the first part is the importance-weighted bound minus the KL."""
        import torch

        from collapselab.families.vae_nets import image_nelbo

        apply_threads(self.config.threads)
        rec = np.empty((self.n_chains, data.n))
        kl = np.empty((self.n_chains, data.n))
        for c, net in enumerate(self.nets):
            x, y = self._tensors(data, c % data.n_chains)
            g = torch.Generator(device=self.device).manual_seed(0)
            with torch.inference_mode():
                for i in range(0, data.n, INFER_BATCH):
                    r, k = image_nelbo(net, x[i:i + INFER_BATCH], None if y is None else y[i:i + INFER_BATCH], g, iw)
                    rec[c, i:i + len(r)], kl[c, i:i + len(k)] = r.cpu().numpy(), k.cpu().numpy()
        return rec, kl

    def log_prob(self, data: SampleSet) -> np.ndarray:
        """``-ELBO`` per image ``[C, n]`` (the importance-weighted bound with ``iw_samples > 1``)."""
        rec, kl = self.nelbo_parts(data, self.config.iw_samples)
        return -(rec + kl)

    def confidence(self, data: SampleSet) -> np.ndarray:
        """Per pixel ``[C, n, 1, H, W]``: the decoder's probability of each observed pixel at the posterior mean."""
        import torch

        from collapselab.losses.binary import log_u_binary

        out = np.empty((self.n_chains, data.n, *self.shape))
        for c, net in enumerate(self.nets):
            x, y = self._tensors(data, c % data.n_chains)
            with torch.inference_mode():
                for i in range(0, data.n, INFER_BATCH):
                    yb = None if y is None else y[i:i + INFER_BATCH]
                    mu, _ = net.encode(x[i:i + INFER_BATCH], yb)
                    out[c, i:i + len(mu)] = log_u_binary(net.decode(mu, yb), x[i:i + INFER_BATCH]).exp().cpu().numpy()
        return out

    def loss_confidence(self, data: SampleSet) -> np.ndarray:
        """Per pixel (``granularity: pixel``) or per image: the u the loss acts on."""
        return self.image_confidence(data) if self.config.granularity == "image" else self.confidence(data)

    def reference(self) -> Any:
        """The frozen reference VAE and ranking set behind :meth:`image_confidence` (built once per object)."""
        if getattr(self, "_reference", None) is None:
            from collapselab.families.vae_confidence import reference

            self._reference = reference(self)
        return self._reference

    def image_confidence(self, data: SampleSet) -> np.ndarray:
        """Per image ``[C, n]``: the rank of ``ELBO_model(x) - ELBO_ref(x)`` among real images the model never saw
        (:mod:`collapselab.families.vae_confidence`); Uniform(0, 1) on real unseen images."""
        from collapselab.families.vae_confidence import nelbo

        ref = self.reference()
        out = np.empty((self.n_chains, data.n))
        for c, net in enumerate(self.nets):
            x, y = data["x"][c % data.n_chains], data["y"][c % data.n_chains]
            s = ref.ref_nelbo(x, y) - nelbo(net, x, y if self.classes else None, self.device)
            out[c] = ref.u(s, y, ref.ranking(net))
        return out

    def draw(self, n: int, rng: np.random.Generator, kind: str) -> SampleSet:
        """``n`` class-balanced samples per chain of ``kind`` (``bernoulli`` draws or decoder ``mean`` images)."""
        fam = VAE(self.config.model_copy(update={"samples": kind}), self.n_chains, self.spec)
        fam.nets = self.nets
        return fam.sample(n, rng)


class _Trainer:
    """Adam on the u-loss ELBO with early stopping on a validation split (one chain's network); the arm's loss
    is applied through ``applied`` (:class:`collapselab.losses.AppliedLoss`)."""

    def __init__(self, family: VAE, net: Any, applied: AppliedLoss, g: Any,
                 clip_rng: np.random.Generator | None = None, ref: Any = None) -> None:
        self.family, self.net, self.applied, self.g = family, net, applied, g
        self.clip_rng, self.ref = clip_rng, ref
        self.cfg = family.config
        self.epochs = 0

    def run(self, x: Any, y: Any, sw: Any, warm: bool = False) -> Any:
        """Train on ``x`` (labels ``y``, per-image weights ``sw``); ``warm``: the network starts trained."""
        import torch

        cfg, g = self.cfg, self.g
        n = len(x)
        keep = sw > 0  # images a curator dropped (weight 0) are not trained on
        order = torch.randperm(n, generator=g, device=x.device)
        order = order[keep[order]]
        n_val = int(len(order) * cfg.validation) if len(order) * cfg.validation >= 1 else 0
        val, train = order[:n_val], order[n_val:]
        if len(train) == 0:
            from collapselab.errors import NumericalError

            raise NumericalError("the training set is empty after curation and the validation split")
        xt, yt, wt = x[train], None if y is None else y[train], sw[train]
        unit = bool((wt == 1).all())
        image = self.cfg.granularity == "image" and not self.applied.is_ce
        ref_nelbo = None
        if image:  # the reference's NELBO of the training images, once (it is frozen)
            yl = np.full(len(xt), -1) if yt is None else yt.cpu().numpy()
            ref_nelbo = torch.as_tensor(self.ref.ref_nelbo(xt.cpu().numpy(), yl), dtype=torch.float32,
                                        device=x.device)
        clip = None
        if self.applied.adaptive:
            pick = np.sort(self.clip_rng.permutation(len(xt))[:CLIP_IMAGES])
            clip = (xt[pick], None if yt is None else yt[pick], None if ref_nelbo is None else ref_nelbo[pick])
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg.lr)
        best, best_state, bad = math.inf, None, 0
        for self.epochs in range(1, cfg.max_epochs + 1):
            rank = self._ranking() if image else None
            self.applied.start_epoch(lambda rank=rank: self._clip_confidences(clip, rank))
            self.net.train()
            perm = torch.randperm(len(xt), generator=g, device=x.device)
            for i in range(0, len(xt), cfg.batch):
                b = perm[i:i + cfg.batch]
                step = self._step_loss(xt[b], None if yt is None else yt[b], None if unit else wt[b], rank,
                                       None if ref_nelbo is None else ref_nelbo[b])
                opt.zero_grad(set_to_none=True)
                step.backward()
                opt.step()
            if n_val == 0:
                continue
            score = self._validate(x[val], None if y is None else y[val])
            if score < best - 1e-6:
                best, bad = score, 0
                best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            else:
                bad += 1
                if bad >= cfg.patience:
                    break
        if best_state is not None:
            self.net.load_state_dict(best_state)
        self.net.eval()
        return self.net

    def _clip_confidences(self, clip: Any, rank: dict[int, np.ndarray] | None) -> tuple[np.ndarray, int]:
        """The clip set's confidences under the current model, one group per image, on which an adaptive gamma is
        resolved every epoch: per pixel, the decoder's probability of each observed pixel at the posterior mean;
        per image (``rank`` given), the image confidence of :mod:`~collapselab.families.vae_confidence`."""
        import torch

        from collapselab.families.vae_confidence import nelbo
        from collapselab.losses.binary import log_u_binary

        xc, yc, ref_c = clip
        if rank is not None:
            y = None if yc is None else yc.cpu().numpy()
            s = ref_c.cpu().numpy() - nelbo(self.net, xc.cpu().numpy(), y if self.family.classes else None,
                                            xc.device).astype(np.float32)
            u = self.ref.u(s, np.full(len(s), -1) if y is None else y, rank)
            return u.reshape(-1, 1), len(u)
        self.net.eval()
        with torch.inference_mode():
            mu, _ = self.net.encode(xc, yc)
            u = log_u_binary(self.net.decode(mu, yc), xc).exp().double().cpu().numpy().reshape(len(xc), -1)
        return u, len(u)

    def _ranking(self) -> dict[int, np.ndarray]:
        """The ranking set's scores under the current model, float32 as the step's (image granularity; once per
        epoch)."""
        return {c: v.astype(np.float32) for c, v in self.ref.ranking(self.net).items()}

    def _image_u(self, s: Any, yb: Any, rank: dict[int, np.ndarray]) -> Any:
        """Image confidence ``[B]`` of the step's scores ``s`` (torch): :meth:`Reference.u` of them."""
        import torch

        labels = np.full(len(s), -1) if yb is None else yb.cpu().numpy()
        u = self.ref.u(s.detach().float().cpu().numpy(), labels, rank)
        return torch.as_tensor(u, dtype=s.dtype, device=s.device)

    def _step_loss(self, xb: Any, yb: Any, wb: Any, rank: Any, ref_b: Any) -> Any:
        import torch
        import torch.nn.functional as F

        from collapselab.families.vae_nets import kl_standard_normal

        net, applied = self.net, self.applied
        mu, logvar = net.encode(xb, yb)
        z = mu + (0.5 * logvar).exp() * torch.randn(mu.shape, generator=self.g, device=mu.device)
        logits = net.decode(z, yb)
        kl = kl_standard_normal(mu, logvar)
        if applied.is_ce or rank is not None:
            rec = F.binary_cross_entropy_with_logits(logits, xb, reduction="none").flatten(1).sum(1)
            if rank is not None:  # image granularity: w(u) of the image's confidence
                u = self._image_u(ref_b - (rec + kl).detach(), yb if self.family.classes else None, rank)
                rec = rec * applied.weights(u)
        else:
            rec = applied.pixels(logits, xb).flatten(1).sum(1)
        per = rec + kl
        if wb is not None:
            per = per * wb
        return per.sum() / len(xb)

    def _validate(self, x: Any, y: Any) -> float:
        import torch

        from collapselab.families.vae_nets import image_nelbo

        self.net.eval()
        g = torch.Generator(device=x.device).manual_seed(0)  # the same codes every epoch: a fair comparison
        total = 0.0
        with torch.inference_mode():
            for i in range(0, len(x), INFER_BATCH):
                r, k = image_nelbo(self.net, x[i:i + INFER_BATCH], None if y is None else y[i:i + INFER_BATCH], g)
                total += float((r + k).sum())
        return total / len(x)
