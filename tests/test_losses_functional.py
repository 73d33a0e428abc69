"""PyTorch losses: exact gradients, F.cross_entropy semantics, TCE, dtypes, numerics, fused form."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from collapselab.losses import functional as LF
from collapselab.losses import get_loss, get_uloss, linear_cross_entropy
from collapselab.losses import modules as LM

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"))]
ULOSSES = [("ce", {}), ("tce", {"gamma": 0.3}), ("focal", {"gamma": 2.0}), ("linear", {"beta": 0.8}),
           ("poly1", {"epsilon": 1.0}), ("gce", {"q": 0.7}), ("sce", {}), ("agce", {"a": 0.6, "q": 0.6}),
           ("ael", {"a": 2.5}), ("vce", {"a": 0.5})]
FUNCTIONAL = {"ce": LF.cross_entropy, "tce": LF.truncated_cross_entropy, "focal": LF.focal_loss,
              "linear": LF.linear_weighted_loss, "poly1": LF.poly1_loss, "gce": LF.gce_loss, "sce": LF.sce_loss,
              "agce": LF.agce_loss, "ael": LF.ael_loss, "vce": LF.vce_loss}


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 6), c=st.integers(2, 7), scale=st.floats(0.1, 20.0), seed=st.integers(0, 2**31 - 1),
       which=st.sampled_from(range(len(ULOSSES))))
def test_gradient_is_w_of_u_times_the_ce_gradient(n, c, scale, seed, which):
    """Per element, d loss/d logits == w(u) * d CE/d logits (the core weight definitions), and equals autograd
    through the definitions of l(u) themselves (float64, 1e-9)."""
    name, params = ULOSSES[which]
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(n, c, generator=g, dtype=torch.float64) * scale).requires_grad_()
    t = torch.randint(0, c, (n,), generator=g)
    loss = FUNCTIONAL[name](x, t, reduction="none", **params)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    log_u = torch.log_softmax(x.detach(), 1).gather(1, t[:, None])[:, 0]
    w = get_uloss(name, **params).weight(log_u)
    ce_grad = torch.softmax(x.detach(), 1) - F.one_hot(t, c)
    torch.testing.assert_close(grad, w[:, None] * ce_grad, rtol=1e-9, atol=1e-12)
    xr = x.detach().clone().requires_grad_()
    ref = get_uloss(name, **params).value(torch.log_softmax(xr, 1).gather(1, t[:, None])[:, 0])
    torch.testing.assert_close(loss.detach(), ref.detach(), rtol=1e-12, atol=1e-12)
    (ref_grad,) = torch.autograd.grad(ref.sum(), xr)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-12)


LAYOUTS = [((6, 5), 1), ((3, 5, 2, 4), 1), ((2, 7, 5), -1), ((5,), 0)]


@pytest.mark.parametrize("shape, class_dim", LAYOUTS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_ce_and_tce_gamma_1_equal_torch_cross_entropy(shape, class_dim, reduction, weighted):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).requires_grad_()
    c = shape[class_dim]
    t_shape = shape[:class_dim % len(shape)] + shape[class_dim % len(shape) + 1:]
    t = torch.randint(0, c, t_shape, generator=g)
    if t.numel() > 1:
        t.view(-1)[1] = -100
    w = torch.rand(c, generator=g) + 0.5 if weighted else None
    xt = x if class_dim == 1 or len(shape) == 1 else x.movedim(class_dim, 1)
    ref = F.cross_entropy(xt, t, weight=w, reduction=reduction)
    (ref_grad,) = torch.autograd.grad(ref.sum(), x)
    for fn in (lambda: LF.cross_entropy(x, t, weight=w, reduction=reduction, class_dim=class_dim),
               lambda: LF.truncated_cross_entropy(x, t, gamma=1.0, weight=w, reduction=reduction, class_dim=class_dim)):
        out = fn()
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-6)
        (grad,) = torch.autograd.grad(out.sum(), x)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=1e-6)


def _tce_reference(x, t, gamma, normalize, weight, ignore_index=-100):
    """A straightforward masked TCE (log_softmax + gather + where + mean), as in ForTIFAI's code."""
    valid = t != ignore_index
    safe = torch.where(valid, t, 0)
    log_u = torch.log_softmax(x, -1).gather(-1, safe[..., None])[..., 0]
    keep = (log_u.exp() <= gamma) & valid
    cw = torch.ones_like(log_u) if weight is None else weight[safe]
    cw = cw * valid
    num = (torch.where(keep, -log_u, 0.0) * cw).sum()
    den = (cw * keep).sum() if normalize == "kept" else cw.sum()
    return num / den


