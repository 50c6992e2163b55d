"""Patch sampling: label-centred draws, 2D from 3D, 3D, padding, reproducibility, errors."""

import numpy as np
import pytest

from mixscale.data import PatchSampler, open_image, write_image


def _coded_image(spatial, rng):
    """An image whose value encodes the flat pixel index, so a patch reveals its location."""
    return np.arange(int(np.prod(spatial)), dtype=np.float64).reshape((1, *spatial)) + rng.random()


def test_single_labelled_pixel_is_always_in_the_patch_centre():
    rng = np.random.default_rng(0)
    image = rng.normal(size=(2, 50, 61))
    label = np.full((50, 61), -1)
    label[3, 58] = 2  # near a corner: the window is shifted inside the image
    sampler = PatchSampler([image], [label], patch_shape=(9, 12), spatial_dims=2, label_fraction=1.0)
    for _ in range(30):
        loc = sampler.draw(rng)
        x, y = sampler.extract(loc)
        assert x.shape == (2, 9, 12) and y.shape == (9, 12) and y.dtype == np.int64
        assert (y == 2).sum() == 1 and (y != -1).sum() == 1
        assert loc.starts == (0, 61 - 12) and loc.centred
    label[3, 58], label[25, 30] = -1, 0
    sampler = PatchSampler([image], [label], patch_shape=(9, 12), spatial_dims=2, label_fraction=1.0)
    loc = sampler.draw(rng)
    assert loc.starts == (25 - 4, 30 - 6)
    np.testing.assert_array_equal(sampler.extract(loc)[0], image[:, 21:30, 24:36].astype(np.float32))


def test_label_fraction_controls_how_often_patches_hit_sparse_labels():
    rng = np.random.default_rng(1)
    image = np.zeros((1, 200, 200))
    label = np.full((200, 200), -1)
    label[100, 100] = 0
    hits = {}
    for fraction in (0.0, 0.5, 1.0):
        sampler = PatchSampler([image], [label], patch_shape=(10, 10), spatial_dims=2,
                               label_fraction=fraction, min_labelled=0)
        hits[fraction] = np.mean([sampler.draw(rng).centred for _ in range(400)])
    assert hits[0.0] == 0 and hits[1.0] == 1 and 0.42 < hits[0.5] < 0.58
    # min_labelled=1 turns unlucky uniform draws into label-centred ones
    sampler = PatchSampler([image], [label], patch_shape=(10, 10), spatial_dims=2, label_fraction=0.0)
    assert all((sampler.sample(rng)[1] == 0).any() for _ in range(20))


def test_labelled_pixels_are_drawn_uniformly_across_images():
    rng = np.random.default_rng(2)
    labels = [np.full((20, 20), -1), np.full((20, 20), -1)]
    labels[0][5, 5] = 0
    labels[1][5:8, 5] = 1  # three labelled pixels: three times as likely
    images = [np.zeros((1, 20, 20)), np.ones((1, 20, 20))]
    sampler = PatchSampler(images, labels, patch_shape=(4, 4), spatial_dims=2, label_fraction=1.0)
    share = np.mean([sampler.draw(rng).image_index for _ in range(2000)])
    assert 0.72 < share < 0.78


def test_2d_patches_from_3d_volumes_along_each_axis():
    rng = np.random.default_rng(3)
    spatial = (6, 14, 15)
    image = _coded_image(spatial, rng)
    label = np.full(spatial, -1)
    label[4, 9, 11] = 1
    for axis in (0, 1, 2):
        sampler = PatchSampler([image], [label], patch_shape=(5, 5), spatial_dims=2,
                               label_fraction=1.0, slice_axis=axis)
        x, y = sampler.sample(rng)
        assert x.shape == (1, 5, 5) and y.shape == (5, 5) and (y == 1).sum() == 1
        loc = sampler.draw(rng)
        region = tuple(slice(s, s + n) for s, n in zip(loc.starts, loc.sizes))
        np.testing.assert_allclose(sampler.extract(loc)[0][0], np.squeeze(image[0][region], axis=axis))


def test_context_slices_become_channels_with_reflection():
    spatial = (5, 8, 8)
    image = np.stack([np.broadcast_to(np.arange(5.0)[:, None, None], spatial),
                      np.broadcast_to(10 + np.arange(5.0)[:, None, None], spatial)])
    label = np.full(spatial, -1)
    label[0, 4, 4] = 0  # first slice: context below it is reflected
    sampler = PatchSampler([image], [label], patch_shape=(4, 4), spatial_dims=2,
                           label_fraction=1.0, context_slices=1)
    x, y = sampler.sample(np.random.default_rng(0))
    assert sampler.in_channels == 6 and x.shape == (6, 4, 4) and (y == 0).sum() == 1
    np.testing.assert_array_equal(x[:, 0, 0], [1, 0, 1, 11, 10, 11])


