"""Split conformal prediction and risk control: exact quantiles, coverage that holds, clear refusals."""

import math
import warnings
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy import stats

from mixscale.uq import (ConformalWarning, class_conditional_quantiles, class_scores, conformal_quantile,
                         prediction_sets, quantile_rank, risk_control_threshold, set_bitmask, true_class_scores)


def _k(n, alpha):
    """The reference rank in exact rational arithmetic: ceil((n + 1)(1 - alpha))."""
    return math.ceil((n + 1) * (1 - Fraction(str(alpha))))


def test_quantile_is_the_exact_order_statistic_for_every_n_and_alpha():
    gen = torch.Generator().manual_seed(0)
    pool = torch.rand(2000, generator=gen, dtype=torch.float64)
    for alpha in (0.01, 0.05, 0.1, 0.2):
        for n in range(1, 2001):
            s, k = pool[:n], _k(n, alpha)
            assert quantile_rank(n, alpha) == k
            if k > n:
                with pytest.warns(ConformalWarning, match="too few"):
                    assert math.isinf(conformal_quantile(s, alpha))
            else:
                assert float(conformal_quantile(s, alpha)) == sorted(s.tolist())[k - 1], (n, alpha)


def test_saturated_softmax_keeps_coverage():
    """95 % of calibration pixels at p_y = 1.0 exactly in float32: LAC scores tie at 0, sets stay non-empty."""
    gen = torch.Generator().manual_seed(1)

    def sample(n):
        logits = torch.randn(3, n, generator=gen)
        y = torch.randint(0, 3, (n,), generator=gen)
        saturated = torch.rand(n, generator=gen) < 0.95
        logits[y[saturated], torch.nonzero(saturated)[:, 0]] += 40.0  # a gap far beyond float32's ~17
        return torch.softmax(logits, 0), y

    probs, y = sample(20000)
    assert (probs.gather(0, y[None])[0] == 1.0).float().mean() > 0.94
    alpha = 0.1
    q = conformal_quantile(true_class_scores(probs, y), alpha)
    assert float(q) == 0.0  # the 90 % quantile of the scores is one of the ties at 0
    test_p, test_y = sample(20000)
    sets = prediction_sets(test_p, q)
    covered = sets.gather(0, test_y[None])[0]
    assert covered.double().mean() >= 1 - alpha
    saturated = test_p.gather(0, test_y[None])[0] == 1.0
    assert covered[saturated].all()  # a tie at the threshold is in the set (<=)
    strict = (1 - test_p.double()) < float(q)  # the strict rule p > 1 - q: empty sets, coverage 0
    assert not strict.any()


def _toy_scores(splits, size, gen):
    """An exchangeable toy model: Dirichlet probabilities, labels drawn from them, LAC scores of the truth."""
    p = torch.distributions.Dirichlet(torch.ones(4)).sample((splits, size))
    y = torch.multinomial(p.reshape(-1, 4), 1, generator=gen).reshape(splits, size)
    return 1 - p.gather(2, y[..., None])[..., 0].double()


def test_coverage_over_2000_splits_is_k_over_n_plus_1_and_beta_binomial():
    torch.manual_seed(2)
    gen = torch.Generator().manual_seed(2)
    n, m, alpha, splits = 50, 100, 0.1, 2000
    scores = _toy_scores(splits, n + m, gen)
    k = _k(n, alpha)
    q = torch.kthvalue(scores[:, :n], k, dim=1).values
    for i in range(3):  # the batched order statistic is the function's own result
        assert float(q[i]) == float(conformal_quantile(scores[i, :n], alpha))
    covered = (scores[:, n:] <= q[:, None]).sum(1).numpy()
    coverage = covered / m
    se = coverage.std(ddof=1) / np.sqrt(splits)
    assert abs(coverage.mean() - k / (n + 1)) < 3 * se
    law = stats.betabinom(m, k, n + 1 - k)
    # KS distance between the two step CDFs on the integers (scipy's kstest misreads ties of discrete data);
    # the KS law's p-value is then conservative for a discrete law
    support = np.arange(m + 1)
    empirical = np.searchsorted(np.sort(covered), support, side="right") / splits
    distance = np.abs(empirical - law.cdf(support)).max()
    assert stats.kstwo.sf(distance, splits) > 0.01
    assert distance > 0  # a real comparison, not two identical arrays


def test_class_conditional_coverage_per_class_and_the_min_count_guard():
    torch.manual_seed(3)
    gen = torch.Generator().manual_seed(3)
    p = torch.distributions.Dirichlet(torch.tensor([4.0, 1.0, 0.5])).sample((6000,)).T  # (K, N), classes unequal
    y = torch.multinomial(p.T, 1, generator=gen)[:, 0]
    cal, test = slice(0, 3000), slice(3000, None)
    q = class_conditional_quantiles(true_class_scores(p[:, cal], y[cal]), y[cal], num_classes=3, alpha=0.1)
    sets = prediction_sets(p[:, test], q)
    for c in range(3):
        mine = y[test] == c
        assert sets[c, mine].double().mean() >= 0.9 - 0.03  # per-class coverage (3000 test points)
    with pytest.warns(ConformalWarning, match="class 1 has 0 calibration pixels"):
        q2 = class_conditional_quantiles(torch.tensor([0.1, 0.2]), torch.tensor([0, 0]), num_classes=2, alpha=0.5)
    assert math.isinf(q2[1])


