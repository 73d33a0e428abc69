"""Curators: what filters the previous model's samples before they are trained on.

A curator draws its candidates from the model itself, so it decides how many it needs: the count-based
ones oversample and keep exactly the requested number per chain (training sizes stay as the regime
says); ``knowledge_ball`` in ``quota`` mode redraws each rejected sample (at the same covariates) until
it is accepted, as the authors' code does; in ``filter`` mode it keeps a variable number per chain by
giving rejected samples weight 0.

| curator | keeps |
|---|---|
| none | every sample |
| likelihood_truncation(q) | draws n/(1-q), drops the most likely q fraction under the model |
| knowledge_ball(delta, radius) | (x, y) with abs(y - x.theta_c) <= radius*norm(x) + sigma_c (Yi et al.) |
| top_k(reward, fraction) | draws n/fraction, keeps the n best by reward |
| luce_choice(K, reward) | one of K candidates with probability proportional to exp(reward) (Ferbach et al.) |
| discriminator(keep) | images: the best-scored ``keep`` share of each class by a real-vs-synthetic MLP (Yi et al.) |
| rouge_oracle(keep) | text rewrites: the ``keep`` share with the highest ROUGE-1 against the real text they rewrote |
| subsample(keep) | a uniformly random ``keep`` share (the unfiltered arm beside a verifier that keeps a share) |
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from collapselab.data.base import Source
from collapselab.families.base import Family
from collapselab.regimes import Request
from collapselab.registry import Registry, SettingContext
from collapselab.rewards import RewardSettings
from collapselab.samples import SampleSet, concat


class CurationError(RuntimeError):
    """A curator could not produce its samples (e.g. a verifier that accepts almost nothing)."""


@dataclass
class CuratorContext:
    """What a curator may know besides the model: the data source (and so the truth, if known).

    ``state``: arrays a curator keeps across generations (saved in the chain's checkpoints, restored on
    resume); ``cache``: objects rebuilt from them in this process.
    """

    source: Source
    state: dict[str, np.ndarray] = field(default_factory=dict)
    cache: dict = field(default_factory=dict)


def draw(model: Family, request: Request, rng: np.random.Generator, factor: float = 1.0) -> SampleSet:
    """Candidates from ``model``: ``ceil(count * factor)`` samples, or a rewrite of a template set
    tiled ``ceil(factor)`` times."""
    if isinstance(request, int):
        return model.sample(math.ceil(request * factor - 1e-9), rng)
    reps = math.ceil(factor - 1e-9)
    return model.resample(request if reps == 1 else concat([request] * reps), rng)


def request_size(request: Request) -> int:
    return request if isinstance(request, int) else request.n


def keep_best(cand: SampleSet, score: np.ndarray, count: int) -> SampleSet:
    """The ``count`` candidates with the highest score per chain (kept in their drawn order)."""
    idx = np.argsort(-score, axis=1, kind="stable")[:, :count]
    return cand.take(np.sort(idx, axis=1))


def per_sample_total(values: np.ndarray) -> np.ndarray:
    """Sum per-token values over a sample's tokens: ``[C, n, ...]`` -> ``[C, n]``."""
    return values if values.ndim == 2 else values.reshape(values.shape[0], values.shape[1], -1).sum(-1)