@pytest.mark.parametrize("normalize", ["all", "kept"])
@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_tce_equals_a_masked_reference(normalize, ignore, weighted):
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(4, 9, 11, generator=g) * 3).requires_grad_()
    t = torch.randint(0, 11, (4, 9), generator=g)
    if ignore:
        t[:, ::3] = -100
    w = torch.rand(11, generator=g) + 0.5 if weighted else None
    out = LF.truncated_cross_entropy(x, t, gamma=0.3, normalize=normalize, weight=w, class_dim=-1)
    ref = _tce_reference(x, t, 0.3, normalize, w)
    torch.testing.assert_close(out, ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(torch.autograd.grad(out, x)[0], torch.autograd.grad(ref, x)[0], rtol=1e-6, atol=1e-7)
    u = torch.softmax(x.detach(), -1).gather(-1, t.clamp_min(0)[..., None])[..., 0][t != -100]
    assert (u > 0.3).any() and (u <= 0.3).any()  # the mask both cuts and keeps targets here


def test_batch_dynamic_gamma_is_mean_plus_k_std_of_sequence_confidence():
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(6, 8, 4, generator=g) * 2).requires_grad_()
    t = torch.randint(0, 4, (6, 8), generator=g)
    t[0, :3] = -100
    u = torch.softmax(x.detach(), -1).gather(-1, t.clamp_min(0)[..., None])[..., 0]
    valid = t != -100
    per_seq = torch.stack([u[i][valid[i]].mean() for i in range(6)])
    gamma = float(per_seq.mean() + 0.5 * per_seq.std(unbiased=False))
    dyn = LF.truncated_cross_entropy(x, t, gamma="batch_dynamic", k=0.5, class_dim=-1)
    static = LF.truncated_cross_entropy(x, t, gamma=gamma, class_dim=-1)
    torch.testing.assert_close(dyn, static)
    assert dyn.item() < LF.cross_entropy(x, t, class_dim=-1).item()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, params", ULOSSES)
def test_dtypes_agree(name, params, device):
    """float64 matches float32 to 1e-5. bfloat16 logits: the loss is float32 (equal to float64 on the same rounded
    logits to 1e-5), the gradient bfloat16 (2e-2: one bf16 rounding)."""
    g = torch.Generator().manual_seed(7)
    x64 = (torch.randn(16, 40, generator=g, dtype=torch.float64) * 4).to(device)
    t = torch.randint(0, 40, (16,), generator=g).to(device)
    res = {}
    for dt in (torch.float64, torch.float32, torch.bfloat16):
        x = x64.to(dt).requires_grad_()
        out = FUNCTIONAL[name](x, t, **params)
        (grad,) = torch.autograd.grad(out, x)
        assert out.dtype == (torch.float64 if dt == torch.float64 else torch.float32) and grad.dtype == dt
        res[dt] = (out.double(), grad.double())
    torch.testing.assert_close(res[torch.float32][0], res[torch.float64][0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res[torch.float32][1], res[torch.float64][1], rtol=1e-4, atol=1e-6)
    # bf16 logits are rounded first: compare with float64 on the same rounded logits
    xb = x64.to(torch.bfloat16).double().requires_grad_()
    ref = FUNCTIONAL[name](xb, t, **params)
    torch.testing.assert_close(res[torch.bfloat16][0], ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(res[torch.bfloat16][1], torch.autograd.grad(ref, xb)[0], rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name, params", ULOSSES + [("tce", {"gamma": "batch_dynamic"})])
def test_extreme_logits_and_all_ignored_batches(name, params, device):
    fn = FUNCTIONAL[name]
    x = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4], [0.0, 0.0, 0.0], [1e4, 1e4, -1e4]], device=device)
    t = torch.tensor([0, 0, 2, 2], device=device)  # u = 1, u -> 0, u = 1/3, u -> 0
    for reduction in ("mean", "sum", "none"):
        xr = x.clone().requires_grad_()
        out = fn(xr, t, reduction=reduction, **params)
        (grad,) = torch.autograd.grad(out.sum(), xr)
        assert torch.isfinite(out).all() and torch.isfinite(grad).all(), (name, reduction)
    xr = x.clone().requires_grad_()
    out = fn(xr, torch.full_like(t, -100), **params)
    (grad,) = torch.autograd.grad(out, xr)
    assert out.item() == 0.0 and grad.abs().sum().item() == 0.0


