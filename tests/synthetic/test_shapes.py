import time

import numpy as np
import pytest
from matplotlib.path import Path
from scipy import ndimage
from skimage.draw import disk

from mixscale.synthetic import SHAPE_CLASSES, draw_shape, random_shapes


def test_same_seed_same_output_and_different_seed_differs():
    a_img, a_lab = random_shapes(4, image_shape=(48, 40), size_range=(4, 12), seed=7)
    b_img, b_lab = random_shapes(4, image_shape=(48, 40), size_range=(4, 12), seed=7)
    c_img, c_lab = random_shapes(4, image_shape=(48, 40), size_range=(4, 12), seed=8)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.array_equal(a_lab, c_lab)
    assert not np.array_equal(a_img, c_img)


def test_shapes_dtypes_and_label_values_on_odd_shape():
    images, labels = random_shapes(3, image_shape=(37, 53), size_range=(4, 12), seed=1)
    assert images.shape == labels.shape == (3, 37, 53)
    assert images.dtype == np.float32 and labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < len(SHAPE_CLASSES)


def test_every_class_appears_in_a_modest_batch():
    _, labels = random_shapes(8, seed=0)
    assert set(np.unique(labels)) == set(range(len(SHAPE_CLASSES)))


def test_labels_do_not_depend_on_noise_and_noise_has_the_asked_std():
    clean, lab_a = random_shapes(4, noise_std=0.0, seed=3)
    noisy, lab_b = random_shapes(4, noise_std=0.3, seed=3)
    np.testing.assert_array_equal(lab_a, lab_b)
    assert np.std(noisy - clean) == pytest.approx(0.3, rel=0.02)


def test_clean_intensities_follow_the_labels():
    images, labels = random_shapes(4, noise_std=0.0, intensity_range=(0.9, 1.1), seed=2)
    assert np.all(images[labels == 0] == 0)
    inside = images[labels > 0]
    assert inside.min() >= 0.9 and inside.max() <= 1.1


def test_no_overlap_each_component_is_one_whole_shape():
    _, labels = random_shapes(10, noise_std=0.0, seed=4)
    low, high = 8, 28
    for label in labels:
        comps, n = ndimage.label(label > 0, structure=np.ones((3, 3)))
        for k in range(1, n + 1):
            region = comps == k
            classes = np.unique(label[region])
            assert classes.size == 1, "a component mixes classes: shapes touch"
            kind = SHAPE_CLASSES[classes[0]]
            area = region.sum()
            if kind == "circle":
                diameter = 2 * np.sqrt(area / np.pi)
                assert low - 1 <= diameter <= high + 1
            filled = ndimage.binary_fill_holes(region).sum()
            assert (filled > area) == (kind == "annulus")


def test_overlap_mode_gives_valid_labels():
    _, labels = random_shapes(4, n_shapes=(10, 10), overlap=True, seed=0)
    assert labels.max() <= 4 and (labels > 0).any()


def test_zero_shapes_gives_pure_background():
    images, labels = random_shapes(2, n_shapes=(0, 0), noise_std=0.5, seed=0)
    assert not labels.any()
    assert abs(images.mean()) < 0.05


def test_circle_matches_scikit_image_disk():
    # off-grid centre: no pixel centre lies exactly on the rim, so both agree exactly
    centre, radius, shape = (30.3, 41.7), 13.2, (64, 80)
    ours = draw_shape("circle", centre, 2 * radius, image_shape=shape)
    ref = np.zeros(shape, dtype=bool)
    ref[disk(centre, radius, shape=shape)] = True
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("angle", [0.0, 0.4, 1.3])
def test_areas_match_formulas(angle):
    shape, centre, size = (128, 128), (63.6, 64.2), 60.0
    expected = {
        "circle": np.pi * (size / 2) ** 2,
        "rectangle": size * size * 0.6,
        "triangle": 3 * np.sqrt(3) / 16 * size**2,
        "annulus": np.pi * ((size / 2) ** 2 - (0.4 * size / 2) ** 2),
    }
    for kind, area in expected.items():
        mask = draw_shape(kind, centre, size, angle=angle, image_shape=shape, aspect=0.6,
                          inner_fraction=0.4)
        assert mask.sum() == pytest.approx(area, rel=0.02), kind


