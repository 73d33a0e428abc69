"""The foundation every gradient-trained family shares (``vae`` now, ``causal_lm`` next).

Such a family holds one torch model per chain (a few chains per object, ``max_chains``), trains it by
gradient descent with the arm's u-loss applied **inside each training step** (through
:mod:`collapselab.losses`), and overrides :meth:`Family.fit_loss` for that: the engine calls the same
method for every family and never branches.

- **Device**: ``device: auto`` is CUDA when available, else CPU.
- **Threads** (CPU): ``threads`` when set, else 1, whatever the backend or the number of workers: a conv net's
  results depend on its thread count (reduction order), so this keeps runs byte-identical across ``--workers`` and
  ``--backend ray`` (whose task asks for ``threads`` CPUs). Chains in parallel (``-w N``) use cores better than
  threads for these small models, and one thread per process keeps its speed beside a busy neighbour (the README's
  benchmark section has the measurement).
- **Randomness**: every draw comes from the run's seed tree, each purpose from its own named sub-stream of the fit's
  stream (:func:`collapselab.seeding.substream`: ``chain, c, init``, ``chain, c, order``...), turned into torch
  generators (:func:`~collapselab.torch_runtime.torch_generator`) or a forked torch RNG
  (:func:`~collapselab.torch_runtime.seeded`), so the same experiment and seed give the same metrics on CPU with the
  same thread count, also after a resume, and a new draw for one purpose changes no other.
- **State**: parameters stacked over the chains as float32 arrays (safetensors through the run store).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Self

import numpy as np
from pydantic import Field

from collapselab.families.base import Family, FamilyConfig, Resources
from collapselab.losses.ulosses import ULoss
from collapselab.samples import SampleSet
from collapselab.seeding import substream
from collapselab.torch_runtime import Device, seeded, torch_device


class GradientConfig(FamilyConfig):
    """Settings every gradient-trained family has."""

    device: Device = "auto"
    threads: int | None = Field(None, ge=1, le=256, description="CPU threads (default: see module docstring)")
    lr: float = Field(1e-3, gt=0, le=10)
    batch: int = Field(128, ge=1, le=1_000_000)
    max_epochs: int = Field(100, ge=1, le=100_000)
    patience: int = Field(5, ge=1, le=10_000, description="epochs without a better validation loss before stopping")
    validation: float = Field(0.1, ge=0.0, lt=1.0,
                              description="fraction of each training set held out for early stopping (0: none)")

    def resources(self, gpus: bool) -> Resources:
        """One GPU (and a CPU to feed it) when the device is ``cuda``, or ``auto`` on a cluster with GPUs; else
        ``threads`` CPUs (default 1)."""
        if self.device == "cuda" or (self.device == "auto" and gpus):
            return Resources(num_cpus=1.0, num_gpus=1.0)
        return Resources(num_cpus=float(self.threads or 1), num_gpus=0.0)


class GradientFamily(Family):
    """Base of the torch families: per-chain networks, stacked state, device and thread handling."""

    max_chains: ClassVar[int] = 4
    config: GradientConfig

    def __init__(self, config: GradientConfig, n_chains: int, spec: Mapping[str, Any]) -> None:
        super().__init__(config, n_chains, spec)
        self.nets: list[Any] = []

    # -- networks ----------------------------------------------------------------------------------
    def build(self) -> Any:
        """A freshly initialised network for one chain (under the caller's seeded RNG)."""
        raise NotImplementedError

    @property
    def device(self) -> Any:
        return torch_device(self.config.device)

    def runtime(self) -> dict[str, str]:
        """``device`` (``cpu``, or ``cuda`` and the GPU's name)."""
        import torch

        dev = self.device
        if dev.type != "cuda":
            return {"device": "cpu"}
        return {"device": "cuda", "gpu": torch.cuda.get_device_name(dev)}

    def fresh(self, rng: np.random.Generator) -> list[Any]:
        """One freshly initialised network per chain, each from its own named sub-stream (``chain, c, init``)."""
        nets = []
        for c in range(self.n_chains):
            with seeded(substream(rng, "chain", c, "init")):
                nets.append(self.build().to(self.device))
        return nets

    # -- training ------------------------------------------------------------------------------------
    def fit(self, data: SampleSet, weights: np.ndarray | None = None, init: Family | None = None,
            rng: np.random.Generator | None = None) -> Self:
        """Maximum-likelihood training with optional fixed per-sample (or per-token) weights."""
        from collapselab.losses.ulosses import CE

        return self._train(data, CE(), rng or np.random.default_rng(0), init, weights)

    def fit_loss(self, data: SampleSet, loss: ULoss, rng: np.random.Generator, init: Family | None = None,
                 steps: int = 3) -> Self:
        """Train under ``loss`` applied inside every step (``steps`` is for closed-form refits; unused)."""
        return self._train(data, loss, rng, init, None)

    def _train(self, data: SampleSet, loss: ULoss, rng: np.random.Generator, init: Family | None,
               weights: np.ndarray | None) -> Self:
        """Train (in place) under ``loss``, from ``init``'s weights when it is fitted, else freshly."""
        raise NotImplementedError

    # -- state ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, np.ndarray]:
        if not self.nets:
            return {}
        keys = self.nets[0].state_dict().keys()
        return {f"net.{k}": np.stack([n.state_dict()[k].detach().float().cpu().numpy() for n in self.nets])
                for k in keys}

    def load_state_dict(self, state: Mapping[str, np.ndarray]):
        import torch

        if not state:
            self.nets = []
            return self
        n = len(next(iter(state.values())))
        self.n_chains = n
        nets = []
        with torch.random.fork_rng(devices=[]):  # building draws from the global RNG; the state overwrites it
            for c in range(n):
                net = self.build()
                net.load_state_dict({k[len("net."):]: torch.from_numpy(np.array(v[c])) for k, v in state.items()})
                nets.append(net.to(self.device))
        self.nets = nets
        return self

    def finite_chains(self) -> np.ndarray:
        import torch

        return np.array([all(bool(torch.isfinite(p).all()) for p in n.parameters()) for n in self.nets]
                        or [True] * self.n_chains)
