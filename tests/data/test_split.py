"""Pixel-level and image-level splits: disjoint, complete, stratified, reproducible."""

import numpy as np
import pytest

from mixscale.data import pixel_split, split_images


def _sparse_labels(seed=0, shape=(60, 70), classes=3, fraction=0.1):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, classes, shape)
    lab[rng.random(shape) > fraction] = -1
    return lab


@pytest.mark.parametrize("block_shape", [None, (8, 8)])
def test_split_is_disjoint_and_covers_every_labelled_pixel(block_shape):
    lab = _sparse_labels()
    train, val = pixel_split(lab, val_fraction=0.25, seed=3, block_shape=block_shape)
    in_train, in_val = train != -1, val != -1
    assert not (in_train & in_val).any()
    np.testing.assert_array_equal(in_train | in_val, lab != -1)
    np.testing.assert_array_equal(train[in_train], lab[in_train])
    np.testing.assert_array_equal(val[in_val], lab[in_val])
    for c in range(3):
        assert (train == c).any() and (val == c).any()
    assert 0.15 < in_val.sum() / (lab != -1).sum() < 0.35


def test_pixel_split_is_stratified_and_reproducible():
    lab = _sparse_labels(seed=1)
    train, val = pixel_split(lab, val_fraction=0.2, seed=7)
    for c in range(3):
        n = (lab == c).sum()
        assert (val == c).sum() == round(0.2 * n)
    again = pixel_split(lab, val_fraction=0.2, seed=7)
    np.testing.assert_array_equal(again[1], val)
    other = pixel_split(lab, val_fraction=0.2, seed=8)
    assert not np.array_equal(other[1], val)


def test_block_split_keeps_blocks_whole():
    lab = _sparse_labels(seed=2, fraction=0.5)
    train, val = pixel_split(lab, val_fraction=0.3, block_shape=(10, 10), seed=0)
    for by in range(0, 60, 10):
        for bx in range(0, 70, 10):
            block_t = train[by:by + 10, bx:bx + 10] != -1
            block_v = val[by:by + 10, bx:bx + 10] != -1
            assert not (block_t.any() and block_v.any())


def test_rare_class_lands_on_both_sides_when_possible():
    lab = np.full((40, 40), -1)
    lab[:20] = 0
    lab[39, 0] = 1
    lab[0, 39] = 1  # two pixels of class 1, far apart (different blocks)
    for block_shape in (None, (10, 10)):
        train, val = pixel_split(lab, val_fraction=0.2, block_shape=block_shape, seed=0)
        assert (train == 1).sum() == 1 and (val == 1).sum() == 1
    single = lab.copy()
    single[0, 39] = -1
    train, val = pixel_split(single, val_fraction=0.2, seed=0)
    assert (train == 1).sum() == 1 and (val == 1).sum() == 0


def test_unlabelled_stays_unlabelled_and_errors_are_named():
    lab = np.full((5, 5), -1)
    train, val = pixel_split(lab)
    assert (train == -1).all() and (val == -1).all()
    with pytest.raises(ValueError, match=r"val_fraction=1\.5 is not allowed; expected a finite number > 0 and < 1"):
        pixel_split(lab, val_fraction=1.5)
    with pytest.raises(TypeError, match="integer class map"):
        pixel_split(lab.astype(float))
    with pytest.raises(ValueError, match=r"block_shape=\(4,\) is not allowed; expected 2 integers >= 1 \(one per axis of labels"):
        pixel_split(_sparse_labels(), block_shape=(4,))
    with pytest.raises(ValueError, match=r"negative values \[-2\]"):
        pixel_split(np.array([0, 1, -2, -1]))


def test_split_images():
    train, val = split_images(10, val_fraction=0.3, seed=1)
    assert len(val) == 3 and len(train) == 7
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(10))
    np.testing.assert_array_equal(split_images(10, val_fraction=0.3, seed=1)[1], val)
    train, val = split_images(2, val_fraction=0.01)
    assert len(train) == len(val) == 1
    with pytest.raises(ValueError, match=r"n=1 is not allowed; expected an integer >= 2.*pixel_split"):
        split_images(1, val_fraction=0.2, seed=0)
