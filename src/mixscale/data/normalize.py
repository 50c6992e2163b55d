"""Per-channel intensity normalisation computed from training data.

The statistics are stored with a model (``to_dict``/``from_dict`` are JSON-safe),
so that prediction normalises exactly as training did.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from .._checks import check_int

logger = logging.getLogger(__name__)

__all__ = ["Normalization", "compute_normalization", "normalize", "denormalize"]

BLOCK_ELEMENTS = 1 << 22  # values converted to float64 at a time while streaming


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean and standard deviation.

    Attributes
    ----------
    mean : list of float
        One value per channel.
    std : list of float
        One positive value per channel.

    Examples
    --------
    >>> n = Normalization(mean=[10.0], std=[2.0])
    >>> Normalization.from_dict(n.to_dict()) == n
    True
    """

    mean: list
    std: list

    def __post_init__(self):
        for name in ("mean", "std"):
            values = getattr(self, name)
            if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) == 0:
                raise TypeError(f"{name} must be a non-empty list of floats, got {values!r}")
            values = [float(v) for v in values]
            if not all(math.isfinite(v) for v in values):
                raise ValueError(f"{name} must hold finite numbers, got {values}")
            object.__setattr__(self, name, values)
        if len(self.mean) != len(self.std):
            raise ValueError(
                f"mean and std must have one entry per channel, got {len(self.mean)} and {len(self.std)}"
            )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")

    @property
    def num_channels(self) -> int:
        """Number of channels described."""
        return len(self.mean)

    def to_dict(self) -> dict:
        """JSON-safe dict ``{"mean": [...], "std": [...]}``."""
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, data: dict) -> Normalization:
        """Inverse of :meth:`to_dict`; unknown or missing keys raise ValueError."""
        if not isinstance(data, dict):
            raise TypeError(f"data must be a dict with keys 'mean' and 'std', got {type(data).__name__}")
        if set(data) != {"mean", "std"}:
            raise ValueError(f"data must have exactly the keys ['mean', 'std'], got {sorted(data)}")
        return cls(mean=data["mean"], std=data["std"])


def _channel_axis(ndim: int, channel_axis) -> int | None:
    if channel_axis is None:
        return None
    channel_axis = check_int("channel_axis", channel_axis)
    if not -ndim <= channel_axis < ndim:
        raise ValueError(f"channel_axis={channel_axis} is out of range for an array with {ndim} axes")
    return int(channel_axis) % ndim


