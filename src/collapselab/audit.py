"""A confidence audit of any local causal LM (``collapselab audit``): ForTIFAI's Fig. 1 for your model.

The real text is cut into ``windows`` consecutive windows of ``window`` tokens (the model's tokenizer). The
model rewrites each window from the ``context`` real tokens before it (ForTIFAI's protocol, explicit
decoding, default greedy). Both texts are then read back as streams (blocks of ``block`` tokens after an
end-of-text token) and every token's probability under the model is its confidence. The audit reports the
mean confidence on the model's own text and on the real text, their gap with a 95% CI (two independent
samples, normal approximation), the two histograms, and the TCE gamma that drops a chosen share of the
self-generated tokens (their ``1 - drop`` quantile; TCE drops tokens whose confidence exceeds gamma),
with the share of real tokens that gamma would keep.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from collapselab.decoding import Decoding
from collapselab.errors import first_line

#: histogram bins of the confidence figure (over [0, 1]).
BINS = 40
#: the files an audit writes.
FILES = ("audit.json", "confidence.png", "confidence.safetensors")


@dataclass(frozen=True)
class Audit:
    """The audit's figures (see the module docstring); ``self_conf`` / ``real_conf`` are per token."""

    model: str
    windows: int
    window: int
    context: int
    decoding: dict[str, Any]
    drop: float
    mean_self: float
    mean_real: float
    gap: float
    gap_lo: float
    gap_hi: float
    gamma: float
    real_kept: float
    self_conf: np.ndarray
    real_conf: np.ndarray
    examples: list[dict[str, str]]

    def summary(self) -> dict[str, Any]:
        """Everything but the per-token arrays (``audit.json``)."""
        out = asdict(self)
        out.pop("self_conf")
        out.pop("real_conf")
        out["tokens"] = int(self.real_conf.size)
        return out


#: a reader of the real text: ``read(n)`` gives its first ``n`` characters (bytes for a file) and whether that is
#: all of it
Reader = Callable[[int], tuple[str, bool]]


def string_reader(text: str) -> Reader:
    """A :data:`Reader` of a string held in memory."""
    return lambda n: (text[:n], n >= len(text))


def file_reader(path: Path) -> Reader:
    """A :data:`Reader` of a UTF-8 file that reads only the first ``n`` bytes (a character cut at the end is left
    for the next, longer read)."""
    import codecs

    from collapselab.errors import ConfigError

    def read(n: int) -> tuple[str, bool]:
        with open(path, "rb") as f:
            data = f.read(n + 1)
        done = len(data) <= n
        try:
            return codecs.getincrementaldecoder("utf-8")().decode(data[:n], final=done), done
        except UnicodeDecodeError as e:
            raise ConfigError(f"--text: {path} is not UTF-8 text (byte {e.start})") from None

    return read