def test_triangle_matches_point_in_polygon_reference():
    centre, size, angle, shape = (40.2, 35.7), 50.0, 0.7, (80, 80)
    mask = draw_shape("triangle", centre, size, angle=angle, image_shape=shape)
    # vertices: circumradius size / 2, opposite the edge normals at angle + 2 pi k / 3
    phis = angle + np.pi + 2 * np.pi * np.arange(3) / 3
    verts = np.stack([centre[1] + size / 2 * np.cos(phis),
                      centre[0] + size / 2 * np.sin(phis)], axis=1)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    ref = Path(verts).contains_points(np.stack([xx.ravel(), yy.ravel()], 1)).reshape(shape)
    assert np.sum(mask != ref) <= 3


def test_triangle_has_threefold_and_square_fourfold_symmetry():
    centre, shape = (40.0, 40.0), (81, 81)
    tri = draw_shape("triangle", centre, 40, angle=0.2, image_shape=shape)
    tri_rot = draw_shape("triangle", centre, 40, angle=0.2 + 2 * np.pi / 3, image_shape=shape)
    assert np.sum(tri != tri_rot) <= 2
    square = draw_shape("rectangle", centre, 30, angle=0.3, image_shape=shape)
    turned = draw_shape("rectangle", centre, 30, angle=0.3 + np.pi / 2, image_shape=shape)
    assert np.sum(square != turned) <= 2
    # rotating the pixel grid by 90 degrees about the centre turns the square too
    assert np.sum(np.rot90(square) != turned) <= 4


def test_shapes_are_clipped_at_the_border():
    mask = draw_shape("circle", (0, 0), 20, image_shape=(30, 30))
    assert 0.2 * np.pi * 100 < mask.sum() < 0.3 * np.pi * 100


def test_large_batch_is_fast():
    start = time.perf_counter()
    images, _ = random_shapes(25, image_shape=(512, 512), seed=0)
    assert time.perf_counter() - start < 2.0
    assert images.shape == (25, 512, 512)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(n_images=0), ValueError, r"n_images=0 is not allowed; expected an integer >= 1"),
    (dict(n_images=2.5), TypeError, r"n_images=2.5 is not allowed; expected an integer"),
    (dict(n_images=2, image_shape=(64,)), ValueError, r"image_shape=\(64,\) is not allowed; expected 2 integers >= 4"),
    (dict(n_images=2, size_range=(20, 10)), ValueError, r"size_range=\(20, 10\) is not allowed; expected a pair"),
    (dict(n_images=2, size_range=(8, 100)), ValueError, r"size_range=\(8, 100\) is not allowed; .*high <= 64"),
    (dict(n_images=2, n_shapes=(3, -1)), ValueError, r"n_shapes=\(3, -1\) is not allowed; .*integers"),
    (dict(n_images=2, noise_std=-0.1), ValueError, r"noise_std=-0.1 is not allowed; expected a finite number >= 0"),
    (dict(n_images=2, seed="abc"), TypeError, r"seed='abc' is not allowed"),
    (dict(n_images=2, overlap="yes"), TypeError, r"overlap='yes' is not allowed; expected True or False"),
])
def test_bad_arguments_raise_naming_the_parameter(kwargs, error, words):
    with pytest.raises(error, match=words):
        random_shapes(**kwargs)


def test_draw_shape_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"kind='hexagon' is not allowed; expected one of \["):
        draw_shape("hexagon", (5, 5), 4)
    with pytest.raises(ValueError, match=r"centre=\(5,\) is not allowed; expected a \(y, x\) pair"):
        draw_shape("circle", (5,), 4)
    with pytest.raises(ValueError, match=r"aspect=2.0 is not allowed; expected a finite number > 0 and <= 1"):
        draw_shape("rectangle", (5, 5), 4, aspect=2.0)
    with pytest.raises(ValueError, match=r"inner_fraction=1.0 is not allowed; expected a fraction in \[0, 1\)"):
        draw_shape("annulus", (5, 5), 4, inner_fraction=1.0)
