"""A conformance kit for plugin authors (scikit-learn's ``check_estimator`` spirit): one call per kind.

::

    from collapselab.testing import check_loss
    from my_plugin import SoftTruncation

    def test_my_loss():
        check_loss(SoftTruncation(gamma=0.9, tau=0.05))

Each ``check_*`` raises ``AssertionError`` with one line naming what failed, and returns nothing. The test suite
runs them over every registered built-in, so plugins are held to the same bar as the package's own code.

- :func:`check_loss`: ``w(u)`` finite and >= 0 on (0, 1]; it matches autograd of ``value`` and central finite
  differences; numpy and torch agree; the torch cross-entropy form gives the gradient ``w(u) (softmax - onehot)``;
  the setting round-trips through its pydantic model; the properties compute.
- :func:`check_curator`: curation returns at most the requested count per chain (a verifier may keep a share), with
  the family's arrays and finite, non-negative weights; the same seed gives the same samples.
- :func:`check_regime`: each generation's training set has the chain axis and finite weights; the real data asked
  for fit ``real_needed``; the same seed gives the same set.
- :func:`check_source`: ``spec``, ``take`` and ``heldout`` have the documented shapes; the same seed gives the same
  samples, other offsets other ones.
- :func:`check_family`: it fits, samples, scores (``confidence`` in [0, 1]), round-trips its state bitwise and
  gives the same numbers for the same seed.
- :func:`check_metric`: one finite-or-NaN float per chain, the same for the same seed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from collapselab.losses.ulosses import U_GRID, weight_problem
from collapselab.samples import SampleSet
from collapselab.seeding import SeedTree


def _fail(what: str, msg: str) -> None:
    raise AssertionError(f"{what}: {msg}")


def check_loss(loss: Any) -> None:
    """Check a u-loss (an instance; see the module docstring)."""
    import torch

    from collapselab.losses.ulosses import ULoss

    what = f"loss {getattr(loss, 'name', loss)!r}"
    if not isinstance(loss, ULoss):
        _fail(what, f"{type(loss).__name__} is not a collapselab.losses.ULoss")
    why = weight_problem(loss)
    if why:
        _fail(what, why)
    log_u = np.log(U_GRID)
    value, w = (np.asarray(a, dtype=np.float64) for a in loss.value_and_weight(log_u))
    if not np.array_equal(w, np.asarray(loss.weight(log_u), dtype=np.float64)):
        _fail(what, "value_and_weight() and weight() disagree")
    # autograd of value (what the derived weight would be)
    x = torch.from_numpy(log_u.copy()).requires_grad_(True)
    v = loss.value(x)
    (g,) = torch.autograd.grad(v.sum(), x, allow_unused=True)
    auto = np.zeros_like(log_u) if g is None else -g.numpy()
    close = np.isclose(auto, w, rtol=1e-6, atol=1e-9)
    if close.mean() < 0.98:
        i = int(np.argmin(close))
        _fail(what, f"w(u) = {w[i]:.6g} but -dl/dlog u by autograd = {auto[i]:.6g} at u = {U_GRID[i]:.3g}")
    # central finite differences in log u, away from kinks (a kink: a jump in value between neighbours)
    h = 1e-5
    with np.errstate(all="ignore"):
        fd = -(np.asarray(loss.value(log_u + h), dtype=np.float64)
               - np.asarray(loss.value(log_u - h), dtype=np.float64)) / (2 * h)
    fd_ok = np.isclose(fd, w, rtol=1e-4, atol=1e-6) | (log_u + h > 0)
    if fd_ok.mean() < 0.95:
        i = int(np.argmin(fd_ok))
        _fail(what, f"w(u) = {w[i]:.6g} but finite differences give {fd[i]:.6g} at u = {U_GRID[i]:.3g}")
    # numpy and torch agree
    tv, tw = loss.value_and_weight(torch.from_numpy(log_u.copy()))
    if not (np.allclose(tv.numpy(), value, rtol=1e-12, atol=1e-12, equal_nan=True)
            and np.allclose(tw.numpy(), w, rtol=1e-12, atol=1e-12)):
        _fail(what, "numpy and torch evaluations differ")
    # the torch cross-entropy form: gradient w(u) (softmax - onehot)
    from collapselab.losses.functional import _u

    gen = torch.Generator().manual_seed(0)
    z = torch.randn(64, 7, generator=gen, dtype=torch.float64).requires_grad_(True)
    t = torch.randint(0, 7, (64,), generator=gen)
    keep = 1.0 if loss.keep_share == 1.0 else None
    out = _u(loss, z, t, None, -100, "sum", 1, "backward")
    out.backward()
    lz = torch.log_softmax(z.detach(), 1)
    wz = loss.weight(lz.gather(1, t[:, None])[:, 0])
    expect = wz[:, None] * (lz.exp() - torch.nn.functional.one_hot(t, 7).double())
    if keep is not None and not torch.allclose(z.grad, expect, rtol=1e-9, atol=1e-12):
        _fail(what, "the torch loss's gradient is not w(u) (softmax - onehot)")
    if not torch.isfinite(z.grad).all():
        _fail(what, "the torch loss's gradient is not finite")
    # settings round-trip, properties
    again = type(loss).model_validate(loss.model_dump())
    if again != loss:
        _fail(what, "its settings do not round-trip through model_dump / model_validate")
    p = loss.properties()
    if p["down_weights"] not in ("none", "confident", "unconfident", "both ends", "the middle", "random") \
            or not p["variation_ratio"] >= 1:
        _fail(what, f"properties out of range: {p}")


def _points(n_chains: int = 3) -> tuple[Any, Any, SeedTree]:
    """A fitted Gaussian family on a 2-d Gaussian source: the default model and data of the checks."""
    from collapselab.data import make_source
    from collapselab.data.truth import GaussianTruthConfig
    from collapselab.families import make_family
    from collapselab.families.gaussian import GaussianConfig

    tree = SeedTree(0)
    source = make_source(GaussianTruthConfig(dim=2), 200, 50)
    model = make_family(GaussianConfig(), n_chains, source.spec)
    model.fit(source.take(tree, 0, n_chains, 0, 50), rng=tree.rng("fit"))
    return model, source, tree


def _same(a: SampleSet, b: SampleSet) -> bool:
    return a.arrays.keys() == b.arrays.keys() and all(np.array_equal(a[k], b[k]) for k in a.arrays) and \
        np.array_equal(a.weight, b.weight)


def check_curator(curator: Any, model: Any = None, source: Any = None, count: int = 20) -> None:
    """Check a curator on ``model`` (default: a fitted Gaussian family on Gaussian data)."""
    from collapselab.curators import CuratorContext

    what = f"curator {getattr(curator, 'name', curator)!r}"
    if model is None:
        model, source, _ = _points()
    out = [curator.curate(model, count, np.random.default_rng(7), CuratorContext(source)) for _ in range(2)]
    s = out[0]
    if not isinstance(s, SampleSet):
        _fail(what, f"curate() returned {type(s).__name__}, not a SampleSet")
    if s.n_chains != model.n_chains:
        _fail(what, f"{s.n_chains} chains returned for a model of {model.n_chains}")
    if not 1 <= s.n <= count:
        _fail(what, f"{s.n} samples per chain returned for {count} asked; allowed: 1 to {count} (a share kept, or "
                    f"every sample with weight 0 for the rejected)")
    if not (np.isfinite(s.weight).all() and (s.weight >= 0).all()):
        _fail(what, "curation weights must be finite and >= 0")
    if any(k not in s.arrays for k in model.sample_keys):
        _fail(what, f"samples lack the family's arrays {list(model.sample_keys)}")
    if not _same(out[0], out[1]):
        _fail(what, "the same seed gave different samples")


def check_regime(regime: Any, source: Any = None, n: int = 30, m: int = 30, generations: int = 3) -> None:
    """Check a regime over ``generations`` generations (default data: a Gaussian source)."""
    from collapselab.curators import CuratorContext, NoCurator

    what = f"regime {getattr(regime, 'name', regime)!r}"
    model, default_source, tree = _points(2)
    source = source or default_source
    need = regime.real_needed(n, generations)
    if need < n:
        _fail(what, f"real_needed({n}, {generations}) = {need} is less than generation 0's {n} real samples")

    def run() -> list[SampleSet]:
        pool = source.pool(tree, 0, 2)
        train, state = regime.initial(pool, n)
        sets = [train]
        for g in range(1, generations + 1):
            request = regime.request(g, n, m, state)
            synthetic = None if request is None else NoCurator().curate(
                model, request, np.random.default_rng(g), CuratorContext(source))
            train, state = regime.build(g, n, m, pool, state, synthetic, np.random.default_rng(100 + g))
            sets.append(train)
        return sets

    a, b = run(), run()
    for g, s in enumerate(a):
        if not isinstance(s, SampleSet) or s.n_chains != 2:
            _fail(what, f"generation {g}'s training set is not a SampleSet of 2 chains")
        if not (np.isfinite(s.weight).all() and (s.weight >= 0).all() and s.weight.sum(axis=1).min() > 0):
            _fail(what, f"generation {g}'s training weights must be finite, >= 0, and not all 0")
        if not _same(s, b[g]):
            _fail(what, f"the same seed gave a different training set at generation {g}")


def check_source(source: Any, count: int = 8, n_chains: int = 2) -> None:
    """Check a data source (an instance, built with its held-out size)."""
    what = f"source {getattr(source.config, 'source', source)!r}"
    tree = SeedTree(3)
    spec = source.spec
    if not isinstance(spec, Mapping):
        _fail(what, "spec must be a mapping of what a family needs to know")
    a = source.take(tree, 0, n_chains, 0, count)
    if not isinstance(a, SampleSet) or a.n_chains != n_chains or a.n != count:
        _fail(what, f"take(..., n_chains={n_chains}, offset=0, count={count}) must give a SampleSet "
                    f"[{n_chains}, {count}, ...]")
    if not _same(a, source.take(tree, 0, n_chains, 0, count)):
        _fail(what, "the same seed gave different samples")
    b = source.take(tree, 0, n_chains, count, count)
    if _same(a, b):
        _fail(what, "other offsets gave the same samples (a chain must see new real data at new offsets)")
    held = source.heldout(tree, 0)
    if not isinstance(held, SampleSet) or held.n_chains != 1 or held.n < 1:
        _fail(what, "heldout() must give a SampleSet [1, m, ...] with m >= 1")
    if set(held.arrays) != set(a.arrays):
        _fail(what, f"held-out arrays {sorted(held.arrays)} differ from the real pool's {sorted(a.arrays)}")
    if hasattr(source, "splits"):
        splits = source.splits()
        for part in ("train", "validation", "test"):
            x, y = splits.get(part, (None, None))
            if x is None or x.ndim != 4 or x.dtype != np.float32 or len(x) != len(y) or y.dtype != np.int64:
                _fail(what, f"splits()[{part!r}] must be (images [N, 1, H, W] float32, labels [N] int64)")
            if not (float(x.min()) >= 0.0 and float(x.max()) <= 1.0):
                _fail(what, f"splits()[{part!r}] images must lie in [0, 1]")


def check_family(family_cls: Any, config: Any = None, source: Any = None, n: int = 40, n_chains: int = 2,
                 steps: int = 1) -> None:
    """Check a family class (``config``: its settings, default the config class's defaults; ``source``: data
    of its kind, default a 2-d Gaussian source)."""
    from collapselab.losses.ulosses import TCE

    what = f"family {getattr(family_cls, 'name', family_cls)!r}"
    config = config or family_cls.config_class()
    if source is None:
        _, source, _ = _points()
    tree = SeedTree(5)
    data = source.take(tree, 0, n_chains, 0, n)

    def fitted() -> Any:
        m = family_cls(config, n_chains, source.spec)
        return m.fit_loss(data, TCE(gamma=0.99), np.random.default_rng(1), steps=steps)

    m1, m2 = fitted(), fitted()
    s1, s2 = m1.sample(n, np.random.default_rng(2)), m2.sample(n, np.random.default_rng(2))
    if not _same(s1, s2):
        _fail(what, "the same seed gave different samples")
    if s1.n_chains != n_chains or s1.n != n or any(k not in s1.arrays for k in family_cls.sample_keys):
        _fail(what, f"sample({n}) must give [{n_chains}, {n}, ...] with arrays {list(family_cls.sample_keys)}")
    lp = np.asarray(m1.log_prob(data))
    if lp.shape[:2] != (n_chains, n) or not np.isfinite(lp).all():
        _fail(what, f"log_prob must be finite [{n_chains}, {n}, ...], got shape {lp.shape}")
    u = np.asarray(m1.confidence(data))
    if u.shape[:2] != (n_chains, n) or not ((u >= 0) & (u <= 1)).all():
        _fail(what, "confidence must be in [0, 1] with shape [C, n, ...]")
    state = m1.state_dict()
    m3 = family_cls(config, n_chains, source.spec).load_state_dict({k: v.copy() for k, v in state.items()})
    if not all(np.array_equal(v, m3.state_dict()[k]) for k, v in state.items()):
        _fail(what, "load_state_dict(state_dict()) does not restore the state bitwise")
    if not np.array_equal(np.asarray(m3.log_prob(data)), lp) or \
            not _same(m3.sample(n, np.random.default_rng(2)), s1):
        _fail(what, "a model restored from its state scores or samples differently")


def check_metric(metric: Any, model: Any = None, source: Any = None) -> None:
    """Check a metric (a name or :class:`~collapselab.metrics.base.Metric`) on ``model`` (default: a fitted
    Gaussian family on Gaussian data)."""
    from collapselab.curators import NoCurator
    from collapselab.metrics import METRICS
    from collapselab.metrics.base import MetricContext, compute

    m = METRICS[metric] if isinstance(metric, str) else metric
    what = f"metric {m.name!r}"
    if model is None:
        model, source, _ = _points()
    tree = SeedTree(9)
    held = source.heldout(tree)

    def once() -> np.ndarray:
        ctx = MetricContext.make(source, held, np.random.default_rng(4), NoCurator(), model.n_chains, n=50,
                                 tree=tree)
        return compute([m.name], model, ctx)[m.name]

    a, b = once(), once()
    if a.shape != (model.n_chains,):
        _fail(what, f"must give one number per chain, got shape {a.shape}")
    if not np.array_equal(a, b, equal_nan=True):
        _fail(what, "the same seed gave different values")
    if m.better not in ("lower", "higher"):
        _fail(what, f"better must be 'lower' or 'higher', got {m.better!r}")
    if m.chance is not None and not math.isfinite(m.chance):
        _fail(what, "chance must be a finite number or None")
