"""The loss seam (losses/training.py): what a training loop gets back from AppliedLoss, checked at known answers:
the kept share of TCE (an exact count), of random_drop (a binomial share), the threshold it records, per-chain
resolution of an adaptive gamma, and one mask for all closed-form refits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from collapselab.losses import AppliedLoss, LossRecord, get_uloss
from collapselab.losses import functional as LF


def test_targets_equal_the_functional_loss_and_the_kept_share_is_the_exact_count():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 9, 5, generator=g) * 2
    t = torch.randint(0, 5, (6, 9), generator=g)
    t[0, :4] = -100  # ignored targets count nowhere
    applied = AppliedLoss(get_uloss("tce", gamma=0.4))
    applied.start_epoch()
    per = applied.targets(x, t, class_dim=-1)
    torch.testing.assert_close(per, LF.truncated_cross_entropy(x, t, gamma=0.4, reduction="none", class_dim=-1))
    u = torch.softmax(x, -1).gather(-1, t.clamp_min(0)[..., None])[..., 0]
    valid = t != -100
    record = applied.record()
    assert record.kept == pytest.approx(int(((u <= 0.4) & valid).sum()) / int(valid.sum()), abs=1e-12)
    assert record.gamma == 0.4 and record.loss == get_uloss("tce", gamma=0.4)


def test_focal_records_no_threshold_and_cross_entropy_a_threshold_of_one():
    assert AppliedLoss(get_uloss("focal", gamma=2.0)).record().gamma is None
    assert LossRecord.unweighted().gamma == 1.0 and LossRecord.unweighted().kept == 1.0


def test_random_drop_keeps_one_minus_q_of_the_pixels_drawn_from_its_generator():
    logits = torch.randn(50, 400, generator=torch.Generator().manual_seed(1))
    x = (torch.rand(50, 400, generator=torch.Generator().manual_seed(2)) < 0.5).float()
    runs = []
    for _ in range(2):
        applied = AppliedLoss(get_uloss("random_drop", q=0.3), generator=torch.Generator().manual_seed(9))
        applied.start_epoch()
        runs.append(applied.pixels(logits, x))
        kept = applied.record().kept
        assert abs(kept - 0.7) <= 4 * np.sqrt(0.7 * 0.3 / 20_000)  # 4 binomial SE
    torch.testing.assert_close(runs[0], runs[1])  # the same generator, the same mask


def test_an_adaptive_gamma_needs_the_clip_set_and_is_resolved_per_chain():
    applied = AppliedLoss(get_uloss("tce", gamma={"quantile": 0.25}))
    with pytest.raises(ValueError, match="follows the model"):
        applied.start_epoch()
    u = np.linspace(0.01, 0.99, 100)
    assert applied.start_epoch(lambda: u).gamma == pytest.approx(np.quantile(u, 0.75))
    chains = AppliedLoss(get_uloss("tce", gamma={"quantile": 0.5}), chains=2)
    w = chains.chain_weights(np.stack([u, u**2]))
    assert [r.gamma for r in chains.records()] == pytest.approx([np.quantile(u, 0.5), np.quantile(u**2, 0.5)])
    np.testing.assert_allclose(w.mean(axis=1), [0.5, 0.5])


def test_closed_form_refits_keep_one_random_mask_for_the_whole_fit():
    applied = AppliedLoss(get_uloss("random_drop", q=0.5), generator=np.random.default_rng(0), chains=3,
                          fixed_mask=True)
    u = np.random.default_rng(1).random((3, 200))
    first = applied.chain_weights(u)
    np.testing.assert_array_equal(first, applied.chain_weights(u[:, ::-1].copy()))  # the mask, not the u
    assert set(np.unique(first)) == {0.0, 1.0}
