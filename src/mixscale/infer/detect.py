"""Finding small objects with a patch classifier: score map, peak picking, point matching.

:func:`detection_map` slides any patch classifier (a callable
``(B, C, *patch_shape) -> (B, K)`` logits) over an image in batches of patches, so
memory stays bounded by ``batch_size`` patches whatever the image size.
:func:`find_peaks` turns a score map into point coordinates, and
:func:`match_points` scores detections against annotated points (one-to-one
matching within a distance: TP, FP, FN, precision, recall, F1).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .._checks import check_float, check_int, check_shape

logger = logging.getLogger(__name__)

__all__ = ["detect_points", "detection_map", "find_peaks", "match_points", "object_peaks"]


def _pad(image: torch.Tensor, patch_shape: tuple[int, ...]) -> torch.Tensor:
    """Reflect-pad ``(C, *S)`` so the patch centred on every pixel (centre ``P // 2``) fits."""
    pads: list[int] = []
    for p in reversed(patch_shape):  # F.pad lists the last axis first
        pads += [p // 2, p - 1 - p // 2]
    fits = all(max(p // 2, p - 1 - p // 2) < s for p, s in zip(patch_shape, image.shape[1:]))
    return F.pad(image[None], pads, mode="reflect" if fits else "replicate")[0]


def _gather_patches(padded: torch.Tensor, starts: torch.Tensor, patch_shape) -> torch.Tensor:
    """Patches ``(B, C, *P)`` of ``padded`` (C, *S) starting at ``starts`` (B, D), by broadcast indexing."""
    d = len(patch_shape)
    index = []
    for axis, p in enumerate(patch_shape):
        shape = [1] * (d + 1)
        shape[axis + 1] = p
        index.append(starts[:, axis].view(-1, *[1] * d) + torch.arange(p).view(shape))
    patches = padded[(slice(None),) + tuple(index)]  # (C, B, *P)
    return patches.transpose(0, 1)


@torch.no_grad()
def detection_map(predictor: Callable[[torch.Tensor], torch.Tensor], image, patch_shape: Sequence[int] | int, *,
                  stride: Sequence[int] | int = 1, batch_size: int = 1024, softmax: bool = True,
                  device: str | torch.device | None = None) -> torch.Tensor:
    """Class probabilities of the patch centred on every ``stride``-th pixel.

    Parameters
    ----------
    predictor : callable
        ``(B, C, *patch_shape) -> (B, K)`` logits (or scores when ``softmax=False``);
        put it in eval mode first.
    image : (C, *spatial) Tensor or ndarray
    patch_shape : int or sequence of int
        The patch centred on pixel ``p`` covers ``p - P // 2 .. p - P // 2 + P - 1``;
        the image is reflect-padded at the border (edge-replicated if too small).
    stride : int or sequence of int
        Evaluate every ``stride``-th pixel per axis (1: every pixel).
    batch_size : int
        Patches per call: memory is bounded by ``batch_size`` patches.
    softmax : bool
        Apply a softmax over classes (else return the predictor's output as is).
    device : str or torch.device, optional
        Where the patches are sent (default: the image's device).

    Returns
    -------
    (K, *ceil(spatial / stride)) float32 Tensor, on the CPU. Entry ``[k, i, j]`` is
    for the pixel ``(i * stride, j * stride)``.

    Examples
    --------
    >>> centre = lambda p: torch.stack([-p[:, 0, 1, 1], p[:, 0, 1, 1]], 1)  # "class 1 if bright"
    >>> x = torch.zeros(1, 5, 6); x[0, 2, 3] = 10.0
    >>> prob = detection_map(centre, x, patch_shape=3)
    >>> prob.shape, prob[1].argmax().item() == 2 * 6 + 3
    (torch.Size([2, 5, 6]), True)
    """
    image = torch.as_tensor(image)
    if image.ndim not in (3, 4):
        raise ValueError(f"image of shape {tuple(image.shape)} is not allowed; expected (C, *spatial) with "
                         "2 or 3 spatial axes")
    dims = image.ndim - 1
    patch_shape = check_shape("patch_shape", patch_shape, ndim=dims)
    stride = check_shape("stride", stride, ndim=dims)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    device = image.device if device is None else torch.device(device)
    padded = _pad(image.float(), patch_shape).to(device)
    out_shape = tuple(-(-s // t) for s, t in zip(image.shape[1:], stride))
    grids = torch.meshgrid(*[torch.arange(n) * t for n, t in zip(out_shape, stride)], indexing="ij")
    starts = torch.stack([g.reshape(-1) for g in grids], 1).to(device)
    scores = []
    for first in range(0, starts.shape[0], batch_size):
        out = predictor(_gather_patches(padded, starts[first:first + batch_size], patch_shape))
        if out.ndim != 2:
            raise ValueError(f"predictor returned shape {tuple(out.shape)}; expected (batch, classes) logits")
        scores.append((out.float().softmax(1) if softmax else out.float()).cpu())
    logger.debug("detection map: %d patches of %s in batches of %d", starts.shape[0], patch_shape, batch_size)
    return torch.cat(scores).T.reshape(-1, *out_shape).contiguous()


def find_peaks(heat, *, threshold: float, min_distance: float = 1.0) -> np.ndarray:
    """Local maxima of a score map at or above ``threshold``, at least ``min_distance`` apart.

    A pixel is a candidate when it equals the maximum of its
    ``(2 * ceil(min_distance) + 1)``-wide neighbourhood and reaches ``threshold``.
    Candidates are then taken from the highest score down, dropping any within
    ``min_distance`` (Euclidean) of one already taken, so returned peaks are
    pairwise more than ``min_distance`` apart (as ``skimage.feature.peak_local_max``
    with ``exclude_border=False``). The border is not excluded.

    Parameters
    ----------
    heat : (*spatial) ndarray or Tensor
        One class's scores (e.g. ``detection_map(...)[1]``).
    threshold : float
    min_distance : float >= 0

    Returns
    -------
    (M, ndim) int64 ndarray of pixel coordinates, highest score first.

    Examples
    --------
    >>> h = np.zeros((7, 7)); h[1, 1] = 0.9; h[1, 2] = 0.8; h[5, 5] = 0.7
    >>> find_peaks(h, threshold=0.5, min_distance=2).tolist()
    [[1, 1], [5, 5]]
    """
    from scipy.ndimage import maximum_filter

    heat = heat.detach().cpu().numpy() if isinstance(heat, torch.Tensor) else np.asarray(heat)
    if heat.ndim < 1 or not np.issubdtype(heat.dtype, np.number):
        raise ValueError(f"heat must be a numeric array with at least one axis, got {heat.dtype} {heat.shape}")
    min_distance = check_float("min_distance", min_distance, minimum=0)
    threshold = check_float("threshold", threshold)
    size = 2 * int(np.ceil(min_distance)) + 1
    local_max = maximum_filter(heat, size=size, mode="nearest")
    cand = np.argwhere((heat == local_max) & (heat >= threshold))
    order = np.argsort(-heat[tuple(cand.T)], kind="stable")
    cand = cand[order]
    if min_distance == 0 or len(cand) < 2:
        return cand.astype(np.int64)
    return cand[_suppress(cand, min_distance)].astype(np.int64)


def _suppress(points: np.ndarray, min_distance: float) -> np.ndarray:
    """Greedy non-maximum suppression of ``points`` (already sorted best first); kept indices."""
    from scipy.spatial import cKDTree

    tree = cKDTree(points)
    removed = np.zeros(len(points), bool)
    keep = []
    for i in range(len(points)):
        if removed[i]:
            continue
        keep.append(i)
        removed[tree.query_ball_point(points[i], r=min_distance)] = True
    return np.asarray(keep, dtype=np.int64)


def _check_points(name: str, value) -> np.ndarray:
    points = np.asarray(value, dtype=np.float64)
    if points.size == 0:
        return points.reshape(0, points.shape[-1] if points.ndim == 2 else 0)
    if points.ndim != 2 or not np.isfinite(points).all():
        raise ValueError(f"{name} must be an (M, ndim) array of finite coordinates, got shape {points.shape}")
    return points


def match_points(pred, true, *, max_distance: float) -> dict:
    """Match predicted points to true points one-to-one within ``max_distance``.

    The matching maximises the number of pairs (then minimises their total
    distance): Hungarian assignment on the distance matrix, pairs further apart
    than ``max_distance`` forbidden.

    Parameters
    ----------
    pred : (M, ndim) array-like
        Detected points.
    true : (T, ndim) array-like
        Annotated points.
    max_distance : float > 0
        A pair counts when its Euclidean distance is ``<= max_distance``.

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn`` (ints), ``precision``, ``recall``, ``f1`` (floats;
        1.0 when there is nothing to get wrong: precision with no prediction,
        recall with no true point, F1 with neither) and ``pairs``: a (tp, 2) int
        array of (pred index, true index).

    Examples
    --------
    >>> r = match_points([[0, 0], [10, 10]], [[1, 0], [30, 30]], max_distance=3)
    >>> r["tp"], r["fp"], r["fn"], r["f1"]
    (1, 1, 1, 0.5)
    """
    from scipy.optimize import linear_sum_assignment

    max_distance = check_float("max_distance", max_distance, minimum=0, open_minimum=True)
    pred, true = _check_points("pred", pred), _check_points("true", true)
    pairs = np.zeros((0, 2), np.int64)
    if len(pred) and len(true):
        if pred.shape[1] != true.shape[1]:
            raise ValueError(f"pred has {pred.shape[1]} coordinates per point but true has {true.shape[1]}")
        dist = np.sqrt(((pred[:, None, :] - true[None, :, :]) ** 2).sum(-1))
        allowed = dist <= max_distance
        # a forbidden pair costs more than all allowed pairs together, so the count of pairs comes first
        big = max_distance * (min(dist.shape) + 1) + 1.0
        rows, cols = linear_sum_assignment(np.where(allowed, dist, big))
        ok = allowed[rows, cols]
        pairs = np.stack([rows[ok], cols[ok]], 1).astype(np.int64)
    tp = len(pairs)
    fp, fn = len(pred) - tp, len(true) - tp
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / (tp + fn) if tp + fn else 1.0
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1, "pairs": pairs}


def detect_points(predictor: Callable[[torch.Tensor], torch.Tensor], image, patch_shape: Sequence[int] | int, *,
                  class_index: int = 1, threshold: float = 0.5, min_distance: float = 3.0, stride: int = 1,
                  batch_size: int = 1024, device: str | torch.device | None = None) -> np.ndarray:
    """Pixel coordinates of objects of ``class_index``: :func:`detection_map` then :func:`find_peaks`.

    With ``stride > 1`` the map is coarser and the coordinates are multiples of
    ``stride`` (``min_distance`` stays in pixels, converted with the smallest stride).

    Returns
    -------
    (M, ndim) int64 ndarray, highest probability first.
    """
    prob = detection_map(predictor, image, patch_shape, stride=stride, batch_size=batch_size, device=device)
    class_index = check_int("class_index", class_index, minimum=0, maximum=prob.shape[0] - 1)  # the predictor's classes
    steps = np.asarray(check_shape("stride", stride, ndim=prob.ndim - 1))
    peaks = find_peaks(prob[class_index], threshold=threshold, min_distance=min_distance / steps.min())
    return peaks * steps


def object_peaks(prob, *, threshold: float = 0.5, min_distance: float = 3.0, stride=1,
                 background: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Objects of any class in a class-probability map, each with its most likely class.

    The object score of a pixel is ``1 - prob[background]``; its peaks
    (:func:`find_peaks`) are the objects, and each gets the object class of highest
    probability there. Ambiguity between object classes thus never hides an object.

    Parameters
    ----------
    prob : (K, *spatial) ndarray or Tensor
        Class probabilities (e.g. from :func:`detection_map`), K >= 2.
    threshold : float
        Minimum object score of a peak.
    min_distance : float >= 0
        In pixels of the image (divided by the smallest ``stride`` on the map).
    stride : int or sequence of int
        The map's pixel spacing: coordinates are multiplied by it.
    background : int
        The background class.

    Returns
    -------
    points : (M, ndim) int64 ndarray
        Pixel coordinates, highest object score first.
    classes : (M,) int64 ndarray
    scores : (M,) float32 ndarray
        Object scores ``1 - p(background)``.

    Examples
    --------
    >>> p = np.zeros((3, 5, 5)); p[0] = 1.0
    >>> p[:, 1, 1] = [0.1, 0.2, 0.7]; p[:, 3, 4] = [0.4, 0.5, 0.1]
    >>> pts, cls, score = object_peaks(p, threshold=0.5, min_distance=2)
    >>> pts.tolist(), cls.tolist(), score.astype(float).round(2).tolist()
    ([[1, 1], [3, 4]], [2, 1], [0.9, 0.6])

    With the default ``min_distance=3`` the weaker object lies within the 7-wide
    neighbourhood of the stronger one, so it is not a peak (see :func:`find_peaks`):

    >>> object_peaks(p, threshold=0.5)[0].tolist()
    [[1, 1]]
    """
    prob = prob.detach().cpu().numpy() if isinstance(prob, torch.Tensor) else np.asarray(prob)
    if prob.ndim < 2 or prob.shape[0] < 2:
        raise ValueError(f"prob must be (K, *spatial) with K >= 2 classes, got shape {prob.shape}")
    background = check_int("background", background, minimum=0, maximum=prob.shape[0] - 1)  # a class index
    steps = np.asarray(check_shape("stride", stride, ndim=prob.ndim - 1))
    score = 1.0 - prob[background]
    peaks = find_peaks(score, threshold=threshold, min_distance=min_distance / steps.min())
    objects = np.array([k for k in range(prob.shape[0]) if k != background])
    at = prob[(slice(None),) + tuple(peaks.T)]  # (K, M)
    classes = objects[at[objects].argmax(0)] if len(peaks) else np.zeros(0, np.int64)
    return (peaks * steps).astype(np.int64), classes.astype(np.int64), score[tuple(peaks.T)].astype(np.float32)
