"""Private helpers shared by the synthetic-data generators.

The seed check, local windows on the pixel grid, and non-overlapping placement
of objects described by a bounding sphere. Argument checks come from
:mod:`mixscale._checks`.
"""

from __future__ import annotations

import numpy as np

from .._checks import not_allowed

__all__: list[str] = []


def make_rng(seed) -> np.random.Generator:
    """``np.random.default_rng(seed)`` with a clear error for unusable seeds."""
    expected = "None, an integer >= 0 or a numpy Generator"
    if isinstance(seed, bool):
        raise not_allowed("seed", seed, expected, TypeError)
    try:
        return np.random.default_rng(seed)
    except (TypeError, ValueError) as err:
        raise not_allowed("seed", seed, expected, type(err)) from None


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
