"""Segmentation losses against float64 NumPy references written out pixel by pixel."""

import itertools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mixscale.losses import (
    CrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    TverskyLoss,
    cross_entropy_loss,
    dice_loss,
    focal_loss,
    tversky_loss,
)

SHAPES = {2: (5, 6), 3: (3, 4, 5)}


def make_case(spatial_dims, num_classes, ignored_fraction, seed=0, batch=2):
    gen = torch.Generator().manual_seed(seed)
    spatial = SHAPES[spatial_dims]
    pred = torch.randn(batch, num_classes, *spatial, generator=gen, dtype=torch.float64) * 2
    target = torch.randint(0, num_classes, (batch, *spatial), generator=gen)
    drop = torch.rand(batch, *spatial, generator=gen) < ignored_fraction
    target[drop] = -1
    return pred, target


# ---------- naive references: float64, explicit loops over labelled pixels ----------

def labelled_pixels(pred, target, ignore_index=-1):
    """Yield (logit vector, label) for every labelled pixel, as float64 NumPy."""
    p = pred.detach().double().numpy()
    t = target.numpy()
    for index in itertools.product(*(range(s) for s in t.shape)):
        if t[index] != ignore_index:
            yield p[(index[0], slice(None), *index[1:])], int(t[index])


def log_softmax(z):
    z = z - z.max()
    return z - math.log(np.exp(z).sum())


def ref_cross_entropy(pred, target, weight=None, smoothing=0.0):
    num_classes = pred.shape[1]
    w = np.ones(num_classes) if weight is None else np.asarray(weight, float)
    total, norm = 0.0, 0.0
    for z, t in labelled_pixels(pred, target):
        logp = log_softmax(z)
        total += -(1 - smoothing) * w[t] * logp[t] - smoothing / num_classes * (w * logp).sum()
        norm += w[t]
    return total / norm if norm > 0 else 0.0


def ref_focal(pred, target, gamma, alpha=None):
    values = []
    for z, t in labelled_pixels(pred, target):
        pt = math.exp(log_softmax(z)[t])
        a = 1.0 if alpha is None else alpha[t]
        values.append(-a * (1 - pt) ** gamma * math.log(pt))
    return float(np.mean(values)) if values else 0.0


def ref_counts(pred, target):
    num_classes = pred.shape[1]
    tp, fp, fn = np.zeros(num_classes), np.zeros(num_classes), np.zeros(num_classes)
    for z, t in labelled_pixels(pred, target):
        prob = np.exp(log_softmax(z))
        for c in range(num_classes):
            g = 1.0 if c == t else 0.0
            tp[c] += prob[c] * g
            fp[c] += prob[c] * (1 - g)
            fn[c] += (1 - prob[c]) * g
    return tp, fp, fn


def class_mean(losses, include_background=True, class_weights=None):
    w = np.ones(len(losses)) if class_weights is None else np.asarray(class_weights, float)
    if not include_background:
        w = w.copy()
        w[0] = 0
    return float((w * losses).sum() / w.sum())


