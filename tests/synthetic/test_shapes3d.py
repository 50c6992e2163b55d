import numpy as np
import pytest
from scipy import ndimage

from mixscale.synthetic import (SHAPE_CLASSES_3D, draw_shape_3d, random_rotation,
                                random_shapes_3d)


def test_reproducible_shapes_dtypes_and_classes():
    a = random_shapes_3d(4, volume_shape=(21, 30, 34), size_range=(5, 10), seed=2)
    b = random_shapes_3d(4, volume_shape=(21, 30, 34), size_range=(5, 10), seed=2)
    c = random_shapes_3d(4, volume_shape=(21, 30, 34), size_range=(5, 10), seed=3)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])
    volumes, labels = a
    assert volumes.shape == labels.shape == (4, 21, 30, 34)
    assert volumes.dtype == np.float32 and labels.dtype == np.int64
    _, many = random_shapes_3d(6, seed=0)
    assert set(np.unique(many)) == set(range(len(SHAPE_CLASSES_3D)))


def test_shells_are_hollow_and_components_single_class():
    _, labels = random_shapes_3d(4, n_shapes=(4, 6), noise_std=0.0, seed=1)
    for label in labels:
        comps, n = ndimage.label(label > 0)
        for k in range(1, n + 1):
            region = comps == k
            classes = np.unique(label[region])
            assert classes.size == 1
            hollow = ndimage.binary_fill_holes(region).sum() > region.sum()
            assert hollow == (SHAPE_CLASSES_3D[classes[0]] == "shell")


def test_volumes_match_formulas():
    shape, centre, size = (48, 48, 48), (23.6, 24.3, 23.8), 30.0
    sphere = draw_shape_3d("sphere", centre, size, volume_shape=shape)
    assert sphere.sum() == pytest.approx(4 / 3 * np.pi * 15**3, rel=0.02)
    shell = draw_shape_3d("shell", centre, size, volume_shape=shape, inner_fraction=0.5)
    assert shell.sum() == pytest.approx(4 / 3 * np.pi * (15**3 - 7.5**3), rel=0.03)
    rot = random_rotation(np.random.default_rng(0))
    box = draw_shape_3d("box", centre, size, volume_shape=shape, rotation=rot,
                        aspect=(0.8, 0.6))
    assert box.sum() == pytest.approx(size**3 * 0.8 * 0.6, rel=0.03)


def test_random_rotation_is_a_proper_rotation():
    rot = random_rotation(np.random.default_rng(4))
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(rot) == pytest.approx(1.0)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match=r"(?s)rotation=array\(.*is not allowed; expected None or an orthogonal 3x3"):
        draw_shape_3d("box", (5, 5, 5), 4, rotation=np.ones((3, 3)))
    with pytest.raises(ValueError, match=r"kind='cone' is not allowed; expected one of"):
        draw_shape_3d("cone", (5, 5, 5), 4)
    with pytest.raises(ValueError, match=r"aspect=\(0.5, 0.0\) is not allowed; expected a pair of numbers in \(0, 1\]"):
        draw_shape_3d("box", (5, 5, 5), 4, aspect=(0.5, 0.0))
    with pytest.raises(ValueError, match=r"volume_shape=\(32, 32\) is not allowed; expected 3 integers"):
        random_shapes_3d(1, volume_shape=(32, 32))
    with pytest.raises(ValueError, match=r"size_range=\(4, 12\) is not allowed; .*high <= 8"):
        random_shapes_3d(1, volume_shape=(16, 32, 32), size_range=(4, 12))
