"""Input validation shared by the losses.

Every public loss calls one of these first, so a wrong shape, dtype or label
value fails with a message naming the parameter instead of a cryptic error (or,
worse, a silently wrong value) deep inside torch. Plain options (numbers,
switches) are checked with :mod:`mixscale._checks`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .._checks import check_int

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_pred(pred: object) -> Tensor:
    """Check ``pred`` is a floating ``(N, C, *spatial)`` tensor with 2 or 3 spatial dims."""
    if not isinstance(pred, Tensor):
        raise TypeError(f"pred must be a torch.Tensor, got {type(pred).__name__}")
    if not pred.is_floating_point():
        raise TypeError(f"pred must be a floating-point tensor, got dtype {pred.dtype}")
    if pred.ndim not in (4, 5):
        raise ValueError(
            f"pred must have shape (N, C, *spatial) with 2 or 3 spatial dims "
            f"(4 or 5 dims in all), got shape {tuple(pred.shape)}"
        )
    return pred


def upcast(pred: Tensor) -> Tensor:
    """Return ``pred`` in at least float32: softmax/log sums in half precision lose too much."""
    return pred.float() if pred.dtype in _LOW_PRECISION else pred


def check_segmentation(pred: object, target: object, ignore_index: int) -> Tensor:
    """Validate logits and an integer label map; return the mask of labelled pixels.

    Returns
    -------
    valid : (N, *spatial) bool Tensor
        True where ``target != ignore_index``.
    """
    pred = check_pred(pred)
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(
            f"target must be an integer label tensor (e.g. torch.int64), got dtype "
            f"{target.dtype}; convert class maps with target.long()"
        )
    check_int("ignore_index", ignore_index)
    num_classes = pred.shape[1]
    if num_classes < 2:
        raise ValueError(
            f"pred must have at least 2 channels (one logit per class, background "
            f"included), got C={num_classes}"
        )
    expected = (pred.shape[0], *pred.shape[2:])
    if tuple(target.shape) != expected:
        hint = "; remove the channel axis with target.squeeze(1)" if (
            target.ndim == pred.ndim and target.shape[1] == 1
        ) else ""
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match pred shape "
            f"{tuple(pred.shape)}: expected (N, *spatial) = {expected}{hint}"
        )
    if target.device != pred.device:
        raise ValueError(f"target is on {target.device} but pred is on {pred.device}")
    valid = target != ignore_index
    bad = valid & ((target < 0) | (target >= num_classes))
    if bool(bad.any()):
        value = int(target[bad][0])
        raise ValueError(
            f"target contains label {value}, outside 0..{num_classes - 1} "
            f"(C={num_classes}) and not ignore_index={ignore_index}"
        )
    return valid


def check_regression(pred: object, target: object, mask: object) -> Tensor:
    """Validate a regression pair; return the bool mask of pixels that count.

    Pixels count where ``target`` is not NaN and ``mask`` (if given) is True.
    """
    pred = check_pred(pred)
    if not isinstance(target, Tensor):
        raise TypeError(f"target must be a torch.Tensor, got {type(target).__name__}")
    if not target.is_floating_point():
        raise TypeError(f"target must be a floating-point tensor, got dtype {target.dtype}")
    if target.shape != pred.shape:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match pred shape {tuple(pred.shape)}"
        )
    valid = ~torch.isnan(target)
    if mask is None:
        return valid
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"mask must be a bool torch.Tensor (True = use), got {got}")
    try:
        mask = torch.broadcast_to(mask, target.shape)
    except RuntimeError:
        raise ValueError(
            f"mask shape {tuple(mask.shape)} cannot be broadcast to target shape "
            f"{tuple(target.shape)}"
        ) from None
    return valid & mask.to(valid.device)


def class_vector(
    values: Sequence[float] | Tensor | None, name: str, num_classes: int, like: Tensor
) -> Tensor | None:
    """Turn per-class weights into a checked 1-D tensor on ``like``'s device and dtype."""
    if values is None:
        return None
    if isinstance(values, (int, float)):
        raise TypeError(
            f"{name} must be a sequence of {num_classes} per-class weights or None, "
            f"got the scalar {values!r}"
        )
    vec = torch.as_tensor(values, dtype=like.dtype, device=like.device)
    if vec.ndim != 1 or vec.numel() != num_classes:
        raise ValueError(
            f"{name} must hold one weight per class ({num_classes} for C={num_classes}), "
            f"got shape {tuple(vec.shape)}"
        )
    if not bool(torch.isfinite(vec).all()) or bool((vec < 0).any()):
        raise ValueError(f"{name} must be finite and >= 0, got {vec.tolist()}")
    return vec


def one_hot(target: Tensor, valid: Tensor, num_classes: int, dtype: torch.dtype) -> Tensor:
    """One-hot ``(N, C, *spatial)`` encoding of ``target``, all zeros at ignored pixels."""
    safe = torch.where(valid, target, torch.zeros_like(target))
    encoded = torch.nn.functional.one_hot(safe.long(), num_classes).movedim(-1, 1)
    return encoded.to(dtype) * valid.unsqueeze(1).to(dtype)


def masked_logits(pred: Tensor, valid: Tensor) -> Tensor:
    """Replace logits at ignored pixels by 0.

    ``torch.where`` routes an exactly zero gradient to the replaced entries, even
    when they hold inf or NaN, which multiplying by a mask would not.
    """
    logits = upcast(pred)
    return torch.where(valid.unsqueeze(1), logits, logits.new_zeros(()))


def safe_divide(total: Tensor, denom: Tensor) -> Tensor:
    """``total / denom``, or ``total`` (which is then 0) when nothing was labelled."""
    return total / torch.where(denom > 0, denom, torch.ones_like(denom))


def weight_buffer(values: Sequence[float] | Tensor | None, name: str) -> Tensor | None:
    """Early check of per-class weights given to a Module (their length is checked per call)."""
    if values is None:
        return None
    if isinstance(values, (int, float)):
        raise TypeError(f"{name} must be a sequence of per-class weights or None, got {values!r}")
    vec = torch.as_tensor(values, dtype=torch.float32).detach().clone()
    if vec.ndim != 1 or not bool(torch.isfinite(vec).all()) or bool((vec < 0).any()):
        raise ValueError(f"{name} must be a 1-D sequence of finite weights >= 0, got {values!r}")
    return vec