class CuratorConfig(BaseModel):
    """Base of all curators (``name`` selects one)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    name: str

    def curate(self, model: Family, request: Request, rng: np.random.Generator,
               ctx: CuratorContext) -> SampleSet:
        """The curated samples for ``request`` (a count, or a set to rewrite), drawn from ``model``."""
        raise NotImplementedError

    def check(self, ctx: SettingContext) -> str | None:
        """Why this curator cannot serve the arm of ``ctx`` (one line), or ``None``; checked at validation."""
        return None


def _curator_name(cls: Any) -> str:
    return cls.model_fields["name"].default


#: every curator by name: the built-ins below, plugins (entry points ``collapselab.curators``, ``plugins:``)
CURATORS = Registry("curator", CuratorConfig, name_of=_curator_name,
                    accepts=lambda o: isinstance(o, type) and issubclass(o, CuratorConfig) and o is not CuratorConfig,
                    config_of=lambda c: c)


@CURATORS.register
class NoCurator(CuratorConfig):
    """Keep every sample."""

    name: Literal["none"] = "none"

    def curate(self, model, request, rng, ctx):
        return draw(model, request, rng)


@CURATORS.register
class LikelihoodTruncation(CuratorConfig):
    """Drop the most likely ``q`` fraction (draws ``n / (1 - q)`` candidates, keeps the n least likely)."""

    name: Literal["likelihood_truncation"] = "likelihood_truncation"
    q: float = Field(0.1, ge=0, lt=1)

    def curate(self, model, request, rng, ctx):
        cand = draw(model, request, rng, 1.0 / (1.0 - self.q))
        return keep_best(cand, -per_sample_total(model.log_prob(cand)), request_size(request))


@CURATORS.register
class TopK(CuratorConfig):
    """Keep the best ``fraction`` by a reward (draws ``n / fraction`` candidates, keeps the n best)."""

    name: Literal["top_k"] = "top_k"
    reward: RewardSettings
    fraction: float = Field(0.5, gt=0, le=1)

    def check(self, ctx: SettingContext) -> str | None:
        return self.reward.check(ctx.kind)

    def curate(self, model, request, rng, ctx):
        cand = draw(model, request, rng, 1.0 / self.fraction)
        return keep_best(cand, self.reward(cand), request_size(request))


@CURATORS.register
class LuceChoice(CuratorConfig):
    """Ferbach et al.'s K-choice curation: of each K candidates keep one with probability
    ``exp(r_i) / sum_j exp(r_j)`` (Bradley-Terry / Luce), sampled exactly by the Gumbel-max trick."""

    name: Literal["luce_choice"] = "luce_choice"
    K: int = Field(2, ge=1, le=1024)
    reward: RewardSettings

    def check(self, ctx: SettingContext) -> str | None:
        return self.reward.check(ctx.kind)

    def curate(self, model, request, rng, ctx):
        count = request_size(request)
        cand = draw(model, request, rng, float(self.K))
        c = cand.n_chains
        r = self.reward(cand)[:, : count * self.K].reshape(c, count, self.K)
        choice = np.argmax(r + rng.gumbel(size=r.shape), axis=2)  # [C, count]
        return cand.take(np.arange(count)[None, :] * self.K + choice)


@CURATORS.register
class KnowledgeBall(CuratorConfig):
    """Yi et al.'s verifier for linear data: accept (x, y) iff ``abs(y - x.theta_c) <= radius*norm(x) + sigma_c``.

    ``theta_c = theta* + delta * u`` (``u`` = ``direction`` normalised, default the first axis);
    ``sigma_c = sigma * sqrt(2/pi)`` with sigma the true noise level. ``quota``: redraw each rejected
    sample at the same x until accepted (at most ``max_rounds`` rounds); ``filter``: weight 0.
    """

    name: Literal["knowledge_ball"] = "knowledge_ball"
    delta: float = Field(0.0, ge=0)
    radius: float = Field(0.1, ge=0)
    direction: list[float] | None = None
    mode: Literal["quota", "filter"] = "quota"

    def check(self, ctx: SettingContext) -> str | None:
        if ctx.family.name != "linear" or not ctx.source.has_truth:
            return "curator knowledge_ball needs the linear family and the linear source"
        return None
    max_rounds: int = Field(10_000, ge=1)

    def center(self, theta_star: np.ndarray) -> np.ndarray:
        """``theta_c = theta* + delta * u``."""
        u = np.zeros_like(theta_star)
        if self.direction is None:
            u[0] = 1.0
        else:
            if len(self.direction) != len(theta_star):
                raise ValueError(f"knowledge_ball.direction needs {len(theta_star)} entries")
            u = np.asarray(self.direction, dtype=np.float64)
            if not np.linalg.norm(u) > 0:
                raise ValueError("knowledge_ball.direction must be non-zero")
            u = u / np.linalg.norm(u)
        return theta_star + self.delta * u

    def accept(self, data: SampleSet, theta_c: np.ndarray, sigma: float) -> np.ndarray:
        x = data["x"]
        resid = np.abs(data["y"] - x @ theta_c)
        return resid <= self.radius * np.linalg.norm(x, axis=-1) + sigma * math.sqrt(2.0 / math.pi)

    def curate(self, model, request, rng, ctx):
        truth = ctx.source.truth
        if truth is None or not hasattr(truth, "theta"):
            raise CurationError("knowledge_ball needs a linear data source with a known truth")
        theta_c = self.center(truth.theta[0])
        sigma = float(np.sqrt(truth.sigma2[0]))
        cand = draw(model, request, rng)
        ok = self.accept(cand, theta_c, sigma)
        if self.mode == "filter":
            return cand.with_weight(cand.weight * ok)
        arrays = {k: v.copy() for k, v in cand.arrays.items()}
        for _ in range(self.max_rounds):
            pending = ~ok
            width = int(pending.sum(axis=1).max())
            if width == 0:
                return SampleSet(arrays, cand.w)
            # redraw only the rejected slots: [C, width] positions (rows with fewer repeat a slot)
            idx = np.argsort(~pending, axis=1, kind="stable")[:, :width]
            valid = np.take_along_axis(pending, idx, axis=1)
            current = SampleSet(arrays, cand.w).take(idx)
            new = model.resample(current, rng)
            fill = valid & self.accept(new, theta_c, sigma)
            rows, cols = np.nonzero(fill)
            for k, v in arrays.items():
                v[rows, idx[rows, cols]] = new[k][rows, cols]
            ok[rows, idx[rows, cols]] = True
        raise CurationError(f"knowledge_ball: {int((~ok).sum())} samples still rejected after "
                            f"{self.max_rounds} rounds (acceptance too low)")


@CURATORS.register
class Discriminator(CuratorConfig):
    """Yi et al.'s image verifier: keep the ``keep`` share of each class that a real-vs-synthetic MLP
    (:mod:`collapselab.discriminator`) scores as most real, drawing until every class's quota is filled.

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
        from collapselab import discriminator as D

        pixels, classes = int(np.prod(ctx.source.spec["shape"])), self._classes(ctx)
        if self.train == "once" and "nets" in ctx.cache:
            return ctx.cache["nets"]
        if self.train == "once" and ctx.state:
            nets = [D.from_state({k.split(".", 1)[1]: v for k, v in ctx.state.items() if k.startswith(f"c{c}.")},
                                 pixels, classes, self.dropout, self.spectral_norm) for c in range(model.n_chains)]
        else:
            train = ctx.source.load()
            n_real = min(self.real or len(train["x"]), len(train["x"]))
            pick = np.sort(rng.permutation(len(train["x"]))[:n_real])
            real, real_y = train["x"][pick], train["y"][pick]
            fake = model.sample(self.synthetic or n_real, rng)
            nets = [D.train(real, fake["x"][c], rng, self.epochs, self.lr, self.batch, real_y, fake["y"][c], classes,
                            self.dropout, self.spectral_norm, self.label_smoothing, self.patience, self.validation,
                            (self.beta1, 0.999))
                    for c in range(model.n_chains)]
            if self.train == "once":
                ctx.state.update({f"c{c}.{k}": v for c, net in enumerate(nets) for k, v in D.state(net).items()})
        if self.train == "once":
            ctx.cache["nets"] = nets
        return nets

    def curate(self, model, request, rng, ctx):
        from collapselab import discriminator as D

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
                s = D.score(nets[c], cand["x"][c], y, self._classes(ctx))
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


