"""Blend windows: how much each pixel of a tile counts where tiles overlap."""

from __future__ import annotations

from typing import Sequence

import torch

from .._checks import check_choice

BLENDS = ("gaussian", "constant")


def blend_window(tile_shape: Sequence[int], *, blend: str = "gaussian", sigma_scale: float = 0.125,
                 floor: float = 1e-3) -> torch.Tensor:
    """Weight of each pixel of a tile, ``(*tile_shape)`` float32, maximum 1.

    ``"gaussian"``: separable Gaussian centred on the tile, sigma ``sigma_scale``
    times the tile length per axis, clamped below at ``floor`` so that every pixel
    keeps a positive weight (tile corners at the image border are covered by one
    tile only). ``"constant"``: all ones (plain averaging).
    """
    check_choice("blend", blend, BLENDS)
    window = torch.ones(tuple(tile_shape))
    if blend == "constant":
        return window
    for axis, n in enumerate(tile_shape):
        x = torch.arange(n, dtype=torch.float64) - (n - 1) / 2
        g = torch.exp(-0.5 * (x / (sigma_scale * n)) ** 2).float()
        shape = [1] * len(tile_shape)
        shape[axis] = n
        window = window * g.view(shape)
    return window.clamp_(min=floor)
