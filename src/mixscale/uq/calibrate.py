"""Fitting trust to a model: temperature scaling and split-conformal calibration on labelled pixels.

:func:`calibrate` takes a :class:`~mixscale.model.Model` (or an ensemble), prepared
image arrays and dense label maps (unlabelled = ``ignore_index``), and returns the
``calibration`` record a model file stores. With temperature scaling, the labelled
pixels are split at random in two halves: the temperature is fitted by NLL on one,
the conformal threshold on the other, so the threshold's calibration scores stay
exchangeable with the pixels it will be applied to.
"""

from __future__ import annotations

import hashlib
import logging
import math

import numpy as np
import torch

from .._checks import check_choice, check_int, check_shape
from ..infer.conformal import (SCORES, check_alpha, check_score_options, class_conditional_quantiles,
                               conformal_quantile, true_class_scores)

logger = logging.getLogger(__name__)


def collect_logits(model, arrays, labels, *, slice_axis: int | None = None, channel_axis: int | None = None,
                   ignore_index: int = -1, device: str = "cpu",
                   unit_tile: tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Every member's logits at the labelled pixels, their labels and the unit (image or tile) of each.

    Parameters
    ----------
    model : Model or Ensemble
    arrays : list of ndarray
        Raw images (as :meth:`Model.prepare` takes them).
    labels : list of ndarray
        Dense integer labels of the same spatial shapes; ``ignore_index`` = unlabelled.
    unit_tile : tuple of int, optional
        Units for risk control: tiles of this shape (the model's spatial dims) within each
        image (each slice, for a 2D model on a stack); default one unit per image (slice).

    Returns
    -------
    logits : (M, K, n) float32
    labels : (n,) int64
    units : (n,) int64
        Ids of the units, numbered over all images.
    """
    from ..infer import predict_slices, predict_whole

    per_image, targets, units, offset = [], [], [], 0
    for array, label in zip(arrays, labels):
        x, layout = model.prepare_with_layout(array, slice_axis=slice_axis, channel_axis=channel_axis)
        label = np.asarray(label)
        if label.shape != layout.spatial_shape:
            raise ValueError(f"labels of shape {label.shape} do not match the image's spatial shape "
                             f"{layout.spatial_shape}")
        keep = torch.from_numpy(label.reshape(-1) != ignore_index)
        ids, count = unit_ids(layout.spatial_shape, slice_axis=layout.slice_axis, tile=unit_tile)
        ids, offset = ids.reshape(-1)[keep.numpy()] + offset, offset + count
        if not keep.any():
            continue
        members = []
        for fn in model.logit_functions():
            with torch.no_grad():
                z = (predict_slices(fn, x, slice_axis=layout.slice_axis, device=device)
                     if layout.slice_axis is not None else predict_whole(fn, x, device=device))
            members.append(torch.from_numpy(z).reshape(z.shape[0], -1)[:, keep])
        per_image.append(torch.stack(members))
        targets.append(torch.from_numpy(label.reshape(-1)[keep.numpy()].astype(np.int64)))
        units.append(torch.from_numpy(ids))
    if not per_image:
        raise ValueError("the calibration labels hold no labelled pixel (every pixel is ignore_index)")
    logits, y = torch.cat(per_image, dim=2), torch.cat(targets)
    if y.min() < 0 or y.max() >= logits.shape[1]:
        raise ValueError(f"calibration labels hold values outside 0..{logits.shape[1] - 1} "
                         f"(ignore_index={ignore_index})")
    return logits, y, torch.cat(units)


def unit_ids(shape: tuple[int, ...], *, slice_axis: int | None = None,
             tile: tuple[int, ...] | None = None) -> tuple[np.ndarray, int]:
    """The unit of every pixel of an image of spatial ``shape``: ``(ids (*shape) int64, number of units)``.

    A unit is the image (each slice along ``slice_axis``), or a tile of shape ``tile``
    (over the model's spatial axes) within it.

    Examples
    --------
    >>> ids, n = unit_ids((4, 6), tile=(2, 3))
    >>> n, ids[0].tolist(), ids[3].tolist()
    (4, [0, 0, 0, 1, 1, 1], [2, 2, 2, 3, 3, 3])
    """
    from ..data.bootstrap import block_ids

    plane = [i for i in range(len(shape)) if i != slice_axis]
    if tile is not None and len(tile) != len(plane):
        raise ValueError(f"unit_tile={tuple(tile)} must have one size per axis of the model ({len(plane)})")
    sizes = [1] * len(shape)
    for i, axis in enumerate(plane):
        sizes[axis] = shape[axis] if tile is None else int(tile[i])
    return block_ids(shape, tuple(sizes))


def mean_probabilities(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """``mean_m softmax(z_m / T)``: ``(M, K, n)`` -> ``(K, n)`` float64."""
    return torch.softmax(logits.double() / temperature, dim=1).mean(0)


def nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    """Mean negative log-likelihood of the labels under :func:`mean_probabilities`."""
    p = mean_probabilities(logits, temperature).gather(0, labels[None])[0]
    return float(-torch.log(p.clamp(min=1e-300)).mean())


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, *, low: float = 0.05, high: float = 20.0,
                    tol: float = 1e-4) -> float:
    """The temperature minimising the NLL, by golden-section search on ``log T`` in ``[low, high]``.

    The NLL of temperature scaling is unimodal in ``log T`` for one member (convex in
    ``1/T``); for an ensemble's mean the search finds a local minimum in the bracket.
    """
    a, b = math.log(low), math.log(high)
    g = (math.sqrt(5) - 1) / 2
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = nll(logits, labels, math.exp(c)), nll(logits, labels, math.exp(d))
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = nll(logits, labels, math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = nll(logits, labels, math.exp(d))
    return math.exp((a + b) / 2)


def data_digest(arrays, labels) -> str:
    """One SHA-256 over the calibration images and labels."""
    from ..data import array_sha256

    h = hashlib.sha256()
    for a, y in zip(arrays, labels):
        h.update(array_sha256(a).encode())
        h.update(array_sha256(y).encode())
    return h.hexdigest()


def check_calibratable(model) -> None:
    """Calibration needs class probabilities: a regression model is refused, naming it."""
    if not model.task.classes or model.task.per_patch:
        raise ValueError(f"{model.source or 'the model'} is a {model.info.task} model: calibration (temperature, "
                         "conformal class sets) needs per-pixel class probabilities, from a segmentation model")


def calibrate(model, arrays, labels, *, alpha: float | None = 0.1, score: str = "lac", per_class: bool = False,
              temperature: bool = True, min_count: int = 10, seed: int = 0, slice_axis: int | None = None,
              channel_axis: int | None = None, ignore_index: int = -1, device: str = "cpu",
              score_options: dict | None = None, fnr_class: int | None = None, fnr_alpha: float = 0.1,
              fnr_tile: tuple[int, ...] | None = None) -> dict:
    """The calibration record of ``model`` on labelled pixels: temperature and conformal threshold.

    Parameters
    ----------
    model : Model or Ensemble
        Of a class task.
    arrays, labels : lists of ndarray
        Calibration images (raw) and dense labels (``ignore_index`` = unlabelled).
    alpha : float in (0, 1), or None
        Target miscoverage of the prediction sets; None fits the temperature only.
    score : {"lac", "aps", "raps"}
    per_class : bool
        Class-conditional (Mondrian) thresholds, one per class.
    temperature : bool
        Fit a temperature first (on a random half of the labelled pixels).
    min_count : int
        Per class: fewer calibration pixels give that class a threshold of +inf.
    seed : int
        Of the pixel split.
    score_options : dict, optional
        ``lam`` and ``k_reg`` for RAPS; ``randomized`` for APS/RAPS (the calibration
        scores draw ``u`` from ``seed``; predictions from each pixel's coordinates).
    fnr_class : int, optional
        Also control the false-negative rate of this class's mask ``{p_c >= 1 - lambda}``
        (conformal risk control over units: images, slices, or ``fnr_tile`` tiles; on all
        labelled pixels, with the fitted temperature).
    fnr_alpha : float in (0, 1)
        The mean false-negative rate to keep to.
    fnr_tile : tuple of int, optional
        Tiles as the units of risk control (more units than images: a useful ``lambda``
        from few images, as long as tiles are exchangeable with those of new images).

    Returns
    -------
    dict
        ``{"temperature": T, "conformal": {...}, "risk": {...}}`` as the model file records it.
    """
    check_calibratable(model)
    if alpha is not None:
        alpha = check_alpha(alpha)
    check_choice("score", score, SCORES)
    check_int("min_count", min_count, minimum=1)
    options = dict(score_options or {})
    check_score_options(score, options)
    if fnr_class is not None:
        check_int("fnr_class", fnr_class, minimum=0, maximum=model.out_channels - 1)
        fnr_alpha = check_alpha(fnr_alpha)
        if fnr_tile is not None:
            fnr_tile = check_shape("fnr_tile", fnr_tile, ndim=model.spatial_dims)
    logits, y, units = collect_logits(model, arrays, labels, slice_axis=slice_axis, channel_axis=channel_axis,
                                      ignore_index=ignore_index, device=device, unit_tile=fnr_tile)
    n = y.numel()
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    fit_idx, conf_idx = (order[: n // 2], order[n // 2:]) if temperature and alpha is not None else (order, order)
    record: dict = {"temperature": 1.0, "pixels": int(n), "data_sha256": data_digest(arrays, labels)}
    if temperature:
        record["temperature"] = fit_temperature(logits[:, :, fit_idx], y[fit_idx])
        logger.info("temperature %.4f (NLL %.4f -> %.4f on %d pixels)", record["temperature"],
                    nll(logits[:, :, fit_idx], y[fit_idx], 1.0),
                    nll(logits[:, :, fit_idx], y[fit_idx], record["temperature"]), fit_idx.numel())
    if fnr_class is not None:
        record["risk"] = risk_record(mean_probabilities(logits, record["temperature"])[fnr_class], y == fnr_class,
                                     units, alpha=fnr_alpha, class_index=fnr_class, tile=fnr_tile)
    if alpha is None:
        return record
    probs = mean_probabilities(logits[:, :, conf_idx], record["temperature"])
    generator = torch.Generator().manual_seed(seed + 1) if options.get("randomized") else None
    scores = true_class_scores(probs, y[conf_idx], score=score, generator=generator, **options)
    if per_class:
        threshold = class_conditional_quantiles(scores, y[conf_idx], num_classes=probs.shape[0], alpha=alpha,
                                                min_count=min_count).tolist()
    else:
        threshold = float(conformal_quantile(scores, alpha))
    record["conformal"] = {"alpha": alpha, "score": score, "per_class": bool(per_class), "threshold": threshold,
                           "n": int(conf_idx.numel()), "score_options": options, "seed": int(seed)}
    return record


def risk_record(class_probs: torch.Tensor, truth: torch.Tensor, units: torch.Tensor, *, alpha: float,
                class_index: int, tile: tuple[int, ...] | None) -> dict:
    """Conformal risk control of one class's false-negative rate over the calibration units.

    Parameters
    ----------
    class_probs : (n,) tensor
        The class's probability at every labelled pixel.
    truth : (n,) bool tensor
        The pixel is of that class.
    units : (n,) int64 tensor
        The unit of each pixel; units without a labelled pixel do not count.

    Returns
    -------
    dict
        ``class``, ``alpha``, ``lambda`` (the mask is ``p >= 1 - lambda``), ``n`` (units),
        ``unit`` ("image" or "tile") and ``tile_shape``.
    """
    from ..infer.conformal import risk_control_threshold

    order = torch.argsort(units, stable=True)
    ids, counts = torch.unique_consecutive(units[order], return_counts=True)
    groups = torch.split(order, counts.tolist())
    lam = risk_control_threshold([class_probs[g] for g in groups], [truth[g] for g in groups], alpha=alpha)
    logger.info("risk control of class %d: lambda %.4f over %d units (FNR <= %.3g)", class_index, lam,
                ids.numel(), alpha)
    return {"class": int(class_index), "alpha": alpha, "lambda": lam, "n": int(ids.numel()), "loss": "fnr",
            "unit": "image" if tile is None else "tile", "tile_shape": None if tile is None else list(tile)}
