"""Tiled prediction of an in-memory image with blending and context halos."""

from __future__ import annotations

import logging
import math
from typing import Callable, Sequence

import torch

from .._checks import check_int, check_shape, not_allowed
from .blend import blend_window
from .grid import tile_grid, with_halo
from .merge import Accumulator

logger = logging.getLogger(__name__)


@torch.no_grad()
def predict_tiled(predictor: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, *,
                  tile_shape: Sequence[int] | int, overlap: float = 0.25, blend: str = "gaussian",
                  halo: Sequence[int] | int = 0, batch_size: int = 1,
                  device: str | torch.device = "cpu", region: Sequence[slice] | None = None) -> torch.Tensor:
    """Predict an image tile by tile and blend the tiles.

    Each tile of ``tile_shape`` is read with ``halo`` extra pixels of context on
    every side (clipped at the image border, where the predictor's own boundary
    handling applies, as for the whole image), and only the tile itself is kept.
    With ``halo`` at least the predictor's receptive-field radius, the result equals
    whole-image prediction; overlapping tiles are blended with ``blend`` weights.

    Parameters
    ----------
    predictor : callable
        ``(B, C, *spatial) -> (B, C_out, *spatial)``.
    image : (C, *spatial) Tensor
    tile_shape : int or sequence of int
        At least :func:`minimum_tile_shape` of ``halo`` (smaller tiles only repeat work).
    overlap : float in [0, 1)
    blend : {"gaussian", "constant"}
    halo : int or sequence of int
    batch_size : int
        Tiles per call of ``predictor`` (tiles of equal shape only).
    region : sequence of slice, optional
        Predict only this part of the image (the rest serves as context, as far
        as ``halo`` reaches); default: the whole image.

    Returns
    -------
    (C_out, *region) float32 Tensor, on the CPU. Sums are kept in float64, so a
    pixel predicted identically by every tile that covers it comes back exactly.

    Examples
    --------
    >>> x = torch.arange(35.0).reshape(1, 5, 7)
    >>> torch.equal(predict_tiled(lambda t: 2 * t, x, tile_shape=3), 2 * x)
    True
    """
    spatial = tuple(image.shape[1:])
    dims = len(spatial)
    check_shape("tile_shape", tile_shape, ndim=dims)
    halos = check_shape("halo", halo, ndim=dims, minimum=0)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    region = _check_region(region, spatial)
    tiles = check_tile_shape(tile_shape, halos, _shape(region))
    grid = _offset(tile_grid(_shape(region), tiles, overlap), [r.start for r in region])
    if len(grid) == 1:  # one tile: no blending, no accumulator
        outer, inner = with_halo(grid[0], spatial, halos)
        x = image[(slice(None),) + outer][None].to(device, torch.float32)
        return predictor(x)[0][(slice(None),) + inner].float().cpu()
    acc, windows, pending = None, {}, []
    for tile in grid:
        outer, inner = with_halo(tile, spatial, halos)
        if pending and (len(pending) == batch_size or _shape(outer) != _shape(pending[0][1])):
            acc = _run(predictor, image, pending, acc, windows, blend, device, region)
            pending = []
        pending.append((tile, outer, inner))
    acc = _run(predictor, image, pending, acc, windows, blend, device, region)
    logger.debug("%d tiles of %s (halo %s) over %s", len(grid), tiles, halos, spatial)
    return acc.finalize().float()


