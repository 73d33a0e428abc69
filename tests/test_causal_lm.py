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
from collapselab.families.lm import pack  # noqa: E402
from collapselab.losses import AppliedLoss  # noqa: E402
from collapselab.losses.ulosses import get_uloss  # noqa: E402
from collapselab.metrics.kr import source_items  # noqa: E402
from collapselab.samples import SampleSet  # noqa: E402
from collapselab.seeding import SeedTree  # noqa: E402

SMALL = {"layers": 2, "d_model": 64, "heads": 4, "positions": 160, "pretrain_epochs": 1, "context_tokens": 64,
         "block_size": 64, "gen_batch": 32, "threads": 1}


@pytest.fixture(scope="module")
def source() -> Wikipedia:
    return Wikipedia(WikipediaConfig(tokenizer="tiny", vocab=1000, documents=16, window=16), heldout=40, n=40)


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
    assert (real["x"][0] == source.layout(SeedTree(0), 0).windows[10:15]).all()  # chunk g is [g n, (g+1) n)
    eos = source.tokenizer.eos_token_id
    assert (source.streams["pool"] == eos).sum() == len(docs["pool"])  # one end-of-text per document


def test_chunks_are_whole_articles_drawn_per_seed(source):
    """Each seed's chunks are made of whole pool articles (the last one cut where the chunk is full); no article
    is in two chunks; seeds draw different assignments, probe items and held-out windows."""
    tree, n, W = SeedTree(0), 40, 16
    docs = source.encoded["pool"]
    layouts = [source.layout(tree, b) for b in range(3)]
    for lay in layouts:
        assert lay.windows.shape == (lay.chunks * n, W) and lay.chunks >= 3
        seen = [d for piece in lay.pieces for d, _ in piece]
        assert len(seen) == len(set(seen))  # no article spans two chunks
        for k, piece in enumerate(lay.pieces):
            want = np.concatenate([docs[d][:t] for d, t in piece])
            assert (lay.windows[k * n:(k + 1) * n].reshape(-1) == want).all()
            assert all(t == len(docs[d]) for d, t in piece[:-1])  # only the last article is cut
    assert len({lay.pieces[0] for lay in layouts}) == 3  # chunk 0 differs between seeds
    assert source.layout(tree, 1) is layouts[1] and source.layout(SeedTree(0), 1).pieces == layouts[1].pieces
    held = [source.heldout(tree, b)["x"] for b in range(2)]
    assert held[0].shape == (1, 40, W) and not (held[0] == held[1]).all()
    items = [source_items(source, tree, b) for b in range(2)]
    assert items[0] != items[1]
    assert source.check_capacity(tree, 3, n) is None
    assert "whole-article chunks" in source.check_capacity(tree, 3, 10**6)


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
    blocks, _ = pack(source.take(SeedTree(0), 0, 1, 0, 40)["x"][0], None, 64)
    ids = torch.as_tensor(blocks[:4])
    with torch.no_grad():
        out = net(input_ids=ids, labels=ids)
        ours = cross_entropy(out.logits, shift_labels(ids), class_dim=-1)
    assert float(ours) == pytest.approx(float(out.loss), rel=1e-5)
    base = CausalLM(CausalLMConfig(**SMALL), 1, source.spec)
    base.nets = base.fresh(np.random.default_rng(0))
    train = source.take(SeedTree(0), 0, 1, 0, 160)
    assert fitted.log_prob(train).mean() > base.log_prob(train).mean() + 0.05


@pytest.fixture(scope="module")
def probe_source() -> Wikipedia:
    return Wikipedia(WikipediaConfig(tokenizer="tiny", vocab=1000, documents=24, window=16, chunks=4), heldout=64,
                     n=PROBE_N)


PROBE_N = 160


