"""Random training patches that favour labelled pixels.

Sparse annotations (a few scribbles in a large volume) would be missed by
uniform sampling, so most patches are centred on a randomly chosen labelled
pixel. Images may be lazy arrays (zarr, HDF5, memmap): only the patch is read.

Edge policy: where an image is smaller than the patch along an axis, the patch
covers the whole axis and the image is reflect-padded, while labels are padded
with ``ignore_index`` (NaN for regression) so padding never enters a loss.
2.5D context slices are reflected once at a volume's ends: a volume needs more
slices than ``context_slices``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .._checks import check_float, check_int, check_shape, not_allowed
from .bootstrap import labelled_mask
from .sparse import PlaneLabels

logger = logging.getLogger(__name__)

__all__ = ["PatchSampler", "PatchLocation"]

UNIFORM_TRIES = 10


@dataclass(frozen=True)
class PatchLocation:
    """Where a patch lies: image index and per-axis start of the window (may be negative)."""

    image_index: int
    starts: tuple
    sizes: tuple
    centred: bool


def _read_window(array, lead: int, starts, sizes, *, reflect: bool, fill=None) -> np.ndarray:
    """Read ``array[..., starts:starts+sizes]`` (spatial axes after ``lead`` axes), padding
    outside the array by reflection or with ``fill``."""
    shape = tuple(array.shape[lead:])
    src, pads = [], []
    for start, size, n in zip(starts, sizes, shape):
        lo, hi = max(start, 0), min(start + size, n)
        src.append(slice(lo, hi))
        pads.append((lo - start, start + size - hi))
    block = np.asarray(array[(slice(None),) * lead + tuple(src)])
    if any(a or b for a, b in pads):
        width = [(0, 0)] * lead + pads
        if reflect:
            block = np.pad(block, width, mode="reflect")
        else:
            block = np.pad(block, width, mode="constant", constant_values=fill)
    return block


class PatchSampler:
    """Draw (image, label) patches, preferring patches centred on labelled pixels.

    Parameters
    ----------
    images : list of array-like, each (C, *S)
        ``S`` has ``spatial_dims`` axes, or 3 axes when drawing 2D patches from
        3D volumes (a slice along ``slice_axis`` is picked per patch).
    labels : list of arrays, each (*S) int (segmentation) or (C_out, *S) float (regression)
        Segmentation: ``ignore_index`` marks unlabelled pixels. Regression: NaN
        marks unlabelled values; a pixel counts as labelled if any channel is finite.
    patch_shape : tuple of int
        ``spatial_dims`` entries (the in-plane axes for 2D-from-3D).
    spatial_dims : int
        2 or 3: dimensionality of the patches.
    ignore_index : int
        Unlabelled value of segmentation labels.
    label_fraction : float
        Probability that a patch is centred on a random labelled pixel (uniform
        over all labelled pixels of all images); otherwise its position is
        uniform (images chosen in proportion to their size).
    min_labelled : int
        A uniform patch with fewer labelled pixels is redrawn (up to 10 times,
        then a label-centred patch is taken); 0 accepts any patch.
    slice_axis : int
        Axis of ``S`` along which slices are taken for 2D-from-3D sampling.
    context_slices : int
        2D-from-3D only: also take this many neighbouring slices on each side as
        extra channels ("2.5D"); the patch then has ``C * (2k + 1)`` channels,
        ordered channel-major (reflected at the volume's ends).
    weights : list of (*S) integer arrays, optional
        How many times each labelled pixel counts as a centre (a bootstrap's block
        multiplicities, :func:`mixscale.data.bootstrap.block_bootstrap`); 0 = never.

    Examples
    --------
    >>> img = np.zeros((1, 20, 30), np.float32)
    >>> lab = np.full((20, 30), -1); lab[5, 7] = 1
    >>> s = PatchSampler([img], [lab], patch_shape=(8, 8), spatial_dims=2, label_fraction=1.0)
    >>> x, y = s.sample(np.random.default_rng(0))
    >>> x.shape, int((y == 1).sum())
    ((1, 8, 8), 1)
    """

    def __init__(self, images, labels, *, patch_shape, spatial_dims: int, ignore_index: int = -1,
                 label_fraction: float = 0.9, min_labelled: int = 1, slice_axis: int = 0,
                 context_slices: int = 0, weights=None):
        self.spatial_dims = check_int("spatial_dims", spatial_dims, minimum=2, maximum=3)
        self.patch_shape = check_shape("patch_shape", patch_shape, ndim=self.spatial_dims)
        self.label_fraction = check_float("label_fraction", label_fraction, minimum=0, maximum=1)
        self.min_labelled = check_int("min_labelled", min_labelled, minimum=0)
        self.context_slices = check_int("context_slices", context_slices, minimum=0)
        self.ignore_index = check_int("ignore_index", ignore_index)
        self.images, self.labels = self._check_pairs(images, labels)
        self.slicing = len(self.images[0].shape) - 1 != self.spatial_dims
        self.slice_axis = check_int("slice_axis", slice_axis, minimum=0, maximum=2)
        if self.context_slices and not self.slicing:
            raise ValueError("context_slices applies to 2D patches drawn from 3D volumes only")
        self._check_context()
        self._index_labels(self._check_weights(weights))

    @property
    def regression(self) -> bool:
        """True when targets are float maps (NaN = unlabelled)."""
        return np.issubdtype(self.labels[0].dtype, np.floating)

    @property
    def in_channels(self) -> int:
        """Channels of the image patches (including 2.5D context slices)."""
        return int(self.images[0].shape[0]) * (2 * self.context_slices + 1)

    def _check_pairs(self, images, labels):
        images, labels = list(images), [lab if isinstance(lab, PlaneLabels) else np.asarray(lab) for lab in labels]
        if not images or len(images) != len(labels):
            raise ValueError(
                f"images and labels must be non-empty lists of equal length, got {len(images)} and {len(labels)}"
            )
        ndims = {len(im.shape) for im in images}
        allowed = {self.spatial_dims + 1} | ({4} if self.spatial_dims == 2 else set())
        if len(ndims) != 1 or not ndims <= allowed:
            raise ValueError(
                f"images must all be (C, *S) with {self.spatial_dims} spatial axes"
                f"{' (or 3 to draw 2D patches from volumes)' if self.spatial_dims == 2 else ''}; "
                f"got shapes {[tuple(im.shape) for im in images]}"
            )
        regression = np.issubdtype(labels[0].dtype, np.floating)
        for i, (im, lab) in enumerate(zip(images, labels)):
            self._check_label(i, tuple(im.shape), lab, regression)
        if len({im.shape[0] for im in images}) != 1:
            raise ValueError(f"images must share one channel count, got {[im.shape[0] for im in images]}")
        return images, labels

    def _check_label(self, i, image_shape, lab, regression):
        spatial = image_shape[1:]
        if regression != np.issubdtype(lab.dtype, np.floating):
            raise TypeError("labels must be all integer (segmentation) or all float (regression)")
        expected = "(C_out, *S) float" if regression else "(*S) integer"
        if not regression and not np.issubdtype(lab.dtype, np.integer):
            raise TypeError(f"labels[{i}] must be an integer class map or float targets, got dtype {lab.dtype}")
        if (lab.shape[1:] if regression else lab.shape) != spatial or lab.ndim != len(spatial) + regression:
            raise ValueError(
                f"labels[{i}] must be {expected} matching image spatial shape {spatial}, got {lab.shape}"
            )

    def _check_context(self) -> None:
        """2.5D context is reflected once at a volume's end: at most ``slices - 1`` on each side."""
        if not self.context_slices:
            return
        for i, im in enumerate(self.images):
            n = int(im.shape[1 + self.slice_axis])
            if self.context_slices > n - 1:
                raise not_allowed("context_slices", self.context_slices,
                                  f"at most {n - 1}: images[{i}] has {n} slices along slice_axis={self.slice_axis}")

    def _check_weights(self, weights):
        if weights is None:
            return [None] * len(self.labels)
        weights = [np.asarray(w) for w in weights]
        if len(weights) != len(self.labels):
            raise ValueError(f"weights must be one array per image ({len(self.labels)}), got {len(weights)}")
        for i, (w, im) in enumerate(zip(weights, self.images)):
            if w.shape != tuple(im.shape[1:]) or not np.issubdtype(w.dtype, np.integer) or (w < 0).any():
                raise ValueError(f"weights[{i}] must be non-negative integers of shape {tuple(im.shape[1:])}, "
                                 f"got {w.dtype} {w.shape}")
        return weights

    def _index_labels(self, weights) -> None:
        self._flat_labelled, self._n_labelled = [], []
        for i, (lab, w) in enumerate(zip(self.labels, weights)):
            if isinstance(lab, PlaneLabels):  # labelled planes of a volume left on disk
                self._index_planes(i, lab, w)
                continue
            mask = labelled_mask(lab, ignore_index=self.ignore_index)
            if not self.regression:
                if (lab[mask] < 0).any():
                    raise ValueError(
                        f"labels[{i}] holds negative values other than ignore_index={self.ignore_index}"
                    )
            dtype = np.int32 if mask.size < 2**31 else np.int64
            if w is not None:  # a pixel counted w times is w times as likely a centre
                flat = np.flatnonzero(mask & (w > 0))
                flat = np.repeat(flat, w.reshape(-1)[flat]).astype(dtype)
                self._flat_labelled.append(flat)
                self._n_labelled.append(int(flat.size))
                continue
            n = int(np.count_nonzero(mask))
            # a fully labelled image needs no index list (it may be huge): draw uniformly
            self._flat_labelled.append(None if n == mask.size else np.flatnonzero(mask).astype(dtype))
            self._n_labelled.append(n)
        self._sizes = np.array([lab.size if not self.regression else lab[0].size for lab in self.labels],
                               dtype=np.float64)
        if sum(self._n_labelled) == 0:
            logger.warning("PatchSampler: no labelled pixels; all patches are uniform and unlabelled")
        logger.info("PatchSampler: %d images, %d labelled pixels", len(self.images), sum(self._n_labelled))

    def _index_planes(self, i: int, lab: PlaneLabels, weights) -> None:
        if weights is not None:
            raise ValueError(f"labels[{i}] is held by its labelled planes (lazy training data): weights (a "
                             "bootstrap) need whole label maps")
        if any((v[v != self.ignore_index] < 0).any() for v in lab.planes.values()):
            raise ValueError(f"labels[{i}] holds negative values other than ignore_index={self.ignore_index}")
        flat = lab.labelled_flat(self.ignore_index)
        self._flat_labelled.append(flat)
        self._n_labelled.append(int(flat.size))

    # -- drawing ----------------------------------------------------------------

    def _window_axes(self, spatial):
        """Per axis of S: (patch size, is_slice_axis)."""
        if not self.slicing:
            return [(p, False) for p in self.patch_shape]
        sizes = list(self.patch_shape)
        sizes.insert(self.slice_axis, 2 * self.context_slices + 1)
        return [(s, a == self.slice_axis) for a, s in enumerate(sizes)]

    def _starts(self, spatial, centre, rng):
        starts, sizes = [], []
        for n, (p, is_slice), c in zip(spatial, self._window_axes(spatial), centre):
            if is_slice:
                c = int(rng.integers(n)) if c is None else c
                starts.append(c - self.context_slices)
            else:
                lo, hi = min(0, n - p), max(0, n - p)
                starts.append(int(rng.integers(lo, hi + 1)) if c is None else int(np.clip(c - p // 2, lo, hi)))
            sizes.append(p)
        return tuple(starts), tuple(sizes)

    def draw(self, rng: np.random.Generator) -> PatchLocation:
        """Choose a patch location (nothing is read except labels)."""
        total = sum(self._n_labelled)
        if total and rng.random() < self.label_fraction:
            return self._draw_centred(rng)
        for _ in range(UNIFORM_TRIES):
            i = int(rng.choice(len(self.images), p=self._sizes / self._sizes.sum()))
            spatial = tuple(self.images[i].shape[1:])
            starts, sizes = self._starts(spatial, (None,) * len(spatial), rng)
            loc = PatchLocation(i, starts, sizes, False)
            if self.min_labelled == 0 or total == 0 or self._count_labelled(loc) >= self.min_labelled:
                return loc
        return self._draw_centred(rng)

    def _draw_centred(self, rng) -> PatchLocation:
        counts = np.asarray(self._n_labelled, dtype=np.float64)
        i = int(rng.choice(len(self.images), p=counts / counts.sum()))
        flat = self._flat_labelled[i]
        spatial = tuple(self.images[i].shape[1:])
        k = int(rng.integers(self._n_labelled[i]))
        centre = np.unravel_index(k if flat is None else int(flat[k]), spatial)
        starts, sizes = self._starts(spatial, tuple(int(c) for c in centre), rng)
        return PatchLocation(i, starts, sizes, True)

    def _label_window(self, loc: PatchLocation) -> np.ndarray:
        lab = self.labels[loc.image_index]
        if self.slicing and self.context_slices:
            starts = list(loc.starts)
            sizes = list(loc.sizes)
            starts[self.slice_axis] += self.context_slices
            sizes[self.slice_axis] = 1
            loc = PatchLocation(loc.image_index, tuple(starts), tuple(sizes), loc.centred)
        if self.regression:
            return _read_window(lab, 1, loc.starts, loc.sizes, reflect=False, fill=np.nan)
        return _read_window(lab, 0, loc.starts, loc.sizes, reflect=False, fill=self.ignore_index)

    def _count_labelled(self, loc: PatchLocation) -> int:
        window = self._label_window(loc)
        if self.regression:
            return int(np.isfinite(window).any(axis=0).sum())
        return int(np.count_nonzero(window != self.ignore_index))

    def extract(self, loc: PatchLocation) -> tuple[np.ndarray, np.ndarray]:
        """Read the patch at ``loc``.

        Returns
        -------
        image : ndarray of float32, (C', *patch_shape)
        label : ndarray of int64 (*patch_shape), or float32 (C_out, *patch_shape)
        """
        image = _read_window(self.images[loc.image_index], 1, loc.starts, loc.sizes, reflect=True)
        label = self._label_window(loc)
        if self.slicing:
            axis = 1 + self.slice_axis
            image = np.moveaxis(image, axis, 1).reshape(-1, *self.patch_shape)
            label = np.squeeze(label, axis=self.slice_axis + (1 if self.regression else 0))
        image = np.ascontiguousarray(image, dtype=np.float32)
        label = np.ascontiguousarray(label, dtype=np.float32 if self.regression else np.int64)
        return image, label

    def sample(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Draw one patch: ``(image (C', *patch_shape) float32, label)``; see :meth:`extract`."""
        return self.extract(self.draw(rng))
