"""Region-overlap segmentation losses: soft Dice and Tversky, multi-class.

Both work on softmax probabilities of the logits ``(N, C, *spatial)`` against
an integer label map ``(N, *spatial)``. For every class c the soft counts

    TP_c = sum p_c * g_c,  FP_c = sum p_c * (1 - g_c),  FN_c = sum (1 - p_c) * g_c

run over the labelled pixels of the whole batch (N and all spatial axes
together), with ``g_c`` the one-hot target. Summing over the batch rather than
per image keeps the loss defined for images in which a class is absent, which
is the common case with sparse labels. The per-class losses ``1 - score_c`` are
then averaged over the classes (weighted by ``class_weights`` if given), so a
rare class counts as much as a frequent one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .._checks import check_bool, check_float, check_int
from ._checks import (
    check_segmentation,
    class_vector,
    masked_logits,
    one_hot,
    weight_buffer,
)

__all__ = ["dice_loss", "DiceLoss", "tversky_loss", "TverskyLoss"]

_WeightsLike = Sequence[float] | Tensor | None


def _soft_counts(pred: Tensor, target: Tensor, ignore_index: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-class soft (TP, FP, FN), each ``(C,)``, over labelled pixels of the batch."""
    valid = check_segmentation(pred, target, ignore_index)
    logits = masked_logits(pred, valid)
    probs = torch.softmax(logits, dim=1) * valid.unsqueeze(1).to(logits.dtype)
    truth = one_hot(target, valid, pred.shape[1], probs.dtype)
    dims = (0, *range(2, pred.ndim))
    tp = (probs * truth).sum(dims)
    return tp, probs.sum(dims) - tp, truth.sum(dims) - tp


def _mean_over_classes(losses: Tensor, class_weights: _WeightsLike,
                       include_background: bool) -> Tensor:
    """Weighted mean of per-class losses, class 0 dropped unless ``include_background``."""
    check_bool("include_background", include_background)
    weights = class_vector(class_weights, "class_weights", losses.numel(), losses)
    if weights is None:
        weights = torch.ones_like(losses)
    if not include_background:
        weights = torch.cat([weights.new_zeros(1), weights[1:]])
    total = float(weights.sum())
    if total <= 0:
        raise ValueError(
            f"class_weights leave no class to average (weights {weights.tolist()}, "
            f"include_background={include_background}); give some class a weight > 0"
        )
    return (losses * weights).sum() / total


def dice_loss(
    pred: Tensor,
    target: Tensor,
    *,
    ignore_index: int = -1,
    smooth: float = 1e-5,
    include_background: bool = True,
    class_weights: _WeightsLike = None,
) -> Tensor:
    """Multi-class soft Dice loss over the labelled pixels of the batch.

    Per class ``dice_c = (2 TP_c + smooth) / (2 TP_c + FP_c + FN_c + smooth)``,
    counts summed over the batch (see the module notes); the loss is the mean of
    ``1 - dice_c`` over classes. A class absent from both the labels and the
    prediction scores ``dice_c = 1`` (loss 0) thanks to ``smooth``; it still
    counts in the mean.

    Parameters
    ----------
    pred : (N, C, *spatial) Tensor
        Raw logits, C >= 2, 2 or 3 spatial dims.
    target : (N, *spatial) integer Tensor
        Class labels in ``0..C-1``; ``ignore_index`` marks unlabelled pixels.
    ignore_index : int
        Label of unlabelled pixels; they count neither in TP, FP nor FN.
    smooth : float >= 0
        Added to numerator and denominator; keeps empty classes finite (with
        ``smooth=0`` a class absent from labels and prediction gives NaN).
    include_background : bool
        If False, class 0 is left out of the mean.
    class_weights : sequence of C floats, optional
        Weights of the per-class losses in the mean.

    Returns
    -------
    loss : scalar Tensor in [0, 1]

    Examples
    --------
    >>> target = torch.tensor([[[0, 1], [1, -1]]])
    >>> perfect = torch.nn.functional.one_hot(target.clamp(min=0), 2).movedim(-1, 1) * 50.0
    >>> float(dice_loss(perfect, target)) < 1e-6
    True
    """
    smooth = check_float("smooth", smooth, minimum=0.0)
    tp, fp, fn = _soft_counts(pred, target, ignore_index)
    dice = (2 * tp + smooth) / (2 * tp + fp + fn + smooth)
    return _mean_over_classes(1 - dice, class_weights, include_background)


