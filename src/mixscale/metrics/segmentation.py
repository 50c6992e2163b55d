"""Segmentation metrics on integer label maps, computed on labelled pixels only.

``pred`` and ``target`` are integer arrays (or torch tensors) of equal shape,
any number of dimensions. Pixels where ``target == ignore_index`` are skipped.
Every class metric is derived from the confusion matrix, so a huge volume can be
scored block by block by summing :func:`confusion_matrix` outputs.

Undefined values are NaN, never silently 0: a class absent from both ``pred`` and
``target`` (among labelled pixels) has F1 and IoU NaN and is left out of the
macro average; precision is NaN for a class never predicted, recall for a class
with no labelled pixel. With no labelled pixel at all every score is NaN.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .._checks import check_choice, check_int
from ._arrays import as_array, check_same_shape, nanmean, ratio

__all__ = [
    "accuracy",
    "adjusted_rand_index",
    "class_accuracy",
    "confusion_matrix",
    "dice_score",
    "f1_score",
    "iou_score",
    "precision_score",
    "recall_score",
    "segmentation_report",
]

_AVERAGES = ("macro", "micro", None)


def _label_arrays(pred: object, target: object) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for name, value in (("pred", pred), ("target", target)):
        array = as_array(value, name)
        if array.dtype != np.bool_ and not np.issubdtype(array.dtype, np.integer):
            raise TypeError(
                f"{name} must hold integer labels, got dtype {array.dtype}; "
                f"convert label maps explicitly, e.g. {name}.astype(np.int64)"
            )
        arrays.append(array)
    check_same_shape(*arrays)
    return arrays[0], arrays[1]


def _check_range(labels: np.ndarray, name: str, num_classes: int, ignore_index: int) -> None:
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise ValueError(
            f"{name} contains label {int(labels[bad][0])}, outside 0..{num_classes - 1} "
            f"(num_classes={num_classes}) at a pixel not marked ignore_index={ignore_index}"
        )


def _labelled(pred: object, target: object, num_classes: int,
              ignore_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Checked 1-D int64 (pred, target) of the labelled pixels."""
    pred, target = _label_arrays(pred, target)
    num_classes = check_int("num_classes", num_classes, minimum=1)
    ignore_index = check_int("ignore_index", ignore_index)
    keep = target != ignore_index
    p, t = pred[keep].astype(np.int64), target[keep].astype(np.int64)
    _check_range(t, "target", num_classes, ignore_index)
    _check_range(p, "pred", num_classes, ignore_index)
    return p, t


