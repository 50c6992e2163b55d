"""Patches around point annotations, for training a patch classifier (particle picking).

Each annotated point (a pixel coordinate with a class >= 1) gives a patch centred
on it; background (class 0) patches are centred on random pixels at least
``min_background_distance`` from every object point, plus any points annotated
as class 0 (e.g. junk, or false detections of an earlier model: hard negatives).
Classes can be balanced by repeating the rarer ones. The border is handled by reflect padding, the same
rule as :func:`mixscale.infer.detection_map`, so training and detection see
border patches alike.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import check_bool, check_float, check_int, check_shape, not_allowed
from .augment import apply_dihedral, dihedral_transforms
from .normalize import Normalization, normalize

logger = logging.getLogger(__name__)

__all__ = ["PointPatchDataset", "read_reflected"]

BACKGROUND_TRIES = 50


def _reflect_index(index: np.ndarray, n: int) -> np.ndarray:
    """Map any integer index into ``0..n-1`` by mirror reflection about the edge pixels (numpy 'reflect')."""
    if n == 1:
        return np.zeros_like(index)
    period = 2 * (n - 1)
    index = np.mod(index, period)
    return np.where(index > n - 1, period - index, index)


def read_reflected(array, starts, sizes) -> np.ndarray:
    """``array[:, starts:starts + sizes]`` over the spatial axes (after one channel axis), reflected outside.

    Only the bounding box of the needed pixels is read, so lazy arrays (zarr,
    HDF5, memmap) stay lazy. Outside the image the values are those of
    ``np.pad(array, ..., mode="reflect")``.

    Parameters
    ----------
    array : (C, *S) array-like
    starts, sizes : sequence of int, one per spatial axis

    Returns
    -------
    (C, *sizes) ndarray
    """
    indices = [_reflect_index(np.arange(s, s + z), n) for s, z, n in zip(starts, sizes, array.shape[1:])]
    box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in indices)
    block = np.asarray(array[(slice(None),) + box])
    local = [i - b.start for i, b in zip(indices, box)]
    return block[(slice(None),) + np.ix_(*local)]


@dataclass(frozen=True)
class PatchItem:
    """What item ``i`` of the current epoch is: image, centre pixel, class and dihedral transform."""

    image_index: int
    centre: tuple
    label: int
    transform: int


def _as_images(images, dims: int) -> list:
    if isinstance(images, np.ndarray) or hasattr(images, "shape"):
        images = [images]
    images = list(images)
    if not images:
        raise ValueError("images must hold at least one image")
    out = []
    for i, im in enumerate(images):
        ndim = len(im.shape)
        if ndim not in (dims, dims + 1):
            raise ValueError(f"images[{i}] has shape {tuple(im.shape)}; with {dims}D patches an image must be "
                             f"(*S) with {dims} axes or (C, *S) with {dims + 1}")
        out.append(np.asarray(im)[None] if ndim == dims else im)
    if len({im.shape[0] for im in out}) != 1:
        raise ValueError(f"all images need the same channel count, got {[im.shape[0] for im in out]}")
    return out


def _as_points(points, classes, images) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Validated integer centres (M_i, D) and classes (M_i,) per image."""
    dims = len(images[0].shape) - 1
    if isinstance(points, np.ndarray) and len(images) == 1:
        points = [points]
    points = list(points)
    classes = [None] * len(points) if classes is None else list(classes)
    if len(points) != len(images) or len(classes) != len(images):
        raise ValueError(f"points (and point_classes) need one entry per image: {len(images)} image(s), "
                         f"{len(points)} point array(s), {len(classes)} class array(s)")
    centres, labels = [], []
    for i, (p, c, im) in enumerate(zip(points, classes, images)):
        p = np.asarray(p, dtype=np.float64).reshape(-1, dims) if np.size(p) else np.zeros((0, dims))
        if not np.isfinite(p).all():
            raise ValueError(f"points[{i}] contains NaN or infinite coordinates")
        p = np.rint(p).astype(np.int64)
        outside = ((p < 0) | (p >= np.asarray(im.shape[1:]))).any(1)
        if outside.any():
            raise ValueError(f"points[{i}] has {int(outside.sum())} point(s) outside the image of spatial shape "
                             f"{tuple(im.shape[1:])}, e.g. {p[outside][0].tolist()}")
        c = np.ones(len(p), np.int64) if c is None else np.asarray(c).reshape(-1)
        if len(c) != len(p) or (len(c) and (not np.issubdtype(c.dtype, np.integer) or c.min() < 0)):
            raise ValueError(f"point_classes[{i}] must hold one integer class >= 0 per point (0: annotated "
                             f"background); got {len(c)} value(s) for {len(p)} point(s)")
        centres.append(p)
        labels.append(c.astype(np.int64))
    if not any((c > 0).any() for c in labels):
        raise ValueError("points holds no object point (class >= 1); a point-patch dataset needs some")
    return centres, labels


