"""Bernoulli (pixel) u-losses: CE equals torch's BCE, TCE equals a masked reference, gradients exact."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from collapselab.losses import ulosses as U
from collapselab.losses.binary import binary_uloss, log_u_binary


def _data(shape=(16, 1, 8, 8), binary=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g, dtype=torch.float64) * 3
    t = torch.rand(shape, generator=g, dtype=torch.float64)
    return z, (t > 0.5).double() if binary else t


@pytest.mark.parametrize("binary", [True, False])
def test_ce_equals_torch_bce(binary):
    z, t = _data(binary=binary)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    ours = binary_uloss(z1, t, U.CE(), reduction="sum")
    ref = F.binary_cross_entropy_with_logits(z2, t, reduction="sum")
    ours.backward()
    ref.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("gamma", [0.5, 0.9, 0.99, 1.0])
def test_tce_pixel_loss_equals_masked_reference(gamma):
    """TCE per pixel = BCE on the pixels whose observed-value probability is <= gamma, 0 elsewhere."""
    z, t = _data()
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    ours = binary_uloss(z1, t, U.TCE(gamma=gamma), reduction="sum")
    bce = F.binary_cross_entropy_with_logits(z2, t, reduction="none")
    p = torch.sigmoid(z2.detach())
    u = torch.where(t > 0.5, p, 1 - p)  # probability of the observed pixel, computed independently
    mask = u <= gamma
    assert 0 < mask.sum() <= mask.numel()
    ref = (bce * mask).sum()
    ours.backward()
    ref.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tce_fast_path_equals_the_general_path_bit_for_bit(dtype):
    """Plain TCE takes a shortcut; unit sample weights send it through the general path: the same bits."""
    z, t = _data(shape=(32, 1, 12, 12), seed=5)
    z, t = z.to(dtype), t.to(dtype)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    fast = binary_uloss(z1, t, U.TCE(gamma=0.9), reduction="none")
    general = binary_uloss(z2, t, U.TCE(gamma=0.9), reduction="none", sample_weight=torch.ones(32, dtype=dtype))
    assert 0 < int((fast == 0).sum()) < fast.numel()
    (fast.flatten(1).sum(1) * torch.arange(32, dtype=dtype)).sum().backward()
    (general.flatten(1).sum(1) * torch.arange(32, dtype=dtype)).sum().backward()
    assert torch.equal(fast, general) and torch.equal(z1.grad, z2.grad)


@pytest.mark.parametrize("loss", [U.Focal(gamma=2.0), U.GCE(q=0.7), U.Linear(beta=0.5)])
def test_generic_loss_matches_autograd_of_its_definition(loss):
    """Value l(u) and gradient w(u) * (sigmoid(z) - t) agree with autograd through l(exp(-BCE))."""
    z, t = _data(binary=True, seed=3)
    z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    ours = binary_uloss(z1, t, loss, reduction="mean")
    ref = loss.value(-F.binary_cross_entropy_with_logits(z2, t, reduction="none")).mean()
    ours.backward()
    ref.backward()
    torch.testing.assert_close(ours, ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(z1.grad, z2.grad, rtol=1e-7, atol=1e-12)


def test_sample_weight_scales_each_image_and_reductions():
    z, t = _data(shape=(4, 10))
    w = torch.tensor([1.0, 0.0, 2.0, 0.5], dtype=torch.float64)
    per = binary_uloss(z, t, U.TCE(gamma=0.9), reduction="none")
    weighted = binary_uloss(z, t, U.TCE(gamma=0.9), reduction="none", sample_weight=w)
    torch.testing.assert_close(weighted, per * w[:, None])
    torch.testing.assert_close(binary_uloss(z, t, reduction="mean"), binary_uloss(z, t, reduction="sum") / 40)


def test_log_u_is_the_probability_of_the_observed_pixel():
    z = torch.tensor([0.0, 2.0, -1.0])
    t = torch.tensor([1.0, 0.0, 0.0])
    expect = torch.tensor([math.log(0.5), math.log(1 - 1 / (1 + math.exp(-2))), math.log(1 - 1 / (1 + math.e))])
    torch.testing.assert_close(log_u_binary(z, t), expect)


def test_bad_arguments_raise_clear_errors():
    z, t = _data(shape=(2, 3))
    with pytest.raises(ValueError, match="reduction"):
        binary_uloss(z, t, reduction="avg")
    with pytest.raises(ValueError, match="target shape"):
        binary_uloss(z, t[:, :2])
    with pytest.raises(ValueError, match="sample_weight"):
        binary_uloss(z, t, sample_weight=torch.ones(3))