@pytest.mark.parametrize("gradient", ["forward", "inplace"])
@pytest.mark.parametrize("name, params", ULOSSES)
def test_gradient_in_forward_and_in_place(gradient, name, params):
    g = torch.Generator().manual_seed(11)
    base = torch.randn(2, 30, 17, generator=g) * 3
    t = torch.randint(0, 17, (2, 30), generator=g)
    t[0, 4] = -100
    x0 = base.clone().requires_grad_()
    ref = FUNCTIONAL[name](x0, t, class_dim=-1, **params)
    (ref_grad,) = torch.autograd.grad(ref * 2.5, x0)
    x1 = base.clone().requires_grad_()
    out = FUNCTIONAL[name](x1, t, class_dim=-1, gradient=gradient, **params)
    torch.testing.assert_close(out, ref)
    (grad,) = torch.autograd.grad(out * 2.5, x1)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=1e-7)
    if gradient == "inplace":  # the logits' storage now holds the gradient itself (no extra copy was made)
        assert x1.detach().data_ptr() == grad.data_ptr()
        torch.testing.assert_close(x1.detach(), ref_grad, rtol=1e-6, atol=1e-7)
    else:
        assert torch.equal(x1.detach(), base)


def test_nce_rce_matches_its_formula():
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(7, 6, generator=g, dtype=torch.float64) * 2).requires_grad_()
    t = torch.randint(0, 6, (7,), generator=g)
    t[1] = -100
    out = LF.nce_rce_loss(x, t, alpha=2.0, beta=0.5, A=-4.0, reduction="sum")
    lp = torch.log_softmax(x, 1)
    valid = t != -100
    safe = t.clamp_min(0)
    log_u = lp.gather(1, safe[:, None])[:, 0]
    ref = ((2.0 * log_u / lp.sum(1) + 0.5 * 4.0 * (1 - log_u.exp())) * valid).sum()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(torch.autograd.grad(out, x)[0], torch.autograd.grad(ref, x)[0])


@pytest.mark.parametrize("call, error", [
    (lambda x, t: LF.cross_entropy(x, t, reduction="avg"), "reduction must be 'mean', 'sum' or 'none'"),
    (lambda x, t: LF.truncated_cross_entropy(x, t, gamma=0.0), r"gamma must be in \(0, 1\]"),
    (lambda x, t: LF.truncated_cross_entropy(x, t, gamma=1.5), r"gamma must be in \(0, 1\]"),
    (lambda x, t: LF.truncated_cross_entropy(x, t, normalize="some"), "normalize must be 'all' or 'kept'"),
    (lambda x, t: LF.cross_entropy(x, t, reduction="none", gradient="inplace"), "needs reduction 'mean' or 'sum'"),
    (lambda x, t: LF.cross_entropy(x, t[:2]), "does not match input shape"),
    (lambda x, t: LF.cross_entropy(x, t, class_dim=3), "out of range"),
])
def test_bad_arguments_raise_clear_errors(call, error):
    with pytest.raises(ValueError, match=error):
        call(torch.randn(3, 4), torch.tensor([0, 1, 2]))


def test_out_of_range_targets_raise_like_torch():
    with pytest.raises(IndexError, match="Target 9 is out of bounds"):
        LF.cross_entropy(torch.randn(3, 4), torch.tensor([0, 9, 2]))


