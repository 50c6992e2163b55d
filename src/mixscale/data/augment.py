"""Augmentation applied identically to an image and its label.

The dihedral group (all axis permutations combined with all flips) gives 8
transforms in 2D and 48 in 3D. They act on the last ``spatial_dims`` axes of
NumPy arrays or torch tensors, so the same functions serve training
augmentation and test-time augmentation (apply, predict, invert, average).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .._checks import check_bool, check_float, check_int, check_range

__all__ = ["DihedralTransform", "dihedral_transforms", "apply_dihedral", "invert_dihedral",
           "Augmentation"]


@dataclass(frozen=True)
class DihedralTransform:
    """Flip the spatial axes marked in ``flips``, then reorder them by ``perm``.

    Attributes
    ----------
    perm : tuple of int
        New order of the spatial axes (a permutation of 0..spatial_dims-1).
    flips : tuple of bool
        Which spatial axes (before permuting) are reversed.
    """

    perm: tuple
    flips: tuple

    @property
    def is_identity(self) -> bool:
        return self.perm == tuple(range(len(self.perm))) and not any(self.flips)


def _check_spatial_dims(spatial_dims) -> int:
    return check_int("spatial_dims", spatial_dims, minimum=2, maximum=3)


@lru_cache(maxsize=None)
def _transforms(spatial_dims: int) -> tuple:
    perms = list(itertools.permutations(range(spatial_dims)))
    flips = list(itertools.product((False, True), repeat=spatial_dims))
    return tuple(DihedralTransform(p, f) for p in perms for f in flips)


def dihedral_transforms(spatial_dims: int) -> list[DihedralTransform]:
    """All flips and axis permutations: 8 in 2D, 48 in 3D; index 0 is the identity.

    Examples
    --------
    >>> len(dihedral_transforms(2)), len(dihedral_transforms(3))
    (8, 48)
    """
    return list(_transforms(_check_spatial_dims(spatial_dims)))


def _resolve(array, index, spatial_dims) -> tuple:
    table = _transforms(_check_spatial_dims(spatial_dims))
    index = check_int("index", index, minimum=0, maximum=len(table) - 1)  # 8 transforms in 2D, 48 in 3D
    if array.ndim < spatial_dims:
        raise ValueError(f"array has {array.ndim} axes, fewer than spatial_dims={spatial_dims}")
    lead = array.ndim - spatial_dims
    return table[int(index)], lead


def _flip(array, axes):
    if not axes:
        return array
    if isinstance(array, np.ndarray):
        return np.flip(array, axis=axes)
    return array.flip(axes)


def _permute(array, order):
    if isinstance(array, np.ndarray):
        return np.transpose(array, order)
    return array.permute(*order)


def _finish(array):
    return np.ascontiguousarray(array) if isinstance(array, np.ndarray) else array.contiguous()


def apply_dihedral(array, index: int, *, spatial_dims: int):
    """Apply transform ``index`` of :func:`dihedral_transforms` to the last spatial axes.

    Parameters
    ----------
    array : ndarray or torch.Tensor, shape (..., *spatial)
        Leading axes (batch, channels) are left untouched.
    index : int
        0..7 in 2D, 0..47 in 3D.
    spatial_dims : int
        2 or 3.

    Returns
    -------
    Same type as ``array``, contiguous; spatial axes permuted (the shape changes
    when the transform swaps axes of different sizes).
    """
    t, lead = _resolve(array, index, spatial_dims)
    axes = tuple(lead + i for i, f in enumerate(t.flips) if f)
    order = tuple(range(lead)) + tuple(lead + p for p in t.perm)
    return _finish(_permute(_flip(array, axes), order))


def invert_dihedral(array, index: int, *, spatial_dims: int):
    """Undo :func:`apply_dihedral` with the same ``index``: ``invert(apply(x)) == x``."""
    t, lead = _resolve(array, index, spatial_dims)
    inverse = tuple(int(i) for i in np.argsort(t.perm))
    order = tuple(range(lead)) + tuple(lead + p for p in inverse)
    axes = tuple(lead + i for i, f in enumerate(t.flips) if f)
    return _finish(_flip(_permute(array, order), axes))


class Augmentation:
    """Random augmentation of an (image, label) pair.

    Geometric transforms (dihedral) act on image and label alike, so unlabelled
    pixels (``ignore_index`` or NaN) keep their place relative to the image.
    Intensity scale/shift (one draw per call, shared by all channels) and
    Gaussian noise act on the image only; use them on normalised images, where
    a shift of 0.1 is a tenth of a standard deviation.

    Parameters
    ----------
    dihedral : bool
        Draw one of the 8 (2D) / 48 (3D) flips/rotations. Only transforms that
        keep the patch shape are used, so non-square patches still batch.
    intensity_scale : (float, float) or None
        Range of a uniform multiplicative factor.
    intensity_shift : (float, float) or None
        Range of a uniform additive offset.
    noise_std : float
        Standard deviation of additive Gaussian noise (0: none).

    Examples
    --------
    >>> aug = Augmentation(intensity_scale=None, intensity_shift=None)
    >>> img, lab = aug(np.zeros((1, 4, 4), np.float32), np.zeros((4, 4), np.int64),
    ...                np.random.default_rng(0))
    >>> img.shape, lab.shape
    ((1, 4, 4), (4, 4))
    """

    def __init__(self, dihedral: bool = True, intensity_scale=(0.9, 1.1),
                 intensity_shift=(-0.1, 0.1), noise_std: float = 0.0):
        self.dihedral = check_bool("dihedral", dihedral)
        self.intensity_scale = None if intensity_scale is None else check_range("intensity_scale", intensity_scale)
        self.intensity_shift = None if intensity_shift is None else check_range("intensity_shift", intensity_shift)
        self.noise_std = check_float("noise_std", noise_std, minimum=0)

    def __repr__(self) -> str:
        return (f"Augmentation(dihedral={self.dihedral}, intensity_scale={self.intensity_scale}, "
                f"intensity_shift={self.intensity_shift}, noise_std={self.noise_std})")

    def __call__(self, image: np.ndarray, label: np.ndarray, rng: np.random.Generator):
        """Augment ``image`` (C, *spatial) and ``label`` (*spatial) or (C_out, *spatial)."""
        image = np.asarray(image)
        label = np.asarray(label)
        spatial_dims = image.ndim - 1
        spatial = image.shape[1:]
        if spatial_dims not in (2, 3) or label.shape[-spatial_dims:] != spatial \
                or label.ndim not in (spatial_dims, spatial_dims + 1):
            raise ValueError(
                f"image must be (C, *spatial) with 2 or 3 spatial axes and label (*spatial) or "
                f"(C_out, *spatial) with the same spatial shape; got {image.shape} and {label.shape}"
            )
        if self.dihedral:
            allowed = [i for i, t in enumerate(_transforms(spatial_dims))
                       if tuple(spatial[p] for p in t.perm) == spatial]
            index = allowed[int(rng.integers(len(allowed)))]
            image = apply_dihedral(image, index, spatial_dims=spatial_dims)
            label = apply_dihedral(label, index, spatial_dims=spatial_dims)
        image = image.astype(np.float32, copy=True)
        if self.intensity_scale is not None:
            image *= np.float32(rng.uniform(*self.intensity_scale))
        if self.intensity_shift is not None:
            image += np.float32(rng.uniform(*self.intensity_shift))
        if self.noise_std > 0:
            image += rng.normal(0.0, self.noise_std, size=image.shape).astype(np.float32)
        return image, label
