"""Per-pixel segmentation losses: cross-entropy and focal loss.

Both take raw logits ``(N, C, *spatial)`` and an integer label map
``(N, *spatial)`` in which ``ignore_index`` marks unlabelled pixels. Unlabelled
pixels contribute nothing to the value or the gradient, so sparse labels
(scribbles, every Nth slice) never turn into "background". When no pixel is
labelled the loss is a zero that is still connected to ``pred``, so a training
step on a patch without labels runs instead of crashing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_float, check_int
from ._checks import (
    check_segmentation,
    class_vector,
    masked_logits,
    safe_divide,
    weight_buffer,
)

__all__ = ["cross_entropy_loss", "CrossEntropyLoss", "focal_loss", "FocalLoss"]


def cross_entropy_loss(
    pred: Tensor,
    target: Tensor,
    *,
    ignore_index: int = -1,
    weight: Sequence[float] | Tensor | None = None,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Softmax cross-entropy averaged over labelled pixels.

    A thin wrapper of :func:`torch.nn.functional.cross_entropy` that adds input
    checks and returns a connected zero when nothing is labelled (torch returns NaN).

    Parameters
    ----------
    pred : (N, C, *spatial) Tensor
        Raw logits, C >= 2, 2 or 3 spatial dims.
    target : (N, *spatial) integer Tensor
        Class labels in ``0..C-1``; ``ignore_index`` marks unlabelled pixels.
    ignore_index : int
        Label of unlabelled pixels.
    weight : sequence of C floats, optional
        Per-class weights. As in torch, the mean divides by the summed weights of
        the labelled pixels' true classes.
    label_smoothing : float in [0, 1]
        Mixes the one-hot target with the uniform distribution, as in torch.

    Returns
    -------
    loss : scalar Tensor

    Examples
    --------
    >>> pred = torch.zeros(1, 3, 4, 4)
    >>> target = torch.full((1, 4, 4), -1)
    >>> target[0, 0, 0] = 2
    >>> round(float(cross_entropy_loss(pred, target)), 4)  # log(3)
    1.0986
    """
    valid = check_segmentation(pred, target, ignore_index)
    label_smoothing = check_float("label_smoothing", label_smoothing, minimum=0.0, maximum=1.0)
    logits = masked_logits(pred, valid)
    w = class_vector(weight, "weight", pred.shape[1], logits)
    total = F.cross_entropy(
        logits, target.long(), weight=w, ignore_index=ignore_index,
        reduction="sum", label_smoothing=label_smoothing,
    )
    if w is None:
        denom = valid.sum().to(total.dtype)
    else:
        safe = torch.where(valid, target, torch.zeros_like(target)).long()
        denom = torch.where(valid, w[safe], w.new_zeros(())).sum()
    return safe_divide(total, denom)


def focal_loss(
    pred: Tensor,
    target: Tensor,
    *,
    ignore_index: int = -1,
    gamma: float = 2.0,
    alpha: Sequence[float] | Tensor | None = None,
) -> Tensor:
    """Multi-class focal loss (Lin et al. 2017), mean over labelled pixels.

    Per labelled pixel ``-alpha[t] * (1 - p_t) ** gamma * log(p_t)``, where
    ``p_t`` is the softmax probability of the true class ``t``. The mean divides
    by the number of labelled pixels (not by the summed ``alpha``), so ``alpha``
    rescales the loss as well as re-balancing the classes.

    Parameters
    ----------
    pred : (N, C, *spatial) Tensor
        Raw logits, C >= 2.
    target : (N, *spatial) integer Tensor
        Class labels in ``0..C-1``; ``ignore_index`` marks unlabelled pixels.
    ignore_index : int
        Label of unlabelled pixels.
    gamma : float >= 0
        Focusing exponent; 0 gives (alpha-weighted) cross-entropy.
    alpha : sequence of C floats, optional
        Per-class weights; None weighs every class 1.

    Returns
    -------
    loss : scalar Tensor

    Examples
    --------
    >>> pred = torch.zeros(1, 2, 2, 2)
    >>> target = torch.tensor([[[0, 1], [-1, -1]]])
    >>> round(float(focal_loss(pred, target, gamma=0.0)), 4)  # log(2)
    0.6931
    """
    valid = check_segmentation(pred, target, ignore_index)
    gamma = check_float("gamma", gamma, minimum=0.0)
    logits = masked_logits(pred, valid)
    a = class_vector(alpha, "alpha", pred.shape[1], logits)
    safe = torch.where(valid, target, torch.zeros_like(target)).long()
    log_pt = torch.log_softmax(logits, dim=1).gather(1, safe.unsqueeze(1)).squeeze(1)
    # -expm1(log p) is 1 - p without cancellation when p is close to 1
    per_pixel = -(-torch.expm1(log_pt)).pow(gamma) * log_pt
    if a is not None:
        per_pixel = per_pixel * a[safe]
    total = torch.where(valid, per_pixel, per_pixel.new_zeros(())).sum()
    return safe_divide(total, valid.sum().to(total.dtype))


class CrossEntropyLoss(nn.Module):
    """Module form of :func:`cross_entropy_loss`; same parameters, keyword-only.

    Examples
    --------
    >>> loss = CrossEntropyLoss(weight=[1.0, 2.0])
    >>> float(loss(torch.zeros(1, 2, 3, 3), torch.ones(1, 3, 3, dtype=torch.long))) > 0
    True
    """

    def __init__(self, *, ignore_index: int = -1, weight: Sequence[float] | Tensor | None = None,
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.ignore_index = check_int("ignore_index", ignore_index)
        self.label_smoothing = check_float("label_smoothing", label_smoothing, minimum=0.0, maximum=1.0)
        # non-persistent: follows .to(device) without leaking into model checkpoints
        self.register_buffer("weight", weight_buffer(weight, "weight"), persistent=False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return cross_entropy_loss(pred, target, ignore_index=self.ignore_index,
                                  weight=self.weight, label_smoothing=self.label_smoothing)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, label_smoothing={self.label_smoothing}"


class FocalLoss(nn.Module):
    """Module form of :func:`focal_loss`; same parameters, keyword-only.

    Examples
    --------
    >>> loss = FocalLoss(gamma=2.0, alpha=[0.25, 0.75])
    >>> float(loss(torch.zeros(1, 2, 3, 3), torch.ones(1, 3, 3, dtype=torch.long))) > 0
    True
    """

    def __init__(self, *, ignore_index: int = -1, gamma: float = 2.0,
                 alpha: Sequence[float] | Tensor | None = None) -> None:
        super().__init__()
        self.ignore_index = check_int("ignore_index", ignore_index)
        self.gamma = check_float("gamma", gamma, minimum=0.0)
        self.register_buffer("alpha", weight_buffer(alpha, "alpha"), persistent=False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return focal_loss(pred, target, ignore_index=self.ignore_index,
                          gamma=self.gamma, alpha=self.alpha)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, gamma={self.gamma}"
