"""Private helpers shared by the synthetic-data generators.

Argument checks that raise clear errors, local windows on the pixel grid, and
non-overlapping placement of objects described by a bounding sphere.
"""

from __future__ import annotations

import numbers

import numpy as np

__all__: list[str] = []


def check_int(name: str, value, *, minimum: int) -> int:
    """Return ``value`` as ``int`` if it is an integer ``>= minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r} "
                        f"of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(name: str, value, *, minimum: float = 0.0) -> float:
    """Return ``value`` as a finite ``float >= minimum``, else raise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number >= {minimum}, got {value!r} "
                        f"of type {type(value).__name__}")
    value = float(value)
    if not np.isfinite(value) or value < minimum:
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {value!r}")
    return value


def check_shape(name: str, value, *, ndim: int, minimum: int = 1) -> tuple[int, ...]:
    """Return a per-axis size tuple of length ``ndim`` with entries ``>= minimum``."""
    try:
        items = tuple(value)
    except TypeError:
        raise TypeError(f"{name} must be a tuple of {ndim} integers >= {minimum}, "
                        f"got {value!r}") from None
    if len(items) != ndim or any(isinstance(v, bool) or not isinstance(v, numbers.Integral)
                                 for v in items):
        raise ValueError(f"{name} must be a tuple of {ndim} integers >= {minimum}, "
                         f"got {value!r}")
    if any(v < minimum for v in items):
        raise ValueError(f"{name} must be a tuple of {ndim} integers >= {minimum}, "
                         f"got {value!r}")
    return tuple(int(v) for v in items)


def check_range(name: str, value, *, minimum: float, integer: bool = False,
                maximum: float | None = None) -> tuple:
    """Return a ``(low, high)`` pair with ``minimum <= low <= high (<= maximum)``."""
    kind = "integers" if integer else "numbers"
    allowed = f"a pair (low, high) of {kind} with {minimum} <= low <= high"
    if maximum is not None:
        allowed += f" <= {maximum}"
    try:
        low, high = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {allowed}, got {value!r}") from None
    wanted = numbers.Integral if integer else numbers.Real
    for v in (low, high):
        if isinstance(v, bool) or not isinstance(v, wanted) or not np.isfinite(v):
            raise ValueError(f"{name} must be {allowed}, got {value!r}")
    if not minimum <= low <= high or (maximum is not None and high > maximum):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    cast = int if integer else float
    return cast(low), cast(high)


def check_floats(name: str, value, *, n: int, allowed: str) -> tuple[float, ...]:
    """Return ``value`` as a tuple of ``n`` finite floats, else raise."""
    try:
        items = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        items = ()
    if len(items) != n or not all(np.isfinite(items)):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return items


def make_rng(seed) -> np.random.Generator:
    """``np.random.default_rng(seed)`` with a clear error for unusable seeds."""
    if isinstance(seed, bool):
        raise TypeError(f"seed must be None, a non-negative integer or a "
                        f"numpy Generator, got {seed!r}")
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as err:
        raise type(err)(f"seed must be None, a non-negative integer or a numpy "
                        f"Generator, got {seed!r}") from None


def window(centre, radius: float, shape: tuple[int, ...]):
    """Slices of the grid within ``radius`` of ``centre`` and the offsets there.

    Returns
    -------
    slices : tuple of slice
        Region of an array of ``shape`` that holds every pixel within ``radius``
        (max-norm) of ``centre``; may be empty where the object lies outside.
    offsets : list of ndarray
        Open-grid (broadcastable) pixel-centre coordinates minus ``centre``,
        one per axis, for the pixels inside ``slices``.
    """
    slices, offsets = [], []
    for axis, (c, n) in enumerate(zip(centre, shape)):
        lo = max(int(np.floor(c - radius)), 0)
        hi = min(int(np.ceil(c + radius)) + 1, n)
        hi = max(hi, lo)
        slices.append(slice(lo, hi))
        view = [1] * len(shape)
        view[axis] = hi - lo
        offsets.append((np.arange(lo, hi, dtype=np.float64) - c).reshape(view))
    return tuple(slices), offsets


def place_without_overlap(rng: np.random.Generator, radii, shape: tuple[int, ...], *,
                          gap: float, attempts: int = 30) -> list:
    """Random centres for objects of bounding radius ``radii`` that keep apart.

    Objects are placed largest first; each centre keeps the whole bounding sphere
    inside the grid and at least ``gap`` pixels from every sphere already placed.
    An object that finds no room in ``attempts`` tries is skipped (``None``).
    """
    centres: list = [None] * len(radii)
    placed_c: list[np.ndarray] = []
    placed_r: list[float] = []
    for index in np.argsort(-np.asarray(radii, dtype=float), kind="stable"):
        r = float(radii[index])
        lows = np.array([r] * len(shape))
        highs = np.array([n - 1 - r for n in shape], dtype=float)
        if np.any(highs < lows):
            continue
        candidates = rng.uniform(lows, highs, size=(attempts, len(shape)))
        if placed_c:
            dist = np.linalg.norm(candidates[:, None, :] - np.array(placed_c)[None], axis=-1)
            ok = np.all(dist >= np.array(placed_r)[None] + r + gap, axis=1)
        else:
            ok = np.ones(attempts, dtype=bool)
        if ok.any():
            centre = candidates[int(np.argmax(ok))]
            centres[index] = centre
            placed_c.append(centre)
            placed_r.append(r)
    return centres


def noise_generator(rng: np.random.Generator) -> np.random.Generator:
    """An independent generator for the noise, drawn from ``rng`` before anything else.

    Keeping the noise on its own stream makes the shapes and labels of a seed the
    same whatever ``noise_std`` is.
    """
    return np.random.default_rng(int(rng.integers(0, 2**63)))


def add_noise(rng: np.random.Generator, images: np.ndarray, noise_std: float) -> None:
    """Add i.i.d. Gaussian noise of standard deviation ``noise_std`` in place.

    Works one item of the batch at a time, so no temporary of the batch's size.
    """
    if noise_std <= 0:
        return
    buffer = np.empty(images.shape[1:], dtype=np.float32)
    for item in images:
        rng.standard_normal(out=buffer, dtype=np.float32)
        buffer *= np.float32(noise_std)
        item += buffer
