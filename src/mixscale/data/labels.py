"""Label conventions, mapped once at the data boundary.

Two conventions exist in the tools our users know, and confusing them silently
turns "unlabelled" into "background":

``"dense"``
    Values ``0 .. num_classes-1`` are classes, ``ignore_index`` (default -1)
    marks unlabelled pixels (PyTorch cross-entropy, DLSIA).
``"scribble"``
    ``0`` is unlabelled and ``1 .. num_classes`` are the classes (napari label
    layers, ilastik). Mapped to dense by subtracting one.

Every other value is an error. :func:`check_label_convention` spots files that
were most likely saved in the other convention.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from .._checks import check_choice, check_int

logger = logging.getLogger(__name__)

__all__ = ["prepare_labels", "check_label_convention", "LabelConventionWarning", "CONVENTIONS"]

CONVENTIONS = ("dense", "scribble")
MIN_LABELLED_FRACTION = 1e-3
SCRIBBLE_LIKE_ZERO_FRACTION = 0.5


class LabelConventionWarning(UserWarning):
    """A label array looks like it follows another convention, or is nearly empty."""


def _check_options(convention, num_classes, ignore_index=-1) -> None:
    check_choice("convention", convention, CONVENTIONS)
    check_int("num_classes", num_classes, minimum=1)
    check_int("ignore_index", ignore_index)
    if 0 <= ignore_index < num_classes:
        raise ValueError(
            f"ignore_index={ignore_index} collides with class {ignore_index} "
            f"(classes are 0..{num_classes - 1}); use a negative value such as -1"
        )


def _as_integer(labels) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr
    if not np.issubdtype(arr.dtype, np.floating):
        raise TypeError(f"labels must be an integer array, got dtype {arr.dtype}")
    finite = np.isfinite(arr)
    if not finite.all():
        bad = np.unique(arr[~finite])[:5].tolist()
        raise ValueError(f"labels hold non-finite values {bad}; labels must be integers")
    frac = arr != np.round(arr)
    if frac.any():
        bad = np.unique(arr[frac])[:5].tolist()
        raise ValueError(
            f"labels hold non-integer values such as {bad} (dtype {arr.dtype}); "
            "labels must be whole class numbers (was the label image resampled or interpolated?)"
        )
    return arr.astype(np.int64)


def prepare_labels(labels, *, num_classes: int, convention: str = "dense",
                   ignore_index: int = -1) -> np.ndarray:
    """Map a label array to the dense convention used everywhere in mixscale.

    Parameters
    ----------
    labels : array_like of int, shape (*spatial)
        Integer class map; floats are accepted when every value is whole.
    num_classes : int
        Number of classes C.
    convention : {"dense", "scribble"}
        "dense": classes 0..C-1 and ``ignore_index`` for unlabelled pixels.
        "scribble": 0 is unlabelled and classes are 1..C.
    ignore_index : int
        Value marking unlabelled pixels in the output (and in dense input).

    Returns
    -------
    ndarray of int64, shape (*spatial)
        Values in 0..C-1 or ``ignore_index``.

    Raises
    ------
    ValueError
        For values outside the convention's range (the message lists them).

    Examples
    --------
    >>> prepare_labels([[0, 1], [2, 0]], num_classes=2, convention="scribble")
    array([[-1,  0],
           [ 1, -1]])
    """
    _check_options(convention, num_classes, ignore_index)
    arr = _as_integer(labels)
    if convention == "dense":
        valid = ((arr >= 0) & (arr < num_classes)) | (arr == ignore_index)
        allowed = f"0..{num_classes - 1} and ignore_index={ignore_index}"
    else:
        valid = (arr >= 0) & (arr <= num_classes)
        allowed = f"0 (unlabelled) and 1..{num_classes}"
    if not valid.all():
        bad = np.unique(arr[~valid])
        shown = bad[:10].tolist() + (["..."] if bad.size > 10 else [])
        hint = ""
        if convention == "dense" and bad.max() == num_classes and bad.min() > 0:
            hint = " (values 1..num_classes suggest convention='scribble')"
        raise ValueError(
            f"labels hold values {shown} that are not allowed by convention={convention!r} "
            f"with num_classes={num_classes}; allowed: {allowed}{hint}"
        )
    if convention == "dense":
        out = arr.astype(np.int64, copy=True)
    else:
        out = arr.astype(np.int64) - 1
        out[arr == 0] = ignore_index
    fraction = float(np.mean(out != ignore_index)) if out.size else 0.0
    logger.info("labels: convention=%r, %d classes, %.4g %% of pixels labelled",
                convention, num_classes, 100 * fraction)
    return out


def check_label_convention(labels, *, convention: str, num_classes: int) -> list[str]:
    """List (and warn about) signs that labels follow another convention.

    Checks: dense labels where 0 covers most pixels and values reach exactly
    ``num_classes`` (scribble-like); scribble labels without any 0 (dense-like,
    class 0 would be lost); classes without pixels; fewer than 0.1 % labelled
    pixels. Values outside the convention are left to :func:`prepare_labels`.

    Parameters
    ----------
    labels : array_like of int, shape (*spatial)
    convention : {"dense", "scribble"}
    num_classes : int

    Returns
    -------
    list of str
        One message per finding; each is also issued as a
        :class:`LabelConventionWarning`.
    """
    _check_options(convention, num_classes)
    arr = _as_integer(labels).ravel()
    messages = convention_findings(value_counts(arr, num_classes), arr.size, convention=convention,
                                   num_classes=num_classes)
    for message in messages:
        warnings.warn(message, LabelConventionWarning, stacklevel=2)
    return messages


def value_counts(labels, num_classes: int) -> np.ndarray:
    """``(num_classes + 1,)`` counts of the values 0..num_classes in an integer label array (others skipped)."""
    arr = np.asarray(labels).ravel()
    return np.bincount(arr[(arr >= 0) & (arr <= num_classes)].astype(np.int64), minlength=num_classes + 1)


def convention_findings(counts: np.ndarray, size: int, *, convention: str, num_classes: int,
                        few_labelled: bool = True) -> list[str]:
    """The findings of :func:`check_label_convention` from the value counts of ``size`` pixels (which
    may have been counted slab by slab); ``few_labelled=False`` leaves out the one on a small labelled
    fraction (a few labelled planes of a large volume are the point of sparse labels)."""
    n = max(size, 1)
    messages = []
    if convention == "dense":
        class_counts = counts[:num_classes]
        if counts[0] / n > SCRIBBLE_LIKE_ZERO_FRACTION and counts[num_classes] > 0:
            messages.append(
                f"labels look like the scribble convention: 0 covers {100 * counts[0] / n:.1f} % "
                f"of pixels and values reach {num_classes} = num_classes; with "
                "convention='dense' every 0 is trained as class 0; pass convention='scribble' "
                "if 0 means unlabelled"
            )
    else:
        class_counts = counts[1:]
        if counts[0] == 0:
            messages.append(
                "labels look dense: convention='scribble' but no pixel is 0 (unlabelled); "
                "if 0 is a class, pass convention='dense' or its pixels are lost"
            )
    offset = 0 if convention == "dense" else 1
    for c in np.flatnonzero(class_counts == 0):
        messages.append(f"class {c} (stored as value {c + offset}) has no labelled pixels")
    labelled = int(class_counts.sum())
    if few_labelled and labelled / n < MIN_LABELLED_FRACTION:
        messages.append(
            f"only {labelled} of {size} pixels ({100 * labelled / n:.3g} %) are labelled; "
            "training will see very few examples"
        )
    return messages