def text_windows(tokenizer: Any, text: str | Reader, windows: int, window: int, context: int) -> np.ndarray:
    """The token stream of ``text`` cut to ``context`` tokens followed by at most ``windows`` whole windows of
    ``window`` tokens, ``[context + k * window]``. Only as much text is read and tokenised as that needs (a prefix
    growing fourfold until it holds one token more than needed, the last token of a cut prefix being unsure)."""
    read = string_reader(text) if isinstance(text, str) else text
    need = context + windows * window
    size = max(4096, 8 * need)
    while True:
        chunk, done = read(size)
        ids = np.asarray(tokenizer(chunk, add_special_tokens=False)["input_ids"], dtype=np.int64)
        if done or ids.size > need:
            break
        size *= 4
    if not done:
        ids = ids[:-1]
    if ids.size < context + window:
        raise ValueError(f"--text: {ids.size} tokens, too short for one window after the context "
                         f"({context} + {window} tokens needed)")
    return ids[:min(need, context + (ids.size - context) // window * window)]


def run_audit(folder: Path, text: str | Reader, *, windows: int = 128, window: int = 32, context: int = 96,
              block: int = 128, decoding: Decoding | None = None, drop: float = 0.5, seed: int = 0,
              batch: int = 64) -> Audit:
    """Audit the Hugging Face causal LM in ``folder`` on ``text`` (a string or a :data:`Reader`; see the module
    docstring)."""
    import torch
    from transformers import AutoModelForCausalLM

    from collapselab.families.lm import generate_after, token_logprobs
    from collapselab.lm_models import load_tokenizer, model_positions, quiet_transformers
    from collapselab.metrics.text_stats import gap_ci

    quiet_transformers()
    decoding = decoding or Decoding()
    tok = load_tokenizer(folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype="float32")
    except Exception as e:  # transformers and safetensors raise many kinds; their messages span lines: keep the first
        first = first_line(e)
        raise ValueError(f"MODEL: {folder} cannot be loaded as a causal LM ({first})") from None
    limit = model_positions(folder)
    if window > limit:
        raise ValueError(f"--window: {window} tokens exceed the model's window of {limit}; allowed: 1 to {limit}")
    if context + window > limit:
        raise ValueError(f"--context: {context} context + {window} new tokens exceed the model's window of {limit}; "
                         f"allowed: 0 to {limit - window}")
    block = min(block, limit - 1)
    stream = text_windows(tok, text, windows, window, context)
    eos, pad = int(tok.eos_token_id), int(tok.pad_token_id)  # load_tokenizer sets pad = eos when it has none
    real = stream[context:].reshape(-1, window)
    prompts = [stream[i * window:i * window + context] if context else np.array([eos]) for i in range(len(real))]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        own = generate_after(model, prompts, window, decoding, pad, eos, "cpu", batch, "audit rewrite")
    real_conf = np.exp(token_logprobs(model, real.reshape(-1), block, eos, "cpu"))
    self_conf = np.exp(token_logprobs(model, own.reshape(-1), block, eos, "cpu"))
    gap, lo, hi = gap_ci(self_conf, real_conf)
    gamma = float(np.quantile(self_conf, 1.0 - drop))
    examples = [{"real": tok.decode(real[i].tolist()), "model": tok.decode(own[i].tolist())}
                for i in range(min(3, len(real)))]
    return Audit(model=str(folder), windows=len(real), window=window, context=context,
                 decoding=decoding.model_dump(), drop=drop, mean_self=float(self_conf.mean()),
                 mean_real=float(real_conf.mean()), gap=gap, gap_lo=lo, gap_hi=hi, gamma=gamma,
                 real_kept=float(np.mean(real_conf <= gamma)), self_conf=self_conf, real_conf=real_conf,
                 examples=examples)


def histogram_png(audit: Audit) -> bytes:
    """The two confidence histograms (densities over [0, 1]) with the gamma line: ForTIFAI's Fig. 1."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    bins = np.linspace(0.0, 1.0, BINS + 1)
    ax.hist(audit.real_conf, bins=bins, density=True, alpha=0.55, label=f"real text (mean {audit.mean_real:.3f})")
    ax.hist(audit.self_conf, bins=bins, density=True, alpha=0.55, label=f"its own text (mean {audit.mean_self:.3f})")
    ax.axvline(audit.gamma, color="k", ls="--", lw=1, label=f"TCE gamma {audit.gamma:.3f} (drops {audit.drop:.0%})")
    ax.set_xlabel("probability of the observed next token")
    ax.set_ylabel("density")
    ax.set_title(f"Confidence of {Path(audit.model).name}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def audit_files(audit: Audit) -> dict[str, bytes]:
    """``audit.json`` (the summary), ``confidence.png`` (the histograms) and ``confidence.safetensors`` (the
    per-token confidences ``self`` and ``real``)."""
    from collapselab.store import dumps_json, tensors_bytes

    return {"audit.json": dumps_json(audit.summary()).encode(), "confidence.png": histogram_png(audit),
            "confidence.safetensors": tensors_bytes({"self": audit.self_conf, "real": audit.real_conf}, {})}


def model_folder(name: str) -> Path:
    """The model folder to audit: a local Hugging Face folder, or ``smollm2`` (raises ``ConfigError``)."""
    from collapselab.errors import ConfigError
    from collapselab.lm_models import check_model_name, smollm2_folder

    if name == "tiny":
        raise ConfigError("MODEL: tiny is built per experiment; pass one of its saved generations "
                          "(runs/<name>/chains/<arm>/b0000/gNNNNN.model) or smollm2")
    why = check_model_name(name)
    if why:
        raise ConfigError(f"MODEL: {why}")
    return smollm2_folder() if name == "smollm2" else Path(name).expanduser()


def load_text(path: Path | None, corpus: str) -> Reader:
    """A reader of the real text: ``path`` (UTF-8, read only as far as needed), else the test articles of the
    built-in ``corpus``."""
    from collapselab.errors import ConfigError

    if path is not None:
        if path.is_dir():
            raise ConfigError(f"--text: {path} is a folder, not a text file")
        if not path.exists():
            raise ConfigError(f"--text: {path} does not exist")
        read = file_reader(path)
        try:
            head, done = read(1 << 16)
        except OSError as e:
            raise ConfigError(f"--text: cannot read {path} ({e.strerror or e})") from None
        if done and not head.strip():
            raise ConfigError(f"--text: {path} is empty")
        return read
    from collapselab.data.text import Plays, PlaysConfig, Wikipedia, WikipediaConfig

    sources = {"wikipedia": (Wikipedia, WikipediaConfig), "plays": (Plays, PlaysConfig)}
    if corpus not in sources:
        raise ConfigError(f"--corpus: {corpus!r}; allowed: {', '.join(sources)}")
    cls, cfg = sources[corpus]
    docs = cls(cfg(tokenizer="tiny"), heldout=1).documents["test"]
    return string_reader("\n\n".join(d.text for d in docs))


def write_audit(audit: Audit, folder: Path) -> None:
    """Write :func:`audit_files` into ``folder`` (each file atomically)."""
    from collapselab.store import write_atomic

    folder.mkdir(parents=True, exist_ok=True)
    for name, data in audit_files(audit).items():
        write_atomic(folder / name, data)