def _sample_background(shape, points: np.ndarray, count: int, min_distance: float, rng) -> np.ndarray:
    """``count`` random pixels of ``shape`` at distance >= ``min_distance`` from every point (rejection)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(points) if len(points) and min_distance > 0 else None
    found: list[np.ndarray] = []
    total = 0
    for _ in range(BACKGROUND_TRIES):
        cand = np.stack([rng.integers(0, n, size=2 * (count - total) + 16) for n in shape], 1)
        if tree is not None:
            dist, _ = tree.query(cand, k=1)
            cand = cand[dist >= min_distance]
        found.append(cand)
        total += len(cand)
        if total >= count:
            return np.concatenate(found)[:count]
    raise ValueError(f"could not place {count} background patches at least min_background_distance="
                     f"{min_distance} from every point in an image of shape {tuple(shape)}; the points leave "
                     "too little room: lower min_background_distance or background_per_point")


class PointPatchDataset(Dataset):
    """Patches centred on annotated points (classes >= 1) and on background (class 0).

    Item ``i`` is ``(x, y)``: ``x`` a float32 Tensor ``(C, *patch_shape)`` whose
    centre pixel ``patch_shape // 2`` is the point (up to ``jitter``), ``y`` an int64
    scalar Tensor, the class. The list of items is redrawn per epoch
    (:meth:`set_epoch`) from ``seed`` and the epoch alone, so it is the same in every
    data-loader worker.

    Parameters
    ----------
    images : array-like or list of them, each ``(*S)`` or ``(C, *S)``
        ``S`` has ``len(patch_shape)`` axes; lazy arrays are read patch by patch.
    points : list of (M_i, ndim) arrays, one per image
        Pixel coordinates (rounded to the nearest pixel) of the objects.
    patch_shape : sequence of int
        2 or 3 entries. Odd sizes keep the centre exact under flips.
    point_classes : list of (M_i,) int arrays, optional
        Class of each point (default: all 1). Class 0 marks annotated background
        (junk, known false detections): each such point gives one background patch
        per epoch, on top of the random ones.
    num_classes : int, optional
        Default: largest point class + 1.
    background_per_point : float >= 0
        Random background patches per epoch, as a multiple of the number of object points.
    min_background_distance : float >= 0
        Random background centres are at least this far (Euclidean, pixels) from every
        object point.
    jitter : int >= 0
        Point patches are shifted by up to this many pixels per axis (uniform).
    class_balance : bool
        Give every class as many items per epoch as the largest one (points of rarer
        classes are repeated, each about equally often; background is topped up with
        random patches). Otherwise every point appears once per epoch.
    augment : bool
        A random flip/rotation (one of those that keep the patch shape) per item.
    normalization : Normalization, optional
        Applied to every patch.
    seed : int >= 0

    Examples
    --------
    >>> img = np.random.default_rng(0).normal(size=(64, 64)).astype(np.float32)
    >>> ds = PointPatchDataset(img, [np.array([[10, 12], [40, 50]])], (15, 15), background_per_point=2)
    >>> x, y = ds[0]
    >>> x.shape, len(ds), ds.class_counts().tolist()
    (torch.Size([1, 15, 15]), 8, [4, 4])
    """

    def __init__(self, images, points, patch_shape, *, point_classes=None, num_classes: int | None = None,
                 background_per_point: float = 1.0, min_background_distance: float = 4.0, jitter: int = 0,
                 class_balance: bool = True, augment: bool = False, normalization: Normalization | None = None,
                 seed: int = 0) -> None:
        ndim = len(patch_shape) if hasattr(patch_shape, "__len__") else 0
        if ndim not in (2, 3):  # the images tell 2D from 3D only after this check
            raise not_allowed("patch_shape", patch_shape, "2 or 3 integers >= 1")
        self.patch_shape = check_shape("patch_shape", patch_shape, ndim=ndim)
        self.images = _as_images(images, ndim)
        self.points, self.point_classes = _as_points(points, point_classes, self.images)
        top = int(max(c.max() for c in self.point_classes if len(c)))
        self.num_classes = top + 1 if num_classes is None else check_int("num_classes", num_classes, minimum=2)
        if top >= self.num_classes:
            raise ValueError(f"num_classes={num_classes} but a point has class {top}")
        self.background_per_point = check_float("background_per_point", background_per_point, minimum=0)
        self.min_background_distance = check_float("min_background_distance", min_background_distance, minimum=0)
        self.jitter = check_int("jitter", jitter, minimum=0)
        self.class_balance = check_bool("class_balance", class_balance)
        self.augment = check_bool("augment", augment)
        if normalization is not None and not isinstance(normalization, Normalization):
            raise TypeError(f"normalization must be a Normalization or None, got {type(normalization).__name__}")
        self.normalization = normalization
        self.seed = check_int("seed", seed, minimum=0)
        self._counts = self._per_class_counts()
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._plan_cache: tuple[int, dict] | None = None

    @property
    def in_channels(self) -> int:
        return int(self.images[0].shape[0])

    def _per_class_counts(self) -> np.ndarray:
        """Items per class per epoch (fixed: the dataset length does not change between epochs)."""
        labels = np.concatenate(self.point_classes)
        counts = np.bincount(labels, minlength=self.num_classes)
        counts[0] += round(self.background_per_point * int((labels > 0).sum()))
        if self.class_balance:
            present = counts > 0
            counts[present] = counts.max()
        return counts

    def class_counts(self) -> np.ndarray:
        """Number of items of each class in every epoch, ``(num_classes,)``."""
        return self._counts.copy()

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose items are drawn next (new background positions, jitter, repeats)."""
        self._epoch.fill_(check_int("epoch", epoch, minimum=0))

    def __len__(self) -> int:
        return int(self._counts.sum())

    def _plan(self) -> dict:
        """The items of the current epoch (cached): image index, centre, class, transform per item."""
        epoch = self.epoch
        if self._plan_cache is not None and self._plan_cache[0] == epoch:
            return self._plan_cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        dims = len(self.patch_shape)
        owner = np.repeat(np.arange(len(self.points)), [len(p) for p in self.points])
        all_points, all_labels = np.concatenate(self.points), np.concatenate(self.point_classes)
        idx, cent, labs = [], [], []
        for c in range(1, self.num_classes):
            members = np.flatnonzero(all_labels == c)
            if not len(members):
                continue
            reps, extra = divmod(int(self._counts[c]), len(members))
            chosen = np.concatenate([np.tile(members, reps), rng.choice(members, size=extra, replace=False)])
            idx.append(owner[chosen])
            cent.append(all_points[chosen] + rng.integers(-self.jitter, self.jitter + 1, size=(len(chosen), dims)))
            labs.append(np.full(len(chosen), c))
        marked = np.flatnonzero(all_labels == 0)  # annotated background: each once, jittered
        bg_idx, bg_cent = self._background(int(self._counts[0]) - len(marked), rng)
        marked_cent = all_points[marked] + rng.integers(-self.jitter, self.jitter + 1, size=(len(marked), dims))
        idx, cent = [owner[marked], bg_idx] + idx, [marked_cent, bg_cent] + cent
        labs = [np.zeros(len(marked) + len(bg_idx), np.int64)] + labs
        image_idx, centres = np.concatenate(idx).astype(np.int64), np.concatenate(cent).astype(np.int64)
        highs = np.stack([np.asarray(self.images[i].shape[1:]) - 1 for i in image_idx]) if len(image_idx) else 0
        centres = np.clip(centres, 0, highs)  # jitter never leaves the image
        allowed = [i for i, t in enumerate(dihedral_transforms(dims))
                   if tuple(self.patch_shape[p] for p in t.perm) == self.patch_shape]
        transforms = rng.choice(allowed, size=len(image_idx)) if self.augment else np.zeros(len(image_idx), int)
        plan = {"image_index": image_idx, "centres": centres, "labels": np.concatenate(labs).astype(np.int64),
                "transforms": transforms.astype(np.int64)}
        self._plan_cache = (epoch, plan)
        return plan

    def _background(self, count: int, rng) -> tuple[np.ndarray, np.ndarray]:
        """``count`` background centres, spread over the images in proportion to their pixel counts."""
        dims = len(self.patch_shape)
        sizes = np.array([np.prod(im.shape[1:], dtype=np.float64) for im in self.images])
        which = rng.choice(len(self.images), size=count, p=sizes / sizes.sum())
        idx, cent = [np.zeros(0, np.int64)], [np.zeros((0, dims), np.int64)]
        for i in range(len(self.images)):
            n = int((which == i).sum())
            if n:
                objects = self.points[i][self.point_classes[i] > 0]
                spots = _sample_background(self.images[i].shape[1:], objects, n, self.min_background_distance, rng)
                idx.append(np.full(n, i))
                cent.append(spots)
        return np.concatenate(idx), np.concatenate(cent)

    def item(self, index: int) -> PatchItem:
        """Where item ``index`` of the current epoch comes from."""
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or not -len(self) <= index < len(self):
            raise IndexError(f"index {index!r} is out of range for a dataset of {len(self)} items")
        plan, i = self._plan(), int(index) % len(self)
        return PatchItem(int(plan["image_index"][i]), tuple(int(v) for v in plan["centres"][i]),
                         int(plan["labels"][i]), int(plan["transforms"][i]))

    def __getitem__(self, index: int):
        it = self.item(index)
        starts = [c - p // 2 for c, p in zip(it.centre, self.patch_shape)]
        patch = read_reflected(self.images[it.image_index], starts, self.patch_shape).astype(np.float32)
        if self.normalization is not None:
            patch = normalize(patch, self.normalization, channel_axis=0)
        if it.transform:
            patch = apply_dihedral(patch, it.transform, spatial_dims=len(self.patch_shape))
        return torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32)), torch.tensor(it.label)