def ref_dice(pred, target, smooth=1e-5, **mean_kw):
    tp, fp, fn = ref_counts(pred, target)
    dice = (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
    return class_mean(1 - dice, **mean_kw)


def ref_tversky(pred, target, alpha, beta, smooth=1e-5, **mean_kw):
    tp, fp, fn = ref_counts(pred, target)
    index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    return class_mean(1 - index, **mean_kw)


CASES = list(itertools.product([2, 3], [2, 4], [0.0, 0.4]))


@pytest.mark.parametrize("spatial_dims,num_classes,ignored", CASES)
def test_cross_entropy_matches_reference(spatial_dims, num_classes, ignored):
    pred, target = make_case(spatial_dims, num_classes, ignored)
    weight = np.linspace(0.5, 2.0, num_classes)
    got = cross_entropy_loss(pred, target)
    assert float(got) == pytest.approx(ref_cross_entropy(pred, target), rel=1e-10)
    got = cross_entropy_loss(pred, target, weight=weight.tolist(), label_smoothing=0.1)
    want = ref_cross_entropy(pred, target, weight=weight, smoothing=0.1)
    assert float(got) == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_matches_torch_mean(smoothing):
    pred, target = make_case(2, 4, 0.3)
    weight = torch.tensor([0.2, 1.0, 3.0, 0.7], dtype=torch.float64)
    want = F.cross_entropy(pred, target, weight=weight, ignore_index=-1,
                           label_smoothing=smoothing)
    got = cross_entropy_loss(pred, target, weight=weight, label_smoothing=smoothing)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("spatial_dims,num_classes,ignored", CASES)
def test_focal_matches_reference(spatial_dims, num_classes, ignored):
    pred, target = make_case(spatial_dims, num_classes, ignored, seed=1)
    alpha = list(np.linspace(0.25, 1.0, num_classes))
    for gamma, a in [(2.0, None), (0.5, alpha), (0.0, None)]:
        got = focal_loss(pred, target, gamma=gamma, alpha=a)
        assert float(got) == pytest.approx(ref_focal(pred, target, gamma, a), rel=1e-10)


def test_focal_with_gamma_zero_is_cross_entropy():
    pred, target = make_case(3, 4, 0.3, seed=2)
    torch.testing.assert_close(focal_loss(pred, target, gamma=0.0),
                               cross_entropy_loss(pred, target))


@pytest.mark.parametrize("spatial_dims,num_classes,ignored", CASES)
def test_dice_matches_reference(spatial_dims, num_classes, ignored):
    pred, target = make_case(spatial_dims, num_classes, ignored, seed=3)
    weights = list(np.linspace(1.0, 2.0, num_classes))
    assert float(dice_loss(pred, target)) == pytest.approx(ref_dice(pred, target), rel=1e-10)
    got = dice_loss(pred, target, smooth=0.5, include_background=False, class_weights=weights)
    want = ref_dice(pred, target, smooth=0.5, include_background=False, class_weights=weights)
    assert float(got) == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("spatial_dims,num_classes,ignored", CASES)
def test_tversky_matches_reference(spatial_dims, num_classes, ignored):
    pred, target = make_case(spatial_dims, num_classes, ignored, seed=4)
    for alpha, beta in [(0.3, 0.7), (1.0, 0.0), (0.5, 0.5)]:
        got = tversky_loss(pred, target, alpha=alpha, beta=beta)
        want = ref_tversky(pred, target, alpha, beta)
        assert float(got) == pytest.approx(want, rel=1e-10)


def test_tversky_with_half_half_is_dice():
    pred, target = make_case(2, 4, 0.3, seed=5)
    # same formula once the smoothing term is scaled: T(s) = Dice(2 s)
    torch.testing.assert_close(tversky_loss(pred, target, smooth=0.3),
                               dice_loss(pred, target, smooth=0.6), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(tversky_loss(pred, target), dice_loss(pred, target),
                               rtol=1e-6, atol=1e-6)


def test_dice_is_zero_for_a_perfect_prediction_and_ignores_unlabelled():
    target = torch.tensor([[[0, 1, 2], [2, -1, -1]]])
    pred = F.one_hot(target.clamp(min=0), 3).movedim(-1, 1).double() * 100
    pred[0, :, 1, 1:] = torch.tensor([0.0, 0.0, 100.0])[:, None]  # wrong, but unlabelled
    assert float(dice_loss(pred, target)) < 1e-9
    assert float(tversky_loss(pred, target, alpha=0.2, beta=0.8)) < 1e-9


LOSSES = [cross_entropy_loss, dice_loss, focal_loss, tversky_loss]


@pytest.mark.parametrize("loss_fn", LOSSES)
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_ignored_pixels_get_exactly_zero_gradient(loss_fn, spatial_dims):
    pred, target = make_case(spatial_dims, 3, 0.5, seed=6)
    ignored = (target == -1).unsqueeze(1).expand_as(pred)
    pred = pred.clone()
    pred[ignored] = float("nan")  # garbage where unlabelled must change nothing
    pred.requires_grad_(True)
    loss = loss_fn(pred, target)
    (grad,) = torch.autograd.grad(loss, pred)
    assert torch.isfinite(loss)
    assert torch.all(grad[ignored] == 0)
    assert torch.isfinite(grad).all() and grad[~ignored].abs().sum() > 0


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_changing_ignored_logits_changes_nothing(loss_fn):
    pred, target = make_case(2, 4, 0.5, seed=7)
    other = pred.clone()
    other[(target == -1).unsqueeze(1).expand_as(pred)] = 1e4
    torch.testing.assert_close(loss_fn(pred, target), loss_fn(other, target), rtol=0, atol=0)


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_all_ignored_gives_connected_zero(loss_fn):
    pred = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), -1)
    loss = loss_fn(pred, target)
    assert float(loss.detach()) == 0.0
    assert loss.grad_fn is not None
    loss.backward()
    assert torch.all(pred.grad == 0)


def test_all_ignored_with_class_weights_gives_connected_zero():
    pred = torch.randn(1, 2, 3, 3, requires_grad=True)
    target = torch.full((1, 3, 3), -1)
    loss = cross_entropy_loss(pred, target, weight=[1.0, 2.0])
    loss.backward()
    assert float(loss.detach()) == 0.0 and torch.all(pred.grad == 0)


@pytest.mark.parametrize("loss_fn,kwargs", [
    (dice_loss, {"smooth": 0.1, "class_weights": [1.0, 2.0, 0.5]}),
    (focal_loss, {"gamma": 2.0, "alpha": [0.2, 0.3, 0.5]}),
    (tversky_loss, {"alpha": 0.3, "beta": 0.7, "smooth": 0.1}),
    (cross_entropy_loss, {"label_smoothing": 0.1}),
])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_gradcheck(loss_fn, kwargs, spatial_dims):
    pred, target = make_case(spatial_dims, 3, 0.3, seed=8, batch=1)
    pred = pred[..., :3, :3].contiguous().requires_grad_(True)
    target = target[..., :3, :3].contiguous()
    assert torch.autograd.gradcheck(lambda p: loss_fn(p, target, **kwargs), (pred,))


