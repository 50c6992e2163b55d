"""Finding objects with a detection model (a patch classifier): score map, peaks, points.

The API entry point is :func:`mixscale.api.detect`, which reads the files and
writes the points CSV (:func:`mixscale.data.write_points_csv`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    from ..model import Model

logger = logging.getLogger(__name__)


def detect_array(model: Model, array: np.ndarray, *, threshold: float = 0.5, min_distance: float = 3.0,
                 stride=1, batch_size: int = 1024, tta: bool = False, device: str = "cpu",
                 channel_axis: int | None = None, tile_shape: Sequence[int] | int | None = None) -> dict:
    """Find objects with a detection model: score map, then peaks (points, classes, scores).

    The score map holds the class probabilities of the patch centred on every
    pixel: with ``stride=1`` one fully convolutional pass
    (:meth:`~mixscale.nets.PatchClassifier.dense_logits`, optionally in exact tiles),
    else :func:`mixscale.infer.detection_map` on every ``stride``-th pixel. A pixel's
    object score is ``1 - p(background)``; its peaks above ``threshold``, at least
    ``min_distance`` apart, are the objects, each with its most likely object class
    (:func:`mixscale.infer.detect.object_peaks`).

    Parameters
    ----------
    model : Model
        Trained with task ``detection``.
    array : ndarray
        ``(*spatial)``, or with a channel axis for multi-channel models.
    threshold : float
        Minimum object score (probability) of a detection.
    min_distance : float
        Minimum distance between detections, in pixels.
    stride : int or sequence of int
        Score every ``stride``-th pixel only (faster, coarser coordinates).
    batch_size : int
        Patches per forward pass when the map is computed patch by patch (``stride > 1``).
    tta : bool
        Average the map over the 8 flips/rotations (2D) or axis flips (3D); needs ``stride=1``.
    device : str
        Already checked.
    channel_axis : int, optional
        As in :func:`mixscale.api.predict`.
    tile_shape : int or sequence of int, optional
        Compute the dense map tile by tile (bounded memory, same result).

    Returns
    -------
    dict
        ``points`` (M, ndim) int64, ``classes`` (M,) int64, ``scores`` (M,) float32
        (highest first) and ``class_names``.
    """
    from ..infer.detect import object_peaks

    model.require(per_patch=True, use="detect")
    array = np.asarray(array)
    single = channel_axis is None and model.in_channels == 1
    if array.ndim != model.spatial_dims + (0 if single else 1):
        raise ValueError(f"input of shape {array.shape} does not fit a {model.spatial_dims}D detection model "
                         "(one image or volume, plus a channel axis for multi-channel models)")
    x = model.prepare(array, channel_axis=channel_axis)
    prob = _detection_probabilities(model.net, x, stride=stride, batch_size=batch_size, tta=tta, device=device,
                                    tile_shape=tile_shape)
    points, classes, scores = object_peaks(prob, threshold=threshold, min_distance=min_distance, stride=stride)
    return {"points": points, "classes": classes, "scores": scores, "class_names": model.class_names}


def _detection_probabilities(net, x: np.ndarray, *, stride, batch_size, tta, device, tile_shape):
    """``(K, *spatial / stride)`` class probabilities of the patch around every (stride-th) pixel."""
    import torch

    from ..infer import TestTimeAugmentation, detection_map, predict_tiled
    from ..nets.classifier import has_score_map

    image = torch.from_numpy(np.ascontiguousarray(x))
    if stride != 1 or not has_score_map(net):
        if tta or tile_shape is not None:
            raise ValueError("tta and tile_shape need stride=1 and a classifier with a dense score map "
                             "(norm 'batch' or None)")
        return detection_map(net, image, net.patch_shape, stride=stride, batch_size=batch_size, device=device)

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        return torch.softmax(net.dense_logits(batch).float(), dim=1)

    run = TestTimeAugmentation(predictor) if tta else predictor
    with torch.no_grad():
        if tile_shape is not None:  # exact: the halo covers every patch
            return predict_tiled(run, image, tile_shape=tile_shape, overlap=0.0, blend="constant", halo=net.halo,
                                 device=device)
        return run(image[None].to(device))[0].cpu()
