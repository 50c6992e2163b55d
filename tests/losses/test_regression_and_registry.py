"""Regression losses, CombinedLoss and the registry."""

import numpy as np
import pytest
import torch

from mixscale.losses import (
    CombinedLoss,
    CrossEntropyLoss,
    DiceLoss,
    L1Loss,
    MSELoss,
    TverskyLoss,
    create_loss,
    cross_entropy_loss,
    dice_loss,
    l1_loss,
    list_losses,
    mse_loss,
)


def regression_case(shape, seed=0, nan_fraction=0.3):
    gen = torch.Generator().manual_seed(seed)
    pred = torch.randn(*shape, generator=gen, dtype=torch.float64)
    target = torch.randn(*shape, generator=gen, dtype=torch.float64)
    target[torch.rand(*shape, generator=gen) < nan_fraction] = float("nan")
    return pred, target


def ref_regression(pred, target, mask, power):
    p, t = pred.detach().numpy(), target.numpy()
    use = ~np.isnan(t)
    if mask is not None:
        use &= np.broadcast_to(mask.numpy(), t.shape)
    values = [abs(a - b) ** power for a, b, u in zip(p.ravel(), t.ravel(), use.ravel()) if u]
    return sum(values) / len(values) if values else 0.0


@pytest.mark.parametrize("shape", [(2, 3, 5, 6), (1, 2, 3, 4, 5)])
@pytest.mark.parametrize("fn,power", [(l1_loss, 1), (mse_loss, 2)])
def test_regression_matches_reference(shape, fn, power):
    pred, target = regression_case(shape)
    assert float(fn(pred, target)) == pytest.approx(ref_regression(pred, target, None, power))
    mask = torch.rand(shape[0], 1, *shape[2:], generator=torch.Generator().manual_seed(1)) < 0.5
    got = fn(pred, target, mask=mask)
    assert float(got) == pytest.approx(ref_regression(pred, target, mask, power), rel=1e-12)


@pytest.mark.parametrize("fn,module", [(l1_loss, L1Loss), (mse_loss, MSELoss)])
def test_regression_unlabelled_pixels_get_zero_gradient(fn, module):
    pred, target = regression_case((2, 1, 4, 4), seed=2)
    mask = torch.ones(2, 1, 4, 4, dtype=torch.bool)
    mask[:, :, 0] = False
    pred.requires_grad_(True)
    loss = fn(pred, target, mask=mask)
    (grad,) = torch.autograd.grad(loss, pred)
    unused = torch.isnan(target) | ~mask
    assert torch.all(grad[unused] == 0) and torch.all(grad[~unused] != 0)
    torch.testing.assert_close(module()(pred, target, mask=mask), loss)


@pytest.mark.parametrize("fn", [l1_loss, mse_loss])
def test_regression_all_unlabelled_gives_connected_zero(fn):
    pred = torch.randn(1, 1, 3, 3, requires_grad=True)
    loss = fn(pred, torch.full((1, 1, 3, 3), float("nan")))
    loss.backward()
    assert float(loss.detach()) == 0.0 and loss.grad_fn is not None and torch.all(pred.grad == 0)


def test_regression_errors():
    pred = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match=r"target shape \(1, 1, 4, 5\) does not match pred"):
        l1_loss(pred, torch.zeros(1, 1, 4, 5))
    with pytest.raises(TypeError, match=r"target must be a floating-point tensor"):
        mse_loss(pred, torch.zeros(1, 1, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"mask must be a bool torch.Tensor"):
        mse_loss(pred, pred, mask=torch.ones(1, 1, 4, 4))
    with pytest.raises(ValueError, match=r"mask shape \(3, 4\) cannot be broadcast"):
        mse_loss(pred, pred, mask=torch.ones(3, 4, dtype=torch.bool))


def test_combined_loss_is_weighted_sum():
    gen = torch.Generator().manual_seed(3)
    pred = torch.randn(2, 3, 5, 5, generator=gen)
    target = torch.randint(-1, 3, (2, 5, 5), generator=gen)
    loss = CombinedLoss([(CrossEntropyLoss(), 0.7), (DiceLoss(smooth=1.0), 2.0)])
    want = 0.7 * cross_entropy_loss(pred, target) + 2.0 * dice_loss(pred, target, smooth=1.0)
    torch.testing.assert_close(loss(pred, target), want)


def test_combined_loss_passes_mask_on():
    pred, target = regression_case((1, 1, 4, 4), seed=4)
    mask = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(5)) < 0.5
    loss = CombinedLoss([(L1Loss(), 1.0), (MSELoss(), 3.0)])
    want = l1_loss(pred, target, mask=mask) + 3.0 * mse_loss(pred, target, mask=mask)
    torch.testing.assert_close(loss(pred, target, mask=mask), want)


def test_combined_loss_errors():
    with pytest.raises(ValueError, match=r"at least one"):
        CombinedLoss([])
    with pytest.raises(TypeError, match=r"terms\[0\] must be a \(nn.Module, weight\) pair"):
        CombinedLoss([(dice_loss, 1.0)])
    with pytest.raises(ValueError, match=r"terms\[1\]\[1\]=-1\.0 is not allowed; expected a finite number >= 0"):
        CombinedLoss([(DiceLoss(), 1.0), (DiceLoss(), -1.0)])


def test_registry_names_and_single_losses():
    assert list_losses() == ["ce", "dice", "focal", "tversky", "l1", "mse"]
    loss = create_loss("tversky", alpha=0.3, beta=0.7, ignore_index=255)
    assert isinstance(loss, TverskyLoss)
    assert (loss.alpha, loss.beta, loss.ignore_index) == (0.3, 0.7, 255)
    assert isinstance(create_loss("mse"), MSELoss)


def test_registry_combination_routes_options():
    loss = create_loss({"ce": 1.0, "dice": 0.5}, ignore_index=7, smooth=2.0)
    assert isinstance(loss, CombinedLoss) and loss.weights == (1.0, 0.5)
    ce, dice = loss.terms
    assert ce.ignore_index == dice.ignore_index == 7 and dice.smooth == 2.0


def test_registry_errors():
    with pytest.raises(ValueError, match=r"unknown loss 'bce'; known losses: ce, dice, focal"):
        create_loss("bce")
    with pytest.raises(ValueError, match=r"unknown loss 'Dice'"):
        create_loss({"Dice": 1.0})
    with pytest.raises(TypeError, match=r"'l1' does not accept option\(s\) \['ignore_index'\]"):
        create_loss("l1", ignore_index=-1)
    with pytest.raises(TypeError, match=r"no loss in \['ce', 'l1'\] accepts option\(s\) \['gamma"):
        create_loss({"ce": 1.0, "l1": 1.0}, gamma=2.0)
    with pytest.raises(ValueError, match=r"spec\['dice'\]=nan is not allowed; expected a finite number >= 0"):
        create_loss({"dice": float("nan")})
    with pytest.raises(ValueError, match=r"spec mapping is empty"):
        create_loss({})
    with pytest.raises(TypeError, match=r"spec must be a loss name or a mapping"):
        create_loss(["dice"])