@pytest.mark.parametrize("fn,module,kwargs", [
    (cross_entropy_loss, CrossEntropyLoss, {"weight": [1.0, 0.5, 2.0], "label_smoothing": 0.05}),
    (dice_loss, DiceLoss, {"smooth": 1.0, "include_background": False}),
    (focal_loss, FocalLoss, {"gamma": 1.5, "alpha": [0.2, 0.3, 0.5]}),
    (tversky_loss, TverskyLoss, {"alpha": 0.2, "beta": 0.8, "class_weights": [1, 2, 3]}),
])
def test_function_equals_module(fn, module, kwargs):
    pred, target = make_case(3, 3, 0.3, seed=9)
    pred, target = pred.float(), target.clone()
    target[target == -1] = 255
    kwargs = {"ignore_index": 255, **kwargs}
    torch.testing.assert_close(module(**kwargs)(pred, target), fn(pred, target, **kwargs))


def test_module_weights_follow_dtype_and_stay_out_of_state_dict():
    loss = CrossEntropyLoss(weight=[1.0, 2.0])
    assert "weight" not in loss.state_dict()
    pred, target = make_case(2, 2, 0.2)
    assert loss(pred, target).dtype == torch.float64


def test_half_precision_logits_are_upcast():
    pred, target = make_case(2, 3, 0.2, seed=10)
    loss = dice_loss(pred.half(), target)
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(float(dice_loss(pred, target)), abs=1e-2)


# ---------- errors ----------

@pytest.mark.parametrize("loss_fn", LOSSES)
def test_label_out_of_range_is_named(loss_fn):
    pred = torch.randn(1, 3, 4, 4)
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[0, 1, 1] = 3
    with pytest.raises(ValueError, match=r"target contains label 3, outside 0\.\.2"):
        loss_fn(pred, target)
    target[0, 1, 1] = -2
    with pytest.raises(ValueError, match=r"label -2.*ignore_index=-1"):
        loss_fn(pred, target)


@pytest.mark.parametrize("loss_fn", LOSSES)
def test_shape_and_dtype_errors(loss_fn):
    pred = torch.randn(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"target shape \(2, 4, 5\) does not match pred"):
        loss_fn(pred, torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"squeeze\(1\)"):
        loss_fn(pred, torch.zeros(2, 1, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"target must be an integer label tensor.*float32"):
        loss_fn(pred, torch.zeros(2, 4, 4))
    with pytest.raises(TypeError, match=r"pred must be a floating-point tensor"):
        loss_fn(pred.long(), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"2 or 3 spatial dims.*\(2, 3, 4\)"):
        loss_fn(pred[..., 0], torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"at least 2 channels.*C=1"):
        loss_fn(pred[:, :1], torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(TypeError, match=r"target must be a torch.Tensor, got ndarray"):
        loss_fn(pred, np.zeros((2, 4, 4), dtype=int))


def test_option_errors():
    pred, target = make_case(2, 3, 0.2)
    with pytest.raises(ValueError, match=r"weight must hold one weight per class \(3"):
        cross_entropy_loss(pred, target, weight=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"alpha must be finite and >= 0"):
        focal_loss(pred, target, alpha=[1.0, -1.0, 1.0])
    with pytest.raises(TypeError, match=r"alpha must be a sequence of 3 per-class weights.*0\.25"):
        focal_loss(pred, target, alpha=0.25)
    with pytest.raises(ValueError, match=r"label_smoothing=1\.5 is not allowed; expected a finite number >= 0\.0 and <= 1\.0"):
        cross_entropy_loss(pred, target, label_smoothing=1.5)
    with pytest.raises(ValueError, match=r"gamma=-1 is not allowed; expected a finite number >= 0\.0"):
        FocalLoss(gamma=-1)
    with pytest.raises(ValueError, match=r"smooth=-0\.1 is not allowed; expected a finite number >= 0\.0"):
        dice_loss(pred, target, smooth=-0.1)
    with pytest.raises(ValueError, match=r"beta=-1 is not allowed; expected a finite number >= 0\.0"):
        TverskyLoss(beta=-1)
    with pytest.raises(ValueError, match=r"class_weights leave no class"):
        dice_loss(pred, target, include_background=False, class_weights=[1.0, 0.0, 0.0])
    with pytest.raises(TypeError, match=r"include_background='no' is not allowed; expected True or False"):
        DiceLoss(include_background="no")
    with pytest.raises(TypeError, match=r"ignore_index=1\.5 is not allowed; expected an integer"):
        DiceLoss(ignore_index=1.5)
