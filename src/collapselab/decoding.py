"""Decoding: an explicit text-generation configuration (transformers' ``generate`` arguments), for the causal-LM
family and the audit."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Decoding(BaseModel):
    """An explicit decoding configuration (transformers' ``generate`` arguments)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    mode: Literal["greedy", "sample", "beam", "beam_sample"] = "greedy"
    temperature: float = Field(1.0, gt=0, le=100)
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, le=1_000_000, description="0: no top-k filter")
    num_beams: int = Field(1, ge=1, le=64)
    repetition_penalty: float = Field(1.0, gt=0, le=100)

    @model_validator(mode="after")
    def _beams(self) -> Decoding:
        if self.mode in ("beam", "beam_sample") and self.num_beams < 2:
            raise ValueError(f"num_beams: mode {self.mode!r} needs num_beams >= 2")
        if self.mode in ("greedy", "sample") and self.num_beams != 1:
            raise ValueError(f"num_beams: mode {self.mode!r} uses 1 beam; use mode beam or beam_sample")
        return self

    @property
    def samples(self) -> bool:
        return self.mode in ("sample", "beam_sample")

    def kwargs(self) -> dict[str, Any]:
        """``generate`` keyword arguments. Sampling with ``top_p < 1`` (one beam) passes transformers' own
        temperature and top-k warpers and :class:`NucleusFilter` in the order ``generate`` applies them, in place of
        its nucleus warper: the same tokens, faster on CPU."""
        kw: dict[str, Any] = {"do_sample": self.samples, "num_beams": self.num_beams,
                              "repetition_penalty": self.repetition_penalty}
        if self.samples:
            kw.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        if self.mode == "sample" and self.top_p < 1.0:
            from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopKLogitsWarper

            # generate merges custom processors after its own (repetition penalty...) and before its warpers, which
            # these settings switch off: so the order stays generate's own, temperature -> top-k -> top-p
            warpers = LogitsProcessorList()
            if self.temperature != 1.0:
                warpers.append(TemperatureLogitsWarper(self.temperature))
            if self.top_k:
                warpers.append(TopKLogitsWarper(top_k=self.top_k, min_tokens_to_keep=1))
            warpers.append(NucleusFilter(self.top_p))
            kw.update(temperature=1.0, top_k=0, top_p=1.0, logits_processor=warpers)
        return kw


class NucleusFilter:
    """transformers' ``TopPLogitsWarper(top_p)`` (one token kept at least), scores for scores, bit for bit, without
    its ``torch.sort``, which is slow on CPU (about 10x numpy's sort of the values: half of a tiny LM's sampling time).

    Hand-written because transformers has no faster equivalent: the warper removes the tokens whose ascending
    cumulative probability is at most ``1 - top_p``, a prefix of the sorted order. Its cumulative probabilities
    depend only on the sorted *values* (numpy sorts them; softmax and cumsum as the warper computes them), and the
    prefix is the set of tokens below the first kept value, unless that value ties with the last removed one: then
    which of the tied tokens the warper removes depends on its sort's order, and this filter calls the warper itself.
    So does a non-CPU or non-float32 score tensor, or one with a NaN."""

    def __init__(self, top_p: float) -> None:
        self.top_p = float(top_p)

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import numpy as np
        import torch

        if scores.device.type == "cpu" and scores.dtype == torch.float32 and scores.ndim == 2:
            ordered = torch.from_numpy(np.sort(scores.detach().numpy(), axis=-1))
            if not torch.isnan(ordered[:, -1]).any():  # numpy sorts NaN last
                removed = ordered.softmax(dim=-1).cumsum(dim=-1) <= (1 - self.top_p)
                removed[..., -1:] = False
                r = removed.sum(dim=-1, keepdim=True)
                first_kept = ordered.gather(-1, r)
                tie = (r > 0) & (ordered.gather(-1, (r - 1).clamp_min(0)) == first_kept)
                if not tie.any():
                    return scores.masked_fill(scores < first_kept, -float("inf"))
        from transformers import TopPLogitsWarper

        return TopPLogitsWarper(self.top_p)(input_ids, scores)
