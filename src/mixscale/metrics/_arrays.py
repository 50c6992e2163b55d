"""Conversion and checks shared by the metrics.

Metrics accept NumPy arrays, anything ``np.asarray`` understands, and torch
tensors (on any device, with or without grad). torch is never imported here:
tensors are recognised by their ``detach``/``cpu`` methods, which keeps the
metrics usable without loading torch.
"""

from __future__ import annotations

import math

import numpy as np


def as_array(value: object, name: str) -> np.ndarray:
    """Return ``value`` as a NumPy array, converting torch tensors on the way."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        value = value.detach().cpu()
        if str(getattr(value, "dtype", "")) in ("torch.bfloat16", "torch.float16"):
            value = value.float()  # NumPy has no bfloat16
    array = np.asarray(value)
    if array.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got an array of Python objects")
    return array


def check_same_shape(pred: np.ndarray, target: np.ndarray) -> None:
    if pred.shape != target.shape:
        raise ValueError(
            f"pred shape {pred.shape} does not match target shape {target.shape}; "
            "they must be equal"
        )


def ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Elementwise ``numerator / denominator`` in float64, NaN where the denominator is 0."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN values, NaN (without a warning) when there are none."""
    values = np.asarray(values, dtype=np.float64)
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else math.nan
