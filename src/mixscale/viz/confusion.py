"""Confusion-matrix figure."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ._common import check_dpi, check_out_path, new_figure, save_figure

__all__ = ["plot_confusion_matrix"]

logger = logging.getLogger(__name__)


def _check_cm(cm) -> np.ndarray:
    try:
        array = np.asarray(cm, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"cm must be a square numeric array, got {type(cm).__name__}") from None
    if array.ndim != 2 or array.shape[0] != array.shape[1] or array.shape[0] < 1:
        raise ValueError(f"cm must be a square (C, C) array with C >= 1, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"cm must hold finite counts, got {int((~np.isfinite(array)).sum())} "
                         "non-finite entries")
    if (array < 0).any():
        raise ValueError(f"cm must hold non-negative counts, got minimum {array.min()!r}")
    return array


def _row_fractions(cm: np.ndarray) -> np.ndarray:
    totals = cm.sum(axis=1, keepdims=True)
    return np.divide(cm, totals, out=np.zeros_like(cm), where=totals > 0)


def _annotate(ax, cm: np.ndarray, shade: np.ndarray) -> None:
    integer = np.allclose(cm, np.round(cm))
    for (i, j), count in np.ndenumerate(cm):
        text = f"{int(round(count))}" if integer else f"{count:.3g}"
        ax.text(j, i, text, ha="center", va="center", fontsize="small",
                color="white" if shade[i, j] > 0.5 else "black")


def plot_confusion_matrix(cm, out_path, *, class_names=None, normalize: bool = True,
                          title: str | None = None, dpi: int = 100) -> Path:
    """Draw a confusion matrix with counts in the cells.

    Parameters
    ----------
    cm : (C, C) array_like
        Counts; row ``i`` is the true class, column ``j`` the predicted one.
    out_path : str or os.PathLike
        Where to write the figure (``.png``, ``.pdf`` or ``.svg``), atomically.
    class_names : sequence of str, optional
        Tick labels, ``C`` of them; class indices by default.
    normalize : bool
        Colour each cell by its fraction of the true class (row), so rare
        classes stay readable; with False colour by the raw counts.
    title : str, optional
        Figure title.
    dpi : int
        Resolution of a PNG.

    Returns
    -------
    path : pathlib.Path
        The written file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "cm.png"
    >>> plot_confusion_matrix([[5, 1], [2, 7]], out, class_names=["bg", "cell"]).exists()
    True
    """
    check_out_path(out_path)
    dpi = check_dpi(dpi)
    cm = _check_cm(cm)
    n = cm.shape[0]
    if class_names is None:
        class_names = [str(k) for k in range(n)]
    elif isinstance(class_names, str) or len(class_names) != n:
        raise ValueError(f"class_names must be a sequence of C={n} names, got {class_names!r}")
    shade = _row_fractions(cm) if normalize else cm / max(cm.max(), 1e-12)
    side = float(np.clip(0.45 * n + 2.5, 4.0, 14.0))
    fig = new_figure(side + 1.2, side)
    ax = fig.subplots()
    shown = ax.imshow(shade if normalize else cm, cmap="Blues", vmin=0.0,
                      vmax=1.0 if normalize else max(float(cm.max()), 1e-12),
                      interpolation="nearest")
    fig.colorbar(shown, ax=ax, label="fraction of true class" if normalize else "count",
                 shrink=0.8)
    if n <= 30:
        _annotate(ax, cm, shade)
    ax.set_xticks(range(n), [str(c) for c in class_names], rotation=45 if n > 6 else 0,
                  ha="right" if n > 6 else "center")
    ax.set_yticks(range(n), [str(c) for c in class_names])
    ax.set_xlabel("predicted")
    ax.set_ylabel("truth")
    if title:
        ax.set_title(str(title))
    return save_figure(fig, out_path, dpi=dpi)
