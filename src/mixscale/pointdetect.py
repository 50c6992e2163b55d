"""Finding objects with a detection model (a patch classifier): score map, peaks, CSV.

The API entry point is :func:`mixscale.api.detect` (re-exported from here).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)


def detect(model, image, *, threshold: float = 0.5, min_distance: float = 3.0, stride=1, batch_size: int = 1024,
           tta: bool = False, device: str = "cpu", output=None, overwrite: bool = False,
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
    model : str or Path
        A ``model.safetensors`` trained with task ``detection``.
    image : str, Path or ndarray
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
    output : str or Path, optional
        Write the detections as CSV: columns ``y,x`` (or ``z,y,x``), ``class``, ``score``
        (atomically: temporary name, then rename); readable as training points.
    overwrite : bool
        Replace an existing ``output``.
    channel_axis : int, optional
        As in :func:`predict`.
    tile_shape : int or sequence of int, optional
        Compute the dense map tile by tile (bounded memory, same result).

    Returns
    -------
    dict
        ``points`` (M, ndim) int64, ``classes`` (M,) int64, ``scores`` (M,) float32
        (highest first) and ``class_names``.
    """
    from .api import _model_input, check_device
    from .data import read_image
    from .infer.detect import object_peaks
    from .modelfile import load_model

    device = check_device(device)
    if output is not None and not overwrite and Path(output).exists():
        raise FileExistsError(f"output {output} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    net, info = load_model(model, device=device)
    if info.task != "detection":
        raise ValueError(f"{model} is a {info.task} model; detect needs a model trained with task 'detection' "
                         "(use predict for this one)")
    array = np.asarray(read_image(str(image))) if isinstance(image, (str, os.PathLike)) else np.asarray(image)
    single = channel_axis is None and int(info.net_config.get("in_channels", 1)) == 1
    if array.ndim != info.spatial_dims + (0 if single else 1):
        raise ValueError(f"input of shape {array.shape} does not fit a {info.spatial_dims}D detection model "
                         "(one image or volume, plus a channel axis for multi-channel models)")
    x = _model_input(array, info, axis=None, channel_axis=channel_axis)
    prob = _detection_probabilities(net, x, stride=stride, batch_size=batch_size, tta=tta, device=device,
                                    tile_shape=tile_shape)
    points, classes, scores = object_peaks(prob, threshold=threshold, min_distance=min_distance, stride=stride)
    result = {"points": points, "classes": classes, "scores": scores, "class_names": info.class_names}
    if output is not None:
        write_points_csv(output, points, classes, scores)
        logger.info("%d detections written to %s", len(points), output)
    return result


def _detection_probabilities(net, x: np.ndarray, *, stride, batch_size, tta, device, tile_shape):
    """``(K, *spatial / stride)`` class probabilities of the patch around every (stride-th) pixel."""
    import torch

    from .infer import TestTimeAugmentation, detection_map, predict_tiled

    image = torch.from_numpy(np.ascontiguousarray(x))
    dense = hasattr(net, "dense_logits") and getattr(net, "norm", None) in (None, "batch")
    if stride != 1 or not dense:
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


def write_points_csv(path, points: np.ndarray, classes: np.ndarray, scores: np.ndarray) -> Path:
    """Write detections as CSV (``y,x`` or ``z,y,x``, ``class``, ``score``), atomically."""
    path = Path(path)
    axes = ("y", "x") if points.shape[1] == 2 else ("z", "y", "x")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([*axes, "class", "score"])
            for p, c, s in zip(points.tolist(), classes.tolist(), scores.tolist()):
                w.writerow([*p, c, f"{s:.6g}"])
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
