"""Tiled prediction of an in-memory image with blending and context halos."""

from __future__ import annotations

import logging
from typing import Callable, Sequence

import torch

from .blend import blend_window
from .grid import tile_grid, with_halo
from .merge import Accumulator

logger = logging.getLogger(__name__)


def _per_axis(name: str, value, n: int) -> tuple[int, ...]:
    values = (value,) * n if isinstance(value, int) else tuple(value)
    if len(values) != n or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
        raise ValueError(f"{name}={value!r} is not allowed; expected an int >= 0 or {n} of them")
    return values


@torch.no_grad()
def predict_tiled(predictor: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, *,
                  tile_shape: Sequence[int] | int, overlap: float = 0.25, blend: str = "gaussian",
                  halo: Sequence[int] | int = 0, batch_size: int = 1,
                  device: str | torch.device = "cpu") -> torch.Tensor:
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

    Returns
    -------
    (C_out, *spatial) float32 Tensor, on the CPU. Sums are kept in float64, so a
    pixel predicted identically by every tile that covers it comes back exactly.

    Examples
    --------
    >>> x = torch.arange(35.0).reshape(1, 5, 7)
    >>> torch.equal(predict_tiled(lambda t: 2 * t, x, tile_shape=3), 2 * x)
    True
    """
    spatial = tuple(image.shape[1:])
    dims = len(spatial)
    tiles = _per_axis("tile_shape", tile_shape, dims)
    if min(tiles) < 1:
        raise ValueError(f"tile_shape={tile_shape!r} is not allowed; every entry must be >= 1")
    halos = _per_axis("halo", halo, dims)
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} is not allowed; expected an integer >= 1")
    grid = tile_grid(spatial, tiles, overlap)
    acc, windows, pending = None, {}, []
    for tile in grid:
        outer, inner = with_halo(tile, spatial, halos)
        if pending and (len(pending) == batch_size or _shape(outer) != _shape(pending[0][1])):
            acc = _run(predictor, image, pending, acc, windows, blend, device)
            pending = []
        pending.append((tile, outer, inner))
    acc = _run(predictor, image, pending, acc, windows, blend, device)
    logger.debug("%d tiles of %s (halo %s) over %s", len(grid), tiles, halos, spatial)
    return acc.finalize().float()


def _shape(region: tuple[slice, ...]) -> tuple[int, ...]:
    return tuple(s.stop - s.start for s in region)


def _run(predictor, image, batch, acc, windows, blend, device):
    """Predict a batch of tiles of one input shape and add their kept parts to the accumulator."""
    x = torch.stack([image[(slice(None),) + outer] for _, outer, _ in batch]).to(device, torch.float32)
    y = predictor(x).float().cpu()
    if acc is None:
        acc = Accumulator(y.shape[1], image.shape[1:], dtype=torch.float64)
    for (tile, _, inner), pred in zip(batch, y):
        shape = _shape(tile)
        if shape not in windows:
            windows[shape] = blend_window(shape, blend=blend)
        acc.add(tile, pred[(slice(None),) + inner], windows[shape])
    return acc
