"""Metrics for segmentation (label maps) and image quality (denoising, reconstruction).

NumPy in, Python floats or NumPy arrays out, ``(pred, target)`` order; torch
tensors are accepted and converted. Unlabelled pixels (``target ==
ignore_index`` for label maps, NaN in ``target`` for images) are skipped, and
undefined scores are NaN rather than a silent 0.
"""

from .image import image_report, mae, mse, pearson, psnr, ssim
from .latent import knn_accuracy
from .segmentation import (
    accuracy,
    adjusted_rand_index,
    class_accuracy,
    confusion_matrix,
    confusion_summary,
    dice_score,
    f1_score,
    iou_score,
    precision_score,
    recall_score,
    segmentation_report,
)

__all__ = [
    "accuracy",
    "adjusted_rand_index",
    "class_accuracy",
    "confusion_matrix",
    "confusion_summary",
    "dice_score",
    "f1_score",
    "image_report",
    "iou_score",
    "knn_accuracy",
    "mae",
    "mse",
    "pearson",
    "precision_score",
    "psnr",
    "recall_score",
    "segmentation_report",
    "ssim",
]
