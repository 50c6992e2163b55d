"""A block bootstrap of labelled training data: how ensemble members come to see different data.

Neighbouring pixels are nearly copies of each other, so resampling single pixels would
change nothing a network sees. The unit of resampling is a block (by default a patch:
``patch_shape`` in the plane, one slice deep for 2D patches from volumes). Of the ``B``
blocks holding labelled pixels, ``B`` are drawn with replacement: a block drawn ``c``
times is ``c`` times as likely to centre a patch, a block never drawn (about 36.8 % of
them) becomes unlabelled, so its pixels are neither patch centres nor part of the loss.

Examples
--------
>>> lab = np.zeros((8, 8), np.int64)  # fully labelled: 4 blocks of 4 x 4
>>> boot, weights = block_bootstrap([lab], block_shape=(4, 4), seed=0)
>>> int(weights[0].sum()) // 16  # 4 blocks drawn in all
4
>>> bool(((boot[0] == -1) == (weights[0] == 0)).all())  # blocks never drawn are unlabelled
True
"""

from __future__ import annotations

import logging

import numpy as np

from .._checks import check_int

logger = logging.getLogger(__name__)


def block_ids(shape: tuple[int, ...], block: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """The block of every pixel of a grid of ``shape`` cut into ``block``-sized blocks.

    Returns
    -------
    ids : (*shape) int64 (a read-only broadcast view)
        Blocks numbered in C order.
    count : int
        Number of blocks (edge blocks may be smaller).

    Examples
    --------
    >>> ids, n = block_ids((4, 6), (2, 3))
    >>> n, ids[0].tolist(), ids[3].tolist()
    (4, [0, 0, 0, 1, 1, 1], [2, 2, 2, 3, 3, 3])
    """
    if len(block) != len(shape):
        raise ValueError(f"block {tuple(block)} must have one size per axis of shape {tuple(shape)}")
    ids, count = np.zeros((1,) * len(shape), dtype=np.int64), 1
    for axis, (n, size) in enumerate(zip(shape, block)):
        blocks = -(-int(n) // int(size))
        index = (np.arange(n) // int(size)).reshape([-1 if i == axis else 1 for i in range(len(shape))])
        ids, count = ids * blocks + index, count * blocks
    return np.broadcast_to(ids, tuple(shape)), count


def labelled_mask(label: np.ndarray, *, ignore_index: int = -1) -> np.ndarray:
    """Labelled pixels ``(*S)``: class maps (``!= ignore_index``) or float targets ``(C, *S)`` (finite)."""
    if np.issubdtype(label.dtype, np.floating):
        return np.isfinite(label).any(axis=0)
    return label != ignore_index


def block_bootstrap(labels, *, block_shape, seed: int, ignore_index: int = -1) -> tuple[list, list]:
    """Resample the labelled blocks of ``labels`` with replacement.

    Parameters
    ----------
    labels : list of arrays
        Class maps ``(*S)`` (``ignore_index`` = unlabelled) or float targets ``(C, *S)`` (NaN).
    block_shape : tuple of int
        One size per axis of ``S``.
    seed : int
        Draws the resample (an ensemble member's own seed).

    Returns
    -------
    labels : list of arrays
        Copies with the blocks that were not drawn unlabelled.
    weights : list of (*S) uint8 arrays
        How often each pixel's block was drawn (capped at 255).
    """
    check_int("seed", seed, minimum=0)
    masks = [labelled_mask(np.asarray(y), ignore_index=ignore_index) for y in labels]
    grids, offset = [], 0
    for mask in masks:
        ids, count = block_ids(mask.shape, tuple(block_shape))
        grids.append(ids + offset)
        offset += count
    holding = np.unique(np.concatenate([g[m] for g, m in zip(grids, masks)]))
    if holding.size == 0:
        raise ValueError("the training labels hold no labelled pixel: nothing to bootstrap")
    drawn = np.random.default_rng([seed, 0xB007]).choice(holding, size=holding.size, replace=True)
    times = np.zeros(offset, dtype=np.int64)
    np.add.at(times, drawn, 1)
    out_labels, weights = [], []
    for y, ids, mask in zip(labels, grids, masks):
        w = np.minimum(times[ids], 255).astype(np.uint8)
        y = np.array(y, copy=True)
        out = mask & (w == 0)
        if np.issubdtype(y.dtype, np.floating):
            y[:, out] = np.nan
        else:
            y[out] = ignore_index
        out_labels.append(y)
        weights.append(w)
    before = sum(int(m.sum()) for m in masks)
    after = sum(int((m & (w > 0)).sum()) for m, w in zip(masks, weights))
    logger.info("bootstrap (seed %d): %.1f %% of the labelled pixels are in drawn blocks", seed, 100 * after / before)
    return out_labels, weights
