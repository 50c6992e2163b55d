"""Task 'detection': point annotations in CSV files -> patch datasets for a patch classifier.

One points CSV per image, in the order of ``data.train_images`` (format:
:mod:`mixscale.data.points_csv`; coordinates are rounded to the nearest pixel).

Validation, when no ``data.val_images``/``val_points`` are given:

- ``split="images"`` (the default for 3 or more images): whole images (with their
  points) are held out; no pixel is shared.
- ``split="region"`` (the default for 1 or 2 images): every image is cut in two
  along its longest axis; the last ``val_fraction`` becomes a validation image
  with the points inside it. Training and validation patches then share no
  pixel (each part is reflect-padded at the cut). Limitation: an object cut
  through by the border has its point in one part only; the other part shows
  an unannotated sliver of it.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch.utils.data import Dataset

from ..data import (Augmentation, PointPatchDataset, array_sha256, compute_normalization, read_image, read_points_csv,
                    split_images)

from .settings import DataSettings, TrainingData, addresses, to_channels_first

logger = logging.getLogger(__name__)

def _check_inside(points: np.ndarray, shape, points_path, image_path) -> None:
    rounded = np.rint(points)
    outside = ((rounded < 0) | (rounded >= np.asarray(shape))).any(1)
    if outside.any():
        k = int(np.flatnonzero(outside)[0])
        raise ValueError(f"points file {points_path}: {int(outside.sum())} point(s) outside image {image_path} of "
                         f"spatial shape {tuple(shape)}, e.g. line {k + 2}: {points[k].tolist()}")


def load_detection_data(images, points, s: DataSettings, *, hashes: list | None = None) -> tuple[list[np.ndarray],
                                                                                                list, list]:
    """Images ``(C, *S)`` float32 with their points and classes, checked against each other.

    ``hashes``, when given, receives the SHA-256 of every image array as read.
    """
    img_paths, pts_paths = addresses(images), addresses(points)
    if len(img_paths) != len(pts_paths):
        raise ValueError(f"{len(img_paths)} image entries but {len(pts_paths)} points files; task 'detection' "
                         "needs one points CSV per image, in the same order")
    xs, ps, cs = [], [], []
    for ip, pp in zip(img_paths, pts_paths):
        pts, cls = read_points_csv(pp, spatial_dims=s.spatial_dims)  # cheap checks before reading the image
        raw = np.asarray(read_image(ip))
        if hashes is not None:
            hashes.append(array_sha256(raw))
        x = to_channels_first(raw, channel_axis=s.channel_axis)
        if x.ndim - 1 != s.spatial_dims:
            raise ValueError(f"image {ip} has shape {x.shape[1:]} (after the channel axis); task 'detection' needs "
                             f"exactly spatial_dims={s.spatial_dims} spatial axes per image file")
        if not np.isfinite(x).all():
            raise ValueError(f"image {ip} contains NaN or infinite values")
        _check_inside(pts, x.shape[1:], pp, ip)
        xs.append(x.astype(np.float32, copy=False))
        ps.append(pts)
        cs.append(cls)
    return xs, ps, cs


def count_classes(classes: list[np.ndarray], s: DataSettings) -> int:
    """``data.num_classes`` (background included) or the largest point class + 1; every class checked."""
    top = max((int(c.max()) for c in classes if len(c)), default=0)
    if top < 1:
        raise ValueError("the training points hold no object point (class >= 1); task 'detection' needs some")
    n = s.num_classes if s.num_classes is not None else max(2, top + 1)
    if top >= n:
        raise ValueError(f"a point has class {top} but data.num_classes={n} allows classes 0..{n - 1} "
                         "(0 = background)")
    if s.class_names is not None and len(s.class_names) != n:
        raise ValueError(f"data.class_names has {len(s.class_names)} entries but the points give {n} classes "
                         "(background included)")
    return n


def region_split(xs, ps, cs, s: DataSettings):
    """Cut every image along its longest axis: the last ``val_fraction`` becomes a validation image."""
    tx, tp, tc, vx, vp, vc = [], [], [], [], [], []
    for x, p, c in zip(xs, ps, cs):
        axis = int(np.argmax(x.shape[1:]))
        n = x.shape[1 + axis]
        cut = round(n * (1 - s.val_fraction))
        if min(cut, n - cut) < s.patch_shape[axis]:
            raise ValueError(f"data.split='region': an image of spatial shape {x.shape[1:]} cut at {cut} along "
                             f"axis {axis} leaves a part smaller than patch_shape={s.patch_shape}; give "
                             "data.val_images/val_points, more images (split='images') or change val_fraction")
        val = np.rint(p[:, axis]) >= cut
        shift = np.zeros(p.shape[1])
        shift[axis] = cut
        tx.append(np.ascontiguousarray(np.take(x, range(cut), axis=1 + axis)))
        vx.append(np.ascontiguousarray(np.take(x, range(cut, n), axis=1 + axis)))
        tp.append(p[~val])
        tc.append(c[~val])
        vp.append(p[val] - shift)
        vc.append(c[val])
    if not any((c > 0).any() for c in vc):
        raise ValueError(f"data.split='region': the held-out part (last {s.val_fraction:.0%} of each image along "
                         "its longest axis) holds no object point; give data.val_images/val_points or change "
                         "val_fraction")
    return tx, tp, tc, vx, vp, vc


def split_detection(xs, ps, cs, s: DataSettings):
    """Validation files if given; else whole images (3 or more) or an image region (1 or 2)."""
    if s.val_images is not None:
        return (xs, ps, cs) + load_detection_data(s.val_images, s.val_points, s)
    mode = s.split if s.split != "auto" else ("images" if len(xs) >= 3 else "region")
    logger.info("detection validation split: %s (%d training images)", mode, len(xs))
    if mode == "region":
        return region_split(xs, ps, cs, s)
    if len(xs) < 2:
        raise ValueError("data.split='images' needs at least 2 images; use split='region' for one image")
    tr, va = split_images(len(xs), val_fraction=s.val_fraction, seed=s.seed)
    pick = lambda items, idx: [items[i] for i in idx]  # noqa: E731
    return pick(xs, tr), pick(ps, tr), pick(cs, tr), pick(xs, va), pick(ps, va), pick(cs, va)


class PointEpochs(Dataset):
    """Several independent passes of :class:`PointPatchDataset` per epoch, plus intensity augmentation.

    An epoch of a point dataset shows every point once (class-balanced) with fresh
    random background; ``passes`` of them, drawn independently, make one epoch here
    (so that small annotations still give ``samples_per_epoch`` patches).
    ``set_epoch(e)`` selects pass ``e * passes + r`` of the underlying sampler for
    copy ``r``.
    """

    def __init__(self, make, passes: int, augmentation: Augmentation | None, seed: int) -> None:
        self.parts = [make() for _ in range(passes)]
        self.passes, self.augmentation, self.seed = passes, augmentation, seed
        self.set_epoch(0)

    @property
    def epoch(self) -> int:
        # read from the parts' shared-memory counters, so persistent loader workers see it change
        return self.parts[0].epoch // self.passes

    def set_epoch(self, epoch: int) -> None:
        for r, part in enumerate(self.parts):
            part.set_epoch(epoch * self.passes + r)

    def class_counts(self) -> np.ndarray:
        return sum(p.class_counts() for p in self.parts)

    def __len__(self) -> int:
        return len(self.parts[0]) * self.passes

    def __getitem__(self, index: int):
        n = len(self.parts[0])
        x, y = self.parts[index // n][index % n]
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            img, _ = self.augmentation(x.numpy(), np.zeros(x.shape[1:], np.int64), rng)
            x = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
        return x, y


def build_detection_data(s: DataSettings):
    """Read, check and split images and points; wrap them in point-patch datasets (normalised on the fly)."""
    hashes: list[str] = []
    xs, ps, cs = load_detection_data(s.train_images, s.train_points, s, hashes=hashes)
    num_classes = count_classes(cs, s)
    tx, tp, tc, vx, vp, vc = split_detection(xs, ps, cs, s)
    top_val = max((int(c.max()) for c in vc if len(c)), default=0)
    if top_val >= num_classes:
        raise ValueError(f"a validation point has class {top_val} but the model has {num_classes} classes "
                         f"(0..{num_classes - 1}, from data.num_classes or the training points)")
    norm = compute_normalization(tx, channel_axis=0)
    sampling = dict(s.point_sampling)
    a = s.augment
    intensity = Augmentation(dihedral=False, intensity_scale=a["intensity_scale"], intensity_shift=a["intensity_shift"],
                             noise_std=a["noise_std"])
    has_intensity = a["intensity_scale"] or a["intensity_shift"] or a["noise_std"] > 0

    def sampler(images, points, classes, augment, seed, which):
        try:
            return PointPatchDataset(images, points, tuple(s.patch_shape), point_classes=classes,
                                     num_classes=num_classes, augment=augment, normalization=norm, seed=seed,
                                     **sampling)
        except ValueError as exc:
            raise ValueError(f"{which} points: {exc}") from None

    def epochs(images, points, classes, *, augment, seed, samples, which):
        one = sampler(images, points, classes, augment, seed, which)
        passes = max(1, math.ceil(samples / len(one)))
        return PointEpochs(lambda: sampler(images, points, classes, augment, seed, which), passes,
                           intensity if augment and has_intensity else None, seed)

    train = epochs(tx, tp, tc, augment=a["dihedral"], seed=s.seed, samples=s.samples_per_epoch, which="training")
    val = epochs(vx, vp, vc, augment=False, seed=s.seed + 1, samples=s.val_samples, which="validation")
    logger.info("detection: %d training patches per epoch (per class %s), %d validation patches",
                len(train), train.class_counts().tolist(), len(val))
    names = s.class_names or (["background"] + (["object"] if num_classes == 2 else
                                                 [f"class_{k}" for k in range(1, num_classes)]))
    return TrainingData(train, val, xs[0].shape[0], num_classes, norm.to_dict(), None, list(names), hashes)