def tversky_loss(
    pred: Tensor,
    target: Tensor,
    *,
    ignore_index: int = -1,
    alpha: float = 0.5,
    beta: float = 0.5,
    smooth: float = 1e-5,
    include_background: bool = True,
    class_weights: _WeightsLike = None,
) -> Tensor:
    """Multi-class Tversky loss (Salehi et al. 2017) over the labelled pixels of the batch.

    Per class ``T_c = (TP_c + smooth) / (TP_c + alpha FP_c + beta FN_c + smooth)``;
    the loss is the mean of ``1 - T_c`` over classes. ``alpha`` weighs false
    positives, ``beta`` false negatives: ``beta > alpha`` favours recall.
    With ``alpha = beta = 0.5`` this is the Dice loss; exactly, ``tversky_loss(...,
    smooth=s)`` equals ``dice_loss(..., smooth=2 * s)``.

    Parameters
    ----------
    pred : (N, C, *spatial) Tensor
        Raw logits, C >= 2, 2 or 3 spatial dims.
    target : (N, *spatial) integer Tensor
        Class labels in ``0..C-1``; ``ignore_index`` marks unlabelled pixels.
    ignore_index : int
        Label of unlabelled pixels.
    alpha, beta : float >= 0
        Weights of false positives and false negatives.
    smooth : float >= 0
        Added to numerator and denominator.
    include_background : bool
        If False, class 0 is left out of the mean.
    class_weights : sequence of C floats, optional
        Weights of the per-class losses in the mean.

    Returns
    -------
    loss : scalar Tensor in [0, 1]

    Examples
    --------
    >>> pred = torch.randn(2, 3, 8, 8)
    >>> target = torch.randint(0, 3, (2, 8, 8))
    >>> a = tversky_loss(pred, target, smooth=1e-5)
    >>> b = dice_loss(pred, target, smooth=2e-5)
    >>> bool(torch.isclose(a, b))
    True
    """
    alpha = check_float("alpha", alpha, minimum=0.0)
    beta = check_float("beta", beta, minimum=0.0)
    smooth = check_float("smooth", smooth, minimum=0.0)
    tp, fp, fn = _soft_counts(pred, target, ignore_index)
    index = (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)
    return _mean_over_classes(1 - index, class_weights, include_background)


class DiceLoss(nn.Module):
    """Module form of :func:`dice_loss`; same parameters, keyword-only.

    Examples
    --------
    >>> loss = DiceLoss(include_background=False)
    >>> 0 <= float(loss(torch.randn(1, 3, 5, 5), torch.randint(0, 3, (1, 5, 5)))) <= 1
    True
    """

    def __init__(self, *, ignore_index: int = -1, smooth: float = 1e-5,
                 include_background: bool = True, class_weights: _WeightsLike = None) -> None:
        super().__init__()
        self.ignore_index = check_int("ignore_index", ignore_index)
        self.smooth = check_float("smooth", smooth, minimum=0.0)
        self.include_background = check_bool("include_background", include_background)
        self.register_buffer("class_weights", weight_buffer(class_weights, "class_weights"),
                             persistent=False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return dice_loss(pred, target, ignore_index=self.ignore_index, smooth=self.smooth,
                         include_background=self.include_background,
                         class_weights=self.class_weights)

    def extra_repr(self) -> str:
        return (f"ignore_index={self.ignore_index}, smooth={self.smooth}, "
                f"include_background={self.include_background}")


class TverskyLoss(nn.Module):
    """Module form of :func:`tversky_loss`; same parameters, keyword-only.

    Examples
    --------
    >>> loss = TverskyLoss(alpha=0.3, beta=0.7)
    >>> 0 <= float(loss(torch.randn(1, 2, 4, 4, 4), torch.randint(0, 2, (1, 4, 4, 4)))) <= 1
    True
    """

    def __init__(self, *, ignore_index: int = -1, alpha: float = 0.5, beta: float = 0.5,
                 smooth: float = 1e-5, include_background: bool = True,
                 class_weights: _WeightsLike = None) -> None:
        super().__init__()
        self.ignore_index = check_int("ignore_index", ignore_index)
        self.alpha = check_float("alpha", alpha, minimum=0.0)
        self.beta = check_float("beta", beta, minimum=0.0)
        self.smooth = check_float("smooth", smooth, minimum=0.0)
        self.include_background = check_bool("include_background", include_background)
        self.register_buffer("class_weights", weight_buffer(class_weights, "class_weights"),
                             persistent=False)

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        return tversky_loss(pred, target, ignore_index=self.ignore_index, alpha=self.alpha,
                            beta=self.beta, smooth=self.smooth,
                            include_background=self.include_background,
                            class_weights=self.class_weights)

    def extra_repr(self) -> str:
        return (f"ignore_index={self.ignore_index}, alpha={self.alpha}, beta={self.beta}, "
                f"smooth={self.smooth}, include_background={self.include_background}")
