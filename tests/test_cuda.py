"""The torch families on a CUDA device, through the same code path as on CPU (skipped without a GPU; run by
``benchmarks/gpu_check.sh``): a VAE run and a causal-LM run finish with finite metrics, their checkpoint records
name the GPU, and the LM trains in bf16 autocast where the GPU supports it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from .helpers import make_experiment, run_and_finish
from .test_causal_lm import TEXT_EXP
from .test_vae import IMAGE_EXP

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU")


def _run(exp, tmp_path):
    return run_and_finish(exp, tmp_path / "run")[1]


@pytest.mark.parametrize("spec", [IMAGE_EXP, TEXT_EXP], ids=["vae", "causal_lm"])
def test_cuda_runs_finish_and_record_their_device(spec, tmp_path):
    family = {**spec["family"], "device": "cuda"}
    exp = make_experiment(**{**spec, "family": family, "generations": 1})
    values = _run(exp, tmp_path)
    assert np.isfinite(values).all()
    arm = exp.arms[0].name
    record = json.loads((tmp_path / "run" / "chains" / arm / "b0000" / "g00001.json").read_text())
    assert record["runtime"]["device"] == "cuda" and record["runtime"]["gpu"] == torch.cuda.get_device_name()
    if family["name"] == "causal_lm":
        assert record["runtime"]["precision"] == ("bf16" if torch.cuda.is_bf16_supported() else "no")
