"""Streaming ensemble statistics against torch's own reductions, and the exact zeros of agreement."""

import torch

from mixscale.uq import MemberStatistics, entropy, lower_bound_mask


def test_streaming_mean_and_std_equal_torch():
    gen = torch.Generator().manual_seed(0)
    members = torch.softmax(torch.randn(7, 3, 9, 8, generator=gen), 1)
    r = MemberStatistics()
    for m in members:
        r.update(m)
    assert torch.allclose(r.mean, members.double().mean(0), atol=1e-6)
    assert torch.allclose(r.std(), members.double().std(0, unbiased=True), atol=1e-6)
    ref_mi = entropy(members.double().mean(0)) - torch.stack([entropy(m.double()) for m in members]).mean(0)
    assert torch.allclose(r.mutual_information(), ref_mi.clamp(min=0), atol=1e-9)
    assert (r.mutual_information() > 0).all()  # members that disagree have a positive MI


def test_identical_members_give_exactly_zero_spread_and_mutual_information():
    p = torch.softmax(torch.randn(4, 5, 6), 0)
    r = MemberStatistics()
    for _ in range(5):
        r.update(p)
    assert torch.count_nonzero(r.std()) == 0 and torch.count_nonzero(r.mutual_information()) == 0
    assert torch.equal(r.mean, p.double())


def test_spread_does_not_shrink_with_more_members_of_the_same_kind():
    """std, not a standard error: 4 and 400 draws from one distribution have about the same spread."""
    gen = torch.Generator().manual_seed(1)
    small, large = MemberStatistics(), MemberStatistics()
    for i in range(400):
        x = 0.5 + 0.1 * torch.randn(1, 2000, generator=gen)
        (small.update(x, probabilities=False) if i < 4 else None)
        large.update(x, probabilities=False)
    assert abs(float(small.std().mean()) - 0.1) < 0.02 and abs(float(large.std().mean()) - 0.1) < 0.005


def test_lower_bound_mask_is_the_fibre_rule():
    mean, std = torch.tensor([0.9, 0.7, 0.6]), torch.tensor([0.1, 0.1, 0.05])
    assert lower_bound_mask(mean, std, k=1.0, threshold=0.55).tolist() == [True, True, False]
