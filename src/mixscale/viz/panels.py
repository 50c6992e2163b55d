"""Input / truth / prediction panels, with a fixed colour per class."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import hsv_to_rgb
from matplotlib.patches import Patch

from .._checks import check_int
from ._common import check_dpi, check_out_path, new_figure, save_figure

__all__ = ["IGNORE_COLOR", "class_colors", "label_to_rgba", "plot_prediction_panel"]

logger = logging.getLogger(__name__)

_LEGEND_MAX = 24  # more classes than this get no legend

#: RGB shown behind ignored (unlabelled) pixels, which are transparent.
IGNORE_COLOR = (0.82, 0.82, 0.82)


def class_colors(num_classes: int) -> np.ndarray:
    """A fixed RGB colour per class: class ``k`` gets the same colour for any count.

    Class 0 (usually background) is black; then the tab10 and tab20 colours
    without their greys; beyond those, hues spaced by the golden angle.

    Parameters
    ----------
    num_classes : int
        Number of classes ``C``.

    Returns
    -------
    colors : (C, 3) ndarray of float64 in [0, 1]

    Examples
    --------
    >>> bool((class_colors(3) == class_colors(12)[:3]).all())
    True
    """
    num_classes = check_int("num_classes", num_classes, minimum=1)
    tab10 = [c for i, c in enumerate(colormaps["tab10"].colors) if i != 7]
    tab20_light = [c for i, c in enumerate(colormaps["tab20"].colors) if i % 2 and i != 15]
    table = [(0.0, 0.0, 0.0), *tab10, *tab20_light]
    extra = max(0, int(num_classes) - len(table))
    hues = (np.arange(extra) * 0.618033988749895 + 0.11) % 1.0
    extra_rgb = hsv_to_rgb(np.stack([hues, np.full(extra, 0.75), np.full(extra, 0.9)], -1))
    return np.concatenate([np.asarray(table, dtype=float), extra_rgb.reshape(-1, 3)])[
        :num_classes]


def _check_labels(name: str, labels: np.ndarray, num_classes: int, ignore_index: int):
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        raise ValueError(f"{name} must hold classes 0..{num_classes - 1} or ignore_index="
                         f"{ignore_index}, got value {labels[bad].flat[0]!r}")


def label_to_rgba(labels, *, num_classes: int | None = None, ignore_index: int = -1):
    """Colour a class map with :func:`class_colors`; ignored pixels transparent.

    Parameters
    ----------
    labels : (*spatial) array_like of int
        Class per pixel, ``0..C-1``, or ``ignore_index``.
    num_classes : int, optional
        ``C``; by default the largest class present plus one.
    ignore_index : int
        Value of unlabelled pixels; they get alpha 0.

    Returns
    -------
    rgba : (*spatial, 4) ndarray of float32

    Examples
    --------
    >>> label_to_rgba([[0, 1, -1]])[0, :, 3].tolist()
    [1.0, 1.0, 0.0]
    """
    ignore_index = check_int("ignore_index", ignore_index)
    labels = np.asarray(labels)
    if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise TypeError(f"labels must be an integer array, got dtype {labels.dtype}")
    if num_classes is None:
        valid = labels[labels != ignore_index]
        num_classes = int(valid.max()) + 1 if valid.size else 1
    colors = class_colors(num_classes)
    _check_labels("labels", labels, num_classes, ignore_index)
    known = labels != ignore_index
    rgba = np.zeros((*labels.shape, 4), dtype=np.float32)
    rgba[known, :3] = colors[labels[known].astype(np.int64)]
    rgba[known, 3] = 1.0
    return rgba


def _as_samples(name: str, value) -> list[np.ndarray]:
    """One 2D array, a (N, H, W) stack or a list of 2D arrays -> list of 2D arrays."""
    if isinstance(value, (list, tuple)):
        samples = [np.asarray(v) for v in value]
    else:
        array = np.asarray(value)
        samples = [array] if array.ndim == 2 else list(array) if array.ndim == 3 else [array]
    if not samples:
        raise ValueError(f"{name} must hold at least one sample, got an empty sequence")
    for k, sample in enumerate(samples):
        if sample.ndim != 2:
            raise ValueError(f"{name} must be a 2D array (H, W), a stack (N, H, W) or a "
                             f"list of 2D arrays; sample {k} has shape {sample.shape}")
    return samples


def _is_int(a: np.ndarray) -> bool:
    return np.issubdtype(a.dtype, np.integer) or a.dtype == bool


def _task(target: list[np.ndarray], pred: list[np.ndarray]) -> str:
    kinds = {"int" if _is_int(a) else "float" if np.issubdtype(a.dtype, np.floating)
             else str(a.dtype) for a in (*target, *pred)}
    if kinds == {"int"}:
        return "segmentation"
    if kinds == {"float"}:
        return "regression"
    raise TypeError(f"target and pred must both be integer class maps (segmentation) or "
                    f"both floating point (regression), got dtypes {sorted(kinds)}")


def _robust_limits(*arrays: np.ndarray) -> tuple[float, float]:
    values = np.concatenate([a[np.isfinite(a)].ravel() for a in arrays])
    if not values.size:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [0.5, 99.5])
    return float(lo), (float(hi) if hi > lo else float(lo) + 1.0)


def _check_inputs(image, target, pred, titles):
    images = _as_samples("image", image)
    targets = _as_samples("target", target)
    preds = _as_samples("pred", pred)
    if not len(images) == len(targets) == len(preds):
        raise ValueError(f"image, target and pred must hold as many samples, got "
                         f"{len(images)}, {len(targets)} and {len(preds)}")
    for k, (i, t, p) in enumerate(zip(images, targets, preds)):
        if not i.shape == t.shape == p.shape:
            raise ValueError(f"image, target and pred must have equal shapes, sample {k} "
                             f"has shapes {i.shape}, {t.shape} and {p.shape}")
    if isinstance(titles, str) or len(titles) != 3:
        raise ValueError(f"titles must be a sequence of 3 strings, got {titles!r}")
    return images, targets, preds


def _class_count(targets, preds, num_classes, ignore_index, class_names) -> int:
    """Check the class maps against ``num_classes`` (inferred if None)."""
    if num_classes is None:
        if class_names is not None:
            num_classes = len(class_names)
        else:
            highest = [int(a[a != ignore_index].max()) for a in (*targets, *preds)
                       if (a != ignore_index).any()]
            num_classes = max(highest, default=0) + 1
    else:
        num_classes = check_int("num_classes", num_classes, minimum=1)
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names must have num_classes={num_classes} entries, "
                         f"got {len(class_names)}")
    for name, arrays in (("target", targets), ("pred", preds)):
        for a in arrays:
            _check_labels(name, a, num_classes, ignore_index)
    return int(num_classes)


def _legend(fig, num_classes: int, class_names) -> None:
    if class_names is None:
        class_names = [str(k) for k in range(num_classes)]
    colors = class_colors(num_classes)
    handles = [Patch(color=colors[k], label=str(n)) for k, n in enumerate(class_names)]
    handles.append(Patch(color=IGNORE_COLOR, label="unlabelled"))
    fig.legend(handles=handles, loc="center right", fontsize="small", frameon=False)


def _panel_grid(images: list[np.ndarray], *, legend_rows: int):
    """Figure and (N, 3) axes, laid out by hand: constrained layout costs more
    than the drawing itself for many small panels."""
    height, width = images[0].shape
    col_w, title_h, legend_w = 3.0, 0.35, 1.9 if legend_rows else 0.0
    row_h = float(np.clip(col_w * height / max(width, 1), 1.0, 6.0))
    fig_w = 3 * col_w + legend_w
    fig_h = max(len(images) * (row_h + title_h) + 0.1, 0.2 * legend_rows + 0.4)
    fig = new_figure(fig_w, fig_h, layout=None)
    fig.subplots_adjust(left=0.05 / fig_w, right=1 - (legend_w + 0.05) / fig_w,
                        bottom=0.05 / fig_h, top=1 - title_h / fig_h, wspace=0.04,
                        hspace=title_h / row_h)
    return fig, fig.subplots(len(images), 3, squeeze=False)


def _draw_row(axes, image, target, pred, titles, task, num_classes, ignore_index):
    lo, hi = _robust_limits(image.astype(np.float64))
    axes[0].imshow(image, cmap="gray", vmin=lo, vmax=hi)
    if task == "segmentation":
        for ax, labels in zip(axes[1:], (target, pred)):
            ax.set_facecolor(IGNORE_COLOR)
            ax.imshow(label_to_rgba(labels, num_classes=num_classes, ignore_index=ignore_index),
                      interpolation="nearest")
    else:
        lo, hi = _robust_limits(target.astype(np.float64), pred.astype(np.float64))
        for ax, values in zip(axes[1:], (target, pred)):
            ax.imshow(values, cmap="gray", vmin=lo, vmax=hi)
    for ax, title in zip(axes, titles):
        ax.set_title(str(title), fontsize="medium")
        ax.set_xticks([])
        ax.set_yticks([])


def plot_prediction_panel(image, target, pred, out_path, *,
                          titles=("input", "truth", "prediction"), num_classes=None,
                          ignore_index: int = -1, class_names=None, dpi: int = 100) -> Path:
    """Draw input, truth and prediction side by side, one row per sample.

    Integer ``target`` and ``pred`` are class maps, drawn with a fixed colour per
    class (:func:`class_colors`) and a legend; pixels equal to ``ignore_index``
    are transparent over light grey. Floating-point ``target`` and ``pred`` are
    regression outputs, drawn in grey with the same limits (0.5 and 99.5
    percentiles of both together). The input is grey with its own limits.

    Parameters
    ----------
    image : (H, W) array_like, (N, H, W) array_like or list of (H, W) arrays
        Input images (``N`` samples, shapes may differ between samples).
    target, pred : same layout as ``image``
        Truth and prediction, each sample of its image's shape; both integer or
        both floating point.
    out_path : str or os.PathLike
        Where to write the figure (``.png``, ``.pdf`` or ``.svg``), atomically.
    titles : (3,) sequence of str
        Column titles.
    num_classes : int, optional
        Number of classes; by default ``len(class_names)`` or the largest class
        present plus one. Ignored for regression.
    ignore_index : int
        Label of unlabelled pixels.
    class_names : sequence of str, optional
        Legend entries, one per class.
    dpi : int
        Resolution of a PNG.

    Returns
    -------
    path : pathlib.Path
        The written file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> img = np.random.default_rng(0).random((16, 16))
    >>> lab = (img > 0.5).astype(int)
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "panel.png"
    >>> plot_prediction_panel(img, lab, lab, out).exists()
    True
    """
    check_out_path(out_path)
    dpi = check_dpi(dpi)
    ignore_index = check_int("ignore_index", ignore_index)
    images, targets, preds = _check_inputs(image, target, pred, titles)
    task = _task(targets, preds)
    if task == "segmentation":
        num_classes = _class_count(targets, preds, num_classes, ignore_index, class_names)
    legend_rows = 0
    if task == "segmentation" and num_classes <= _LEGEND_MAX:
        legend_rows = num_classes + 1  # the classes and "unlabelled"
    fig, axes = _panel_grid(images, legend_rows=legend_rows)
    for k in range(len(images)):
        _draw_row(axes[k], images[k], targets[k], preds[k], titles if k == 0 else ("", "", ""),
                  task, num_classes, ignore_index)
    if legend_rows:
        _legend(fig, num_classes, class_names)
    return save_figure(fig, out_path, dpi=dpi)
