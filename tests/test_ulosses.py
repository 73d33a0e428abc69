"""u-loss definitions: w(u) = -u dl/du, boundaries, directions (numpy forms)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from collapselab.losses import ULOSS_CLASSES, get_uloss

LOSSES = [get_uloss("ce"), get_uloss("tce", gamma=0.7), get_uloss("focal", gamma=2.0),
          get_uloss("focal", gamma=0.5), get_uloss("linear", beta=0.8), get_uloss("poly1", epsilon=1.0),
          get_uloss("gce", q=0.7), get_uloss("sce"), get_uloss("agce", a=0.6, q=0.6), get_uloss("ael", a=2.5),
          get_uloss("vce", a=0.5), get_uloss("random_drop", q=0.25)]


@pytest.mark.parametrize("loss", LOSSES, ids=lambda loss: loss.label())
def test_weight_is_minus_u_times_derivative(loss):
    """w(u) equals -u dl/du by central differences in log u (away from TCE's jump), to 1e-6."""
    log_u = np.log(np.linspace(0.01, 0.99, 197))
    if loss.name == "tce":
        log_u = log_u[np.abs(np.exp(log_u) - loss.gamma) > 0.02]
    h = 1e-6
    # dl/dlog u = u dl/du, so w = -dl/dlog u
    numeric = -(loss.value(log_u + h) - loss.value(log_u - h)) / (2 * h)
    np.testing.assert_allclose(loss.weight(log_u), numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("loss", LOSSES, ids=lambda loss: loss.label())
def test_finite_at_the_boundaries(loss):
    """No NaN/inf for u -> 0 (log u = -inf or -1e4) and u = 1 (log u = 0 or -1e-300)."""
    log_u = np.array([-np.inf, -1e4, -50.0, -1e-12, -1e-300, 0.0])
    assert np.all(np.isfinite(loss.weight(log_u)))
    assert np.all(np.isfinite(loss.value(log_u)))
    assert np.all(np.isfinite(loss.weight_u(np.array([0.0, 1e-300, 0.5, 1.0]))))


def test_weights_at_the_ends_and_directions():
    """'confident' losses weigh u near 1 less than u near 0 and fall monotonically on [0.5, 1);
    'unconfident' ones the reverse (focal's weight first rises a little for small u: not monotone on (0, 1))."""
    u = np.linspace(0.5, 0.999, 300)
    ends = np.array([0.001, 0.999])
    for loss in LOSSES:
        d = np.diff(loss.weight_u(u))
        lo, hi = loss.weight_u(ends)
        if loss.direction == "confident":
            assert np.all(d <= 1e-12) and hi < lo, loss.label()
        elif loss.direction == "unconfident":
            assert np.all(d >= -1e-12) and hi > lo, loss.label()
        else:
            assert hi == lo
    assert get_uloss("focal", gamma=2.0).weight_u(np.array([1.0]))[0] == 0.0
    assert get_uloss("gce").weight_u(np.array([0.0]))[0] < 1e-200  # u = 0 is clamped to the smallest normal


def test_tce_mask_and_gamma_one_is_ce():
    tce = get_uloss("tce", gamma=0.9)
    u = np.array([0.5, 0.9, np.nextafter(0.9, 1), 0.999999999])
    np.testing.assert_array_equal(tce.weight_u(u), [1.0, 1.0, 0.0, 0.0])
    ce, tce1 = get_uloss("ce"), get_uloss("tce", gamma=1.0)
    log_u = np.log(np.array([1e-8, 0.3, 1 - 1e-15, 1.0]))
    np.testing.assert_array_equal(tce1.value(log_u), ce.value(log_u))
    assert tce1.is_ce and not tce.is_ce


def test_every_registered_loss_is_tested():
    assert {type(loss) for loss in LOSSES} == set(ULOSS_CLASSES)


def test_quantile_and_dynamic_gamma_drop_the_stated_shares_on_a_fixed_clip_set():
    """{quantile: q} drops the most confident q share of the clip set's targets; {dynamic: k} sets gamma to the
    mean + k std (population) of the groups' mean confidences, ForTIFAI's rule, computed by hand here."""
    rng = np.random.default_rng(0)
    clip = rng.beta(2, 5, size=(40, 50))  # 40 groups (clip batches) of 50 target confidences, no ties
    for q in (0.1, 0.25, 0.5):
        tce = get_uloss("tce", gamma={"quantile": q})
        g = tce.resolve(clip.reshape(-1))
        assert np.mean(clip > g) == pytest.approx(q, abs=1 / clip.size)
        assert np.mean(1 - tce.at(g).weight_u(clip)) == pytest.approx(q, abs=1 / clip.size)
    means = clip.mean(axis=1)
    for k in (0.0, 1.0, 2.0):
        dyn = get_uloss("tce", gamma={"dynamic": k})
        want = means.mean() + k * np.sqrt(np.mean((means - means.mean()) ** 2))
        assert dyn.resolve(clip, len(clip)) == pytest.approx(want, abs=1e-12)
    # called directly (per batch), an adaptive TCE resolves gamma from the confidences it is given
    u = np.linspace(0.005, 0.995, 200)
    assert np.mean(get_uloss("tce", gamma={"quantile": 0.25}).weight_u(u)) == pytest.approx(0.75, abs=0.01)
    # the seam resolves it per chain for the closed-form families, and records what each chain kept
    from collapselab.losses import AppliedLoss

    two = np.stack([u, u ** 3])
    applied = AppliedLoss(get_uloss("tce", gamma={"quantile": 0.25}), chains=2)
    w = applied.chain_weights(two)
    np.testing.assert_allclose(w.mean(axis=1), [0.75, 0.75], atol=0.01)
    gammas = [r.gamma for r in applied.records()]
    assert gammas[0] == pytest.approx(np.quantile(u, 0.75)) and gammas[1] == pytest.approx(np.quantile(u ** 3, 0.75))
    assert [r.kept for r in applied.records()] == pytest.approx([0.75, 0.75], abs=0.01)
    assert get_uloss("tce", gamma={"quantile": 0.25}).adaptive and not get_uloss("tce", gamma=0.5).adaptive


def test_random_drop_keeps_its_share_at_random_with_tces_normalisation():
    """random_drop(q) keeps each target with probability 1 - q whatever its u (within 4 binomial SE) and, like
    TCE's default, averages over all targets (the dropped ones count in the denominator)."""
    loss = get_uloss("random_drop", q=0.25)
    u = np.concatenate([np.full(20_000, 0.01), np.full(20_000, 0.99)])
    m = loss.keep_mask(u, np.random.default_rng(1))
    se = np.sqrt(0.25 * 0.75 / 20_000)
    assert abs(m[:20_000].mean() - 0.75) < 4 * se and abs(m[20_000:].mean() - 0.75) < 4 * se  # u-independent
    assert set(np.unique(m)) == {0.0, 1.0} and loss.keep_share == 0.75
    np.testing.assert_array_equal(loss.weight_u(u), 1.0)  # the mask is separate: w(u) itself is CE's
    assert (loss.keep_mask(u, np.random.default_rng(1)) == m).all()
    torch = pytest.importorskip("torch")
    from collapselab.losses.functional import uloss, weigh_for

    logits = torch.randn(4000, 7, generator=torch.Generator().manual_seed(0))
    target = torch.randint(0, 7, (4000,), generator=torch.Generator().manual_seed(1))
    got = uloss(logits, target, weigh_for(loss, generator=torch.Generator().manual_seed(2)))
    mask = loss.keep_mask(torch.zeros(4000), torch.Generator().manual_seed(2))
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    assert float(got) == pytest.approx(float((ce * mask).sum() / 4000), rel=1e-6)  # normalised over all targets
    tce = uloss(logits, target, weigh_for(get_uloss("tce", gamma=0.3)))
    kept = torch.softmax(logits, 1).gather(1, target[:, None])[:, 0] <= 0.3
    assert float(tce) == pytest.approx(float((ce * kept).sum() / 4000), rel=1e-6)  # TCE: the same normalisation


@pytest.mark.parametrize("name, params", [("tce", {"gamma": 0.0}), ("tce", {"gamma": 1.5}), ("gce", {"q": 0}),
                                          ("focal", {"gamma": -1}), ("vce", {"a": 0}), ("nope", {}),
                                          ("tce", {"gama": 0.5}), ("tce", {"gamma": {"quantile": 1.0}}),
                                          ("tce", {"gamma": {"share": 0.2}}), ("random_drop", {"q": 1.0})])
def test_invalid_parameters_are_rejected(name, params):
    with pytest.raises(ValidationError):
        get_uloss(name, **params)
