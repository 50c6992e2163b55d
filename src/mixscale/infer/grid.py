"""Tile grids: integer starts and slices that cover an image, with overlap."""

from __future__ import annotations

import math
from typing import Sequence

from .._checks import check_fraction, check_int


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Starts of tiles of length ``tile`` covering ``range(size)``; the last one ends at ``size``.

    Neighbouring tiles share at least ``overlap * tile`` pixels (rounded down); a
    tile longer than the axis is shrunk to it.

    Examples
    --------
    >>> tile_starts(10, 4, 0.25)
    [0, 3, 6]
    """
    size, tile = check_int("size", size, minimum=1), check_int("tile", tile, minimum=1)
    overlap = check_fraction("overlap", overlap)
    tile = min(tile, size)
    step = max(1, tile - int(overlap * tile))
    count = 1 + math.ceil(max(0, size - tile) / step)
    if count == 1:
        return [0]
    # spread the tiles evenly so that the last one ends exactly at the border
    return [round(i * (size - tile) / (count - 1)) for i in range(count)]


def tile_grid(shape: Sequence[int], tile_shape: Sequence[int], overlap: float) -> list[tuple[slice, ...]]:
    """Every tile of a grid over ``shape`` as a tuple of slices (one per axis)."""
    if len(shape) != len(tile_shape):
        raise ValueError(f"tile_shape={tuple(tile_shape)} must have one entry per axis of shape={tuple(shape)}")
    axes = [[slice(s, s + min(t, n)) for s in tile_starts(n, t, overlap)] for n, t in zip(shape, tile_shape)]
    grid = [()]
    for ax in axes:
        grid = [g + (sl,) for g in grid for sl in ax]
    return grid


def with_halo(tile: tuple[slice, ...], shape: Sequence[int], halo: Sequence[int]) -> tuple[tuple[slice, ...], tuple]:
    """Grow ``tile`` by ``halo`` pixels per side, clipped to the image.

    Returns
    -------
    outer : tuple of slice
        The region to read.
    inner : tuple of slice
        Where ``tile`` lies inside ``outer``.
    """
    outer, inner = [], []
    for sl, n, h in zip(tile, shape, halo):
        lo, hi = max(0, sl.start - h), min(n, sl.stop + h)
        outer.append(slice(lo, hi))
        inner.append(slice(sl.start - lo, sl.stop - lo))
    return tuple(outer), tuple(inner)
