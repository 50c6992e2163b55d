"""Angles and argument checks shared by the tomography operators.

Angles are in degrees, as in ``skimage.transform.radon(image, theta=angles)``.
The checks here raise the house errors of :mod:`mixscale._checks`: the parameter,
the value received (a short summary for an array) and what is allowed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .._checks import check_float, check_int, not_allowed

#: angles further from 0 than this (in degrees) are refused: a value like 3.1 or 6000 is a unit mix-up
MAX_ABS_ANGLE = 360.0
#: the floating dtypes the operators compute in
FLOAT_DTYPES = (torch.float32, torch.float64)


class _Summary:
    """Stands for an array in an error message: its repr is short, whatever the array's size."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _summary(value: Any) -> _Summary:
    try:
        shape = tuple(value.shape) if hasattr(value, "shape") else np.shape(value)
    except ValueError:  # a ragged nesting of lists
        return _Summary(f"<{type(value).__name__} of length {len(value)}>")
    return _Summary(f"<{type(value).__name__} of shape {shape}>")


def parallel_angles(n: int, angular_range: float = 180.0) -> np.ndarray:
    """``n`` equally spaced projection angles in degrees over ``[0, angular_range)``.

    Parameters
    ----------
    n : int
        Number of angles, ``>= 1``.
    angular_range : float
        Range in degrees, ``0 < angular_range <= 360``; 180 covers parallel-beam data once.

    Returns
    -------
    angles : (n,) float64 ndarray
        ``np.linspace(0, angular_range, n, endpoint=False)``.

    Examples
    --------
    >>> parallel_angles(4).tolist()
    [0.0, 45.0, 90.0, 135.0]
    >>> parallel_angles(3, 120).tolist()
    [0.0, 40.0, 80.0]
    """
    n = check_int("n", n, minimum=1)
    angular_range = check_float("angular_range", angular_range, minimum=0, maximum=MAX_ABS_ANGLE, open_minimum=True)
    return np.linspace(0.0, angular_range, n, endpoint=False)


def check_angles(angles: Any, n_angles: int | None = None, name: str = "angles") -> torch.Tensor:
    """``angles`` as a 1D float64 tensor, checked: finite, within [-360, 360] degrees, one per sinogram row.

    Parameters
    ----------
    angles : (A,) array_like or Tensor
        Projection angles in degrees.
    n_angles : int, optional
        The number of angles the sinogram has; ``len(angles)`` must equal it.
    name : str
        The parameter's name in error messages.

    Returns
    -------
    angles : (A,) float64 Tensor
        On the device ``angles`` was on (the CPU for NumPy arrays and lists).

    Raises
    ------
    TypeError
        ``angles`` is not numeric.
    ValueError
        ``angles`` is not 1D, is empty, holds a non-finite value or one outside [-360, 360],
        or its length differs from ``n_angles``.

    Examples
    --------
    >>> check_angles([0, 90])
    tensor([ 0., 90.], dtype=torch.float64)
    >>> check_angles([0, 90, 180], n_angles=2)
    Traceback (most recent call last):
    ...
    ValueError: sinogram has 2 angles but angles has 3 values; expected one angle (in degrees) per sinogram row
    """
    tensor = _as_float64(name, angles)
    if tensor.ndim != 1 or tensor.numel() == 0:
        raise not_allowed(name, _summary(angles), "a non-empty 1D array of angles in degrees")
    bad = ~torch.isfinite(tensor) | (tensor.abs() > MAX_ABS_ANGLE)
    if bool(bad.any()):
        index = int(torch.nonzero(bad)[0, 0])
        raise not_allowed(f"{name}[{index}]", float(tensor[index]),
                          f"a finite angle in degrees within [-{MAX_ABS_ANGLE:g}, {MAX_ABS_ANGLE:g}]")
    if n_angles is not None and tensor.numel() != n_angles:
        raise ValueError(f"sinogram has {n_angles} angles but {name} has {tensor.numel()} values; "
                         "expected one angle (in degrees) per sinogram row")
    return tensor


def _as_float64(name: str, angles: Any) -> torch.Tensor:
    if isinstance(angles, torch.Tensor):
        if angles.is_complex() or angles.dtype == torch.bool:
            raise not_allowed(name, _summary(angles), "real angles in degrees", TypeError)
        return angles.detach().to(torch.float64)
    try:
        array = np.asarray(angles)
    except (TypeError, ValueError):  # ragged nesting
        raise not_allowed(name, angles, "a 1D array of angles in degrees", TypeError) from None
    if array.dtype.kind not in "iuf":
        raise not_allowed(name, angles if array.size <= 8 else _summary(array),
                          "a 1D array of real angles in degrees", TypeError)
    return torch.from_numpy(array.astype(np.float64))


def check_float_tensor(name: str, value: Any, *, min_ndim: int) -> torch.Tensor:
    """``value`` if it is a float32/float64 tensor with at least ``min_ndim`` dimensions."""
    if not isinstance(value, torch.Tensor):
        raise not_allowed(name, _summary(value) if hasattr(value, "shape") else value,
                          "a torch.Tensor (float32 or float64)", TypeError)
    if value.dtype not in FLOAT_DTYPES:
        raise not_allowed(f"{name}.dtype", value.dtype, "torch.float32 or torch.float64", TypeError)
    if value.ndim < min_ndim:
        raise not_allowed(f"{name}.shape", tuple(value.shape), f"at least {min_ndim} dimensions")
    return value


def check_square(name: str, value: Any) -> int:
    """The side ``N`` of a square ``(N, N)`` image shape, ``N >= 2``."""
    expected = "2 equal integers >= 2 (a square N x N image)"
    try:
        items = tuple(value)
    except TypeError:
        raise not_allowed(name, value, expected, TypeError) from None
    ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in items)
    if len(items) != 2 or not ints or items[0] != items[1] or items[0] < 2:
        raise not_allowed(name, value, expected)
    return int(items[0])


def radians(angles: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Degrees to radians in float64 on ``device`` (the geometry is computed in float64, whatever the data)."""
    return angles.to(device=device, dtype=torch.float64) * (math.pi / 180.0)
