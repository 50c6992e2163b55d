"""Point-annotation patch dataset: exact patch content, background distance, balance, epochs, errors."""

import numpy as np
import pytest
import torch

from mixscale.data import Normalization, PointPatchDataset
from mixscale.data.points import read_reflected


def _coded_image(shape):
    """Every pixel holds its own flat index, so a patch tells exactly where it was cut."""
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def test_point_patches_are_centred_exactly_with_reflect_padding_at_the_border():
    img = _coded_image((30, 40))
    pts = np.array([[10, 20], [0, 0], [29, 39], [5.4, 37.6]])  # interior, corners, rounded to (5, 38)
    ds = PointPatchDataset(img, [pts], (7, 9), background_per_point=0, class_balance=False)
    padded = np.pad(img, ((3, 3), (4, 4)), mode="reflect")  # independent reference
    seen = set()
    for i in range(len(ds)):
        x, y = ds[i]
        it = ds.item(i)
        assert y.dtype == torch.int64 and int(y) == 1 and x.shape == (1, 7, 9)
        cy, cx = it.centre
        np.testing.assert_array_equal(x[0].numpy(), padded[cy:cy + 7, cx:cx + 9])
        assert x[0, 3, 4] == img[cy, cx]  # the centre pixel is the point itself
        seen.add(it.centre)
    assert seen == {(10, 20), (0, 0), (29, 39), (5, 38)}


def test_read_reflected_matches_numpy_pad_even_far_outside_and_in_3d():
    img = _coded_image((2, 5, 4, 6))
    padded = np.pad(img, ((0, 0), (9, 9), (9, 9), (9, 9)), mode="reflect")
    for starts in [(-9, -2, 3), (2, -9, -9), (4, 3, 5)]:
        got = read_reflected(img, starts, (7, 9, 8))
        ref = padded[:, starts[0] + 9:starts[0] + 16, starts[1] + 9:starts[1] + 18, starts[2] + 9:starts[2] + 17]
        np.testing.assert_array_equal(got, ref)


def test_background_never_within_the_distance_and_spread_over_images():
    rng = np.random.default_rng(0)
    images = [np.zeros((60, 50), np.float32), np.zeros((40, 40), np.float32)]
    points = [rng.uniform(0, 50, size=(12, 2)).clip(0, 49), np.array([[20, 20]])]
    ds = PointPatchDataset(images, points, (5, 5), background_per_point=20, min_background_distance=6.5,
                           class_balance=False, seed=3)
    for epoch in (0, 1):
        ds.set_epoch(epoch)
        bg = [ds.item(i) for i in range(len(ds)) if ds.item(i).label == 0]
        assert len(bg) == 20 * 13
        for it in bg:
            own = np.rint(points[it.image_index])
            assert np.sqrt(((own - np.array(it.centre)) ** 2).sum(1)).min() >= 6.5
        assert {it.image_index for it in bg} == {0, 1}


def test_class_balance_gives_equal_counts_and_uses_rare_points_evenly():
    pts = [np.array([[5, 5], [5, 30], [30, 5], [30, 30], [18, 18], [10, 25]])]
    cls = [np.array([1, 1, 1, 1, 2, 2])]
    ds = PointPatchDataset(np.zeros((40, 40)), pts, (5, 5), point_classes=cls, background_per_point=1.5,
                           min_background_distance=2, class_balance=True, seed=1)
    assert ds.num_classes == 3 and ds.class_counts().tolist() == [9, 9, 9] and len(ds) == 27
    labels = [int(ds[i][1]) for i in range(len(ds))]
    assert np.bincount(labels).tolist() == [9, 9, 9]
    uses = {}
    for i in range(len(ds)):
        it = ds.item(i)
        if it.label == 2:
            uses[it.centre] = uses.get(it.centre, 0) + 1
    assert sorted(uses.values()) == [4, 5]  # 9 draws over 2 points: every point used 4 or 5 times
    plain = PointPatchDataset(np.zeros((40, 40)), pts, (5, 5), point_classes=cls, background_per_point=1.5,
                              class_balance=False)
    assert plain.class_counts().tolist() == [9, 4, 2]


def test_annotated_background_points_are_used_and_may_lie_anywhere():
    img = _coded_image((30, 30))
    pts = [np.array([[10, 10], [11, 12], [25, 3]])]
    ds = PointPatchDataset(img, pts, (3, 3), point_classes=[np.array([1, 0, 0])], background_per_point=2,
                           min_background_distance=5, class_balance=False)
    assert ds.class_counts().tolist() == [4, 1]  # 2 annotated + 2 random background, 1 object
    items = [ds.item(i) for i in range(len(ds))]
    marked = {it.centre for it in items if it.label == 0} & {(11, 12), (25, 3)}
    assert marked == {(11, 12), (25, 3)}  # kept although (11, 12) is 2.2 px from the object


