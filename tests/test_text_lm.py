"""The causal-LM family on real Wikipedia text with a 2-layer tiny model (fast; cached tokenizer and base)."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("gensim")

from collapselab.cache import cache_dir  # noqa: E402
from collapselab.data.text import Wikipedia, WikipediaConfig  # noqa: E402
from collapselab.families.causal_lm import CausalLM, CausalLMConfig  # noqa: E402
from collapselab.losses.ulosses import get_uloss  # noqa: E402
from collapselab.samples import SampleSet  # noqa: E402
from collapselab.seeding import SeedTree  # noqa: E402
from collapselab.text.lm import pack  # noqa: E402

SMALL = {"layers": 2, "d_model": 64, "heads": 4, "positions": 160, "pretrain_epochs": 1, "context_tokens": 64,
         "block_size": 64, "gen_batch": 32, "threads": 1}


@pytest.fixture(scope="module")
def source() -> Wikipedia:
    return Wikipedia(WikipediaConfig(tokenizer="tiny", vocab=1000, documents=16, window=16), heldout=64)


@pytest.fixture(scope="module")
def fitted(source) -> CausalLM:
    fam = CausalLM(CausalLMConfig(**SMALL), 1, source.spec)
    return fam.fit_loss(source.take(SeedTree(0), 0, 1, 0, 160), get_uloss("ce"), np.random.default_rng(0))


def test_documents_are_split_by_article_and_windows_are_shared_by_chains(source):
    docs = source.documents
    titles = [{d.title for d in docs[p]} for p in ("pretrain", "pool", "validation", "test")]
    assert sum(len(t) for t in titles) == 16 and len(set().union(*titles)) == 16  # disjoint, all used
    assert [len(docs[p]) for p in ("pretrain", "pool", "validation", "test")] == [6, 8, 1, 1]  # dealt 3:5:1:1
    real = source.take(SeedTree(0), 0, 2, 10, 5)
    assert real["x"].shape == (2, 5, 16) and (real["x"][0] == real["x"][1]).all()
    assert (real["x"][0] == source.windows("pool")[10:15]).all()  # in order: chunk g is [g n, (g+1) n)
    eos = source.tokenizer.eos_token_id
    assert (source.streams["pool"] == eos).sum() == len(docs["pool"])  # one end-of-text per document


def test_tiny_tokenizer_is_cached_by_content(source):
    folder = source.tokenizer_folder
    assert folder.parent == cache_dir() and (folder / "tokenizer.json").is_file()
    again = Wikipedia(WikipediaConfig(tokenizer="tiny", vocab=1000, documents=16, window=16), heldout=64)
    assert again.tokenizer_folder == folder
    other = Wikipedia(WikipediaConfig(tokenizer="tiny", vocab=1200, documents=16, window=16), heldout=64)
    assert other.tokenizer_folder != folder
    assert len(source.tokenizer) == 1000
    text = source.documents["pool"][0].text[:400]
    assert source.tokenizer.decode(source.tokenizer(text)["input_ids"]) == text  # byte-level BPE round-trips


def test_block_packing_concatenates_windows_in_order_and_drops_the_tail():
    x = np.arange(5 * 4).reshape(5, 4)
    blocks, w = pack(x, np.array([1.0, 0.0, 1.0, 1.0, 1.0]), 6)
    assert blocks.tolist() == [list(range(0, 6)), list(range(6, 12)), list(range(12, 18))]
    assert w.reshape(-1).tolist() == [1] * 4 + [0] * 4 + [1] * 10


def test_training_loss_matches_the_losses_module_and_lowers_the_training_nll(source, fitted):
    """One CE step of our loop equals transformers' built-in loss, and training lowers the chunk's NLL."""
    from collapselab.losses.functional import cross_entropy
    from collapselab.losses.hf import shift_labels

    net = fitted.nets[0]
    blocks, _ = pack(source.windows("pool")[:40], None, 64)
    ids = torch.as_tensor(blocks[:4])
    with torch.no_grad():
        out = net(input_ids=ids, labels=ids)
        ours = cross_entropy(out.logits, shift_labels(ids), class_dim=-1)
    assert float(ours) == pytest.approx(float(out.loss), rel=1e-5)
    base = CausalLM(CausalLMConfig(**SMALL), 1, source.spec)
    base.nets = base.fresh(np.random.default_rng(0))
    train = source.take(SeedTree(0), 0, 1, 0, 160)
    assert fitted.log_prob(train).mean() > base.log_prob(train).mean() + 0.05


def test_perplexity_equals_a_hand_computation(source, fitted):
    from collapselab.metrics.base import MetricContext
    from collapselab.metrics.text import perplexity

    held = source.heldout(SeedTree(0))
    ctx = MetricContext.make(source, held, np.random.default_rng(0), None, 1)
    stream = held["x"][0].reshape(-1)
    net = fitted.nets[0]
    eos = source.tokenizer.eos_token_id
    nll, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(stream), 64):  # block_size 64, each block after an end-of-text token
            ids = torch.as_tensor(np.concatenate([[eos], stream[s:s + 64]]))[None]
            lp = torch.log_softmax(net(input_ids=ids).logits[0, :-1].double(), -1)
            nll -= float(lp.gather(-1, ids[0, 1:, None]).sum())
            count += ids.shape[1] - 1
    assert count == stream.size
    assert float(perplexity(fitted, ctx)[0]) == pytest.approx(np.exp(nll / count), rel=1e-5)


def test_rewrite_keeps_shapes_is_deterministic_and_conditions_on_the_stream(source, fitted):
    like = source.take(SeedTree(0), 0, 1, 0, 12)
    a = fitted.resample(like, np.random.default_rng(5))
    b = fitted.resample(like, np.random.default_rng(6))
    assert a["x"].shape == like["x"].shape and a["x"].dtype == np.int64
    assert (a["x"] == b["x"]).all()  # greedy: the draw does not matter
    # batched left-padded greedy equals one window at a time
    from collapselab.text.lm import Decoding, rewrite

    net = fitted.nets[0]
    one = [rewrite(net, like["x"][0][: i + 1], 64, Decoding(), 0, 0, 0, "cpu", 1)[-1] for i in (0, 5, 11)]
    assert all((o == a["x"][0, i]).all() for o, i in zip(one, (0, 5, 11), strict=True))


def test_sampling_is_seeded(source, fitted):
    cfg = CausalLMConfig(**{**SMALL, "decoding": {"mode": "sample", "temperature": 1.0}})
    fam = CausalLM(cfg, 1, source.spec).load_state_dict(fitted.state_dict())
    like = source.take(SeedTree(0), 0, 1, 0, 8)
    a, b = fam.resample(like, np.random.default_rng(1)), fam.resample(like, np.random.default_rng(1))
    c = fam.resample(like, np.random.default_rng(2))
    assert (a["x"] == b["x"]).all() and not (a["x"] == c["x"]).all()
    free = fam.sample(6, np.random.default_rng(3))
    assert free["x"].shape == (1, 6, 16) and (free["x"] == fam.sample(6, np.random.default_rng(3))["x"]).all()


def test_state_round_trips_bitwise(source, fitted):
    copy = CausalLM(CausalLMConfig(**SMALL), 1, source.spec).load_state_dict(fitted.state_dict())
    held = SampleSet({"x": source.windows("test")[None, :8]})
    assert (copy.log_prob(held) == fitted.log_prob(held)).all()
    assert json.loads((fitted.base_folder / "config.json").read_text())["n_layer"] == 2


TEXT_EXP = {
    "family": {"name": "causal_lm", **{k: v for k, v in SMALL.items() if k != "threads"}, "threads": 1},
    "data": {"source": "wikipedia", "vocab": 1000, "documents": 16, "window": 16, "chunks": 2, "kr_items": 12},
    "n": 80, "heldout": 64, "generations": 2, "seeds": 1,
    "regime": {"name": "fortifai", "chunks": 2},
    "metrics": ["perplexity", "kr_accuracy", "kr_split_1", "unigram_kl", "distinct_2", "confidence_gap"],
    "arms": [{"name": "ce"}, {"name": "tce", "loss": {"name": "tce", "gamma": 0.5}}],
}


def test_killed_text_run_resumes_to_identical_files_and_generations_are_hf_folders(tmp_path):
    """A text run killed after generation 1 and resumed writes exactly the files of an uninterrupted one
    (metrics, Hugging Face model folders, report); each kept generation loads with AutoModelForCausalLM."""
    from transformers import AutoModelForCausalLM

    from .conftest import killed_and_uninterrupted, make_experiment

    exp = make_experiment(**TEXT_EXP)
    full_files, part_files, values = killed_and_uninterrupted(exp, tmp_path)
    assert full_files == part_files
    folder = tmp_path / "full" / "chains" / "ce" / "b0000"
    kept = sorted(p.name for p in folder.glob("g*.model"))
    assert "g00002.model" in kept and len(kept) <= 3  # bounded: the newest two and the best
    net = AutoModelForCausalLM.from_pretrained(str(folder / "g00002.model"))
    assert net.config.n_layer == 2
    ce, tce = values[0][0], values[1][0]  # [generations + 1, metrics] of seed 0
    assert np.isfinite(ce).all() and np.isfinite(tce).all()
    # arms draw common random numbers, so generation 0 would be bitwise equal if the loss did not reach training
    assert ce[0, 0] != tce[0, 0]
    kr = exp.metrics.index("kr_accuracy")
    assert ((ce[:, kr] >= 0) & (ce[:, kr] <= 1)).all()
