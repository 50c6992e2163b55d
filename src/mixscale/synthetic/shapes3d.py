"""Random boxes, spheres and spherical shells in volumes, with voxel labels.

Rasterised like the 2D shapes: a voxel belongs to a shape when its centre passes
the shape's inequality, evaluated only in a window around the shape.
"""

from __future__ import annotations

import logging

import numpy as np

from .._checks import (check_choice, check_float, check_floats, check_fraction, check_int, check_range,
                       check_shape, not_allowed)
from ._common import add_noise, make_rng, noise_generator, place_without_overlap, window

__all__ = ["SHAPE_CLASSES_3D", "draw_shape_3d", "random_rotation", "random_shapes_3d"]

logger = logging.getLogger(__name__)

#: Class names of :func:`random_shapes_3d`; a label value indexes this tuple.
SHAPE_CLASSES_3D = ("background", "box", "sphere", "shell")

_KINDS_3D = SHAPE_CLASSES_3D[1:]


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A uniformly distributed 3x3 rotation matrix (QR of a Gaussian matrix)."""
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] = -q[:, 0]
    return q


def _bounding_radius_3d(kind: str, size: float, aspect) -> float:
    if kind == "box":
        return 0.5 * size * float(np.sqrt(1.0 + aspect[0] ** 2 + aspect[1] ** 2))
    return 0.5 * size


def _mask_3d(kind: str, offsets, size: float, rotation, aspect, inner_fraction):
    """Boolean mask of a shape given open-grid voxel offsets from its centre."""
    dz, dy, dx = offsets
    if kind == "box":
        half = 0.5 * size * np.array([1.0, aspect[0], aspect[1]])
        mask = True
        for k in range(3):
            u = rotation[k, 0] * dz + rotation[k, 1] * dy + rotation[k, 2] * dx
            mask = mask & (np.abs(u) <= half[k])
        return mask
    r2 = dz * dz + dy * dy + dx * dx
    outer = r2 <= (0.5 * size) ** 2
    if kind == "sphere":
        return outer
    return outer & (r2 >= (0.5 * size * inner_fraction) ** 2)


def draw_shape_3d(kind: str, centre, size: float, *, volume_shape=(32, 48, 48),
                  rotation=None, aspect=(1.0, 1.0), inner_fraction: float = 0.5):
    """Rasterise one 3D shape as a boolean mask.

    Parameters
    ----------
    kind : {"box", "sphere", "shell"}
        Shape to draw.
    centre : (3,) sequence of float
        ``(z, y, x)`` of the centre in voxel coordinates; the mask is clipped.
    size : float
        Long edge of a box, diameter of a sphere, outer diameter of a shell.
    volume_shape : (3,) tuple of int
        ``(D, H, W)`` of the output.
    rotation : (3, 3) array_like or None
        Rotation of a box (rows are its axes in ``(z, y, x)``); identity if None.
    aspect : (float, float)
        The other two box edges as fractions of ``size``, each in ``(0, 1]``.
    inner_fraction : float
        Inner diameter / outer diameter of a shell, in ``[0, 1)``.

    Returns
    -------
    mask : (D, H, W) ndarray of bool

    Examples
    --------
    >>> ball = draw_shape_3d("sphere", (10, 10, 10), 12, volume_shape=(20, 20, 20))
    >>> abs(int(ball.sum()) - 905) < 60    # 4/3 pi 6**3
    True
    """
    check_choice("kind", kind, _KINDS_3D)
    volume_shape = check_shape("volume_shape", volume_shape, ndim=3)
    centre = check_floats("centre", centre, n=3, what="a (z, y, x) triple of finite numbers")
    size = check_float("size", size, minimum=0)
    allowed = "a pair of numbers in (0, 1]"
    checked = check_floats("aspect", aspect, n=2, what=allowed)
    if not all(0 < a <= 1 for a in checked):
        raise not_allowed("aspect", aspect, allowed)
    aspect = checked
    inner_fraction = check_fraction("inner_fraction", inner_fraction)
    rot = np.eye(3) if rotation is None else np.asarray(rotation, dtype=float)
    if rot.shape != (3, 3) or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-6):
        raise not_allowed("rotation", rotation, "None or an orthogonal 3x3 matrix")
    mask = np.zeros(volume_shape, dtype=bool)
    slices, offsets = window(centre, _bounding_radius_3d(kind, size, aspect), volume_shape)
    mask[slices] = _mask_3d(kind, offsets, size, rot, aspect, inner_fraction)
    return mask


def _draw_one_volume(rng, volume, label, *, n_shapes, size_range, intensity_range):
    count = int(rng.integers(n_shapes[0], n_shapes[1] + 1))
    classes = rng.integers(1, len(SHAPE_CLASSES_3D), size=count)
    sizes = rng.uniform(*size_range, size=count)
    aspects = rng.uniform(0.5, 1.0, size=(count, 2))
    inners = rng.uniform(0.4, 0.7, size=count)
    values = rng.uniform(*intensity_range, size=count)
    rotations = [random_rotation(rng) for _ in range(count)]
    radii = [_bounding_radius_3d(SHAPE_CLASSES_3D[c], s, a)
             for c, s, a in zip(classes, sizes, aspects)]
    centres = place_without_overlap(rng, radii, volume.shape, gap=2.0)
    for k, centre in enumerate(centres):
        if centre is None:
            logger.debug("random_shapes_3d: no room for shape %d of %d", k, count)
            continue
        slices, offsets = window(centre, radii[k], volume.shape)
        mask = _mask_3d(SHAPE_CLASSES_3D[classes[k]], offsets, sizes[k], rotations[k],
                        aspects[k], inners[k])
        label[slices][mask] = classes[k]
        volume[slices][mask] = values[k]


def random_shapes_3d(n_volumes: int, *, volume_shape=(32, 48, 48), n_shapes=(2, 5),
                     size_range=(6, 16), noise_std: float = 0.1,
                     intensity_range=(0.8, 1.2), seed=0):
    """Volumes of random boxes, spheres and shells, with voxel labels.

    Each volume holds ``n_shapes`` shapes of uniformly drawn kind, size
    (``size_range``, see :func:`draw_shape_3d`), random rotation, box aspect
    ratios in ``[0.5, 1]``, shell inner fraction in ``[0.4, 0.7]`` and constant
    intensity (``intensity_range``) on a background of 0, plus Gaussian noise.
    Shapes keep at least 2 voxels apart and wholly inside the volume; one that
    finds no room is skipped.

    Parameters
    ----------
    n_volumes : int
        Number of volumes ``N``.
    volume_shape : (3,) tuple of int
        ``(D, H, W)``.
    n_shapes : (int, int)
        Inclusive range of the number of shapes per volume.
    size_range : (float, float)
        Range of shape sizes in voxels; at most ``min(D, H, W) / 2``.
    noise_std : float
        Standard deviation of the additive Gaussian noise.
    intensity_range : (float, float)
        Range of the per-shape intensity.
    seed : None, int or numpy.random.Generator
        Seed for ``numpy.random.default_rng``; equal seeds give equal output.
        The noise has its own stream, so labels do not depend on ``noise_std``.

    Returns
    -------
    volumes : (N, D, H, W) ndarray of float32
    labels : (N, D, H, W) ndarray of int64
        Class per voxel, an index into :data:`SHAPE_CLASSES_3D`.

    Examples
    --------
    >>> volumes, labels = random_shapes_3d(1, volume_shape=(16, 24, 24), size_range=(4, 8))
    >>> volumes.shape, labels.dtype.name
    ((1, 16, 24, 24), 'int64')
    """
    n_volumes = check_int("n_volumes", n_volumes, minimum=1)
    volume_shape = check_shape("volume_shape", volume_shape, ndim=3, minimum=4)
    n_shapes = check_range("n_shapes", n_shapes, minimum=0, integer=True)
    size_range = check_range("size_range", size_range, minimum=2,
                             maximum=min(volume_shape) / 2)
    noise_std = check_float("noise_std", noise_std, minimum=0)
    intensity_range = check_range("intensity_range", intensity_range)
    rng = make_rng(seed)
    noise_rng = noise_generator(rng)
    volumes = np.zeros((n_volumes, *volume_shape), dtype=np.float32)
    labels = np.zeros((n_volumes, *volume_shape), dtype=np.int64)
    for volume, label in zip(volumes, labels):
        _draw_one_volume(rng, volume, label, n_shapes=n_shapes, size_range=size_range,
                         intensity_range=intensity_range)
    add_noise(noise_rng, volumes, noise_std)
    return volumes, labels
