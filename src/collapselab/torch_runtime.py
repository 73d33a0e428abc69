"""Where and how torch computes, for the families, the curators and the metrics alike: the device a setting means, the
thread policy (see :mod:`collapselab.families.gradient`), torch generators seeded from the run's numpy streams, and
inference over numpy arrays in batches."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any, Literal

import numpy as np

Device = Literal["auto", "cpu", "cuda"]


def torch_device(setting: Device) -> Any:
    """The torch device for ``setting`` (``cuda`` without a GPU is an error naming the field)."""
    import torch

    if setting == "cuda" and not torch.cuda.is_available():
        raise ValueError("family.device: 'cuda' but no CUDA device is available; allowed here: auto, cpu")
    return torch.device("cuda" if setting == "cuda" or (setting == "auto" and torch.cuda.is_available()) else "cpu")


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def apply_threads(threads: int | None) -> None:
    """Set torch's CPU thread count by the policy of the module docstring."""
    import torch

    n = threads or 1
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


def torch_generator(rng: np.random.Generator, device: Any = "cpu") -> Any:
    """A torch generator seeded from the numpy stream ``rng`` (one draw)."""
    import torch

    g = torch.Generator(device=device)
    g.manual_seed(int(rng.integers(0, 2**63 - 1)))
    return g


def infer(fn: Any, x: np.ndarray, batch: int = 500) -> np.ndarray:
    """``fn`` (torch tensor -> tensor) over numpy images ``x`` in batches, without autograd; float64 numpy out.

    Inference batches of a few hundred keep memory flat (large-batch CPU inference is slower here).
    """
    import torch

    with torch.inference_mode():
        out = [fn(torch.as_tensor(np.ascontiguousarray(x[i:i + batch], dtype=np.float32))).float().cpu().numpy()
               for i in range(0, len(x), batch)]
    return np.concatenate(out).astype(np.float64) if out else np.empty((0,))


@contextlib.contextmanager
def seeded(rng: np.random.Generator) -> Iterator[None]:
    """Run a block (e.g. building a network) under torch's global CPU RNG seeded from ``rng``, restored after."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(rng.integers(0, 2**63 - 1)))
        yield
