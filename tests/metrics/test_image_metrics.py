"""Image metrics against scikit-image and NumPy."""

import json
import math

import numpy as np
import pytest
import torch
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from mixscale.metrics import image_report, mae, mse, pearson, psnr, ssim


def image_pair(shape, seed=0):
    """A smooth image and a noisy copy, so SSIM lands well inside (0, 1)."""
    rng = np.random.default_rng(seed)
    clean = ndimage.gaussian_filter(rng.random(shape), 2.0)
    clean = (clean - clean.min()) / (clean.max() - clean.min())
    return clean + 0.1 * rng.standard_normal(shape), clean


def window_inside(shape, win_size, unlabelled):
    """Pixels at least win_size // 2 from the border whose window has no unlabelled pixel."""
    pad = win_size // 2
    keep = np.zeros(shape, dtype=bool)
    keep[tuple(slice(pad, s - pad) for s in shape)] = True
    for index in zip(*np.nonzero(keep)):
        window = tuple(slice(i - pad, i + pad + 1) for i in index)
        keep[index] = not unlabelled[window].any()
    return keep


@pytest.mark.parametrize("shape", [(33, 41), (11, 13, 15)])
def test_psnr_mse_mae_against_references(shape):
    pred, target = image_pair(shape)
    assert psnr(pred, target, data_range=1.0) == pytest.approx(
        peak_signal_noise_ratio(target, pred, data_range=1.0), rel=1e-12)
    assert mse(pred, target) == pytest.approx(np.mean((pred - target) ** 2), rel=1e-12)
    assert mae(pred, target) == pytest.approx(np.mean(np.abs(pred - target)), rel=1e-12)


def test_nan_target_and_mask_are_skipped():
    pred, target = image_pair((20, 24), seed=1)
    target[:5] = np.nan
    mask = np.zeros((1, 24), dtype=bool)
    mask[0, ::2] = True  # broadcast over rows
    use = ~np.isnan(target) & np.broadcast_to(mask, target.shape)
    assert mse(pred, target, mask=mask) == pytest.approx(np.mean((pred[use] - target[use]) ** 2))
    assert psnr(pred, target, data_range=2.0, mask=mask) == pytest.approx(
        peak_signal_noise_ratio(target[use], pred[use], data_range=2.0))
    assert pearson(pred, target, mask=mask) == pytest.approx(
        np.corrcoef(pred[use], target[use])[0, 1], rel=1e-12)


def test_pearson_against_numpy_and_degenerate_cases():
    pred, target = image_pair((7, 8, 9), seed=2)
    assert pearson(pred, target) == pytest.approx(np.corrcoef(pred.ravel(), target.ravel())[0, 1])
    assert math.isnan(pearson(np.ones((4, 4)), target[0, :4, :4]))
    assert math.isnan(pearson([1.0], [2.0]))


def test_perfect_and_empty():
    _, target = image_pair((16, 16))
    assert psnr(target, target, data_range=1.0) == math.inf
    assert ssim(target, target, data_range=1.0) == pytest.approx(1.0)
    nothing = np.full((16, 16), np.nan)
    assert math.isnan(psnr(target, nothing, data_range=1.0))
    assert math.isnan(ssim(target, nothing, data_range=1.0))


@pytest.mark.parametrize("shape", [(33, 41), (11, 13, 15)])
@pytest.mark.parametrize("win_size", [None, 5])
def test_ssim_matches_skimage_uniform(shape, win_size):
    pred, target = image_pair(shape, seed=3)
    want = structural_similarity(target, pred, data_range=1.0, win_size=win_size)
    assert ssim(pred, target, data_range=1.0, win_size=win_size) == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize("shape", [(33, 41), (13, 14, 15)])
def test_ssim_matches_skimage_gaussian(shape):
    pred, target = image_pair(shape, seed=4)
    want = structural_similarity(target, pred, data_range=1.0, gaussian_weights=True,
                                 sigma=1.5, use_sample_covariance=False)
    assert ssim(pred, target, data_range=1.0, gaussian=True) == pytest.approx(want, rel=1e-10)


