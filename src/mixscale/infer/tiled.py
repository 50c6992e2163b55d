"""Tiled prediction of an in-memory image with blending and context halos."""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch

from .._checks import check_int, check_shape
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
    tiles = check_shape("tile_shape", tile_shape, ndim=dims)
    halos = check_shape("halo", halo, ndim=dims, minimum=0)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    region = _check_region(region, spatial)
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
    image size. Gives up, re-raising, once every tile side is down to ``min_tile``.
    """
    region = kwargs.get("region")
    spatial = tuple(image.shape[1:]) if region is None else tuple(r.stop - r.start for r in region)
    tiles = tuple(min(t, n) for t, n in zip(check_shape("tile_shape", tile_shape, ndim=len(spatial)), spatial))
    while True:
        try:
            return predict_tiled(predictor, image, tile_shape=tiles, **kwargs)
        except Exception as error:  # noqa: BLE001 - only out-of-memory errors are retried
            smaller = tuple(max(min_tile, t // 2) if t > min_tile else t for t in tiles)
            if not is_out_of_memory(error) or smaller == tiles:
                raise
            logger.warning("out of memory with tiles %s; retrying with %s", tiles, smaller)
            tiles = smaller
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