def test_epochs_redraw_background_and_jitter_deterministically():
    img = _coded_image((50, 50))
    kw = dict(background_per_point=3, jitter=2, seed=5)
    a = PointPatchDataset(img, [np.array([[25, 25], [10, 40]])], (5, 5), **kw)
    b = PointPatchDataset(img, [np.array([[25, 25], [10, 40]])], (5, 5), **kw)
    first = [a.item(i) for i in range(len(a))]
    assert first == [b.item(i) for i in range(len(b))]  # same seed, same epoch: same items
    a.set_epoch(1)
    assert first != [a.item(i) for i in range(len(a))]
    for it in first:
        if it.label == 1:
            assert min(max(abs(it.centre[0] - p[0]), abs(it.centre[1] - p[1])) for p in [(25, 25), (10, 40)]) <= 2


def test_augmentation_flips_patches_and_normalisation_applies():
    img = _coded_image((20, 20))
    ds = PointPatchDataset(img, [np.array([[10, 10]] * 16)], (5, 5), background_per_point=0, augment=True,
                           normalization=Normalization(mean=[100.0], std=[2.0]), class_balance=False)
    base = (img[8:13, 8:13] - 100.0) / 2.0
    variants = {tuple(ds[i][0][0].numpy().ravel()) for i in range(len(ds))}
    assert len(variants) > 1  # several of the 8 flips/rotations were drawn
    for v in variants:  # each is a dihedral image of the same patch, centre unchanged
        v = np.asarray(v).reshape(5, 5)
        assert v[2, 2] == base[2, 2] and sorted(v.ravel()) == sorted(base.ravel())


def test_channels_first_images_and_3d():
    img = np.stack([_coded_image((12, 13, 14)), -_coded_image((12, 13, 14))])
    ds = PointPatchDataset([img], [np.array([[6, 6, 7]])], (3, 5, 5), background_per_point=1,
                           min_background_distance=1)
    x, y = ds[len(ds) - 1]
    assert x.shape == (2, 3, 5, 5) and int(y) == 1
    np.testing.assert_array_equal(x.numpy(), img[:, 5:8, 4:9, 5:10])


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(patch_shape=(5,)), ValueError, r"patch_shape=\(5,\) is not allowed; expected 2 or 3 integers >= 1"),
    (dict(patch_shape=(5, 0)), ValueError, r"patch_shape=\(5, 0\) is not allowed; expected 2 integers >= 1"),
    (dict(points=[np.array([[3, 40]])]), ValueError, r"outside the image of spatial shape \(20, 30\)"),
    (dict(points=[np.array([[3, 4]]), np.array([[1, 1]])]), ValueError, "one entry per image"),
    (dict(point_classes=[np.array([-1])]), ValueError, r"point_classes\[0\] must hold one integer class >= 0"),
    (dict(point_classes=[np.array([0])]), ValueError, "no object point"),
    (dict(num_classes=2, point_classes=[np.array([3])]), ValueError, "num_classes=2 but a point has class 3"),
    (dict(background_per_point=-1), ValueError, "background_per_point=-1 is not allowed; expected a finite number >= 0"),
    (dict(min_background_distance=-2), ValueError, "min_background_distance=-2 is not allowed; expected a finite"),
    (dict(jitter=1.5), TypeError, r"jitter=1\.5 is not allowed; expected an integer >= 0"),
    (dict(jitter=-1), ValueError, r"jitter=-1 is not allowed; expected an integer >= 0"),
    (dict(class_balance="yes"), TypeError, "class_balance='yes' is not allowed; expected True or False"),
    (dict(images=np.zeros((2, 3, 20, 30))), ValueError, r"images\[0\] has shape \(2, 3, 20, 30\)"),
    (dict(points=[np.array([[np.nan, 1]])]), ValueError, "NaN"),
])
def test_bad_arguments_are_named(kwargs, error, match):
    args = dict(images=np.zeros((20, 30)), points=[np.array([[3, 4]])], patch_shape=(5, 5))
    args.update(kwargs)
    with pytest.raises(error, match=match):
        PointPatchDataset(args.pop("images"), args.pop("points"), args.pop("patch_shape"), **args)


def test_crowded_image_gives_a_clear_background_error():
    pts = [np.array([[y, x] for y in range(0, 10, 2) for x in range(0, 10, 2)])]
    ds = PointPatchDataset(np.zeros((10, 10)), pts, (3, 3), min_background_distance=3)
    with pytest.raises(ValueError, match="could not place .* background patches"):
        ds[0]
