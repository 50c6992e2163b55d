"""Dihedral transforms and the paired augmentation."""

import numpy as np
import pytest
import torch

from mixscale.data import Augmentation, apply_dihedral, dihedral_transforms, invert_dihedral


@pytest.mark.parametrize("spatial_dims, count", [(2, 8), (3, 48)])
def test_transforms_are_distinct_and_invertible(spatial_dims, count):
    shape = (2,) + (5,) * spatial_dims
    x = np.random.default_rng(0).normal(size=shape)
    transforms = dihedral_transforms(spatial_dims)
    assert len(transforms) == count and transforms[0].is_identity
    outputs = [apply_dihedral(x, i, spatial_dims=spatial_dims) for i in range(count)]
    assert len({o.tobytes() for o in outputs}) == count
    for i, out in enumerate(outputs):
        np.testing.assert_array_equal(out[0], apply_dihedral(x[0], i, spatial_dims=spatial_dims))
        np.testing.assert_array_equal(invert_dihedral(out, i, spatial_dims=spatial_dims), x)


def test_2d_group_is_flips_and_rotations():
    x = np.arange(12).reshape(3, 4)
    expected = [np.rot90(x, k) for k in range(4)] + [np.rot90(x.T, k) for k in range(4)]
    got = [apply_dihedral(x, i, spatial_dims=2) for i in range(8)]
    for e in expected:
        assert sum(g.shape == e.shape and np.array_equal(g, e) for g in got) == 1


def test_torch_tensors_match_numpy_and_invert():
    x = np.random.default_rng(1).normal(size=(1, 2, 3, 4, 5)).astype(np.float32)
    t = torch.from_numpy(x)
    for i in (0, 7, 23, 47):
        out = apply_dihedral(t, i, spatial_dims=3)
        np.testing.assert_array_equal(out.numpy(), apply_dihedral(x, i, spatial_dims=3))
        assert torch.equal(invert_dihedral(out, i, spatial_dims=3), t)


def test_bad_index_and_dims():
    with pytest.raises(ValueError, match=r"index=8 is not allowed; expected an integer in \[0, 7\]"):
        apply_dihedral(np.zeros((3, 3)), 8, spatial_dims=2)
    with pytest.raises(ValueError, match=r"spatial_dims=4 is not allowed; expected an integer in \[2, 3\]"):
        dihedral_transforms(4)


@pytest.mark.parametrize("spatial", [(6, 6), (4, 4, 4), (4, 7)])
def test_augmentation_keeps_image_and_label_aligned(spatial):
    rng = np.random.default_rng(5)
    classes = 3
    label = rng.integers(0, classes, spatial)
    label[tuple(rng.integers(0, s, 4) for s in spatial)] = -1
    # image channel c is 1 where label == c, so argmax(image) recovers the label
    image = np.stack([(label == c).astype(np.float32) for c in range(classes)])
    aug = Augmentation(intensity_scale=None, intensity_shift=None)
    seen = set()
    for _ in range(40):
        img, lab = aug(image, label, rng)
        assert img.shape == image.shape and lab.shape == label.shape
        labelled = lab != -1
        np.testing.assert_array_equal(np.argmax(img, axis=0)[labelled], lab[labelled])
        assert (img[:, ~labelled] == 0).all() and (lab == -1).sum() == (label == -1).sum()
        seen.add(lab.tobytes())
    assert len(seen) > 3


def test_intensity_and_noise_touch_the_image_only():
    rng = np.random.default_rng(0)
    image = np.ones((2, 8, 8), np.float32)
    label = np.full((1, 8, 8), np.nan, np.float32)
    label[0, 2, 3] = 4.0
    aug = Augmentation(dihedral=False, intensity_scale=(2.0, 2.0), intensity_shift=(0.5, 0.5))
    img, lab = aug(image, label, rng)
    np.testing.assert_allclose(img, 2.5)
    np.testing.assert_array_equal(lab, label)
    noisy, _ = Augmentation(dihedral=False, intensity_scale=None, intensity_shift=None,
                            noise_std=0.1)(np.zeros((1, 64, 64), np.float32), np.zeros((64, 64), int), rng)
    assert noisy.dtype == np.float32 and 0.08 < noisy.std() < 0.12


def test_augmentation_errors():
    with pytest.raises(ValueError, match=r"intensity_scale=\(1\.2, 0\.8\) is not allowed; expected a pair \(low, high\) .*low <= high"):
        Augmentation(intensity_scale=(1.2, 0.8))
    with pytest.raises(ValueError, match="noise_std=-1 is not allowed; expected a finite number >= 0"):
        Augmentation(noise_std=-1)
    with pytest.raises(ValueError, match="same spatial shape"):
        Augmentation()(np.zeros((1, 4, 4)), np.zeros((4, 5)), np.random.default_rng(0))
