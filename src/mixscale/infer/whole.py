"""Whole-image prediction: one forward pass per image, or per slice of a stack.

``predictor`` is any callable ``Tensor (N, C, *spatial) -> Tensor (N, C_out, *spatial)``:
a network, an ensemble, a test-time-augmented network. Tiled and block-wise drivers
for images larger than memory live beside this one.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import torch

from .._checks import check_choice, check_int

logger = logging.getLogger(__name__)
Predictor = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def predict_whole(predictor: Predictor, image: np.ndarray, *, device: str | torch.device = "cpu") -> np.ndarray:
    """Run ``predictor`` on one image.

    Parameters
    ----------
    image : (C, *spatial) ndarray

    Returns
    -------
    (C_out, *spatial) float32 ndarray
    """
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(device)
    return predictor(x)[0].float().cpu().numpy()


@torch.no_grad()
def predict_slices(predictor: Predictor, volume: np.ndarray, *, slice_axis: int, batch_size: int = 1,
                   device: str | torch.device = "cpu") -> np.ndarray:
    """Run a 2D ``predictor`` slice by slice along spatial ``slice_axis`` of a volume.

    Parameters
    ----------
    volume : (C, D0, D1, D2) ndarray
    slice_axis : {0, 1, 2}
        Spatial axis to slice along.
    batch_size : int
        Slices per forward pass.

    Returns
    -------
    (C_out, D0, D1, D2) float32 ndarray
    """
    check_choice("slice_axis", slice_axis, (0, 1, 2, -1, -2, -3))
    check_int("batch_size", batch_size, minimum=1)
    moved = np.moveaxis(volume, 1 + slice_axis % 3, 1)  # (C, S, H, W): slices along axis 1
    out = None
    for start in range(0, moved.shape[1], batch_size):
        chunk = np.ascontiguousarray(moved[:, start : start + batch_size].swapaxes(0, 1), dtype=np.float32)
        y = predictor(torch.from_numpy(chunk).to(device)).float().cpu().numpy()
        if out is None:
            out = np.empty((y.shape[1], moved.shape[1], *y.shape[2:]), dtype=np.float32)
        out[:, start : start + len(chunk)] = y.swapaxes(0, 1)
        logger.debug("slices %d-%d of %d done", start, start + len(chunk) - 1, moved.shape[1])
    return np.moveaxis(out, 1, 1 + slice_axis % 3)
