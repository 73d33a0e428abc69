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
    fam = CausalLM(CausalLMConfig(**SMALL, epochs=4, lr=3e-3), 1, source.spec)
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


def test_a_model_fine_tuned_on_a_chunk_recognises_its_facts(source):
    """The knowledge-retention probe measures memory: fine-tuned on chunk 0 (20 epochs), the model prefers the
    true continuation of chunk 0's items well above chance (P(>= 0.7 of 53 | chance) ~ 0.002) and well above
    the pretrained model it started from."""
    items = [i for i in source.kr_items(160, 0) if i.chunk == 0]
    fam = CausalLM(CausalLMConfig(**SMALL, epochs=20, lr=3e-3), 1, source.spec)
    fam.nets = [fam.build()]

    def acc() -> float:
        diff = fam.compare_continuations([i.context for i in items], [i.true for i in items],
                                         [i.false for i in items])[0]
        return float(np.mean((diff > 0) + 0.5 * (diff == 0)))

    before = acc()
    fam.fit_loss(source.take(SeedTree(0), 0, 1, 0, 160), get_uloss("ce"), np.random.default_rng(0))
    after = acc()
    assert len(items) >= 40
    assert after >= 0.7 and after >= before + 0.2, (before, after)


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
    # the report's passages: every generation's rewrite of the same real windows, shown beside the real text
    import html

    from safetensors.numpy import load_file

    from collapselab.data import make_source
    from collapselab.families.base import PASSAGE_WINDOWS
    from collapselab.report.passages import SHOW_FROM
    from collapselab.store import ChainStore
    from collapselab.text.kr import items_from_arrays

    chain = ChainStore(folder)
    shown = {g: x for rec in chain.record_generations() for g, x in chain.passages(rec).items()}
    assert sorted(shown) == [0, 1, 2] and all(x.shape == (PASSAGE_WINDOWS, 16) for x in shown.values())
    src = make_source(exp.data, exp.heldout)
    page = (tmp_path / "full" / "report.html").read_text()
    real = "".join(src.decode(src.heldout(SeedTree(exp.seed))["x"][0, SHOW_FROM:PASSAGE_WINDOWS]))
    assert "<h2>Rewrites</h2>" in page and html.escape(real) in page
    assert html.escape("".join(src.decode(shown[2][SHOW_FROM:]))) in page
    # the knowledge-retention item set is saved with the run
    saved = items_from_arrays(load_file(tmp_path / "full" / "kr_items.safetensors"))
    assert saved == src.kr_items(exp.n, exp.seed) and len(saved) > 0


def test_rouge_oracle_keeps_the_rewrites_closest_to_their_real_windows(source, fitted):
    from rouge_score.rouge_scorer import RougeScorer

    from collapselab.curators import CuratorContext, RougeOracle, Subsample, rouge1
    from collapselab.text.lm import Decoding

    real = source.take(SeedTree(0), 0, 1, 0, 24)
    ctx = CuratorContext(source)
    model = CausalLM(CausalLMConfig(**SMALL, decoding=Decoding(repetition_penalty=1.5)), 1, source.spec)
    model.nets = fitted.nets  # greedy with a repetition penalty: varied rewrites, deterministic
    kept = RougeOracle(keep=0.25).curate(model, real, np.random.default_rng(1), ctx)
    rewrites = model.resample(real, np.random.default_rng(1))["x"][0]  # what the curator drew
    scorer = RougeScorer(["rouge1"], use_stemmer=True)
    scores = np.array([scorer.score(r, h)["rouge1"].fmeasure
                       for r, h in zip(source.decode(real["x"][0]), source.decode(rewrites), strict=True)])
    assert kept.n == 6 and len(set(scores.round(6))) > 6
    assert np.array_equal(kept["x"][0], rewrites[np.sort(np.argsort(-scores, kind="stable")[:6])])
    assert np.allclose(rouge1(source, real["x"], real["x"]), 1.0)
    a = Subsample(keep=0.25).curate(model, real, np.random.default_rng(1), ctx)["x"][0]
    b = Subsample(keep=0.25).curate(model, real, np.random.default_rng(2), ctx)["x"][0]
    rows = {tuple(r) for r in rewrites}
    assert len(a) == 6 and all(tuple(r) in rows for r in a) and not np.array_equal(a, b)
    with pytest.raises(Exception, match="rouge_oracle needs a rewrite"):
        RougeOracle().curate(model, 10, np.random.default_rng(0), ctx)


def test_replace_with_rewrite_asks_every_generation_to_rewrite_the_first_real_set(source):
    from collapselab.regimes import Replace

    reg = Replace(rewrite=True)
    real = source.pool(SeedTree(0), 0, 1)
    first, state = reg.initial(real, 8)
    assert reg.rewrites and not Replace().rewrites
    assert reg.request(3, 8, 5, state) is state["real"] and Replace().request(3, 8, 5, {}) == 5
    train, state2 = reg.build(1, 8, 5, real, state, first, np.random.default_rng(0))
    assert train is first and state2["real"] is state["real"]


def test_audit_finds_the_model_more_confident_on_its_own_text(source, fitted, tmp_path, capsys):
    """ForTIFAI's Fig. 1 on a trained tiny model: its greedy rewrites get a higher next-token probability than
    real text; the figures in audit.json agree with the per-token confidences saved beside them."""
    from safetensors.numpy import load_file

    from collapselab.cli import main

    folder = tmp_path / "model"
    fitted.nets[0].save_pretrained(folder)
    fitted.tokenizer.save_pretrained(folder)
    text = tmp_path / "real.txt"
    text.write_text("\n\n".join(d.text for d in source.documents["test"]))
    argv = ["audit", str(folder), "--text", str(text), "--windows", "24", "--window", "16", "--context", "48",
            "--drop", "0.3", "--out", str(tmp_path / "audit")]
    def cli(args: list[str]) -> int:
        try:
            main(args)
        except SystemExit as e:
            return int(e.code or 0)
        return 0

    assert cli(argv) == 0
    out = capsys.readouterr().out
    assert "TCE gamma" in out
    summary = json.loads((tmp_path / "audit" / "audit.json").read_text())
    conf = load_file(tmp_path / "audit" / "confidence.safetensors")
    assert conf["self"].shape == conf["real"].shape == (24 * 16,)
    assert summary["gap"] == pytest.approx(conf["self"].mean() - conf["real"].mean(), abs=1e-12)
    assert summary["gamma"] == pytest.approx(np.quantile(conf["self"], 0.7), abs=1e-12)
    assert np.mean(conf["self"] > summary["gamma"]) == pytest.approx(0.3, abs=0.02)  # repeated tokens tie
    assert summary["real_kept"] == pytest.approx(np.mean(conf["real"] <= summary["gamma"]), abs=1e-12)
    assert summary["gap_lo"] > 0  # the gap ForTIFAI's loss exploits, resolved by its CI
    assert (tmp_path / "audit" / "confidence.png").read_bytes()[:4] == b"\x89PNG"
    assert cli(argv) == 2 and "already holds an audit" in capsys.readouterr().err  # not replaced silently
