"""Disks and squares whose class needs fine texture AND large-scale shape and size.

A harder segmentation benchmark in the spirit of the mixed-scale experiment of
Pelt & Sethian (PNAS 2018): deep inside an object no small neighbourhood tells
the class. Texture is a fine-scale feature (a stripe period of a few pixels),
while size and roundness are visible only at the scale of the whole object, so a
network must combine both.
"""

from __future__ import annotations

import logging

import numpy as np

from .._checks import check_float, check_int, check_range, check_shape, not_allowed
from ._common import add_noise, make_rng, noise_generator, place_without_overlap, window

__all__ = ["MIXED_SCALE_CLASSES", "mixed_scale_shapes"]

logger = logging.getLogger(__name__)

#: Class names of :func:`mixed_scale_shapes`; a label value indexes this tuple.
MIXED_SCALE_CLASSES = ("background", "small_smooth_disk", "small_striped_disk",
                       "large_smooth_disk", "large_striped_disk", "square")

# a square of "radius" r has side r * sqrt(pi): the same area as the disk, so
# pixel count never separates squares from disks
_SQUARE_SIDE = float(np.sqrt(np.pi))


def _object_mask(is_square: bool, dy, dx, radius: float, angle: float) -> np.ndarray:
    if not is_square:
        return dy * dy + dx * dx <= radius * radius
    half = 0.5 * _SQUARE_SIDE * radius
    cos, sin = np.cos(angle), np.sin(angle)
    return (np.abs(cos * dx + sin * dy) <= half) & (np.abs(cos * dy - sin * dx) <= half)


def _texture(dy, dx, striped: bool, value: float, period: float, direction: float,
             phase: float) -> np.ndarray:
    """Constant ``value``, or sinusoidal stripes of mean ``0.55 * value``."""
    if not striped:
        return np.broadcast_to(np.float32(value), np.broadcast_shapes(dy.shape, dx.shape))
    u = np.cos(direction) * dx + np.sin(direction) * dy
    return (value * (0.55 + 0.45 * np.sin(2.0 * np.pi * u / period + phase))).astype(np.float32)


def _draw_objects(rng, image, label, *, n_shapes, small_radius, large_radius,
                  stripe_period) -> None:
    """Draw one image's objects into ``image`` and ``label`` in place."""
    count = int(rng.integers(n_shapes[0], n_shapes[1] + 1))
    classes = rng.integers(1, len(MIXED_SCALE_CLASSES), size=count)
    square = classes == 5
    # disks: class 1, 2 small, 3, 4 large; odd classes smooth, even striped;
    # squares take either size and either texture
    large = np.where(square, rng.random(count) < 0.5, classes >= 3)
    striped = np.where(square, rng.random(count) < 0.5, classes % 2 == 0)
    radii = np.where(large, rng.uniform(*large_radius, size=count),
                     rng.uniform(*small_radius, size=count))
    angles = rng.uniform(0.0, 2.0 * np.pi, size=(count, 3))
    # equal mean intensity for both textures, so only the stripes tell them apart
    values = np.where(striped, rng.uniform(0.8, 1.3, size=count),
                      rng.uniform(0.44, 0.715, size=count))
    bounds = np.where(square, radii * _SQUARE_SIDE / np.sqrt(2.0), radii)
    centres = place_without_overlap(rng, bounds, image.shape, gap=2.0)
    for k, centre in enumerate(centres):
        if centre is None:
            logger.debug("mixed_scale_shapes: no room for object %d of %d", k, count)
            continue
        slices, (dy, dx) = window(centre, bounds[k], image.shape)
        mask = _object_mask(bool(square[k]), dy, dx, radii[k], angles[k, 0])
        tex = _texture(dy, dx, bool(striped[k]), values[k], stripe_period,
                       angles[k, 1], angles[k, 2])
        label[slices][mask] = classes[k]
        image[slices][mask] = tex[mask]


def mixed_scale_shapes(n_images: int, *, image_shape=(128, 128), n_shapes=(6, 12),
                       small_radius=(3.5, 6.0), large_radius=(10.0, 15.0),
                       stripe_period: float = 4.0, noise_std: float = 0.1, seed=0):
    """Images where an object's class depends on shape, size and texture together.

    Class rule (label values index :data:`MIXED_SCALE_CLASSES`):

    ====  ======================  =====================================
    0     background
    1     ``small_smooth_disk``   disk, radius in ``small_radius``, constant
    2     ``small_striped_disk``  disk, radius in ``small_radius``, stripes
    3     ``large_smooth_disk``   disk, radius in ``large_radius``, constant
    4     ``large_striped_disk``  disk, radius in ``large_radius``, stripes
    5     ``square``              square of either size and either texture
    ====  ======================  =====================================

    A square of "radius" ``r`` has side ``r * sqrt(pi)``, the area of the disk of
    radius ``r``, so pixel count never tells squares from disks. Stripes are a
    sinusoid of period ``stripe_period`` pixels in a random direction; their mean
    intensity matches the range of the constant objects, so only the fine-scale
    variation reveals texture. Hence telling 1 from 2 needs fine texture, 1 from 3
    needs the object's size, 3 from 5 its shape: no single local feature decides.
    Objects keep at least 2 pixels apart and wholly inside the image (an object
    that finds no room is skipped); then Gaussian noise of ``noise_std`` is added.

    Parameters
    ----------
    n_images : int
        Number of images ``N``.
    image_shape : (2,) tuple of int
        ``(H, W)``.
    n_shapes : (int, int)
        Inclusive range of the number of objects per image.
    small_radius, large_radius : (float, float)
        Radius ranges in pixels of small and large objects; the small range must
        end below the start of the large one, which ends at most at
        ``min(H, W) / 4``.
    stripe_period : float
        Period of the stripes in pixels, at least 2.
    noise_std : float
        Standard deviation of the additive Gaussian noise.
    seed : None, int or numpy.random.Generator
        Seed for ``numpy.random.default_rng``; equal seeds give equal output.
        The noise has its own stream, so labels do not depend on ``noise_std``.

    Returns
    -------
    images : (N, H, W) ndarray of float32
    labels : (N, H, W) ndarray of int64

    Examples
    --------
    >>> images, labels = mixed_scale_shapes(1, image_shape=(96, 96), seed=3)
    >>> images.shape == labels.shape == (1, 96, 96)
    True
    """
    n_images = check_int("n_images", n_images, minimum=1)
    image_shape = check_shape("image_shape", image_shape, ndim=2, minimum=8)
    n_shapes = check_range("n_shapes", n_shapes, minimum=0, integer=True)
    small_radius = check_range("small_radius", small_radius, minimum=1)
    large_radius = check_range("large_radius", large_radius, minimum=1,
                               maximum=min(image_shape) / 4)
    if small_radius[1] >= large_radius[0]:
        raise not_allowed("small_radius", small_radius,
                          f"a range that ends below the start of large_radius={large_radius}")
    stripe_period = check_float("stripe_period", stripe_period, minimum=2.0)
    noise_std = check_float("noise_std", noise_std, minimum=0)
    rng = make_rng(seed)
    noise_rng = noise_generator(rng)
    images = np.zeros((n_images, *image_shape), dtype=np.float32)
    labels = np.zeros((n_images, *image_shape), dtype=np.int64)
    for image, label in zip(images, labels):
        _draw_objects(rng, image, label, n_shapes=n_shapes, small_radius=small_radius,
                      large_radius=large_radius, stripe_period=stripe_period)
    add_noise(noise_rng, images, noise_std)
    return images, labels
