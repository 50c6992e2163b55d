"""Figures for training runs: curves, prediction panels, confusion matrices.

All figures are drawn headless (Agg, no ``pyplot`` state) and written atomically.
"""

from .confusion import plot_confusion_matrix
from .curves import plot_training_curves, read_metrics
from .panels import IGNORE_COLOR, class_colors, label_to_rgba, plot_prediction_panel

__all__ = [
    "IGNORE_COLOR",
    "class_colors",
    "label_to_rgba",
    "plot_confusion_matrix",
    "plot_prediction_panel",
    "plot_training_curves",
    "read_metrics",
]
