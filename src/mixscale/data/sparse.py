"""Training data that stays on disk: label volumes held as their labelled planes, lazy channel views.

A user with a 2160x2560x2560 tomogram and five annotated slices cannot hold the volume, nor an
int64 label map of it, in memory. Here the image stays a lazy array (zarr, HDF5, TIFF, MRC: only
the patches are read) and the label volume is scanned once, slab by slab, keeping only the planes
(along axis 0) that hold a labelled pixel: :class:`PlaneLabels`. Everything else is unlabelled.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np

from .labels import LabelConventionWarning, convention_findings, prepare_labels, value_counts

logger = logging.getLogger(__name__)

#: bytes a slab may take while a volume is scanned
SLAB_BYTES = 32 * 2**20


def slab_step(array, *, itemsize: int | None = None) -> int:
    """Planes (along axis 0) per read of at most :data:`SLAB_BYTES` (at least one plane), whole chunks
    where the budget holds one or more.

    ``itemsize`` is the bytes per element the slab takes once read (default: the array's), e.g. 8 for
    labels that become int64.
    """
    size = np.dtype(array.dtype).itemsize if itemsize is None else itemsize
    plane = int(np.prod(array.shape[1:], dtype=np.int64)) * size
    step = max(1, SLAB_BYTES // max(plane, 1))
    chunks = getattr(array, "chunks", None)
    if chunks and chunks[0] and step >= chunks[0]:
        step = step // chunks[0] * chunks[0]
    return int(step)


class PlaneLabels:
    """A label volume ``(*S)`` that is ``fill`` everywhere but on a few planes along axis 0.

    Parameters
    ----------
    shape : tuple of int
        The volume's shape.
    planes : dict of int -> ndarray
        Plane index -> its labels, shape ``shape[1:]``.
    fill : int
        The value of every other pixel (the unlabelled ``ignore_index``).

    Indexing with slices (and integers) returns an int64 ndarray, as the full array would.

    Examples
    --------
    >>> lab = PlaneLabels((4, 3, 3), {2: np.ones((3, 3), np.int64)}, fill=-1)
    >>> lab[1:3, 0, :2].tolist()
    [[-1, -1], [1, 1]]
    >>> lab.count_labelled(), lab.labelled_flat().tolist()[:2]
    (9, [18, 19])
    """

    def __init__(self, shape, planes: dict, *, fill: int = -1) -> None:
        self.shape = tuple(int(s) for s in shape)
        self.planes = {int(k): np.asarray(v, np.int64) for k, v in sorted(planes.items())}
        self.fill = int(fill)
        self.dtype = np.dtype(np.int64)
        for k, v in self.planes.items():
            if not 0 <= k < self.shape[0] or v.shape != self.shape[1:]:
                raise ValueError(f"plane {k} of shape {v.shape} does not fit a label volume of shape {self.shape}")

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        first, rest = key[0], key[1:]
        indices = range(self.shape[0])[first]
        probe = np.empty(self.shape[1:], np.bool_)[rest]  # the shape the rest of the key selects
        if isinstance(indices, int):
            plane = self.planes.get(indices)
            return np.full(probe.shape, self.fill, np.int64) if plane is None else plane[rest].copy()
        out = np.full((len(indices), *probe.shape), self.fill, np.int64)
        for j, k in enumerate(indices):
            if k in self.planes:
                out[j] = self.planes[k][rest]
        return out

    def __array__(self, dtype=None, copy=None):
        raise TypeError("PlaneLabels holds a label volume by its labelled planes; read windows of it by slicing "
                        "(np.asarray would build the whole volume)")

    def mask_planes(self, ignore_index: int | None = None):
        """``(plane index, boolean mask of its labelled pixels)`` for every stored plane."""
        ignore = self.fill if ignore_index is None else ignore_index
        return [(k, v != ignore) for k, v in self.planes.items()]

    def count_labelled(self, ignore_index: int | None = None) -> int:
        """Labelled pixels in the volume."""
        return sum(int(m.sum()) for _, m in self.mask_planes(ignore_index))

    def labelled_flat(self, ignore_index: int | None = None) -> np.ndarray:
        """C-order flat indices (int64) into the volume of its labelled pixels, ascending."""
        plane = int(np.prod(self.shape[1:], dtype=np.int64))
        parts = [k * plane + np.flatnonzero(m) for k, m in self.mask_planes(ignore_index)]
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def with_planes(self, planes: dict) -> PlaneLabels:
        """The same volume with other planes (e.g. one part of a pixel split)."""
        return PlaneLabels(self.shape, planes, fill=self.fill)


def scan_label_planes(labels, *, convention: str, num_classes: int | None, ignore_index: int) -> PlaneLabels:
    """Read a (lazy) label volume slab by slab and keep the planes that hold a labelled pixel.

    Each plane is checked and mapped like a whole label map (:func:`~mixscale.data.check_label_convention`,
    :func:`~mixscale.data.prepare_labels`); memory holds one slab and the labelled planes.

    Parameters
    ----------
    labels : array-like (*S)
        Integer labels with ``len(S) >= 2``, sliceable along axis 0.
    convention, num_classes, ignore_index
        As in :func:`~mixscale.data.prepare_labels`.

    Returns
    -------
    PlaneLabels
    """
    step, planes = slab_step(labels, itemsize=8 * 3), {}  # int64 labels, and masks of them
    counts = np.zeros(num_classes + 1, np.int64)
    for start in range(0, labels.shape[0], step):
        slab = np.asarray(labels[start:start + step])
        counts += value_counts(slab, num_classes)
        slab = prepare_labels(slab, num_classes=num_classes, convention=convention, ignore_index=ignore_index)
        for j in np.flatnonzero((slab != ignore_index).reshape(len(slab), -1).any(axis=1)):
            planes[start + int(j)] = slab[j].copy()
    size = int(np.prod(labels.shape, dtype=np.int64))
    for message in convention_findings(counts, size, convention=convention, num_classes=num_classes,
                                       few_labelled=False):
        warnings.warn(message, LabelConventionWarning, stacklevel=2)
    logger.info("label volume %s: %d labelled plane(s) along axis 0", tuple(labels.shape), len(planes))
    return PlaneLabels(labels.shape, planes, fill=ignore_index)


class ChannelsFirst:
    """A lazy ``(C, *S)`` view of an array with its channels on ``channel_axis`` (or none: C = 1).

    Slicing reads only the selected window of the underlying (lazy) array.

    Examples
    --------
    >>> view = ChannelsFirst(np.arange(24).reshape(2, 3, 4), channel_axis=2)
    >>> view.shape, view[:, 1, 0:2].tolist()
    ((4, 2, 3), [[12, 16], [13, 17], [14, 18], [15, 19]])
    """

    def __init__(self, array, *, channel_axis: int | None) -> None:
        self.array = array
        ndim = len(array.shape)
        if channel_axis is not None and not -ndim <= channel_axis < ndim:
            raise ValueError(f"channel_axis={channel_axis} is out of range for an array of shape {array.shape}")
        self.axis = None if channel_axis is None else channel_axis % ndim
        shape = tuple(array.shape)
        self.shape = (1, *shape) if self.axis is None else (shape[self.axis], *shape[:self.axis],
                                                            *shape[self.axis + 1:])
        self.dtype = np.dtype(array.dtype)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        if self.axis is None:
            block = np.asarray(self.array[key[1:]])
            return block if isinstance(key[0], int) else block[None]
        spatial = list(key[1:])
        block = np.asarray(self.array[tuple(spatial[:self.axis] + [key[0]] + spatial[self.axis:])])
        if isinstance(key[0], int):
            return block
        kept = sum(not isinstance(k, int) for k in spatial[:self.axis])  # where the channel axis landed
        return np.moveaxis(block, kept, 0)


def sample_planes(image, planes, *, count: int = 16) -> list[np.ndarray]:
    """Planes ``(C, 1, *S[1:])`` of a ``(C, *S)`` lazy image for normalisation statistics: the given
    (labelled) planes, plus evenly spaced ones up to ``count`` in all."""
    n = image.shape[1]
    chosen = sorted(set(int(p) for p in planes) | set(np.linspace(0, n - 1, max(count - len(planes), 2)).astype(int)
                                                       .tolist()))
    return [np.asarray(image[:, k:k + 1]) for k in chosen]
