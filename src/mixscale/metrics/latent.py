"""How well an embedding separates known classes: leave-one-out k-nearest-neighbour accuracy.

Used on autoencoder latent vectors or their 2D embedding: if images of one
class land near each other, a point's nearest neighbours share its class.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_int

__all__ = ["knn_accuracy"]


def _check_embedding(embedding) -> np.ndarray:
    if hasattr(embedding, "detach"):  # a torch tensor
        embedding = embedding.detach().cpu().numpy()
    try:
        array = np.asarray(embedding, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"embedding must be a numeric (N, D) array, got {type(embedding).__name__}") from None
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1:
        raise ValueError(f"embedding must be an (N, D) array with N >= 2 points, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError("embedding contains NaN or infinite values")
    return array


def knn_accuracy(embedding, labels, *, k: int = 5) -> float:
    """Leave-one-out accuracy of a k-nearest-neighbour vote in ``embedding``.

    Each point is classified by the majority class of its ``k`` nearest other
    points (Euclidean distance); the score is the fraction classified
    correctly. Leave-one-out is exact and needs no random folds, so the
    number is reproducible. A tied vote goes to the smallest label (as in
    scikit-learn's ``KNeighborsClassifier``); ties in distance are broken
    arbitrarily.

    Parameters
    ----------
    embedding : (N, D) array_like
        One point per sample, e.g. latent vectors or a 2D embedding.
    labels : (N,) array_like
        Class of each point (any sortable values: integers or strings).
    k : int
        Neighbours that vote, ``1 <= k <= N - 1``.

    Returns
    -------
    accuracy : float
        In [0, 1]; about ``1 / num_classes`` for an embedding unrelated to the labels.

    Examples
    --------
    >>> points = [[0.0], [0.1], [0.2], [5.0], [5.1], [5.2]]
    >>> knn_accuracy(points, [0, 0, 0, 1, 1, 1], k=2)
    1.0
    """
    from scipy.spatial import cKDTree

    points = _check_embedding(embedding)
    n = points.shape[0]
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},) to match the embedding, got {labels.shape}")
    k = check_int("k", k, minimum=1, maximum=n - 1)  # the N - 1 other points at most
    classes, codes = np.unique(labels, return_inverse=True)
    _, idx = cKDTree(points).query(points, k=k + 1)
    idx = idx.reshape(n, k + 1)
    is_self = idx == np.arange(n)[:, None]
    # with duplicate points a point may not be among its own k + 1 nearest: drop the farthest instead
    is_self[~is_self.any(axis=1), -1] = True
    is_self &= np.cumsum(is_self, axis=1) == 1  # drop exactly one entry per row
    neighbours = idx[~is_self].reshape(n, k)
    votes = np.zeros((n, len(classes)), dtype=np.int64)
    np.add.at(votes, (np.repeat(np.arange(n), k), codes[neighbours].ravel()), 1)
    return float(np.mean(votes.argmax(axis=1) == codes))
