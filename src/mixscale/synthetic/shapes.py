"""Random geometric shapes with per-pixel class labels (2D).

Every shape is rasterised analytically on the pixel grid, without anti-aliasing:
a pixel belongs to a shape when its centre (integer coordinates) passes the
shape's inequality (half-planes for rectangles and triangles, distances for
circles and annuli). Only a small window around each shape is evaluated, so a
batch of a hundred 512x512 images takes well under a second.
"""

from __future__ import annotations

import logging

import numpy as np

from .._checks import (check_bool, check_choice, check_float, check_floats, check_fraction, check_int,
                       check_range, check_shape)
from ._common import add_noise, make_rng, noise_generator, place_without_overlap, window

__all__ = ["SHAPE_CLASSES", "draw_shape", "random_shapes"]

logger = logging.getLogger(__name__)

#: Class names of :func:`random_shapes`; a label value indexes this tuple.
SHAPE_CLASSES = ("background", "rectangle", "circle", "triangle", "annulus")

_KINDS = SHAPE_CLASSES[1:]


def _bounding_radius(kind: str, size: float, aspect: float) -> float:
    """Radius of a circle around the centre that holds the whole shape."""
    if kind == "rectangle":
        return 0.5 * size * float(np.hypot(1.0, aspect))
    return 0.5 * size


def _shape_mask(kind: str, dy, dx, size: float, angle: float, aspect: float,
                inner_fraction: float) -> np.ndarray:
    """Boolean mask of a shape given pixel offsets ``dy, dx`` from its centre."""
    if kind in ("circle", "annulus"):
        r2 = dy * dy + dx * dx
        outer = r2 <= (0.5 * size) ** 2
        if kind == "circle":
            return outer
        return outer & (r2 >= (0.5 * size * inner_fraction) ** 2)
    cos, sin = np.cos(angle), np.sin(angle)
    if kind == "rectangle":
        u = cos * dx + sin * dy
        v = cos * dy - sin * dx
        return (np.abs(u) <= 0.5 * size) & (np.abs(v) <= 0.5 * size * aspect)
    # equilateral triangle, circumradius size / 2, so its inradius is size / 4:
    # inside when the projection on each of the three edge normals is <= inradius
    mask = np.ones(np.broadcast_shapes(np.shape(dy), np.shape(dx)), dtype=bool)
    for k in range(3):
        phi = angle + 2.0 * np.pi * k / 3.0
        mask &= (np.cos(phi) * dx + np.sin(phi) * dy) <= 0.25 * size
    return mask


def draw_shape(kind: str, centre, size: float, *, angle: float = 0.0,
               image_shape=(128, 128), aspect: float = 1.0,
               inner_fraction: float = 0.5) -> np.ndarray:
    """Rasterise one shape as a boolean mask.

    Parameters
    ----------
    kind : {"rectangle", "circle", "triangle", "annulus"}
        Shape to draw.
    centre : (2,) sequence of float
        ``(y, x)`` position of the centre in pixel coordinates (pixel ``(i, j)``
        has its centre at ``(i, j)``). May lie anywhere; the mask is clipped.
    size : float
        Extent in pixels: the long side of a rectangle, the diameter of a circle,
        the outer diameter of an annulus, the circumscribed diameter of an
        equilateral triangle.
    angle : float
        Rotation in radians (counter-clockwise in ``(x, y)``), rectangles and
        triangles only.
    image_shape : (2,) tuple of int
        ``(H, W)`` of the output.
    aspect : float
        Short side / long side of a rectangle, in ``(0, 1]``.
    inner_fraction : float
        Inner diameter / outer diameter of an annulus, in ``[0, 1)``.

    Returns
    -------
    mask : (H, W) ndarray of bool

    Examples
    --------
    >>> disk = draw_shape("circle", (16, 16), 20, image_shape=(32, 32))
    >>> abs(int(disk.sum()) - 314) < 20    # pi * 10**2
    True
    """
    kind = check_choice("kind", kind, _KINDS)
    image_shape = check_shape("image_shape", image_shape, ndim=2)
    cy, cx = check_floats("centre", centre, n=2, what="a (y, x) pair of finite numbers")
    size = check_float("size", size, minimum=0)
    angle = check_float("angle", angle)
    aspect = check_float("aspect", aspect, minimum=0, maximum=1, open_minimum=True)
    inner_fraction = check_fraction("inner_fraction", inner_fraction)
    mask = np.zeros(image_shape, dtype=bool)
    slices, (dy, dx) = window((cy, cx), _bounding_radius(kind, size, aspect), image_shape)
    mask[slices] = _shape_mask(kind, dy, dx, size, angle, aspect, inner_fraction)
    return mask


