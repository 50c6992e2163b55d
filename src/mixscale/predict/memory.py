"""In-memory prediction of a :class:`~mixscale.model.Model`: whole, slice by slice, or in tiles."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .._checks import check_int

if TYPE_CHECKING:  # the model floor imports torch; importing predict (and so api) must not
    from ..model import Model

logger = logging.getLogger(__name__)


def predict_array(model: Model, array: np.ndarray, *, device: str = "cpu", slice_axis: int | None = None,
                  batch_size: int = 1, probabilities: bool = False, channel_axis: int | None = None,
                  tile_shape: Sequence[int] | int | None = None, overlap: float = 0.25, blend: str = "gaussian",
                  tta: bool = False, uncertainty: bool = False, sets: bool = False, risk_mask: bool = False,
                  lower_bound: tuple[float, float] | None = None):
    """Apply ``model`` to an array held in memory.

    Parameters
    ----------
    model : Model
    array : ndarray
        ``(*spatial)``, or with a channel axis (``channel_axis``) for multi-channel models.
    device : str
        Already checked (:func:`mixscale._checks.check_device`).
    slice_axis : int, optional
        For a 2D model on a volume: predict slice by slice along this axis.
    batch_size : int
        Slices (or tiles) per forward pass.
    probabilities : bool
        Class probabilities ``(K, *spatial)`` instead of labels.
    channel_axis : int, optional
    tile_shape : int or sequence of int, optional
        Tiles with the network's halo, blended where they overlap.
    overlap : float in [0, 1)
    blend : {"gaussian", "constant"}
    tta : bool
        Average over the 8 flips/rotations (2D) or axis flips (3D).
    uncertainty : bool
        Statistics over the members (of an ensemble, or the test-time transforms).
    sets : bool
        Conformal prediction sets (the model must be calibrated).
    risk_mask : bool
        The risk-controlled class mask (the model must be calibrated with a class).
    lower_bound : (k, threshold), optional
        Class masks ``mean - k * std > threshold`` over the members.

    Returns
    -------
    ndarray, or with uncertainty, sets or masks a dict of arrays
        See :meth:`Model.finish` and :meth:`Model.outputs`.
    """
    from ..infer import predict_slices, predict_whole
    from ..request import OutputRequest

    check_int("batch_size", batch_size, minimum=1)
    model.require(per_patch=False, use="predict")
    request = OutputRequest.checked(probabilities=probabilities, uncertainty=uncertainty, sets=sets,
                                    risk_mask=risk_mask, lower_bound=lower_bound)
    model.check_request(request, tta=tta)  # an uncalibrated model fails before any work
    if model.context_slices:
        raise ValueError("this is a 2.5D model (context slices as channels): predict block-wise, with an output "
                         "ending in .zarr (CLI: -o out.zarr --axis 0)")
    x, layout = model.prepare_with_layout(array, slice_axis=slice_axis, channel_axis=channel_axis)
    predictor = model.predictor(tta=tta, uncertainty=request.statistics)
    if tile_shape is not None:
        model.warn_if_not_tile_exact()
        raw = _predict_tiles(predictor, x, slice_axis=layout.slice_axis, device=device, tile_shape=tile_shape,
                             overlap=overlap, blend=blend, batch_size=batch_size, halo=model.halo)
    elif layout.slice_axis is not None:
        raw = predict_slices(predictor, x, slice_axis=layout.slice_axis, batch_size=batch_size, device=device)
    else:
        raw = predict_whole(predictor, x, device=device)
    return model.finish(raw, request)


def _predict_tiles(predictor, x: np.ndarray, *, slice_axis, device, tile_shape, overlap, blend,
                   batch_size, halo) -> np.ndarray:
    """Tiled prediction with the network's halo; slice by slice for a 2D model on a volume."""
    import torch

    from ..infer import predict_slices, predict_tiled

    def tiled(batch: torch.Tensor) -> torch.Tensor:  # (B, C, *spatial), one tiled pass per image
        return torch.stack([predict_tiled(predictor, img, tile_shape=tile_shape, overlap=overlap, blend=blend,
                                          halo=halo, batch_size=batch_size, device=device) for img in batch])

    if slice_axis is not None:
        return predict_slices(tiled, x, slice_axis=slice_axis)
    return tiled(torch.from_numpy(np.ascontiguousarray(x))[None])[0].numpy()