def test_aps_and_raps_scores_against_a_hand_computation():
    p = torch.tensor([[0.5], [0.3], [0.2]], dtype=torch.float64)  # one pixel, ranks 1, 2, 3
    assert class_scores(p, score="aps")[:, 0].tolist() == pytest.approx([0.5, 0.8, 1.0])
    raps = class_scores(p, score="raps", lam=0.1, k_reg=1)[:, 0].tolist()
    assert raps == pytest.approx([0.5, 0.8 + 0.1, 1.0 + 0.2])
    gen = torch.Generator().manual_seed(0)
    u = torch.rand((1,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    randomized = class_scores(p, score="aps", randomized=True, generator=gen)[:, 0]
    assert randomized.tolist() == pytest.approx((torch.tensor([0.5, 0.8, 1.0]) - u * p[:, 0]).tolist())
    assert prediction_sets(p, 0.8, score="aps")[:, 0].tolist() == [True, True, False]


def test_unlabelled_pixels_are_skipped_and_bad_labels_refused():
    p = torch.softmax(torch.randn(3, 4, 5), 0)
    y = torch.full((4, 5), -1)
    y[0, :3] = torch.tensor([0, 2, 1])
    s = true_class_scores(p, y)
    assert torch.allclose(s, 1 - torch.stack([p[0, 0, 0], p[2, 0, 1], p[1, 0, 2]]).double())
    with pytest.raises(ValueError, match="labels outside 0..2"):
        true_class_scores(p, torch.full((4, 5), 3))


def test_set_bitmask_bits_and_dtypes():
    sets = torch.tensor([[True, False], [True, True], [False, True]])
    mask = set_bitmask(sets)
    assert mask.dtype == np.uint8 and mask.tolist() == [0b011, 0b110]
    wide = set_bitmask(torch.ones(12, 1, dtype=torch.bool))
    assert wide.dtype == np.uint16 and int(wide[0]) == 2**12 - 1


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5])
def test_alpha_outside_the_open_unit_interval_is_refused(alpha):
    with pytest.raises(ValueError, match=f"alpha={alpha!r} is not allowed; expected a miscoverage level in"):
        conformal_quantile(torch.rand(10), alpha)


def _images(count, gen):
    """Exchangeable synthetic images: a probability map and a true mask drawn from it (16x16)."""
    logit = torch.randn(count, 16, 16, generator=gen) * 2
    p = torch.sigmoid(logit)
    mask = torch.rand(count, 16, 16, generator=gen) < p
    return p, mask


def _fnr(p, mask, lam):
    p = p.double()
    found = (p >= 1 - lam) & mask
    true = mask.sum((1, 2))
    return torch.where(true > 0, 1 - found.sum((1, 2)) / true.clamp(min=1), torch.zeros_like(true, dtype=p.dtype))


def test_risk_control_keeps_the_mean_false_negative_rate_over_500_splits():
    gen = torch.Generator().manual_seed(4)
    p, mask = _images(400, gen)
    alpha, n, rates = 0.1, 100, []
    for split in range(500):
        order = torch.randperm(400, generator=gen)
        cal, test = order[:n], order[n:]
        lam = risk_control_threshold(list(p[cal]), list(mask[cal]), alpha=alpha)
        assert 0 <= lam <= 1
        rates.append(float(_fnr(p[test], mask[test], lam).mean()))
    rates = np.asarray(rates)
    assert rates.mean() <= alpha + 3 * rates.std(ddof=1) / np.sqrt(len(rates))
    assert rates.mean() > alpha - 0.05  # and it is not trivially loose (lambda = 1 would give 0)


def test_risk_control_threshold_is_the_smallest_lambda_meeting_the_bound():
    gen = torch.Generator().manual_seed(5)
    p, mask = _images(30, gen)
    alpha = 0.2
    lam = risk_control_threshold(list(p), list(mask), alpha=alpha)
    bound = lambda x: 30 / 31 * float(_fnr(p, mask, x).mean()) + 1 / 31  # noqa: E731
    assert bound(lam) <= alpha
    assert bound(lam - 1e-9) > alpha  # a hair less and the bound fails: the infimum


def test_risk_control_with_too_few_images_warns_and_takes_everything():
    p, mask = _images(3, torch.Generator().manual_seed(6))
    with pytest.warns(ConformalWarning, match="too few"):
        assert risk_control_threshold(list(p), list(mask), alpha=0.1) == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match="as many masks"):
            risk_control_threshold(list(p), list(mask[:2]), alpha=0.1)
