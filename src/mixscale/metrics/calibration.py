"""Calibration of class probabilities, on labelled pixels only.

Every function takes probabilities ``(K, *spatial)`` (or ``(N, K)`` pixels by
classes, see :func:`labelled_pixels`) and integer labels, and skips pixels equal to
``ignore_index``. Equal-width bins are ``[b_i, b_{i+1})`` with a confidence of
exactly 1.0 in a bin of its own, as torchmetrics' ``MulticlassCalibrationError``
bins them (a test compares the two).

Examples
--------
>>> import numpy as np
>>> probs = np.array([[0.9, 0.2], [0.1, 0.8]])     # (K=2, 2 pixels)
>>> round(expected_calibration_error(probs, np.array([0, 1])), 4)  # confidences 0.9 and 0.8, both right
0.15
"""

from __future__ import annotations

import numpy as np

from .._checks import check_choice, check_int


def labelled_pixels(probs, target, *, ignore_index: int = -1) -> tuple[np.ndarray, np.ndarray]:
    """``(N, K)`` float64 probabilities and ``(N,)`` int64 labels of the labelled pixels.

    Parameters
    ----------
    probs : (K, *spatial) array
        Class probabilities (each pixel sums to 1).
    target : (*spatial) int array
        Labels ``0..K-1``; ``ignore_index`` marks unlabelled pixels.
    """
    probs, target = np.asarray(probs, np.float64), np.asarray(target)
    if probs.shape[1:] != target.shape:
        raise ValueError(f"probs of shape {probs.shape} need a target of shape {probs.shape[1:]}, "
                         f"got {target.shape}")
    flat_p = probs.reshape(probs.shape[0], -1).T
    flat_t = target.reshape(-1).astype(np.int64)
    keep = flat_t != ignore_index
    p, t = flat_p[keep], flat_t[keep]
    if t.size and (t.min() < 0 or t.max() >= probs.shape[0]):
        raise ValueError(f"target holds labels outside 0..{probs.shape[0] - 1} (ignore_index={ignore_index})")
    return p, t


