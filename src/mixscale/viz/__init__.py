"""Figures for training runs: curves, prediction panels, confusion matrices.

All figures are drawn headless (Agg, no ``pyplot`` state) and written atomically.
"""

from .confusion import plot_confusion_matrix
from .curves import plot_training_curves, read_metrics
from .graph import plot_adjacency, plot_graph
from .latent import LatentGrid, embed_2d, latent_image_grid, plot_latent_image_map, plot_latent_scatter
from .panels import IGNORE_COLOR, class_colors, label_to_rgba, plot_prediction_panel
from .uncertainty import plot_reliability_diagram, plot_uncertainty_panel

__all__ = [
    "IGNORE_COLOR",
    "LatentGrid",
    "class_colors",
    "embed_2d",
    "label_to_rgba",
    "latent_image_grid",
    "plot_adjacency",
    "plot_confusion_matrix",
    "plot_graph",
    "plot_latent_image_map",
    "plot_latent_scatter",
    "plot_prediction_panel",
    "plot_reliability_diagram",
    "plot_training_curves",
    "plot_uncertainty_panel",
    "read_metrics",
]