def test_modules_and_get_loss():
    x = torch.randn(5, 4)
    t = torch.tensor([0, 1, 2, 3, -100])
    w = torch.rand(4)
    mod = LM.TruncatedCrossEntropy(gamma=0.5, normalize="kept", weight=w)
    torch.testing.assert_close(mod(x, t), LF.truncated_cross_entropy(x, t, gamma=0.5, normalize="kept", weight=w))
    assert "weight" in dict(mod.named_buffers())
    assert mod.to(torch.float64).weight.dtype == torch.float64
    for name, params in ULOSSES + [("nce_rce", {"alpha": 1.0})]:
        m = get_loss(name, **params)
        assert torch.isfinite(m(x, t))
    torch.testing.assert_close(get_loss("focal", gamma=1.0)(x, t), LF.focal_loss(x, t, gamma=1.0))
    with pytest.raises(ValueError, match="unknown loss 'huber'"):
        get_loss("huber")
    with pytest.raises(TypeError, match="unexpected parameters"):
        get_loss("tce", gama=0.5)


@pytest.mark.parametrize("name, params", ULOSSES + [("tce", {"gamma": 0.3, "normalize": "kept"}),
                                                    ("tce", {"gamma": "batch_dynamic", "k": 0.5})])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk", [None, 5])
def test_fused_linear_loss_matches_the_unfused_path(name, params, reduction, chunk):
    """Loss and gradients w.r.t. hidden, weight and bias equal the materialized path to 1e-5 (float32)."""
    g = torch.Generator().manual_seed(13)
    h = torch.randn(3, 7, 12, generator=g).requires_grad_()
    W = (torch.randn(40, 12, generator=g) * 0.5).requires_grad_()
    b = torch.randn(40, generator=g).requires_grad_()
    t = torch.randint(0, 40, (3, 7), generator=g)
    t[1, 2] = -100
    cw = torch.rand(40, generator=g) + 0.5
    out = linear_cross_entropy(h, W, t, name, bias=b, class_weight=cw, reduction=reduction, chunk_size=chunk,
                               **params)
    ref = LF.uloss(h @ W.T + b, t, LF.make_weigh(name, tuple(t.shape), **params), weight=cw, reduction=reduction,
                   class_dim=-1)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    up = torch.rand(ref.shape, generator=g) if reduction == "none" else torch.tensor(1.7)
    got = torch.autograd.grad(out, (h, W, b), up)
    want = torch.autograd.grad(ref, (h, W, b), up)
    for a, e in zip(got, want, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_fused_rejects_bad_shapes():
    with pytest.raises(ValueError, match="does not match weight"):
        linear_cross_entropy(torch.randn(4, 3), torch.randn(5, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="not a u-loss"):
        linear_cross_entropy(torch.randn(4, 3), torch.randn(5, 3), torch.zeros(4, dtype=torch.long), "nce_rce")


def test_readme_pytorch_snippet_runs():
    """The README's plain-PyTorch example executes as written."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    section = readme[readme.index("## Use TCE in your own training"):]
    code = re.findall(r"```python\n(.*?)```", section, flags=re.S)[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert torch.isfinite(scope["loss"])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_nce_rce_gradient_equals_autograd_of_its_definition(reduction, weighted):
    g = torch.Generator().manual_seed(21)
    x = (torch.randn(3, 5, 9, generator=g, dtype=torch.float64) * 3).requires_grad_()
    t = torch.randint(0, 9, (3, 5), generator=g)
    t[0, 1] = -100
    w = torch.rand(9, generator=g, dtype=torch.float64) + 0.5 if weighted else None
    out = LF.nce_rce_loss(x, t, alpha=1.5, beta=0.7, A=-4.0, weight=w, reduction=reduction, class_dim=-1)
    lp = torch.log_softmax(x, -1)
    valid = t != -100
    log_u = lp.gather(-1, t.clamp_min(0)[..., None])[..., 0]
    cw = (torch.ones_like(log_u) if w is None else w[t.clamp_min(0)]) * valid
    per = (1.5 * log_u / lp.sum(-1) + 0.7 * 4.0 * (1 - log_u.exp())) * cw
    ref = {"none": per, "sum": per.sum(), "mean": per.sum() / cw.sum()}[reduction]
    torch.testing.assert_close(out, ref)
    up = torch.rand(ref.shape, generator=g, dtype=torch.float64)
    torch.testing.assert_close(torch.autograd.grad(out, x, up)[0], torch.autograd.grad(ref, x, up)[0])
