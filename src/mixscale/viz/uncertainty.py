"""Figures of trust: a reliability diagram and an uncertainty panel.

They take numbers already computed (``mixscale.metrics.calibration.reliability``
gives the diagram's bins; ``mixscale.api.predict(..., uncertainty=True)`` the maps),
so plotting never recomputes a statistic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .._checks import not_allowed
from ._common import new_figure, save_figure
from .panels import label_to_rgba


def plot_reliability_diagram(bins: dict, out_path, *, title: str = "reliability", dpi: int = 100) -> Path:
    """Accuracy against confidence per bin, with the bins' share of pixels, and the diagonal.

    Parameters
    ----------
    bins : dict
        ``count``, ``confidence``, ``accuracy`` arrays ``(B,)`` (NaN in empty bins), as
        :func:`mixscale.metrics.calibration.reliability` returns them.
    out_path : str or Path
        ``.png``, ``.pdf`` or ``.svg``.
    """
    for key in ("count", "confidence", "accuracy"):
        if key not in bins:
            raise not_allowed("bins", sorted(bins), "a dict with count, confidence and accuracy")
    count = np.asarray(bins["count"], float)
    full = count > 0
    conf, acc = np.asarray(bins["confidence"], float)[full], np.asarray(bins["accuracy"], float)[full]
    fig = new_figure(4.2, 4.6)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect calibration")
    top.bar(conf, acc - conf, bottom=conf, width=0.03, color="tab:red", alpha=0.35, label="gap")
    top.plot(conf, acc, "o-", color="tab:blue", ms=4, label="accuracy")
    top.set(ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    top.legend(loc="upper left", fontsize=8)
    bottom.bar(conf, count[full] / count.sum(), width=0.03, color="0.4")
    bottom.set(xlabel="confidence (top-label probability)", ylabel="share")
    return save_figure(fig, out_path, dpi=dpi)


def plot_uncertainty_panel(image, labels, entropy, mutual_info, out_path, *, num_classes: int,
                           dpi: int = 100) -> Path:
    """Input | prediction | predictive entropy | mutual information, side by side for one slice.

    Parameters
    ----------
    image : (H, W) array
    labels : (H, W) int array
    entropy, mutual_info : (H, W) arrays
    num_classes : int
    """
    arrays = [np.asarray(a) for a in (image, labels, entropy, mutual_info)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 2:
        raise ValueError(f"image, labels, entropy and mutual_info must be 2D of one shape, got "
                         f"{[a.shape for a in arrays]}")
    fig = new_figure(13, 3.6)
    axes = fig.subplots(1, 4)
    axes[0].imshow(arrays[0], cmap="gray")
    axes[1].imshow(label_to_rgba(arrays[1].astype(np.int64), num_classes=num_classes))
    for ax, data, name in ((axes[2], arrays[2], "entropy (total)"), (axes[3], arrays[3], "mutual information")):
        shown = ax.imshow(data.astype(np.float32), cmap="magma", vmin=0)
        fig.colorbar(shown, ax=ax, shrink=0.8)
        ax.set_title(name)
    axes[0].set_title("input")
    axes[1].set_title("prediction")
    for ax in axes:
        ax.set_axis_off()
    return save_figure(fig, out_path, dpi=dpi)
