"""Losses for segmentation from sparse labels and for image regression.

Every loss comes as a function and a Module (``dice_loss`` / ``DiceLoss``) and
takes ``(pred, target)``. Segmentation losses take logits ``(N, C, *spatial)``
and integer labels ``(N, *spatial)`` with ``ignore_index`` (default -1) for
unlabelled pixels; regression losses take two ``(N, C, *spatial)`` tensors with
NaN (or an optional ``mask``) for unlabelled pixels. Unlabelled pixels never
contribute to a loss or its gradient.
"""

from .combined import CombinedLoss, create_loss, list_losses
from .overlap import DiceLoss, TverskyLoss, dice_loss, tversky_loss
from .pixelwise import CrossEntropyLoss, FocalLoss, cross_entropy_loss, focal_loss
from .regression import L1Loss, MSELoss, l1_loss, mse_loss

__all__ = [
    "CombinedLoss",
    "CrossEntropyLoss",
    "DiceLoss",
    "FocalLoss",
    "L1Loss",
    "MSELoss",
    "TverskyLoss",
    "create_loss",
    "cross_entropy_loss",
    "dice_loss",
    "focal_loss",
    "l1_loss",
    "list_losses",
    "mse_loss",
    "tversky_loss",
]