def _bins(confidence: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin index of each confidence: ``floor(c * n_bins)`` (1.0 gets index ``n_bins``)."""
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return np.searchsorted(edges, confidence, side="right") - 1


def reliability(probs, target, *, n_bins: int = 15, ignore_index: int = -1,
                strategy: str = "uniform") -> dict[str, np.ndarray]:
    """Reliability-diagram data of the top label: per bin count, mean confidence, accuracy.

    Parameters
    ----------
    probs : (K, *spatial) array
    target : (*spatial) int array
    n_bins : int
    strategy : {"uniform", "quantile"}
        Equal-width bins, or equal-mass bins (adaptive ECE).

    Returns
    -------
    dict
        ``count``, ``confidence``, ``accuracy`` (NaN in empty bins), each ``(B,)``.
    """
    p, t = labelled_pixels(probs, target, ignore_index=ignore_index)
    return _reliability(p, t, n_bins=n_bins, strategy=strategy)


def _reliability(p: np.ndarray, t: np.ndarray, *, n_bins: int, strategy: str = "uniform") -> dict[str, np.ndarray]:
    """:func:`reliability` of labelled pixels ``(N, K)``, ``(N,)``."""
    check_int("n_bins", n_bins, minimum=1)
    check_choice("strategy", strategy, ("uniform", "quantile"))
    conf, correct = p.max(1), (p.argmax(1) == t).astype(np.float64)
    if strategy == "uniform":
        index, size = _bins(conf, n_bins), n_bins + 1
    else:  # equal mass: n_bins groups of (nearly) equal size in confidence order
        order = np.argsort(conf, kind="stable")
        index = np.empty(conf.size, np.int64)
        index[order] = (np.arange(conf.size) * n_bins) // max(conf.size, 1)
        size = n_bins
    count = np.bincount(index, minlength=size).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=conf, minlength=size) / count
        accuracy = np.bincount(index, weights=correct, minlength=size) / count
    return {"count": count, "confidence": confidence, "accuracy": accuracy}


def expected_calibration_error(probs, target, *, n_bins: int = 15, ignore_index: int = -1,
                               strategy: str = "uniform") -> float:
    """Top-label ECE: ``sum_b (n_b / n) |accuracy_b - confidence_b|`` (NaN without labelled pixels)."""
    return _ece(reliability(probs, target, n_bins=n_bins, ignore_index=ignore_index, strategy=strategy))


def _ece(r: dict) -> float:
    n = r["count"].sum()
    if n == 0:
        return float("nan")
    full = r["count"] > 0
    return float((r["count"][full] / n * np.abs(r["accuracy"][full] - r["confidence"][full])).sum())


def maximum_calibration_error(probs, target, *, n_bins: int = 15, ignore_index: int = -1) -> float:
    """Top-label MCE: the largest ``|accuracy_b - confidence_b|`` over non-empty bins."""
    return _mce(reliability(probs, target, n_bins=n_bins, ignore_index=ignore_index))


def _mce(r: dict) -> float:
    full = r["count"] > 0
    return float(np.abs(r["accuracy"][full] - r["confidence"][full]).max()) if full.any() else float("nan")


def classwise_calibration_error(probs, target, *, n_bins: int = 15, ignore_index: int = -1) -> float:
    """Class-wise ECE: the mean over classes of the binned ``|frequency - probability|`` of each class."""
    return _classwise(*labelled_pixels(probs, target, ignore_index=ignore_index), n_bins=n_bins)


def _classwise(p: np.ndarray, t: np.ndarray, *, n_bins: int) -> float:
    check_int("n_bins", n_bins, minimum=1)
    if not t.size:
        return float("nan")
    errors = []
    for c in range(p.shape[1]):
        index = _bins(p[:, c], n_bins)
        count = np.bincount(index, minlength=n_bins + 1)
        prob = np.bincount(index, weights=p[:, c], minlength=n_bins + 1)
        freq = np.bincount(index, weights=(t == c).astype(np.float64), minlength=n_bins + 1)
        errors.append(np.abs(freq - prob).sum() / t.size)
    return float(np.mean(errors))


def brier_score(probs, target, *, ignore_index: int = -1) -> float:
    """Mean over labelled pixels of ``sum_k (p_k - [y = k])^2``."""
    return _brier(*labelled_pixels(probs, target, ignore_index=ignore_index))


def _brier(p: np.ndarray, t: np.ndarray) -> float:
    if not t.size:
        return float("nan")
    onehot = np.eye(p.shape[1])[t]
    return float(((p - onehot) ** 2).sum(1).mean())


def negative_log_likelihood(probs, target, *, ignore_index: int = -1, eps: float = 1e-12) -> float:
    """Mean ``-log p_y`` over labelled pixels (probabilities clipped at ``eps``)."""
    return _nll(*labelled_pixels(probs, target, ignore_index=ignore_index), eps=eps)


def _nll(p: np.ndarray, t: np.ndarray, *, eps: float = 1e-12) -> float:
    if not t.size:
        return float("nan")
    return float(-np.log(np.clip(p[np.arange(t.size), t], eps, None)).mean())


def auroc(score, positive) -> float:
    """Area under the ROC curve of ``score`` for telling ``positive`` apart (ties count one half).

    Computed from ranks (Mann-Whitney U); NaN when one of the two groups is empty.
    """
    from scipy.stats import rankdata

    score, positive = np.asarray(score, np.float64).ravel(), np.asarray(positive, bool).ravel()
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def aurc(uncertainty, error) -> float:
    """Area under the risk-coverage curve: mean error of the most certain fraction, over all fractions.

    Pixels are accepted from the most to the least certain; lower is better (a
    perfect ranking of ``error`` gives the smallest possible value).
    """
    u, e = np.asarray(uncertainty, np.float64).ravel(), np.asarray(error, np.float64).ravel()
    if not u.size:
        return float("nan")
    order = np.argsort(u, kind="stable")
    risk = np.cumsum(e[order]) / np.arange(1, u.size + 1)
    return float(risk.mean())


def calibration_report(probs, target, *, n_bins: int = 15, ignore_index: int = -1,
                       uncertainties: dict | None = None) -> dict[str, float]:
    """ECE (equal-width, equal-mass, class-wise), MCE, Brier, NLL, and AUROC/AURC of entropy and
    ``1 - max p`` against the pixel error, on labelled pixels.

    ``uncertainties`` adds AUROC/AURC of other maps of the target's shape (for example an
    ensemble's ``mutual_info`` and ``std``): ``{"mutual_info": (*spatial) array, ...}``.
    """
    p, t = labelled_pixels(probs, target, ignore_index=ignore_index)
    wrong = p.argmax(1) != t
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -(np.where(p > 0, p * np.log(p), 0.0)).sum(1)
    uniform = _reliability(p, t, n_bins=n_bins)  # the labelled pixels are gathered once for every metric
    return {
        "ece": _ece(uniform),
        "ece_adaptive": _ece(_reliability(p, t, n_bins=n_bins, strategy="quantile")),
        "ece_classwise": _classwise(p, t, n_bins=n_bins),
        "mce": _mce(uniform),
        "brier": _brier(p, t),
        "nll": _nll(p, t),
        "auroc_entropy": auroc(entropy, wrong), "auroc_max_prob": auroc(1 - p.max(1), wrong),
        "aurc_entropy": aurc(entropy, wrong), "aurc_max_prob": aurc(1 - p.max(1), wrong),
        **_other_uncertainties(uncertainties or {}, target, wrong, ignore_index=ignore_index),
    }


def _other_uncertainties(maps: dict, target, wrong: np.ndarray, *, ignore_index: int) -> dict[str, float]:
    """AUROC/AURC against the error of each map, at the labelled pixels."""
    keep = np.asarray(target).reshape(-1) != ignore_index
    out = {}
    for name, values in maps.items():
        values = np.asarray(values, np.float64)
        if values.shape != np.asarray(target).shape:
            raise ValueError(f"uncertainty map {name!r} of shape {values.shape} does not match the target's "
                             f"shape {np.asarray(target).shape}")
        u = values.reshape(-1)[keep]
        out[f"auroc_{name}"], out[f"aurc_{name}"] = auroc(u, wrong), aurc(u, wrong)
    return out