def _probe(fam: CausalLM, source: Wikipedia, batch: int, seen: int) -> dict[str, tuple[float, int]]:
    """``{metric: (value, items)}`` of the probe's per-chunk accuracies and kr_unseen for ``fam``."""
    from collapselab.curators import NoCurator
    from collapselab.metrics import METRICS
    from collapselab.metrics.base import MetricContext

    tree = SeedTree(0)
    ctx = MetricContext.make(source, source.heldout(tree, batch), np.random.default_rng(0), NoCurator(), 1,
                             n=PROBE_N, tree=tree, batch=batch)
    ctx.real_seen = seen
    chunk = np.array([i.chunk for i in source_items(source, tree, batch)])
    out = {f"kr_split_{k}": (float(METRICS[f"kr_split_{k}"].fn(fam, ctx)[0]), int((chunk == k).sum()))
           for k in range(source.chunk_count(tree, batch))}
    out["kr_unseen"] = (float(METRICS["kr_unseen"].fn(fam, ctx)[0]), int((chunk >= -(-seen // PROBE_N)).sum()))
    out.update({f"memorization_{k}": (float(METRICS[f"memorization_{k}"].fn(fam, ctx)[0]), 0)
                for k in range(source.chunk_count(tree, batch))})
    return out


def _at_chance(acc: float, items: int, z: float = 2.0) -> bool:
    return abs(acc - 0.5) <= z * np.sqrt(0.25 / items)


#: one chunk of several at chance: the family-wise 95% band for 4 chunks (Sidak, z = 2.49)
PER_CHUNK_Z = 2.5


def test_the_probe_scores_chance_on_what_the_model_never_saw(probe_source):
    """The pretrained base scores chance on every chunk and on all of them together, and so does a model
    fine-tuned on chunk 0 on the chunks it never saw (same-article distractors: no familiarity effect), while its
    memorisation of chunk 0 (base NLL - its NLL) is large and that of the other chunks is not. Chance is 0.5 +- 2
    binomial standard errors, per chunk +- 2.5 (the family-wise 95% band over the chunks)."""
    tree = SeedTree(0)
    fam = CausalLM(CausalLMConfig(**SMALL, epochs=20, lr=3e-3), 1, probe_source.spec)
    base = _probe(fam.pretrained(), probe_source, 1, 0)
    chunks = probe_source.chunk_count(tree, 1)
    assert chunks == 4
    for k in range(chunks):
        acc, items = base[f"kr_split_{k}"]
        assert items >= 40 and _at_chance(acc, items, PER_CHUNK_Z), (k, acc, items)
        assert base[f"memorization_{k}"][0] == pytest.approx(0.0, abs=1e-9)
    assert _at_chance(*base["kr_unseen"])  # every chunk is unseen by the base
    fam.fit_loss(probe_source.take(tree, 1, 1, 0, PROBE_N), get_uloss("ce"), np.random.default_rng(0))
    tuned = _probe(fam, probe_source, 1, PROBE_N)
    for k in range(1, chunks):
        assert _at_chance(*tuned[f"kr_split_{k}"], PER_CHUNK_Z), (k, tuned[f"kr_split_{k}"])
        assert tuned[f"memorization_{k}"][0] < tuned["memorization_0"][0] - 0.5
    acc, items = tuned["kr_unseen"]
    assert items >= 150 and _at_chance(acc, items)
    assert tuned["memorization_0"][0] > 0.5


def test_probe_items_take_distractors_from_the_same_article_and_never_leak(probe_source):
    from collapselab.metrics.kr import _occurs, _spans

    tree = SeedTree(0)
    for batch in range(2):
        items = source_items(probe_source, tree, batch)
        arts = [probe_source.chunk_articles(tree, batch, k) for k in range(probe_source.chunk_count(tree, batch))]
        assert len(items) >= 100
        same = 0
        for it in items:
            text = arts[it.chunk][it.article]
            at = text.find(it.context + " " + it.true) + len(it.context) + 1
            assert at > len(it.context)
            spans = _spans(text)
            true_span = next(text[sp.start:sp.end] for sp in spans if sp.start == at and sp.kind == it.kind)
            rest = it.true[len(true_span):]
            false_span = it.false[: len(it.false) - len(rest)]
            assert it.false == false_span + rest and false_span != true_span
            assert not _occurs(true_span, it.context) and not _occurs(false_span, it.context)  # no leak
            same += false_span in {text[sp.start:sp.end] for sp in spans if sp.kind == it.kind}
        # the rest: articles with one span of a kind, whose distractor then comes from the same chunk
        assert same / len(items) > 0.9


def test_compare_continuations_scores_the_whole_differing_span_and_what_follows(source, fitted):
    """The probe's score is log p(context + true) - log p(context + false), each tokenised whole, summed from the
    first token where they differ: a hand computation with one forward pass per text."""
    tok = source.tokenizer
    fits = [i for i in source_items(source, SeedTree(0), 0)  # within the window (longer pairs are cut: see the code)
            if max(len(tok(f"{i.context} {t}")["input_ids"]) for t in (i.true, i.false)) < 150]
    items = fits[:6]
    assert len(items) == 6
    got = fitted.compare_continuations([i.context for i in items], [i.true for i in items],
                                       [i.false for i in items])[0]
    net, eos = fitted.nets[0], tok.eos_token_id
    for it, g in zip(items, got, strict=True):
        a = tok(it.context + " " + it.true, add_special_tokens=False)["input_ids"]
        b = tok(it.context + " " + it.false, add_special_tokens=False)["input_ids"]
        p = next(i for i in range(min(len(a), len(b)) + 1) if i == min(len(a), len(b)) or a[i] != b[i])

        def score(ids: list[int], p: int = p) -> float:
            x = torch.as_tensor([eos, *ids])[None]
            with torch.no_grad():
                lp = torch.log_softmax(net(input_ids=x).logits[0, :-1].double(), -1)
            return float(lp.gather(-1, x[0, 1:, None])[p:].sum())

        assert g == pytest.approx(score(a) - score(b), abs=1e-4)


def test_perplexity_equals_a_hand_computation(source, fitted):
    from collapselab.metrics.base import MetricContext
    from collapselab.metrics.text import perplexity

    held = source.heldout(SeedTree(0))
    ctx = MetricContext.make(source, held, np.random.default_rng(0), None, 1, n=40)
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
    from collapselab.decoding import Decoding
    from collapselab.families.lm import rewrite

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
    "metrics": ["perplexity", "kr_accuracy", "kr_split_1", "unigram_kl", "distinct_2", "confidence_gap", "distinct_1",
                "distinct_3"],
    "arms": [{"name": "ce"}, {"name": "tce", "loss": {"name": "tce", "gamma": 0.5}}],
}


@pytest.mark.heavy
def test_killed_text_run_resumes_to_identical_files_and_generations_are_hf_folders(tmp_path):
    """A text run killed after generation 1 and resumed writes exactly the files of an uninterrupted one
    (metrics, Hugging Face model folders, report); each kept generation loads with AutoModelForCausalLM."""
    from transformers import AutoModelForCausalLM

    from .helpers import killed_and_uninterrupted, make_experiment

    exp = make_experiment(**TEXT_EXP)
    full_files, part_files, values = killed_and_uninterrupted(exp, tmp_path)
    assert full_files == part_files
    import json

    import torch

    record = json.loads(full_files["chains/ce/b0000/g00002.json"])  # device and training precision, recorded
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    assert record["runtime"]["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert record["runtime"]["precision"] == ("bf16" if bf16 else "no")
    folder = tmp_path / "full" / "chains" / "ce" / "b0000"
    kept = sorted(p.name for p in folder.glob("g*.model"))
    assert "g00002.model" in kept and len(kept) <= 3  # bounded: the newest two and the best
    net = AutoModelForCausalLM.from_pretrained(str(folder / "g00002.model"))
    assert net.config.n_layer == 2
    ce, tce = values[0][0], values[1][0]  # [generations + 1, metrics] of seed 0
    assert np.isfinite(ce).all() and np.isfinite(tce).all()
    # distinct-n of real-like rewrites rises with n (repeated trigrams are rarer than repeated tokens)
    for v in (ce, tce):
        assert (v[:, 6] > 0).all() and (v[:, 6] <= v[:, 4] + 1e-12).all() and (v[:, 4] <= v[:, 7] + 1e-12).all()
    # arms draw common random numbers, so generation 0 would be bitwise equal if the loss did not reach training
    assert ce[0, 0] != tce[0, 0]
    kr = exp.metrics.index("kr_accuracy")
    assert ((ce[:, kr] >= 0) & (ce[:, kr] <= 1)).all()
    # the report's passages: every generation's rewrite of the same real windows, shown beside the real text
    import html

    from safetensors.numpy import load_file

    from collapselab.exhibits import Passage
    from collapselab.families.causal_lm import PASSAGE_WINDOWS, SHOW_FROM
    from collapselab.metrics.kr import items_from_arrays
    from collapselab.store import ChainStore

    chain = ChainStore(folder)
    shown = {g: x["rewrites"] for rec in chain.record_generations() for g, x in chain.exhibits(rec).items()}
    assert sorted(shown) == [0, 1, 2] and all(isinstance(x, Passage) for x in shown.values())
    src = exp.make_source()
    page = (tmp_path / "full" / "report.html").read_text()
    real = "".join(src.decode(src.heldout(SeedTree(exp.seed), 0)["x"][0, SHOW_FROM:PASSAGE_WINDOWS]))
    assert all(x.real == real and x.text and x.text != real for x in shown.values())
    assert "<h2>Rewrites</h2>" in page and html.escape(real) in page
    assert html.escape(shown[2].text) in page
    # the knowledge-retention item set is saved with the run
    arrays = load_file(tmp_path / "full" / "kr_items.safetensors")
    saved = items_from_arrays({k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("b0000/")})
    assert saved == source_items(src, SeedTree(exp.seed), 0) and len(saved) > 0


def test_rouge_oracle_keeps_the_rewrites_closest_to_their_real_windows(source, fitted):
    from rouge_score.rouge_scorer import RougeScorer

    from collapselab.curators import CuratorContext, RougeOracle, Subsample, rouge1
    from collapselab.decoding import Decoding

    real = source.take(SeedTree(0), 0, 1, 0, 48)
    ctx = CuratorContext(source)
    model = CausalLM(CausalLMConfig(**SMALL, decoding=Decoding(mode="sample")), 1, source.spec)
    model.nets = fitted.nets  # sampling: varied rewrites, deterministic for a given stream
    kept = RougeOracle(keep=0.25).curate(model, real, np.random.default_rng(1), ctx)
    rewrites = model.resample(real, np.random.default_rng(1))["x"][0]  # what the curator drew
    scorer = RougeScorer(["rouge1"], use_stemmer=True)
    scores = np.array([scorer.score(r, h)["rouge1"].fmeasure
                       for r, h in zip(source.decode(real["x"][0]), source.decode(rewrites), strict=True)])
    assert kept.n == 12 and len(set(scores.round(6))) >= 5
    assert np.array_equal(kept["x"][0], rewrites[np.sort(np.argsort(-scores, kind="stable")[:12])])
    assert np.allclose(rouge1(source, real["x"], real["x"]), 1.0)
    a = Subsample(keep=0.25).curate(model, real, np.random.default_rng(1), ctx)["x"][0]
    b = Subsample(keep=0.25).curate(model, real, np.random.default_rng(2), ctx)["x"][0]
    rows = {tuple(r) for r in rewrites}
    assert len(a) == 12 and all(tuple(r) in rows for r in a) and not np.array_equal(a, b)
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


def test_lm_gamma_follows_the_model_on_a_fixed_clip_set_and_random_drop_keeps_its_share(source, fitted):
    """A quantile gamma is resolved each epoch on a fixed clip set of training blocks under the current model
    and drops the stated share of its tokens there; ForTIFAI's dynamic rule gives mean + k std of the clip batches'
    mean confidences; random_drop keeps 1 - q of the training tokens (the fit records both)."""
    from collapselab.families.causal_lm import CLIP_BATCH
    from collapselab.families.lm import token_logprobs

    train = source.take(SeedTree(0), 0, 1, 0, 160)
    clip = fitted.clip_set(train["x"][0].reshape(-1), np.random.default_rng(0))
    u = np.exp(token_logprobs(fitted.nets[0], clip.reshape(-1), 64, fitted.eos, "cpu"))
    clip_u = fitted.clip_confidences(clip)
    for q in (0.25, 0.5):
        g = AppliedLoss(get_uloss("tce", gamma={"quantile": q})).start_epoch(lambda: clip_u(fitted.nets[0])).gamma
        assert np.mean(u > g) == pytest.approx(q, abs=0.01)
    means = u.reshape(len(clip) // CLIP_BATCH, -1).mean(axis=1)
    g = AppliedLoss(get_uloss("tce", gamma={"dynamic": 1.0})).start_epoch(lambda: clip_u(fitted.nets[0])).gamma
    assert g == pytest.approx(means.mean() + means.std(), abs=1e-9)
    fam = CausalLM(CausalLMConfig(**SMALL, epochs=1, lr=1e-3), 1, source.spec)
    fam.fit_loss(train, get_uloss("random_drop", q=0.25), np.random.default_rng(0))
    assert fam.loss_records[0].kept == pytest.approx(0.75, abs=0.02) and fam.loss_records[0].gamma is None
    fam.fit_loss(train, get_uloss("tce", gamma={"quantile": 0.25}), np.random.default_rng(0))
    record = fam.loss_records[0]
    assert 0.0 < record.gamma < 1.0 and 0.5 < record.kept < 0.95 and record.loss.gamma == record.gamma
    fam.fit_loss(train, get_uloss("focal", gamma=2.0), np.random.default_rng(0))
    assert fam.loss_records[0].gamma is None  # focal's exponent is no confidence threshold