def _blocks(image, axis: int | None):
    """Yield (C, n) float64 blocks of an array-like, reading it slab by slab."""
    shape = tuple(image.shape)
    stream_axis = 0 if axis != 0 else 1
    if len(shape) <= stream_axis:
        yield _to_channels(np.asarray(image[...], dtype=np.float64), axis)
        return
    per_index = max(1, int(np.prod(shape, dtype=np.int64)) // max(shape[stream_axis], 1))
    step = max(1, BLOCK_ELEMENTS // per_index)
    for start in range(0, shape[stream_axis], step):
        key = [slice(None)] * len(shape)
        key[stream_axis] = slice(start, start + step)
        yield _to_channels(np.asarray(image[tuple(key)], dtype=np.float64), axis)


def _to_channels(block: np.ndarray, axis: int | None) -> np.ndarray:
    if axis is None:
        return block.reshape(1, -1)
    return np.moveaxis(block, axis, 0).reshape(block.shape[axis], -1)


def _merge_moments(count, mean, m2, block):
    """Add a (C, n) block to running per-channel count, mean and sum of squared
    deviations (Chan et al.), which stays accurate for large offsets."""
    n_b = block.shape[1]
    mean_b = block.mean(axis=1)
    m2_b = ((block - mean_b[:, None]) ** 2).sum(axis=1)
    if mean is None:
        return n_b, mean_b, m2_b
    delta = mean_b - mean
    total = count + n_b
    return total, mean + delta * (n_b / total), m2 + m2_b + delta**2 * (count * n_b / total)


def compute_normalization(images, *, channel_axis=None) -> Normalization:
    """Per-channel mean and (population) std over a list of images.

    Streams over slabs of each image in float64 (Chan et al. pairwise update),
    so lazy arrays (zarr, HDF5, memmaps) larger than memory are fine.

    Parameters
    ----------
    images : sequence of array_like, or one array
        Training images, all with the same number of channels. Lazy array-likes
        with ``shape`` and slicing are read slab by slab.
    channel_axis : int, optional
        Axis holding channels in every image; None for single-channel images.

    Returns
    -------
    Normalization
        A std of 0 (a constant channel) is replaced by 1, with a warning.

    Raises
    ------
    ValueError
        If the list is empty, channel counts differ, or an image holds NaN/inf.

    Examples
    --------
    >>> compute_normalization([np.array([1.0, 3.0])])
    Normalization(mean=[2.0], std=[1.0])
    """
    if hasattr(images, "shape") and hasattr(images, "dtype"):
        images = [images]
    images = list(images)
    if not images:
        raise ValueError("images must hold at least one image, got an empty sequence")
    count, mean, m2 = 0, None, None
    for i, image in enumerate(images):
        if not hasattr(image, "shape"):
            image = np.asarray(image)
        axis = _channel_axis(len(image.shape), channel_axis)
        for block in _blocks(image, axis):
            if not np.isfinite(block).all():
                raise ValueError(f"images[{i}] holds NaN or inf values; clean or mask them first")
            if mean is not None and block.shape[0] != mean.shape[0]:
                raise ValueError(
                    f"images[{i}] has {block.shape[0]} channels along channel_axis={channel_axis}, "
                    f"earlier images have {mean.shape[0]}"
                )
            if block.shape[1]:
                count, mean, m2 = _merge_moments(count, mean, m2, block)
    if mean is None:
        raise ValueError("images hold no pixels")
    std = np.sqrt(m2 / count)
    for c in np.flatnonzero(std == 0):
        logger.warning("channel %d is constant (std 0); using std 1 for it", int(c))
    std = np.where(std == 0, 1.0, std)
    return Normalization(mean=mean.tolist(), std=std.tolist())


def _broadcast(norm: Normalization, image: np.ndarray, channel_axis) -> tuple:
    if not isinstance(norm, Normalization):
        raise TypeError(f"norm must be a Normalization, got {type(norm).__name__}")
    axis = _channel_axis(image.ndim, channel_axis)
    n_img = 1 if axis is None else image.shape[axis]
    if n_img != norm.num_channels:
        raise ValueError(
            f"image has {n_img} channel(s) (channel_axis={channel_axis}) but norm describes "
            f"{norm.num_channels}"
        )
    shape = [1] * image.ndim
    if axis is not None:
        shape[axis] = n_img
    mean = np.asarray(norm.mean, dtype=np.float32).reshape(shape)
    std = np.asarray(norm.std, dtype=np.float32).reshape(shape)
    return mean, std


def _finite_float32(image, name: str) -> np.ndarray:
    out = np.array(image, dtype=np.float32, copy=True)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} holds NaN or inf values (or values too large for float32)")
    return out


def normalize(image, norm: Normalization, *, channel_axis=None) -> np.ndarray:
    """Return ``(image - mean) / std`` per channel as float32.

    Parameters
    ----------
    image : array_like, shape (..., C, ...) or (*spatial)
    norm : Normalization
    channel_axis : int, optional
        Axis of ``image`` holding channels; None for a single-channel image.

    Returns
    -------
    ndarray of float32, same shape as ``image``.
    """
    out = _finite_float32(image, "image")
    mean, std = _broadcast(norm, out, channel_axis)
    out -= mean
    out /= std
    return out


def denormalize(image, norm: Normalization, *, channel_axis=None) -> np.ndarray:
    """Inverse of :func:`normalize`: ``image * std + mean`` per channel, float32."""
    out = _finite_float32(image, "image")
    mean, std = _broadcast(norm, out, channel_axis)
    out *= std
    out += mean
    return out
