"""Training/validation splits: by image, or by labelled pixels when images are few."""

from __future__ import annotations

import logging

import numpy as np

from .._checks import check_float, check_int, check_shape, not_allowed

logger = logging.getLogger(__name__)

__all__ = ["pixel_split", "split_images"]


def _check_fraction(val_fraction) -> float:
    return check_float("val_fraction", val_fraction, minimum=0, maximum=1, open_minimum=True, open_maximum=True)


def split_images(n: int, *, val_fraction: float = 0.2, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Randomly split image indices 0..n-1 into training and validation sets.

    Parameters
    ----------
    n : int
        Number of images, at least 2 (with one image use :func:`pixel_split`).
    val_fraction : float
        Fraction of images for validation, in (0, 1); rounded, and at least one
        image goes to each side.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    train_idx, val_idx : ndarray of int64
        Sorted, disjoint, together 0..n-1.

    Examples
    --------
    >>> train, val = split_images(5, val_fraction=0.2, seed=0)
    >>> len(train), len(val)
    (4, 1)
    """
    if check_int("n", n) < 2:
        raise not_allowed("n", n, "an integer >= 2 to split images; with a single image use pixel_split "
                          "on its labels")
    val_fraction = _check_fraction(val_fraction)
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[n_val:]).astype(np.int64), np.sort(order[:n_val]).astype(np.int64)


def _check_labels(labels, ignore_index) -> np.ndarray:
    arr = np.asarray(labels)
    if not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"labels must be an integer class map (see prepare_labels), got dtype {arr.dtype}")
    check_int("ignore_index", ignore_index)
    return arr


def _block_ids(flat_idx: np.ndarray, shape: tuple, block_shape) -> np.ndarray:
    block_shape = check_shape("block_shape", block_shape, ndim=len(shape), what=f"(one per axis of labels {shape})")
    coords = np.unravel_index(flat_idx, shape)
    grid = tuple(-(-s // int(b)) for s, b in zip(shape, block_shape))
    return np.ravel_multi_index(tuple(c // int(b) for c, b in zip(coords, block_shape)), grid)


def _choose_val_groups(groups: np.ndarray, classes: np.ndarray, val_fraction: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Pick groups (pixels or blocks) for validation; return a bool mask over unique groups.

    Groups are drawn in random order until the validation side holds
    ``val_fraction`` of the labelled pixels; then classes missing on one side are
    repaired by moving one group that holds them, when that keeps the other side.
    """
    uniq, inverse = np.unique(groups, return_inverse=True)
    n_classes = int(classes.max()) + 1
    counts = np.zeros((len(uniq), n_classes), dtype=np.int64)
    np.add.at(counts, (inverse, classes), 1)
    order = rng.permutation(len(uniq))
    cum = np.cumsum(counts[order].sum(axis=1))
    n_val = int(np.searchsorted(cum, val_fraction * cum[-1])) + 1
    n_val = min(max(n_val, 1), len(uniq) - 1) if len(uniq) > 1 else 0
    is_val = np.zeros(len(uniq), dtype=bool)
    is_val[order[:n_val]] = True
    for c in np.flatnonzero(counts.sum(axis=0)):
        for side in (True, False):  # first fill val, then give train back
            here = counts[is_val == side, c].sum()
            there = counts[is_val != side, c].sum()
            if here:
                continue
            donors = np.flatnonzero((is_val != side) & (counts[:, c] > 0))
            donors = donors[counts[donors, c] < there]
            if donors.size:
                is_val[rng.choice(donors)] = side
    return is_val[inverse]


def _stratified_pixels(classes: np.ndarray, val_fraction: float, rng) -> np.ndarray:
    """Per class, a random ``val_fraction`` of its pixels (at least one on each side)."""
    to_val = np.zeros(classes.size, dtype=bool)
    order = np.argsort(classes, kind="stable")
    bounds = np.flatnonzero(np.diff(classes[order])) + 1
    for members in np.split(order, bounds):
        n = members.size
        n_val = min(max(1, round(n * val_fraction)), n - 1) if n > 1 else 0
        to_val[rng.choice(members, size=n_val, replace=False)] = True
    return to_val


def pixel_split(labels, *, val_fraction: float = 0.2, ignore_index: int = -1, seed: int = 0,
                block_shape=None) -> tuple[np.ndarray, np.ndarray]:
    """Split the labelled pixels of one image into training and validation labels.

    For when there are only one or two annotated images (as DLSIA does): the
    image is shared, its labelled pixels are divided into two disjoint sets.
    Per-pixel splits leak information (a validation pixel's neighbours are
    training pixels, so validation scores are optimistic); ``block_shape``
    splits whole blocks of pixels instead, which leaks only along block borders.

    Parameters
    ----------
    labels : ndarray of int, shape (*spatial)
        Dense class map with ``ignore_index`` for unlabelled pixels.
    val_fraction : float
        Target fraction of labelled pixels for validation, in (0, 1).
    ignore_index : int
        Value of unlabelled pixels; they stay unlabelled in both outputs.
    seed : int
        Seed of the random split.
    block_shape : tuple of int, optional
        Split by blocks of this shape (one entry per axis of ``labels``).

    Returns
    -------
    train_labels, val_labels : ndarray of int64, shape (*spatial)
        Disjoint: every labelled pixel is labelled in exactly one of them. Each
        class is present in both whenever it spans at least two pixels (blocks).

    Examples
    --------
    >>> lab = np.array([[0, 0, 1, 1], [-1, -1, 1, 0]])
    >>> tr, va = pixel_split(lab, val_fraction=0.5)
    >>> bool(((tr >= 0) ^ (va >= 0) == (lab >= 0)).all())
    True
    """
    arr = _check_labels(labels, ignore_index)
    val_fraction = _check_fraction(val_fraction)
    flat = arr.ravel()
    idx = np.flatnonzero(flat != ignore_index)
    train = np.full(arr.shape, ignore_index, dtype=np.int64)
    val = np.full(arr.shape, ignore_index, dtype=np.int64)
    if idx.size == 0:
        logger.warning("pixel_split: labels hold no labelled pixel; both splits are empty")
        return train, val
    classes = flat[idx].astype(np.int64)
    if classes.min() < 0:
        bad = np.unique(classes[classes < 0])[:5].tolist()
        raise ValueError(f"labels hold negative values {bad} other than ignore_index={ignore_index}")
    rng = np.random.default_rng(seed)
    if block_shape is None:
        to_val = _stratified_pixels(classes, val_fraction, rng)
    else:
        groups = _block_ids(idx, arr.shape, block_shape)
        to_val = _choose_val_groups(groups, classes, val_fraction, rng)
    train.ravel()[idx[~to_val]] = classes[~to_val]
    val.ravel()[idx[to_val]] = classes[to_val]
    logger.info("pixel_split: %d training and %d validation pixels", (~to_val).sum(), to_val.sum())
    return train, val
