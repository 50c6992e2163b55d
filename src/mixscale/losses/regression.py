"""Regression losses (denoising, inpainting) that skip unlabelled pixels.

``pred`` and ``target`` are both ``(N, C, *spatial)``. A pixel counts where the
target is not NaN and the optional ``mask`` is True; the loss is the mean over
the counted pixels, and a connected zero when none counts.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ._checks import check_regression, safe_divide, upcast

__all__ = ["l1_loss", "L1Loss", "mse_loss", "MSELoss"]


def _masked_mean(pred: Tensor, target: Tensor, mask: Tensor | None,
                 penalty: Callable[[Tensor], Tensor]) -> Tensor:
    valid = check_regression(pred, target, mask)
    pred = upcast(pred)
    zero = pred.new_zeros(())
    # where(), not multiplication by the mask: NaN must not reach the value or the gradient
    diff = torch.where(valid, pred - torch.where(valid, target.to(pred.dtype), zero), zero)
    total = penalty(diff).sum()
    return safe_divide(total, valid.sum().to(total.dtype))


def l1_loss(pred: Tensor, target: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """Mean absolute error over pixels with a finite target (and ``mask`` True).

    Parameters
    ----------
    pred : (N, C, *spatial) Tensor
        Prediction, 2 or 3 spatial dims.
    target : (N, C, *spatial) Tensor
        Reference; NaN marks unlabelled pixels.
    mask : bool Tensor broadcastable to target, optional
        True where pixels count.

    Returns
    -------
    loss : scalar Tensor

    Examples
    --------
    >>> target = torch.tensor([[[[1.0, float("nan")]]]])
    >>> float(l1_loss(torch.zeros(1, 1, 1, 2), target))
    1.0
    """
    return _masked_mean(pred, target, mask, torch.abs)


def mse_loss(pred: Tensor, target: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """Mean squared error over pixels with a finite target (and ``mask`` True).

    Parameters
    ----------
    pred : (N, C, *spatial) Tensor
        Prediction, 2 or 3 spatial dims.
    target : (N, C, *spatial) Tensor
        Reference; NaN marks unlabelled pixels.
    mask : bool Tensor broadcastable to target, optional
        True where pixels count.

    Returns
    -------
    loss : scalar Tensor

    Examples
    --------
    >>> target = torch.tensor([[[[2.0, float("nan")]]]])
    >>> float(mse_loss(torch.zeros(1, 1, 1, 2), target))
    4.0
    """
    return _masked_mean(pred, target, mask, torch.square)


class L1Loss(nn.Module):
    """Module form of :func:`l1_loss`; ``mask`` is passed per call."""

    def forward(self, pred: Tensor, target: Tensor, *, mask: Tensor | None = None) -> Tensor:
        return l1_loss(pred, target, mask=mask)


class MSELoss(nn.Module):
    """Module form of :func:`mse_loss`; ``mask`` is passed per call."""

    def forward(self, pred: Tensor, target: Tensor, *, mask: Tensor | None = None) -> Tensor:
        return mse_loss(pred, target, mask=mask)