def test_3d_patches_and_padding_of_small_images():
    rng = np.random.default_rng(4)
    image = rng.normal(size=(1, 5, 12, 13))
    label = np.full((5, 12, 13), -1)
    label[2, 6, 6] = 1
    sampler = PatchSampler([image], [label], patch_shape=(8, 6, 6), spatial_dims=3)
    for _ in range(10):
        x, y = sampler.sample(rng)
        assert x.shape == (1, 8, 6, 6) and y.shape == (8, 6, 6)
        loc = sampler.draw(rng)
        assert -3 <= loc.starts[0] <= 0  # the short axis is covered entirely
    loc = sampler.draw(np.random.default_rng(9))
    x, y = sampler.extract(loc)
    pad = -loc.starts[0]
    assert (y[:pad] == -1).all() and (y[pad + 5:] == -1).all()
    inner = tuple(slice(s, s + n) for s, n in zip(loc.starts[1:], loc.sizes[1:]))
    expected = np.pad(image[0][(slice(None),) + inner], ((pad, 3 - pad), (0, 0), (0, 0)), mode="reflect")
    np.testing.assert_allclose(x[0], expected, rtol=1e-6)


def test_regression_targets_use_nan_as_unlabelled():
    rng = np.random.default_rng(5)
    image = rng.normal(size=(1, 3, 30))
    target = np.full((2, 3, 30), np.nan, np.float32)
    target[:, 1, 20] = [1.0, 2.0]
    sampler = PatchSampler([image], [target], patch_shape=(6, 6), spatial_dims=2, label_fraction=1.0)
    x, y = sampler.sample(rng)
    assert y.dtype == np.float32 and y.shape == (2, 6, 6)
    assert np.isfinite(y).sum() == 2 and np.nansum(y) == 3.0
    assert sampler.regression


def test_same_seed_same_patches_and_lazy_images(tmp_path):
    rng = np.random.default_rng(6)
    volume = rng.normal(size=(1, 10, 40, 40)).astype(np.float32)
    write_image(tmp_path / "v.zarr", volume, chunks=(1, 2, 20, 20))
    label = np.where(rng.random((10, 40, 40)) < 0.01, 1, -1)
    lazy = PatchSampler([open_image(tmp_path / "v.zarr")], [label], patch_shape=(16, 16), spatial_dims=2)
    eager = PatchSampler([volume], [label], patch_shape=(16, 16), spatial_dims=2)
    a = [lazy.sample(np.random.default_rng(11)) for _ in range(3)]
    b = [eager.sample(np.random.default_rng(11)) for _ in range(3)]
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    c = eager.sample(np.random.default_rng(12))
    assert not np.array_equal(c[0], b[0][0])


def test_errors_name_the_parameter():
    image, label = np.zeros((1, 8, 8)), np.zeros((8, 8), int)
    with pytest.raises(ValueError, match=r"patch_shape=\(4, 0\) is not allowed; expected 2 integers >= 1"):
        PatchSampler([image], [label], patch_shape=(4, 0), spatial_dims=2)
    with pytest.raises(ValueError, match=r"label_fraction=2 is not allowed; expected a finite number >= 0 and <= 1"):
        PatchSampler([image], [label], patch_shape=(4, 4), spatial_dims=2, label_fraction=2)
    with pytest.raises(ValueError, match=r"labels\[0\] must be \(\*S\) integer matching image spatial shape \(8, 8\)"):
        PatchSampler([image], [np.zeros((8, 9), int)], patch_shape=(4, 4), spatial_dims=2)
    with pytest.raises(ValueError, match="equal length, got 1 and 2"):
        PatchSampler([image], [label, label], patch_shape=(4, 4), spatial_dims=2)
    with pytest.raises(ValueError, match="with 3 spatial axes"):
        PatchSampler([image], [label], patch_shape=(4, 4, 4), spatial_dims=3)
    with pytest.raises(ValueError, match="negative values other than ignore_index=-1"):
        PatchSampler([image], [label - 3], patch_shape=(4, 4), spatial_dims=2)
    with pytest.raises(ValueError, match="context_slices applies to 2D patches drawn from 3D"):
        PatchSampler([image], [label], patch_shape=(4, 4), spatial_dims=2, context_slices=1)