def confusion_matrix(pred: object, target: object, *, num_classes: int,
                     ignore_index: int = -1) -> np.ndarray:
    """Count labelled pixels per (true class, predicted class).

    Parameters
    ----------
    pred, target : integer arrays of equal shape
        Predicted and true labels in ``0..num_classes-1``; ``target`` may also
        hold ``ignore_index`` (those pixels are skipped, whatever ``pred`` says).
    num_classes : int
    ignore_index : int

    Returns
    -------
    matrix : (num_classes, num_classes) int64 ndarray
        ``matrix[i, j]`` = number of pixels of true class ``i`` predicted as ``j``.

    Examples
    --------
    >>> confusion_matrix([0, 1, 1, 2], [0, 1, 2, -1], num_classes=3)
    array([[1, 0, 0],
           [0, 1, 0],
           [0, 1, 0]])
    """
    p, t = _labelled(pred, target, num_classes, ignore_index)
    counts = np.bincount(t * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def _class_counts(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    tp = np.diag(matrix)
    return tp, matrix.sum(axis=0) - tp, matrix.sum(axis=1) - tp


def _per_class(matrix: np.ndarray) -> dict[str, np.ndarray]:
    tp, fp, fn = _class_counts(matrix)
    return {
        "f1": ratio(2 * tp, 2 * tp + fp + fn),
        "iou": ratio(tp, tp + fp + fn),
        "precision": ratio(tp, tp + fp),
        "recall": ratio(tp, tp + fn),
        "support": tp + fn,
    }


def _micro(metric: str, matrix: np.ndarray) -> float:
    tp, fp, fn = (int(x.sum()) for x in _class_counts(matrix))
    num, den = {"f1": (2 * tp, 2 * tp + fp + fn), "iou": (tp, tp + fp + fn),
                "precision": (tp, tp + fp), "recall": (tp, tp + fn)}[metric]
    return num / den if den else math.nan


def _averaged(metric: str, pred: object, target: object, num_classes: int,
              ignore_index: int, average: str | None) -> float | np.ndarray:
    check_choice("average", average, _AVERAGES)
    matrix = confusion_matrix(pred, target, num_classes=num_classes, ignore_index=ignore_index)
    if average == "micro":
        return _micro(metric, matrix)
    per_class = _per_class(matrix)[metric]
    return per_class if average is None else nanmean(per_class)


_AVERAGE_DOC = """
    Parameters
    ----------
    pred, target : integer arrays of equal shape
        Predicted and true labels in ``0..num_classes-1``; pixels where
        ``target == ignore_index`` are skipped.
    num_classes : int
    ignore_index : int
    average : {"macro", "micro", None}
        "macro": mean of the per-class scores, NaN classes left out;
        "micro": the score of the pooled TP/FP/FN counts; None: per-class array.

    Returns
    -------
    score : float, or (num_classes,) float64 ndarray when ``average`` is None"""


def f1_score(pred: object, target: object, *, num_classes: int, ignore_index: int = -1,
             average: str | None = "macro") -> float | np.ndarray:
    """F1 (= Dice) score, per class ``2 TP / (2 TP + FP + FN)``.

    NaN for a class absent from both ``pred`` and ``target``. With one label per
    pixel, the micro average equals :func:`accuracy`.

    {doc}

    Examples
    --------
    >>> f1_score([0, 1, 1, 0], [0, 1, 0, 0], num_classes=3, average=None)
    array([0.8       , 0.66666667,        nan])
    """
    return _averaged("f1", pred, target, num_classes, ignore_index, average)


dice_score = f1_score  # the Dice coefficient of two label maps is their F1 score


def iou_score(pred: object, target: object, *, num_classes: int, ignore_index: int = -1,
              average: str | None = "macro") -> float | np.ndarray:
    """Intersection over union (Jaccard index), per class ``TP / (TP + FP + FN)``.

    NaN for a class absent from both ``pred`` and ``target``.

    {doc}

    Examples
    --------
    >>> round(iou_score([0, 1, 1, 0], [0, 1, 0, 0], num_classes=2), 4)  # (2/3 + 1/2) / 2
    0.5833
    """
    return _averaged("iou", pred, target, num_classes, ignore_index, average)


def precision_score(pred: object, target: object, *, num_classes: int, ignore_index: int = -1,
                    average: str | None = "macro") -> float | np.ndarray:
    """Precision, per class ``TP / (TP + FP)``; NaN for a class never predicted.

    {doc}
    """
    return _averaged("precision", pred, target, num_classes, ignore_index, average)


def recall_score(pred: object, target: object, *, num_classes: int, ignore_index: int = -1,
                 average: str | None = "macro") -> float | np.ndarray:
    """Recall, per class ``TP / (TP + FN)``; NaN for a class with no labelled pixel.

    {doc}
    """
    return _averaged("recall", pred, target, num_classes, ignore_index, average)


# the four share their parameters; one text keeps the four docstrings in step
for _func in (f1_score, iou_score, precision_score, recall_score):
    if _func.__doc__:  # None under python -OO
        _func.__doc__ = _func.__doc__.replace("{doc}", _AVERAGE_DOC.strip())


def accuracy(pred: object, target: object, *, num_classes: int,
             ignore_index: int = -1) -> float:
    """Global accuracy (GA): the fraction of labelled pixels predicted right.

    NaN when no pixel is labelled.

    Examples
    --------
    >>> round(accuracy([0, 1, 1, 0], [0, 1, 0, -1], num_classes=2), 4)
    0.6667
    """
    matrix = confusion_matrix(pred, target, num_classes=num_classes, ignore_index=ignore_index)
    total = int(matrix.sum())
    return int(np.trace(matrix)) / total if total else math.nan


def class_accuracy(pred: object, target: object, *, num_classes: int,
                   ignore_index: int = -1) -> float:
    """Class-average accuracy (CA): the mean recall over classes with labelled pixels.

    GA and CA are the two accuracies reported by Pelt & Sethian (PNAS 2018).

    Examples
    --------
    >>> class_accuracy([0, 0, 0, 1], [0, 0, 0, 0], num_classes=2)
    0.75
    >>> class_accuracy([0, 0, 0, 0], [0, 0, 0, 1], num_classes=2)
    0.5
    """
    matrix = confusion_matrix(pred, target, num_classes=num_classes, ignore_index=ignore_index)
    return nanmean(_per_class(matrix)["recall"])


def _pairs(counts: np.ndarray) -> int:
    """Sum of ``n choose 2`` over counts, exact (Python ints do not overflow)."""
    return sum(n * (n - 1) // 2 for n in counts.ravel().tolist())


def _ari_from_table(cells: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> float:
    n = int(rows.sum())
    if n == 0:
        return math.nan
    index, a, b, total = _pairs(cells), _pairs(rows), _pairs(cols), n * (n - 1) // 2
    # ARI = (index - a b / total) / ((a + b) / 2 - a b / total), times 2 total above and below
    numerator = 2 * (index * total - a * b)
    denominator = (a + b) * total - 2 * a * b
    # zero only when both labelings are one cluster or all singletons: identical partitions
    return numerator / denominator if denominator else 1.0


def adjusted_rand_index(pred: object, target: object, *, ignore_index: int = -1) -> float:
    """Adjusted Rand index (Hubert & Arabie 1985) of two labelings of the labelled pixels.

    Labels are arbitrary integers (semantic classes or instance ids); only the
    partition matters. 1 for identical partitions, about 0 for chance agreement.
    NaN when no pixel is labelled.

    Parameters
    ----------
    pred, target : integer arrays of equal shape
    ignore_index : int
        Pixels where ``target == ignore_index`` are skipped.

    Returns
    -------
    ari : float

    Examples
    --------
    >>> adjusted_rand_index([5, 5, 7, 7], [1, 1, 2, 2])
    1.0
    """
    pred, target = _label_arrays(pred, target)
    keep = target != check_int("ignore_index", ignore_index)
    _, p = np.unique(pred[keep], return_inverse=True)
    _, t = np.unique(target[keep], return_inverse=True)
    if p.size == 0:
        return math.nan
    p, t = p.ravel().astype(np.int64), t.ravel().astype(np.int64)
    _, cells = np.unique(t * (int(p.max()) + 1) + p, return_counts=True)
    return _ari_from_table(cells, np.bincount(t), np.bincount(p))


def _names(class_names: Sequence[str] | None, num_classes: int) -> list[str]:
    if class_names is None:
        return [f"class_{i}" for i in range(num_classes)]
    if isinstance(class_names, str) or len(class_names) != num_classes:
        raise ValueError(
            f"class_names must be a sequence of {num_classes} names (num_classes), "
            f"got {class_names!r}"
        )
    names = [str(name) for name in class_names]
    if len(set(names)) != len(names):
        raise ValueError(f"class_names must be unique, got {names}")
    return names


def confusion_summary(matrix) -> dict[str, float]:
    """The scalar scores of a ``(C, C)`` confusion matrix (rows = true class).

    Lets callers that accumulate a matrix block by block or batch by batch (the
    training loop, out-of-core evaluation) report exactly what
    :func:`segmentation_report` reports.

    Returns
    -------
    dict with ``num_labelled``, ``accuracy``, ``class_accuracy``, ``f1_macro``,
    ``f1_micro``, ``iou_macro``, ``iou_micro`` and ``ari``.
    """
    matrix = np.asarray(matrix, dtype=np.int64)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ValueError(f"matrix must be a square (C, C) array, got shape {matrix.shape}")
    stats = _per_class(matrix)
    total = int(matrix.sum())
    return {
        "num_labelled": total,
        "accuracy": int(np.trace(matrix)) / total if total else math.nan,
        "class_accuracy": nanmean(stats["recall"]),
        "f1_macro": nanmean(stats["f1"]),
        "f1_micro": _micro("f1", matrix),
        "iou_macro": nanmean(stats["iou"]),
        "iou_micro": _micro("iou", matrix),
        # for class maps the contingency table of the ARI is the confusion matrix
        "ari": _ari_from_table(matrix, matrix.sum(axis=1), matrix.sum(axis=0)),
    }


def segmentation_report(pred: object, target: object, *, num_classes: int,
                        ignore_index: int = -1,
                        class_names: Sequence[str] | None = None) -> dict:
    """All segmentation scores in one JSON-serialisable dict (plain floats, NaN allowed).

    Parameters
    ----------
    pred, target : integer arrays of equal shape
    num_classes : int
    ignore_index : int
    class_names : sequence of num_classes str, optional
        Keys of ``per_class``; default ``class_0``, ``class_1``, ...

    Returns
    -------
    report : dict
        ``num_labelled``, ``accuracy`` (GA), ``class_accuracy`` (CA), ``f1_macro``,
        ``f1_micro``, ``iou_macro``, ``iou_micro``, ``ari``, ``per_class``
        (name -> f1, iou, precision, recall, support) and ``confusion_matrix``
        (nested lists, rows = true class).

    Examples
    --------
    >>> report = segmentation_report([0, 1, 1], [0, 1, -1], num_classes=2,
    ...                              class_names=["pore", "solid"])
    >>> report["per_class"]["solid"]["f1"], report["confusion_matrix"]
    (1.0, [[1, 0], [0, 1]])
    """
    matrix = confusion_matrix(pred, target, num_classes=num_classes, ignore_index=ignore_index)
    names = _names(class_names, num_classes)
    stats = _per_class(matrix)
    return {
        **confusion_summary(matrix),
        "per_class": {
            name: {key: (int(values[i]) if key == "support" else float(values[i]))
                   for key, values in stats.items()}
            for i, name in enumerate(names)
        },
        "confusion_matrix": matrix.tolist(),
    }