def kept_count(keep: float, size: int) -> int:
    """How many of ``size`` samples a ``keep`` share is (at least one)."""
    return max(1, round(keep * size))


@CURATORS.register
class RougeOracle(CuratorConfig):
    """Yi et al.'s text verifier (their XSUM experiment keeps the top 12.5%): the previous model rewrites the
    requested real windows, and the ``keep`` share of rewrites with the highest ROUGE-1 F1 (``rouge-score``,
    Porter stemming) against the real window each one rewrote is kept. Needs a rewriting regime (``fortifai``,
    or ``replace`` with ``rewrite: true``) and text data; the training set shrinks to that share."""

    name: Literal["rouge_oracle"] = "rouge_oracle"
    keep: float = Field(0.125, gt=0, le=1)

    def check(self, ctx: SettingContext) -> str | None:
        if ctx.kind != "text" or not ctx.arm.regime.rewrites:
            return (f"curator rouge_oracle needs text data and a rewriting regime (fortifai, or replace with "
                    f"rewrite: true); got {ctx.data.source!r} and {ctx.arm.regime.name!r}")
        return None

    def curate(self, model, request, rng, ctx):
        if isinstance(request, int):
            raise CurationError("rouge_oracle needs a rewrite of real text (regime fortifai, or replace with "
                                "rewrite: true)")
        cand = draw(model, request, rng)
        score = rouge1(ctx.source, cand["x"], request["x"])
        return keep_best(cand, score, kept_count(self.keep, request.n))


def rouge1(source: Source, rewrites: np.ndarray, real: np.ndarray) -> np.ndarray:
    """ROUGE-1 F1 of each rewritten window ``[C, n, W]`` against the real window it rewrote (``[C or 1, n, W]``),
    both decoded to text by ``source``; ``[C, n]``."""
    from rouge_score.rouge_scorer import RougeScorer

    scorer = RougeScorer(["rouge1"], use_stemmer=True)
    out = np.empty(rewrites.shape[:2])
    for c in range(rewrites.shape[0]):
        refs, hyps = source.decode(real[c % real.shape[0]]), source.decode(rewrites[c])
        out[c] = [scorer.score(r, h)["rouge1"].fmeasure for r, h in zip(refs, hyps, strict=True)]
    return out


@CURATORS.register
class Subsample(CuratorConfig):
    """Keep a uniformly random ``keep`` share of the previous model's samples (no verifier): the unfiltered arm
    of a verifier experiment, the same size as what the verifier keeps."""

    name: Literal["subsample"] = "subsample"
    keep: float = Field(0.125, gt=0, le=1)

    def curate(self, model, request, rng, ctx):
        cand = draw(model, request, rng)
        count = kept_count(self.keep, cand.n)
        idx = np.stack([np.sort(rng.permutation(cand.n)[:count]) for _ in range(cand.n_chains)])
        return cand.take(idx)


def _quotas(labels: np.ndarray) -> dict[int, int]:
    return {int(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True), strict=True)}


def _balanced(classes: np.ndarray, count: int) -> dict[int, int]:
    """``count`` spread over ``classes`` as evenly as possible (the first ones get the remainder)."""
    return _quotas(classes[np.arange(count) % len(classes)])


#: an experiment's ``curator:`` setting: any registered curator by ``name``
CuratorSettings = CURATORS.field()