def test_ssim_channel_axis_matches_skimage():
    pred, target = image_pair((20, 3, 22), seed=5)
    want = structural_similarity(target, pred, data_range=1.0, channel_axis=1)
    assert ssim(pred, target, data_range=1.0, channel_axis=1) == pytest.approx(want, rel=1e-10)


def test_ssim_mask_averages_the_skimage_map():
    pred, target = image_pair((30, 31), seed=6)
    mask = np.random.default_rng(0).random(target.shape) < 0.5
    _, full_map = structural_similarity(target, pred, data_range=1.0, full=True)
    keep = mask & window_inside(target.shape, 7, np.zeros_like(mask))
    assert ssim(pred, target, data_range=1.0, mask=mask) == pytest.approx(
        full_map[keep].mean(), rel=1e-10)


@pytest.mark.parametrize("shape", [(30, 31), (16, 13, 14)])
def test_ssim_skips_windows_touching_unlabelled_pixels(shape):
    pred, target = image_pair(shape, seed=7)
    # the reference map sees the true values; windows that count never reach them
    _, full_map = structural_similarity(target, pred, data_range=1.0, full=True)
    unlabelled = np.zeros(shape, dtype=bool)
    unlabelled[(slice(0, 5),) + (slice(2, 8),) * (len(shape) - 1)] = True
    holed = np.where(unlabelled, np.nan, target)
    keep = window_inside(shape, 7, unlabelled)
    assert 0 < keep.sum() < window_inside(shape, 7, np.zeros(shape, dtype=bool)).sum()
    assert ssim(pred, holed, data_range=1.0) == pytest.approx(full_map[keep].mean(), rel=1e-10)


def test_image_report_and_torch_input():
    pred, target = image_pair((24, 25), seed=8)
    report = image_report(torch.from_numpy(pred).float(), target, data_range=1.0)
    json.dumps(report)
    assert report["num_pixels"] == target.size
    assert report["psnr"] == pytest.approx(psnr(pred, target, data_range=1.0), rel=1e-5)
    assert report["ssim"] == pytest.approx(
        structural_similarity(target, pred, data_range=1.0), rel=1e-5)
    assert report["pearson"] == pytest.approx(np.corrcoef(pred.ravel(), target.ravel())[0, 1])
    assert report["mse"] == pytest.approx(mse(pred, target), rel=1e-5)
    assert report["mae"] == pytest.approx(mae(pred, target), rel=1e-5)


def test_errors():
    image = np.zeros((16, 16))
    with pytest.raises(ValueError, match=r"data_range is required"):
        psnr(image, image)
    with pytest.raises(ValueError, match=r"data_range is required"):
        ssim(image, image)
    with pytest.raises(ValueError, match=r"data_range=0 is not allowed; expected a finite number > 0"):
        psnr(image, image, data_range=0)
    with pytest.raises(ValueError, match=r"pred shape \(16, 15\) does not match target shape"):
        mse(image[:, :15], image)
    with pytest.raises(ValueError, match=r"win_size=6 is not allowed; expected an odd integer >= 3"):
        ssim(image, image, data_range=1.0, win_size=6)
    with pytest.raises(ValueError, match=r"win_size 17 exceeds the smallest image side"):
        ssim(image, image, data_range=1.0, win_size=17)
    with pytest.raises(ValueError, match=r"ssim needs a 2D or 3D image.*\(2, 2, 16, 16\)"):
        ssim(np.zeros((2, 2, 16, 16)), np.zeros((2, 2, 16, 16)), data_range=1.0)
    with pytest.raises(TypeError, match=r"mask must be a bool array"):
        mae(image, image, mask=np.ones((16, 16)))
    with pytest.raises(ValueError, match=r"mask shape \(3,\) cannot be broadcast"):
        mae(image, image, mask=np.ones(3, dtype=bool))
    with pytest.raises(TypeError, match=r"pred must be a real-valued array, got dtype complex128"):
        mse(image.astype(complex), image)
