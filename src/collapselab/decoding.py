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
        """``generate`` keyword arguments."""
        kw: dict[str, Any] = {"do_sample": self.samples, "num_beams": self.num_beams,
                              "repetition_penalty": self.repetition_penalty}
        if self.samples:
            kw.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k)
        return kw
