"""Training curves from a Lightning ``CSVLogger`` metrics file."""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from ._common import check_dpi, check_out_path, new_figure, save_figure

__all__ = ["plot_training_curves", "read_metrics"]

logger = logging.getLogger(__name__)

_AXES = ("epoch", "step")


def _to_float(value) -> float:
    """A cell as float; empty, missing or non-numeric cells become NaN."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def read_metrics(metrics) -> dict[str, np.ndarray]:
    """Read a metrics table into one float array per column.

    Parameters
    ----------
    metrics : str, os.PathLike or iterable of mappings
        Path of a CSV file with a header row (Lightning's ``metrics.csv``), or of
        the folder that holds ``metrics.csv``, or rows as dicts from column name
        to value.

    Returns
    -------
    columns : dict of str to (R,) ndarray of float64
        Every column over all ``R`` rows, in order of first appearance; empty,
        missing and non-numeric cells are NaN (train and validation values are
        logged on different rows, so most columns have gaps).

    Examples
    --------
    >>> cols = read_metrics([{"epoch": 0, "train_loss": 1.5}, {"epoch": 0, "val_loss": ""}])
    >>> cols["train_loss"].tolist()[0], bool(np.isnan(cols["val_loss"]).all())
    (1.5, True)
    """
    if isinstance(metrics, (str, os.PathLike)):
        path = Path(metrics)
        if path.is_dir():  # a CSVLogger version folder
            path = path / "metrics.csv"
        with open(path, newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
    elif isinstance(metrics, Iterable) and not isinstance(metrics, (bytes, Mapping)):
        rows = list(metrics)
        bad = [type(r).__name__ for r in rows if not isinstance(r, Mapping)]
        if bad:
            raise TypeError(f"metrics rows must be mappings (dicts), got a {bad[0]}")
    else:
        raise TypeError(f"metrics must be a path to a CSV file or an iterable of dict "
                        f"rows, got {type(metrics).__name__}")
    names: dict[str, None] = {}
    for row in rows:
        names.update((str(k), None) for k in row if k is not None)
    return {name: np.array([_to_float(row.get(name)) for row in rows], dtype=np.float64)
            for name in names}


def _x_axis(columns: dict[str, np.ndarray]) -> tuple[str, np.ndarray]:
    for name in _AXES:
        if name in columns and np.isfinite(columns[name]).any():
            return name, columns[name]
    n = len(next(iter(columns.values()))) if columns else 0
    return "row", np.arange(n, dtype=np.float64)


def _per_x_mean(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean of the finite ``y`` at each distinct finite ``x`` (steps within an epoch)."""
    keep = np.isfinite(x) & np.isfinite(y)
    if not keep.any():
        return np.empty(0), np.empty(0)
    xs, inverse = np.unique(x[keep], return_inverse=True)
    sums = np.bincount(inverse, weights=y[keep])
    return xs, sums / np.bincount(inverse)


def _draw_losses(ax, x_name, x, columns) -> None:
    names = [n for n in columns if "loss" in n.lower() and n not in _AXES]
    curves = [(n, *_per_x_mean(x, columns[n])) for n in names]
    curves = [c for c in curves if c[1].size]
    for name, xs, ys in curves:
        ax.plot(xs, ys, marker="o" if xs.size < 50 else None, ms=3, label=name)
        if name.lower().startswith("val") and name.lower().endswith("loss"):
            best = int(np.argmin(ys))
            ax.plot(xs[best], ys[best], "*", ms=12, color="gold", mec="black",
                    label=f"best {name} = {ys[best]:.4g}")
    values = np.concatenate([c[2] for c in curves]) if curves else np.empty(0)
    if values.size and values.min() > 0 and values.max() / values.min() > 30:
        ax.set_yscale("log")
    if not curves:
        ax.text(0.5, 0.5, "no loss logged yet", ha="center", va="center",
                transform=ax.transAxes)
    else:
        ax.legend(fontsize="small")
    ax.set_xlabel(x_name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("loss")
    ax.set_title("loss")
    ax.grid(True, alpha=0.3)


def _draw_val_metrics(ax, x_name, x, names, columns) -> None:
    for name in names:
        xs, ys = _per_x_mean(x, columns[name])
        ax.plot(xs, ys, marker="o" if xs.size < 50 else None, ms=3, label=name)
    ax.legend(fontsize="small")
    ax.set_xlabel(x_name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title("validation metrics")
    ax.grid(True, alpha=0.3)


def plot_training_curves(metrics, out_path, *, dpi: int = 100) -> Path:
    """Plot loss curves and validation metrics of a training run.

    Left panel: every column whose name contains ``loss`` (train and validation),
    averaged per epoch, with the best validation loss starred; a log scale when
    the losses span more than a factor 30. Right panel (only when there are any):
    every ``val_*`` / ``val/*`` column that is not a loss. The x axis is
    ``epoch``, else ``step``, else the row number. Missing columns, empty cells
    and NaNs are skipped, so a run that has logged nothing yet still gets a
    figure.

    Parameters
    ----------
    metrics : str, os.PathLike or iterable of mappings
        Lightning ``CSVLogger`` ``metrics.csv`` path (or its folder), or its rows
        as dicts.
    out_path : str or os.PathLike
        Where to write the figure (``.png``, ``.pdf`` or ``.svg``); written to a
        temporary file first and renamed, parent folders created.
    dpi : int
        Resolution of a PNG.

    Returns
    -------
    path : pathlib.Path
        The written file.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> rows = [{"epoch": 0, "train_loss": 1.0}, {"epoch": 0, "val_loss": 0.9, "val_f1": 0.5}]
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "curves.png"
    >>> plot_training_curves(rows, out).stat().st_size > 0
    True
    """
    check_out_path(out_path)
    dpi = check_dpi(dpi)
    columns = read_metrics(metrics)
    x_name, x = _x_axis(columns)
    metric_names = [n for n in columns if n.lower().startswith(("val_", "val/"))
                    and "loss" not in n.lower() and np.isfinite(columns[n]).any()]
    n_panels = 2 if metric_names else 1
    fig = new_figure(5.5 * n_panels, 4.0)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    _draw_losses(axes[0], x_name, x, columns)
    if metric_names:
        _draw_val_metrics(axes[1], x_name, x, metric_names, columns)
    return save_figure(fig, out_path, dpi=dpi)
