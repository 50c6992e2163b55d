import numpy as np
import pytest
from scipy import ndimage

from mixscale.synthetic import MIXED_SCALE_CLASSES, mixed_scale_shapes

SMALL, LARGE = (3.5, 6.0), (10.0, 15.0)


@pytest.fixture(scope="module")
def clean_batch():
    return mixed_scale_shapes(8, noise_std=0.0, small_radius=SMALL, large_radius=LARGE,
                              seed=11)


def _components(label):
    comps, n = ndimage.label(label > 0, structure=np.ones((3, 3)))
    for k in range(1, n + 1):
        yield comps == k


def test_reproducible_and_seed_dependent():
    a = mixed_scale_shapes(2, image_shape=(64, 72), seed=5)
    b = mixed_scale_shapes(2, image_shape=(64, 72), seed=5)
    c = mixed_scale_shapes(2, image_shape=(64, 72), seed=6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[1], c[1])
    assert a[0].shape == a[1].shape == (2, 64, 72)
    assert a[0].dtype == np.float32 and a[1].dtype == np.int64


def test_every_class_appears(clean_batch):
    _, labels = clean_batch
    assert set(np.unique(labels)) == set(range(len(MIXED_SCALE_CLASSES)))


def test_class_rule_size_shape_and_texture(clean_batch):
    images, labels = clean_batch
    checked = set()
    for image, label in zip(images, labels):
        for region in _components(label):
            classes = np.unique(label[region])
            assert classes.size == 1
            cls = MIXED_SCALE_CLASSES[classes[0]]
            r_eq = np.sqrt(region.sum() / np.pi)   # disks and squares have equal areas
            ys, xs = np.nonzero(region)
            reach = np.hypot(ys - ys.mean(), xs - xs.mean()).max()
            values = image[region]
            if cls != "square":
                radius = SMALL if cls.startswith("small") else LARGE
                assert radius[0] - 0.6 <= r_eq <= radius[1] + 0.6, cls
                assert reach <= r_eq + 1.0, f"{cls} is not round"
            else:
                assert SMALL[0] - 0.6 <= r_eq <= LARGE[1] + 0.6
                assert reach >= 1.12 * r_eq, "square without corners"
            if "striped" in cls:
                assert values.std() > 0.1
            elif "smooth" in cls:
                assert values.min() == values.max()
            checked.add(cls)
    assert len(checked) == 5


def test_mean_intensity_does_not_reveal_texture(clean_batch):
    images, labels = clean_batch
    means = {c: [] for c in (1, 2, 3, 4)}
    for image, label in zip(images, labels):
        for region in _components(label):
            cls = int(label[region][0])
            if cls in means:
                means[cls].append(image[region].mean())
    smooth = np.concatenate([means[1], means[3]])
    striped = np.concatenate([means[2], means[4]])
    # the ranges overlap: no threshold on mean intensity separates the textures
    assert striped.max() > smooth.min() and smooth.max() > striped.min()


def test_bad_radius_ranges_raise():
    with pytest.raises(ValueError, match=r"small_radius=\(4.0, 12.0\) is not allowed; .*large_radius=\(10.0, 15.0\)"):
        mixed_scale_shapes(1, small_radius=(4, 12), large_radius=(10, 15))
    with pytest.raises(ValueError, match=r"large_radius=\(10, 15\) is not allowed; .*high <= 8"):
        mixed_scale_shapes(1, image_shape=(32, 32), large_radius=(10, 15))
    with pytest.raises(ValueError, match=r"stripe_period=1 is not allowed; expected a finite number >= 2.0"):
        mixed_scale_shapes(1, stripe_period=1)
    with pytest.raises(ValueError, match=r"n_images=-1 is not allowed; expected an integer >= 1"):
        mixed_scale_shapes(-1)
