"""Image-quality metrics for denoising and reconstruction: MSE, MAE, PSNR, SSIM, Pearson.

``pred`` and ``target`` are real arrays (or torch tensors) of equal shape,
computed in float64. NaN in ``target`` marks unlabelled pixels (e.g. outside the
field of view or in detector gaps) and they are skipped; an optional bool
``mask`` broadcastable to ``target`` (True = use) restricts the pixels further.
NaN in ``pred`` is not skipped: a prediction that is NaN where it is scored
yields NaN. A metric with no pixel to score is NaN.
"""

from __future__ import annotations

import logging
import math

import numpy as np
from scipy import ndimage

from .._checks import check_bool, check_float, check_int, not_allowed
from ._arrays import as_array, check_same_shape

__all__ = ["image_report", "mae", "mse", "pearson", "psnr", "ssim"]

logger = logging.getLogger(__name__)

_K1, _K2 = 0.01, 0.03
_SIGMA = 1.5  # Gaussian window of Wang et al. (2004)
_UNIFORM_WIN = 7  # the uniform window of scikit-image


def _image_pair(pred: object, target: object, mask: object) -> tuple[np.ndarray, ...]:
    """Float64 (pred, target) and the bool map of pixels that count."""
    arrays = []
    for name, value in (("pred", pred), ("target", target)):
        array = as_array(value, name)
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
            raise TypeError(f"{name} must be a real-valued array, got dtype {array.dtype}")
        arrays.append(array.astype(np.float64, copy=False))
    pred, target = arrays
    check_same_shape(pred, target)
    valid = ~np.isnan(target)
    if mask is not None:
        mask = as_array(mask, "mask")
        if mask.dtype != np.bool_:
            raise TypeError(f"mask must be a bool array (True = use), got dtype {mask.dtype}")
        try:
            valid = valid & np.broadcast_to(mask, target.shape)
        except ValueError:
            raise ValueError(
                f"mask shape {mask.shape} cannot be broadcast to target shape {target.shape}"
            ) from None
    return pred, target, valid


def _data_range(data_range: object) -> float:
    if data_range is None:
        raise ValueError(
            "data_range is required: the span of possible target values, e.g. 1.0 for "
            "images in [0, 1] or 255 for 8-bit; it is never guessed from the data"
        )
    return check_float("data_range", data_range, minimum=0, open_minimum=True)


def _mean_error(p: np.ndarray, t: np.ndarray, valid: np.ndarray, *, power: int) -> float:
    if not valid.any():
        return math.nan
    diff = np.abs(p[valid] - t[valid])
    return float(np.mean(diff if power == 1 else diff**power))


def _psnr(error: float, data_range: float) -> float:
    if math.isnan(error):
        return math.nan
    return math.inf if error == 0 else 10 * math.log10(data_range**2 / error)


def mse(pred: object, target: object, *, mask: object = None) -> float:
    """Mean squared error over the counted pixels.

    Examples
    --------
    >>> mse([1.0, 2.0, 0.0], [1.0, 0.0, float("nan")])
    2.0
    """
    return _mean_error(*_image_pair(pred, target, mask), power=2)


def mae(pred: object, target: object, *, mask: object = None) -> float:
    """Mean absolute error over the counted pixels.

    Examples
    --------
    >>> mae([1.0, 2.0, 0.0], [1.0, 0.0, float("nan")])
    1.0
    """
    return _mean_error(*_image_pair(pred, target, mask), power=1)


def psnr(pred: object, target: object, *, data_range: float | None = None,
         mask: object = None) -> float:
    """Peak signal-to-noise ratio in dB: ``10 log10(data_range**2 / MSE)``.

    Parameters
    ----------
    pred, target : real arrays of equal shape
        NaN in ``target`` marks unlabelled pixels.
    data_range : float > 0
        Required: the span of possible values (1.0 for [0, 1] images, 255 for
        8-bit). Not guessed from the data, since a guess makes scores incomparable.
    mask : bool array broadcastable to target, optional
        True where pixels count.

    Returns
    -------
    psnr : float
        ``inf`` for a perfect prediction, NaN if no pixel counts.

    Examples
    --------
    >>> round(psnr([0.0, 0.5], [0.0, 0.6], data_range=1.0), 4)
    23.0103
    """
    data_range = _data_range(data_range)
    return _psnr(_mean_error(*_image_pair(pred, target, mask), power=2), data_range)


def pearson(pred: object, target: object, *, mask: object = None) -> float:
    """Pearson correlation coefficient over the counted pixels.

    NaN if fewer than 2 pixels count or either image is constant there.

    Examples
    --------
    >>> round(pearson([1.0, 2.0, 3.0], [2.0, 4.0, 7.0]), 4)
    0.9934
    """
    return _pearson(*_image_pair(pred, target, mask))


def _pearson(p: np.ndarray, t: np.ndarray, valid: np.ndarray) -> float:
    p, t = p[valid], t[valid]
    if p.size < 2:
        return math.nan
    p, t = p - p.mean(), t - t.mean()
    norm = math.sqrt(float(np.dot(p, p)) * float(np.dot(t, t)))
    return float(np.dot(p, t)) / norm if norm > 0 else math.nan


