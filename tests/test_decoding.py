"""``collapselab.decoding``: ``Decoding.kwargs`` and its nucleus filter give transformers' own samples."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from collapselab.decoding import Decoding, NucleusFilter  # noqa: E402


def test_the_nucleus_filter_equals_transformers_top_p_warper_bit_for_bit():
    """300 score batches: wide and narrow, with many ties (rounded scores), with -inf (a top-k before it), at
    top_p from 0.01 to 0.999: the filtered scores equal ``TopPLogitsWarper``'s exactly."""
    rng = np.random.default_rng(0)
    for trial in range(300):
        V = int(rng.integers(2, 600))
        x = torch.from_numpy((rng.standard_normal((8, V)) * rng.uniform(0.1, 8)).astype(np.float32))
        if trial % 3 == 0:
            x = torch.round(x * 2) / 2
        if trial % 5 == 0:
            x[:, : V // 3] = -float("inf")
        p = float(rng.choice([0.1, 0.5, 0.9, 0.95, 0.999, rng.uniform(0.01, 1)]))
        expected = transformers.TopPLogitsWarper(p)(None, x)
        assert torch.equal(NucleusFilter(p)(None, x), expected), (trial, p)


@pytest.mark.parametrize("settings", [dict(top_p=0.9), dict(top_p=0.8, temperature=0.7, top_k=40),
                                      dict(top_p=0.95, repetition_penalty=1.3)])
def test_sampling_with_top_p_gives_the_tokens_of_generates_own_warpers(settings):
    """A random GPT-2 sampling 24 tokens after 6 prompts: ``Decoding.kwargs`` (its warpers passed in generate's
    order) draws the same tokens as ``generate`` given the same settings itself."""
    cfg = transformers.GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=1, n_head=2)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(0, 300, (6, 5))
    decoding = Decoding(mode="sample", **settings)
    kw = decoding.kwargs()
    assert isinstance(kw["logits_processor"][-1], NucleusFilter)
    plain = {"do_sample": True, "num_beams": 1, "repetition_penalty": 1.0, "temperature": 1.0, "top_k": 0, **settings}
    runs = []
    for kwargs in (kw, plain):
        torch.manual_seed(1)
        with torch.inference_mode():
            runs.append(model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=24,
                                       min_new_tokens=24, pad_token_id=0, **kwargs))
    assert torch.equal(runs[0], runs[1])
    assert len(set(map(tuple, runs[0][:, 5:].tolist()))) == 6  # it did sample
