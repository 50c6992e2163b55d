"""Accumulate blended tile predictions, then divide once."""

from __future__ import annotations

from typing import Sequence

import torch


class Accumulator:
    """In-memory sums of ``weight * prediction`` and of ``weight`` over a whole image.

    Parameters
    ----------
    channels : int
        Output channels.
    shape : sequence of int
        Spatial shape of the image.
    """

    def __init__(self, channels: int, shape: Sequence[int], *, dtype=torch.float32) -> None:
        self.values = torch.zeros((channels, *shape), dtype=dtype)
        self.weights = torch.zeros(tuple(shape), dtype=dtype)

    def add(self, region: tuple[slice, ...], pred: torch.Tensor, window: torch.Tensor) -> None:
        """Add one tile: ``pred`` is ``(C, *tile)``, ``window`` is ``(*tile)``."""
        window = window.to(self.weights.dtype)
        self.values[(slice(None),) + region] += pred.to(self.values.dtype) * window
        self.weights[region] += window

    def finalize(self) -> torch.Tensor:
        """The blended prediction ``(C, *shape)``; every pixel must have been covered."""
        if not bool((self.weights > 0).all()):
            raise RuntimeError("some pixels were not covered by any tile")
        return self.values.div_(self.weights)