def _window_size(win_size: int | None, gaussian: bool, shape: tuple[int, ...]) -> int:
    gaussian = check_bool("gaussian", gaussian)
    if win_size is None:
        win_size = 2 * int(3.5 * _SIGMA + 0.5) + 1 if gaussian else _UNIFORM_WIN
    win_size = check_int("win_size", win_size, minimum=3)
    if win_size % 2 == 0:
        raise not_allowed("win_size", win_size, "an odd integer >= 3")
    if win_size > min(shape):
        raise ValueError(
            f"win_size {win_size} exceeds the smallest image side of shape {shape}; "
            "pass a smaller odd win_size"
        )
    return win_size


def _ssim_map(p: np.ndarray, t: np.ndarray, data_range: float, win_size: int,
              gaussian: bool) -> np.ndarray:
    """Local SSIM of two NaN-free float64 images, as in Wang et al. (2004)."""
    if gaussian:
        def local_mean(x: np.ndarray) -> np.ndarray:
            return ndimage.gaussian_filter(x, _SIGMA, radius=(win_size - 1) // 2)
        cov_norm = 1.0  # Wang et al. weigh the window; no sample correction
    else:
        def local_mean(x: np.ndarray) -> np.ndarray:
            return ndimage.uniform_filter(x, size=win_size)
        count = win_size**p.ndim
        cov_norm = count / (count - 1)  # sample covariance, as scikit-image
    mu_p, mu_t = local_mean(p), local_mean(t)
    var_p = cov_norm * (local_mean(p * p) - mu_p * mu_p)
    var_t = cov_norm * (local_mean(t * t) - mu_t * mu_t)
    cov = cov_norm * (local_mean(p * t) - mu_p * mu_t)
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    return ((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / (
        (mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2)
    )


def _ssim_values(p: np.ndarray, t: np.ndarray, use: np.ndarray, data_range: float,
                 win_size: int | None, gaussian: bool) -> np.ndarray:
    """The local SSIM of the counted pixels of one 2D or 3D image (a 1D array, maybe empty)."""
    win_size = _window_size(win_size, gaussian, p.shape)
    labelled = ~np.isnan(t)
    # zero-fill unlabelled pixels: scipy's running-sum filters would smear a NaN
    # along the whole line; the windows that touch them are dropped below anyway
    p = np.where(labelled, p, 0.0)
    t = np.where(labelled, t, 0.0)
    local = _ssim_map(p, t, data_range, win_size, gaussian)
    fully_labelled = ndimage.minimum_filter(labelled.astype(np.uint8), size=win_size) > 0
    pad = (win_size - 1) // 2
    inner = np.zeros(p.shape, dtype=bool)
    inner[tuple(slice(pad, s - pad) for s in p.shape)] = True
    return local[use & fully_labelled & inner]


def _ssim_single(p: np.ndarray, t: np.ndarray, use: np.ndarray, data_range: float,
                 win_size: int | None, gaussian: bool, slice_axis: int | None = None) -> float:
    """Mean SSIM of one image; with ``slice_axis``, of the 2D slices of a 3D stack (over all their
    counted pixels)."""
    if slice_axis is None:
        if p.ndim not in (2, 3):
            raise ValueError(
                f"ssim needs a 2D or 3D image (after removing channel_axis), got shape {p.shape}"
            )
        values = _ssim_values(p, t, use, data_range, win_size, gaussian)
    else:
        if p.ndim != 3:
            raise ValueError(f"slice_axis={slice_axis} needs a 3D stack of 2D images (after removing "
                             f"channel_axis), got shape {p.shape}")
        values = np.concatenate([
            _ssim_values(np.take(p, k, slice_axis), np.take(t, k, slice_axis), np.take(use, k, slice_axis),
                         data_range, win_size, gaussian) for k in range(p.shape[slice_axis])])
    return float(values.mean()) if values.size else math.nan


def ssim(pred: object, target: object, *, data_range: float | None = None,
         win_size: int | None = None, gaussian: bool = False, mask: object = None,
         channel_axis: int | None = None, slice_axis: int | None = None) -> float:
    """Mean structural similarity of a 2D or 3D image, as scikit-image computes it.

    With the defaults this equals ``skimage.metrics.structural_similarity(pred,
    target, data_range=data_range)``: K1 = 0.01, K2 = 0.03, a uniform 7-wide
    window, sample covariance, and the mean over pixels at least ``win_size // 2``
    from the border. ``gaussian=True`` uses the Gaussian window of Wang et al.
    (σ = 1.5, 11 wide) without the sample correction, i.e. scikit-image with
    ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``.

    Masking: the SSIM map is averaged over the pixels where ``mask`` is True and
    whose whole window is labelled (no NaN in ``target``), so unlabelled values
    never enter a counted window.

    Parameters
    ----------
    pred, target : real arrays of equal shape
        2D or 3D images (one more axis if ``channel_axis`` is given).
    data_range : float > 0
        Required: the span of possible values (sets the constants C1, C2).
    win_size : odd int >= 3, optional
        Window width; default 7, or 11 with ``gaussian``.
    gaussian : bool
        Gaussian instead of uniform window.
    mask : bool array broadcastable to target, optional
        True where the SSIM map is averaged.
    channel_axis : int, optional
        Axis of channels; SSIM is then the mean over channels.
    slice_axis : int, optional
        For a 3D stack of 2D images (an axis of ``pred``, not ``channel_axis``): the
        2D SSIM map of each slice along this axis, averaged over the counted pixels
        of all slices. Default: a 2D or 3D SSIM of the whole image.

    Returns
    -------
    ssim : float
        In [-1, 1]; NaN if no pixel counts.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> image = rng.random((16, 16))
    >>> ssim(image, image, data_range=1.0)
    1.0
    """
    data_range = _data_range(data_range)
    p, t, use = _image_pair(pred, target, mask)
    return _ssim(p, t, use, data_range, win_size, gaussian, channel_axis, slice_axis)


def _axis(name: str, value: object, ndim: int) -> int:
    axis = check_int(name, value)
    if not -ndim <= axis < ndim:
        raise not_allowed(name, value, f"an axis of the {ndim}D image, in [{-ndim}, {ndim - 1}]")
    return axis % ndim


def _ssim(p: np.ndarray, t: np.ndarray, use: np.ndarray, data_range: float,
          win_size: int | None, gaussian: bool, channel_axis: int | None,
          slice_axis: int | None = None) -> float:
    sa = None if slice_axis is None else _axis("slice_axis", slice_axis, p.ndim)
    if channel_axis is None:
        return _ssim_single(p, t, use, data_range, win_size, gaussian, sa)
    axis = _axis("channel_axis", channel_axis, p.ndim)
    if sa == axis:
        raise not_allowed("slice_axis", slice_axis, f"an axis other than channel_axis={channel_axis}")
    if sa is not None and sa > axis:
        sa -= 1  # the axis of a channel's image
    p, t, use = (np.moveaxis(x, axis, 0) for x in (p, t, use))
    scores = [_ssim_single(p[c], t[c], use[c], data_range, win_size, gaussian, sa)
              for c in range(p.shape[0])]
    return float(np.mean(scores))


def _stack_axis(shape: tuple[int, ...]) -> int | None:
    """The axis a 3D image is a stack of 2D images along, when a 3D SSIM window cannot fit it."""
    window = _UNIFORM_WIN
    short = [i for i, n in enumerate(shape) if n < window]
    if len(shape) != 3 or not short:
        return None
    if len(short) > 1:
        raise ValueError(f"ssim: the 3D image of shape {shape} has {len(short)} axes shorter than the "
                         f"{window}-wide window; SSIM needs a 2D or 3D image with every side >= {window}, "
                         "or a stack of 2D images of that size")
    logger.info("ssim: the 3D image of shape %s is too thin along axis %d for a %d-wide window: scored as a "
                "stack of 2D images (slice_axis=%d)", shape, short[0], window, short[0])
    return short[0]


def image_report(pred: object, target: object, *, data_range: float | None = None,
                 mask: object = None, slice_axis: int | None = None) -> dict:
    """PSNR, SSIM, Pearson, MAE and MSE of a 2D or 3D image in one JSON-serialisable dict.

    Parameters
    ----------
    pred, target : real arrays of equal shape, 2D or 3D
    data_range : float > 0
        Required, see :func:`psnr`.
    mask : bool array broadcastable to target, optional
    slice_axis : int, optional
        Score SSIM slice by slice along this axis of a 3D stack (see :func:`ssim`).
        Default: a 3D SSIM, except for a stack too thin along one axis for the
        7-wide window (e.g. 3 slices or 3 channels): that one axis is then the
        slice axis, and the report says so (``ssim_slice_axis``).

    Returns
    -------
    report : dict
        ``num_pixels`` (counted), ``psnr``, ``ssim``, ``pearson``, ``mae``, ``mse``;
        ``ssim_slice_axis`` when SSIM was scored slice by slice.

    Examples
    --------
    >>> report = image_report(np.zeros((8, 8)), np.full((8, 8), 0.1), data_range=1.0)
    >>> round(report["psnr"], 6), round(report["mae"], 6)
    (20.0, 0.1)
    """
    data_range = _data_range(data_range)
    p, t, valid = _image_pair(pred, target, mask)
    if slice_axis is None:
        slice_axis = _stack_axis(p.shape)
    error = _mean_error(p, t, valid, power=2)
    report = {
        "num_pixels": int(valid.sum()),
        "psnr": _psnr(error, data_range),
        "ssim": _ssim(p, t, valid, data_range, None, False, None, slice_axis),
        "pearson": _pearson(p, t, valid),
        "mae": _mean_error(p, t, valid, power=1),
        "mse": error,
    }
    if slice_axis is not None:
        report["ssim_slice_axis"] = _axis("slice_axis", slice_axis, p.ndim)
    return report