def minimum_tile_shape(halo: Sequence[int], shape: Sequence[int]) -> tuple[int, ...]:
    """The smallest tile side worth predicting per axis: half the halo (or the whole axis when shorter).

    Each tile reads ``halo`` pixels of context on every side, so a tile of side ``t``
    reads ``t + 2 * halo`` to keep ``t``; at half the halo that is already 5 times
    per axis (25 times the pixels in 2D), and smaller tiles only repeat the
    network's work over the same context.

    Examples
    --------
    >>> minimum_tile_shape((12, 12), (64, 5))
    (6, 5)
    """
    return tuple(max(1, min(int(n), -(-int(h) // 2))) for h, n in zip(halo, shape))


def check_tile_shape(tile_shape, halo, shape: Sequence[int]) -> tuple[int, ...]:
    """``tile_shape`` as one int per axis of ``shape``, refused when its tiles are too small for ``halo``.

    Parameters
    ----------
    tile_shape : int or sequence of int
    halo : int or sequence of int
        Context read on each side of a tile (the network's receptive-field radius, ``model.halo``).
    shape : sequence of int
        The spatial shape predicted (the image, or its region); a tile at least as long as
        an axis covers it and is always allowed.

    Returns
    -------
    tuple of int

    Raises
    ------
    ValueError
        When a side is below :func:`minimum_tile_shape`, naming ``tile_shape``, the
        halo and the minimum.

    Examples
    --------
    >>> check_tile_shape(16, 12, (64, 64))
    (16, 16)
    >>> check_tile_shape(1, 12, (64, 64))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: tile_shape=1 is not allowed; expected tiles of at least (6, 6) pixels with the network's halo ...
    """
    dims = len(shape)
    tiles = check_shape("tile_shape", tile_shape, ndim=dims)
    halos = check_shape("halo", halo, ndim=dims, minimum=0)
    need = minimum_tile_shape(halos, shape)
    kept = tuple(min(t, int(n)) for t, n in zip(tiles, shape))
    if any(k < m for k, m in zip(kept, need)):
        read = math.prod(min(k + 2 * h, int(n)) / k for k, h, n in zip(kept, halos, shape))
        raise not_allowed("tile_shape", tile_shape,
                          f"tiles of at least {need} pixels with the network's halo of {halos}: each tile reads "
                          f"the halo on every side, so tiles of {kept} would read {read:.0f} times the pixels "
                          "they keep (the minimum is half the halo, or the whole axis)")
    return tiles


def _shape(region: tuple[slice, ...]) -> tuple[int, ...]:
    return tuple(s.stop - s.start for s in region)


def _check_region(region, spatial) -> tuple[slice, ...]:
    if region is None:
        return tuple(slice(0, n) for n in spatial)
    region = tuple(region)
    if len(region) != len(spatial) or any(
            not isinstance(r, slice) or r.step not in (None, 1) or not 0 <= (r.start or 0) < (r.stop or 0) <= n
            for r, n in zip(region, spatial)):
        raise ValueError(f"region={region!r} is not allowed; expected {len(spatial)} non-empty slices "
                         f"inside the image of shape {spatial}")
    return tuple(slice(r.start or 0, r.stop) for r in region)


def _offset(grid, starts) -> list[tuple[slice, ...]]:
    return [tuple(slice(s.start + o, s.stop + o) for s, o in zip(tile, starts)) for tile in grid]


def _run(predictor, image, batch, acc, windows, blend, device, region):
    """Predict a batch of tiles of one input shape and add their kept parts to the accumulator."""
    x = torch.stack([image[(slice(None),) + outer] for _, outer, _ in batch]).to(device, torch.float32)
    y = predictor(x).float().cpu()
    if acc is None:
        acc = Accumulator(y.shape[1], _shape(region), dtype=torch.float64)
    for (tile, _, inner), pred in zip(batch, y):
        shape = _shape(tile)
        if shape not in windows:
            windows[shape] = blend_window(shape, blend=blend)
        acc.add(_offset([tile], [-r.start for r in region])[0], pred[(slice(None),) + inner], windows[shape])
    return acc


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` reports an exhausted GPU or CPU allocator."""
    if isinstance(error, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def predict_tiled_shrinking(predictor, image: torch.Tensor, *, tile_shape, min_tile: int = 16,
                            **kwargs) -> torch.Tensor:
    """:func:`predict_tiled`, halving the tiles and retrying when a tile runs out of memory.

    ``tile_shape`` entries larger than the image (or ``region``) count as the
    image size. Gives up, re-raising, once every tile side is down to ``min_tile`` (or
    to :func:`minimum_tile_shape` of the ``halo``, when larger).
    """
    region = kwargs.get("region")
    spatial = tuple(image.shape[1:]) if region is None else tuple(r.stop - r.start for r in region)
    tiles = tuple(min(t, n) for t, n in zip(check_shape("tile_shape", tile_shape, ndim=len(spatial)), spatial))
    halos = check_shape("halo", kwargs.get("halo", 0), ndim=len(spatial), minimum=0)
    floors = tuple(max(min_tile, m) for m in minimum_tile_shape(halos, spatial))  # never below the useful minimum
    while True:
        try:
            return predict_tiled(predictor, image, tile_shape=tiles, **kwargs)
        except Exception as error:  # noqa: BLE001 - only out-of-memory errors are retried
            smaller = tuple(max(f, t // 2) if t > f else t for t, f in zip(tiles, floors))
            if not is_out_of_memory(error) or smaller == tiles:
                raise
            logger.warning("out of memory with tiles %s; retrying with %s", tiles, smaller)
            tiles = smaller
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