def _draw_one_image(rng, image, label, *, n_shapes, size_range, intensity_range,
                    overlap) -> None:
    """Draw a random set of shapes into one ``image`` and its ``label`` in place."""
    count = int(rng.integers(n_shapes[0], n_shapes[1] + 1))
    classes = rng.integers(1, len(SHAPE_CLASSES), size=count)
    sizes = rng.uniform(*size_range, size=count)
    angles = rng.uniform(0.0, 2.0 * np.pi, size=count)
    aspects = rng.uniform(0.5, 1.0, size=count)
    inners = rng.uniform(0.4, 0.7, size=count)
    values = rng.uniform(*intensity_range, size=count)
    radii = [_bounding_radius(SHAPE_CLASSES[c], s, a)
             for c, s, a in zip(classes, sizes, aspects)]
    gap = -np.inf if overlap else 2.0
    centres = place_without_overlap(rng, radii, image.shape, gap=gap)
    for k, centre in enumerate(centres):
        if centre is None:
            logger.debug("random_shapes: no room for shape %d of %d, skipped", k, count)
            continue
        kind = SHAPE_CLASSES[classes[k]]
        slices, (dy, dx) = window(centre, radii[k], image.shape)
        mask = _shape_mask(kind, dy, dx, sizes[k], angles[k], aspects[k], inners[k])
        label[slices][mask] = classes[k]
        image[slices][mask] = values[k]


def random_shapes(n_images: int, *, image_shape=(128, 128), n_shapes=(3, 8),
                  size_range=(8, 28), noise_std: float = 0.1,
                  intensity_range=(0.8, 1.2), overlap: bool = False, seed=0):
    """Images of random rectangles, circles, triangles and annuli, with labels.

    Each image holds ``n_shapes`` shapes (count drawn uniformly in the closed
    range), each of a uniformly drawn kind, size (``size_range``, see
    :func:`draw_shape` for what size means per kind), rotation, rectangle aspect
    ratio in ``[0.5, 1]``, annulus inner fraction in ``[0.4, 0.7]`` and constant
    intensity (``intensity_range``) on a background of 0; then Gaussian noise of
    standard deviation ``noise_std`` is added to the whole image.

    With ``overlap=False`` (default) shapes keep at least 2 pixels apart and
    wholly inside the image, so each connected component is one shape; a shape
    that finds no room is skipped, so crowded settings give fewer shapes than
    drawn. With ``overlap=True`` shapes may overlap and the later drawn wins.

    Parameters
    ----------
    n_images : int
        Number of images ``N``.
    image_shape : (2,) tuple of int
        ``(H, W)``.
    n_shapes : (int, int)
        Inclusive range of the number of shapes per image.
    size_range : (float, float)
        Range of shape sizes in pixels; at most ``min(H, W) / 2``.
    noise_std : float
        Standard deviation of the additive Gaussian noise.
    intensity_range : (float, float)
        Range of the per-shape intensity.
    overlap : bool
        Whether shapes may overlap (see above).
    seed : None, int or numpy.random.Generator
        Seed for ``numpy.random.default_rng``; equal seeds give equal output.
        The noise has its own stream, so labels do not depend on ``noise_std``.

    Returns
    -------
    images : (N, H, W) ndarray of float32
    labels : (N, H, W) ndarray of int64
        Class per pixel, an index into :data:`SHAPE_CLASSES` (0 = background).

    Examples
    --------
    >>> images, labels = random_shapes(2, image_shape=(64, 64), seed=1)
    >>> images.shape, labels.dtype.name, int(labels.max()) <= 4
    ((2, 64, 64), 'int64', True)
    """
    n_images = check_int("n_images", n_images, minimum=1)
    image_shape = check_shape("image_shape", image_shape, ndim=2, minimum=4)
    n_shapes = check_range("n_shapes", n_shapes, minimum=0, integer=True)
    size_range = check_range("size_range", size_range, minimum=2,
                             maximum=min(image_shape) / 2)
    noise_std = check_float("noise_std", noise_std, minimum=0)
    intensity_range = check_range("intensity_range", intensity_range)
    overlap = check_bool("overlap", overlap)
    rng = make_rng(seed)
    noise_rng = noise_generator(rng)
    images = np.zeros((n_images, *image_shape), dtype=np.float32)
    labels = np.zeros((n_images, *image_shape), dtype=np.int64)
    for image, label in zip(images, labels):
        _draw_one_image(rng, image, label, n_shapes=n_shapes, size_range=size_range,
                        intensity_range=intensity_range, overlap=bool(overlap))
    add_noise(noise_rng, images, noise_std)
    return images, labels
