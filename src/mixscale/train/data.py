"""Label maps or image targets -> training and validation patch datasets (tasks other than detection)."""

from __future__ import annotations

import logging
import warnings

import numpy as np

from .._checks import not_allowed
from ..data import (Augmentation, LabelConventionWarning, Normalization, PatchDataset, PatchSampler, array_sha256,
                    check_label_convention, compute_normalization, open_image, pixel_split, prepare_labels,
                    read_image, split_images)
from ..data.bootstrap import block_bootstrap, labelled_mask
from ..data.io import image_info
from ..data.sparse import ChannelsFirst, PlaneLabels, sample_planes, scan_label_planes

from .settings import DataSettings, TrainingData, addresses, to_channels_first

logger = logging.getLogger(__name__)


def load_pairs(images, labels, s: DataSettings, *, hashes: list | None = None) -> tuple[list[np.ndarray],
                                                                                       list[np.ndarray]]:
    """Read image and label files; images become ``(C, *S)`` float32, labels ``(*S)`` int64 or ``(C, *S)``.

    ``hashes``, when given, receives the SHA-256 of every image array as read.
    Noise2Inverse: :func:`load_subset_pairs`.
    """
    if s.task.targets == "subsets":
        return load_subset_pairs(images, s, hashes=hashes)
    if use_lazy(images, s):
        return load_lazy_pairs(images, labels, s, hashes=hashes)
    reconstruct = s.task.targets == "inputs"  # targets are the images themselves: no label files
    img_paths = addresses(images)
    lab_paths = img_paths if reconstruct else addresses(labels)
    if len(img_paths) != len(lab_paths):
        raise ValueError(f"{len(img_paths)} image entries but {len(lab_paths)} label entries; they must pair up")
    xs, ys = [], []
    for ip, lp in zip(img_paths, lab_paths):
        raw = np.asarray(read_image(ip))
        if hashes is not None:
            hashes.append(array_sha256(raw))
        x = to_channels_first(raw, channel_axis=s.channel_axis)
        y = raw if reconstruct else np.asarray(read_image(lp))
        if s.task.image_targets:
            # a target with as many axes as the image has channels on the same axis; otherwise one channel
            y_axis = s.channel_axis if y.ndim == raw.ndim else None
            y = to_channels_first(y, channel_axis=y_axis).astype(np.float32)
        else:
            check_label_convention(y, convention=s.label_convention, num_classes=s.num_classes)
            y = prepare_labels(y, num_classes=s.num_classes, convention=s.label_convention,
                               ignore_index=s.ignore_index)
        spatial_y = y.shape[1:] if s.task.image_targets else y.shape
        if x.shape[1:] != spatial_y:
            raise ValueError(f"image {ip} has spatial shape {x.shape[1:]} but labels {lp} have {spatial_y}")
        if x.ndim - 1 < s.spatial_dims:
            raise ValueError(f"image {ip} has shape {x.shape[1:]}: too few axes for spatial_dims={s.spatial_dims}")
        if not np.isfinite(x).all():
            raise ValueError(f"image {ip} contains NaN or infinite values")
        x = x.astype(np.float32, copy=False)
        if reconstruct and x.ndim - 1 == s.spatial_dims + 1:  # a stack: each image is one sample
            check_geometry(x.shape[2:], ip, s)
            xs += [x[:, k] for k in range(x.shape[1])]
            ys += [y[:, k] for k in range(y.shape[1])]
            continue
        check_geometry(x.shape[1:], ip, s)
        xs.append(x)
        ys.append(y)
    return xs, ys


#: data.lazy='auto' leaves the training data on disk when an image holds more than this
LAZY_BYTES = 2**30


def use_lazy(images, s: DataSettings) -> bool:
    """Whether the images stay on disk (``data.lazy``; 'auto': volumes, one of them above :data:`LAZY_BYTES`).

    Lazy data are for segmentation of volumes (label files) without a bootstrap; 'auto' reads the
    others whole.
    """
    supported = s.task.targets == "labels" and not s.bootstrap
    if s.lazy is True and not supported:
        raise not_allowed("data.lazy", True, "false or 'auto' for this run: training data stay on disk for "
                          "segmentation from label files without data.bootstrap")
    if s.lazy != "auto" or not supported:  # true (supported, else refused above), false, or auto unsupported
        return bool(s.lazy) and supported
    infos = [image_info(ip) for ip in addresses(images)]
    space = [len(info["shape"]) - (s.channel_axis is not None) for info in infos]
    return all(n == 3 for n in space) and any(info["nbytes"] > LAZY_BYTES for info in infos)


def load_lazy_pairs(images, labels, s: DataSettings, *, hashes: list | None = None):
    """Lazy ``(C, *S)`` views of the images and the labelled planes of the label volumes.

    Only the label volumes are read (slab by slab, :func:`~mixscale.data.sparse.scan_label_planes`);
    the images are read patch by patch while training (and once, slab by slab, for their hash).
    """
    img_paths, lab_paths = addresses(images), addresses(labels)
    if len(img_paths) != len(lab_paths):
        raise ValueError(f"{len(img_paths)} image entries but {len(lab_paths)} label entries; they must pair up")
    xs, ys = [], []
    for ip, lp in zip(img_paths, lab_paths):
        raw = open_image(ip)
        x = ChannelsFirst(raw, channel_axis=s.channel_axis)
        if x.ndim != 4:
            raise not_allowed("data.lazy", s.lazy, f"false for image {ip} of shape {tuple(raw.shape)}: training "
                              "data stay on disk for volumes (3 spatial axes)")
        y = scan_label_planes(open_image(lp), convention=s.label_convention, num_classes=s.num_classes,
                              ignore_index=s.ignore_index)
        if x.shape[1:] != y.shape:
            raise ValueError(f"image {ip} has spatial shape {x.shape[1:]} but labels {lp} have {y.shape}")
        check_geometry(x.shape[1:], ip, s)
        if hashes is not None:
            hashes.append(array_sha256(raw))
        xs.append(x)
        ys.append(y)
    logger.info("training data stay on disk: %d volume(s), %d labelled plane(s)", len(xs),
                sum(len(y.planes) for y in ys))
    return xs, ys


def _split_planes(y: PlaneLabels, s: DataSettings) -> tuple[PlaneLabels, PlaneLabels]:
    """A pixel split of each labelled plane (seeded per plane)."""
    parts = {k: pixel_split(v, val_fraction=s.val_fraction, ignore_index=s.ignore_index, seed=s.seed + k)
             for k, v in y.planes.items()}
    return y.with_planes({k: p[0] for k, p in parts.items()}), y.with_planes({k: p[1] for k, p in parts.items()})


def data_normalization(images, targets) -> Normalization:
    """Per-channel statistics of the training images: all their pixels, or for images left on disk the
    labelled planes and evenly spaced others (:func:`~mixscale.data.sparse.sample_planes`)."""
    if not any(isinstance(y, PlaneLabels) for y in targets):
        return compute_normalization(images, channel_axis=0)
    sample = [p for x, y in zip(images, targets) for p in sample_planes(x, y.planes)]
    return compute_normalization(sample, channel_axis=0)


def subset_axis(s: DataSettings) -> int:
    """The axis of a Noise2Inverse image that holds its subset reconstructions (``data.channel_axis``, else 0)."""
    return 0 if s.channel_axis is None else s.channel_axis


def load_subset_pairs(images, s: DataSettings, *, hashes: list | None = None):
    """Noise2Inverse's X:1 training pairs from images holding K subset reconstructions each.

    Each image ``(K, *S)`` (the subsets on :func:`subset_axis`) gives K pairs: the mean
    of the other K - 1 reconstructions, ``(1, *S)``, and the one left out, ``(1, *S)``.
    Every image must hold K >= 2 (:func:`subset_count` checks that all hold the same K).
    """
    xs, ys = [], []
    for ip in addresses(images):
        raw = np.asarray(read_image(ip))
        if hashes is not None:
            hashes.append(array_sha256(raw))
        x = to_channels_first(raw, channel_axis=subset_axis(s)).astype(np.float32, copy=False)
        if x.shape[0] < 2 or x.ndim - 1 < s.spatial_dims:
            raise not_allowed("data.train_images", ip, f"an image of K >= 2 subset reconstructions on axis "
                              f"{subset_axis(s)} (data.channel_axis) for task 'noise2inverse'; it has shape "
                              f"{raw.shape}")
        if not np.isfinite(x).all():
            raise ValueError(f"image {ip} contains NaN or infinite values")
        check_geometry(x.shape[1:], ip, s)
        total = x.sum(0, dtype=np.float64)
        for j in range(x.shape[0]):
            xs.append(((total - x[j]) / (x.shape[0] - 1)).astype(np.float32)[None])
            ys.append(np.ascontiguousarray(x[j : j + 1]))
    return xs, ys


def check_geometry(spatial: tuple[int, ...], path, s: DataSettings) -> None:
    """Refuse more context slices than a volume has; warn when the patch is larger than the image.

    ``spatial`` is the image's shape without channels: ``spatial_dims`` axes, or one more for 2D
    patches drawn from a volume along ``slice_axis``.
    """
    plane = tuple(spatial)
    if len(spatial) == s.spatial_dims + 1:  # 2D patches from a volume
        slices = spatial[s.slice_axis]
        if s.context_slices > slices - 1:
            raise not_allowed("data.context_slices", s.context_slices,
                              f"at most {slices - 1} for image {path}, which has {slices} slices along "
                              f"data.slice_axis={s.slice_axis} (context beyond the volume's ends is reflected "
                              "once, not repeated)")
        plane = spatial[:s.slice_axis] + spatial[s.slice_axis + 1:]
    if any(p > n for p, n in zip(s.patch_shape, plane)):
        fits = [min(p, n) for p, n in zip(s.patch_shape, plane)]
        warnings.warn(f"data.patch_shape={list(s.patch_shape)} is larger than image {path} (shape {plane} per "
                      f"patch plane): patches are padded beyond it (the image by reflection, the labels as "
                      f"unlabelled); a patch_shape of at most {fits} fits the image", UserWarning, stacklevel=3)


def _regression_split(targets, s):
    """Pixel split of regression targets: finite pixels are 'labelled'; the other half becomes NaN."""
    tr, va = [], []
    for t in targets:
        lab = np.where(np.isfinite(t).all(0), 0, -1)
        a, b = pixel_split(lab, val_fraction=s.val_fraction, ignore_index=-1, seed=s.seed)
        tr.append(np.where(a[None] >= 0, t, np.nan).astype(np.float32))
        va.append(np.where(b[None] >= 0, t, np.nan).astype(np.float32))
    return tr, va


def split_mode(n_images: int, s: DataSettings) -> str:
    """How validation data are found: ``"files"`` (data.val_images), ``"images"`` or ``"pixels"``."""
    if s.val_images is not None:
        return "files"
    return s.split if s.split != "auto" else ("images" if n_images >= 3 else "pixels")


def pairs_per_image(s: DataSettings) -> int:
    """Training pairs one image gives: K for Noise2Inverse (one per subset left out), else 1."""
    return subset_count(s) if s.task.targets == "subsets" else 1


def split_train_val(xs, ys, s: DataSettings):
    """Use the validation files if given; else split images (3 or more) or labelled pixels (1 or 2).

    Noise2Inverse counts and splits the images, not their K pairs: the pairs of one image share its
    subsets, so a validation pair among training pairs of the same image would not be held out.
    """
    if s.val_images is not None:
        vx, vy = load_pairs(s.val_images, s.val_labels, s)
        return xs, ys, vx, vy
    group = pairs_per_image(s)
    images = len(xs) // group
    mode = split_mode(images, s)
    logger.info("validation split: %s (%d training images)", mode, images)
    if mode == "pixels" and s.task.targets == "inputs":
        raise ValueError("task 'reconstruction' cannot hold out pixels (the input shows them): give data.val_images, "
                         "3 or more images (each image of a stack counts) or split='images'")
    if mode == "images":
        if images < 2:
            raise ValueError("data.split='images' needs at least 2 images; use split='pixels' for one image")
        tr, va = (sorted(i * group + j for i in part for j in range(group))
                  for part in split_images(images, val_fraction=s.val_fraction, seed=s.seed))
        return [xs[i] for i in tr], [ys[i] for i in tr], [xs[i] for i in va], [ys[i] for i in va]
    if s.task.image_targets:
        ty, vy = _regression_split(ys, s)
    else:
        pairs = [_split_planes(y, s) if isinstance(y, PlaneLabels) else
                 pixel_split(y, val_fraction=s.val_fraction, ignore_index=s.ignore_index, seed=s.seed) for y in ys]
        ty, vy = [p[0] for p in pairs], [p[1] for p in pairs]
    return xs, ty, xs, vy


def _labelled(targets, s: DataSettings) -> int:
    return sum(t.count_labelled(s.ignore_index) if isinstance(t, PlaneLabels) else
               int(np.count_nonzero(labelled_mask(np.asarray(t), ignore_index=s.ignore_index))) for t in targets)


def _unlabelled_value(s: DataSettings) -> str:
    if s.task.image_targets:
        return "NaN marks unlabelled target pixels; label pixels with finite values"
    if s.label_convention == "scribble":
        return f"label_convention='scribble': 0 is unlabelled; label pixels with classes 1..{s.num_classes}"
    return (f"label_convention='dense': ignore_index={s.ignore_index} is unlabelled; label pixels with classes "
            f"0..{s.num_classes - 1}")


def check_labelled(ys, ty, vy, s: DataSettings) -> None:
    """Refuse training without labelled pixels (before any file is written); warn about a validation
    split without any, where val_loss would be 0 and no checkpoint would be chosen by it.

    ``ys`` are the training targets as read, ``ty`` and ``vy`` the training and validation parts.
    """
    total, mode = _labelled(ys, s), split_mode(len(ys) // pairs_per_image(s), s)
    if total == 0:
        raise ValueError(f"data.train_labels={s.train_labels!r} hold no labelled pixel "
                         f"({_unlabelled_value(s)}); training needs labelled pixels")
    if _labelled(ty, s) == 0:
        raise ValueError(f"the training part of the data.split={mode!r} split holds no labelled pixel (all "
                         f"{total} labelled pixels are in the validation part); label pixels in the training "
                         "images, or give data.val_images and data.val_labels")
    if _labelled(vy, s) > 0:
        return
    if mode == "pixels":
        raise ValueError(f"data.train_labels={s.train_labels!r} hold {total} labelled pixel(s): too few to hold "
                         f"out validation pixels (data.split='pixels', data.val_fraction={s.val_fraction}); label "
                         "more pixels, or give data.val_images and data.val_labels")
    where = f"data.val_labels={s.val_labels!r}" if mode == "files" else "the validation images of the split"
    warnings.warn(f"{where} hold no labelled pixel: val_loss will be 0 every epoch and the best checkpoint is "
                  f"not chosen by validation ({_unlabelled_value(s)})", LabelConventionWarning, stacklevel=3)


def target_normalization(targets: list[np.ndarray]) -> Normalization:
    """Per-channel mean/std of regression targets ``(C, *S)`` over their finite (labelled) pixels."""
    chans = targets[0].shape[0]
    values = [np.concatenate([t[c][np.isfinite(t[c])].ravel() for t in targets]).astype(np.float64)
              for c in range(chans)]
    if any(v.size == 0 for v in values):
        raise ValueError("a regression target channel has no finite (labelled) pixels")
    return Normalization(mean=[float(v.mean()) for v in values], std=[float(v.std()) or 1.0 for v in values])


def _scale_targets(targets, norm: Normalization):
    """``(t - mean) / std`` per channel, keeping NaN (unlabelled) as NaN."""
    mean = np.asarray(norm.mean, np.float32).reshape(-1, *(1,) * (targets[0].ndim - 1))
    std = np.asarray(norm.std, np.float32).reshape(mean.shape)
    return [((t - mean) / std).astype(np.float32) for t in targets]


def bootstrap_block(s: DataSettings, spatial: tuple[int, ...]) -> tuple[int, ...]:
    """The bootstrap's block: the patch, one slice deep when 2D patches come from volumes."""
    block = list(s.patch_shape)
    if len(spatial) == s.spatial_dims + 1:
        block.insert(s.slice_axis, 1)
    return tuple(block)


def build_training_data(s: DataSettings) -> TrainingData:
    """Read, check, split and wrap the data in patch datasets (normalised on the fly).

    For tasks whose targets are label maps or images; point targets: :mod:`mixscale.train.detection`.
    """
    hashes: list[str] = []
    xs, ys = load_pairs(s.train_images, s.train_labels, s, hashes=hashes)
    tx, ty, vx, vy = split_train_val(xs, ys, s)
    check_labelled(ys, ty, vy, s)
    norm = data_normalization(tx, ty)
    target_norm = None
    if s.task.image_targets:  # reconstruction: the target is exactly the normalised input
        target_norm = norm if s.task.targets == "inputs" else target_normalization(ty)
        ty, vy = _scale_targets(ty, target_norm), _scale_targets(vy, target_norm)
    weights = None
    if s.bootstrap:
        ty, weights = block_bootstrap(ty, block_shape=bootstrap_block(s, tx[0].shape[1:]), seed=s.seed,
                                      ignore_index=s.ignore_index)
    sampler = lambda X, Y, frac, w=None: PatchSampler(X, Y, patch_shape=tuple(s.patch_shape),  # noqa: E731
                                                      spatial_dims=s.spatial_dims, ignore_index=s.ignore_index,
                                                      label_fraction=frac, slice_axis=s.slice_axis,
                                                      context_slices=s.context_slices, weights=w)
    aug_kwargs = dict(s.augment)
    if s.task.image_targets and (aug_kwargs["intensity_scale"] or aug_kwargs["intensity_shift"]):
        # rescaling the input but not the target would teach a denoiser wrong intensities
        logger.info("regression: intensity scale/shift augmentation disabled (it would change input only)")
        aug_kwargs.update(intensity_scale=None, intensity_shift=None)
    aug = Augmentation(**aug_kwargs)
    train = PatchDataset(sampler(tx, ty, s.label_fraction, weights), augmentation=aug,
                         samples_per_epoch=s.samples_per_epoch,
                         seed=s.seed, normalization=norm)
    val = PatchDataset(sampler(vx, vy, 1.0), samples_per_epoch=s.val_samples, seed=s.seed + 1,
                       normalization=norm)
    in_channels = tx[0].shape[0] * (2 * s.context_slices + 1)  # 2.5D: context slices are channels
    out_channels = s.num_classes if s.task.targets == "labels" else ty[0].shape[0]
    names = s.class_names or ([f"class_{i}" for i in range(s.num_classes)] if s.num_classes else None)
    splits = subset_count(s) if s.task.targets == "subsets" else 0
    record = norm.to_dict()
    if splits:  # each subset is normalised as the means of subsets were: the same statistics K times
        record = {key: list(values) * splits for key, values in record.items()}
    return TrainingData(train, val, in_channels, out_channels, record,
                        target_norm.to_dict() if target_norm else None, names, hashes, splits=splits)


def subset_count(s: DataSettings) -> int:
    """K of a Noise2Inverse run, from the shapes of its images (opened lazily, nothing read)."""
    shapes = [open_image(ip).shape for ip in addresses(s.train_images) + addresses(s.val_images or [])]
    counts = {shape[subset_axis(s)] for shape in shapes}
    if len(counts) > 1:
        raise ValueError(f"the Noise2Inverse images hold different numbers of subsets {sorted(counts)} on axis "
                         f"{subset_axis(s)}; the training and validation images must hold the same K")
    k = counts.pop()
    if k > 64:
        raise not_allowed("data.train_images", addresses(s.train_images)[0], f"at most 64 subset reconstructions on "
                          f"axis {subset_axis(s)} for task 'noise2inverse' (it holds {k}: is that axis the subsets?)")
    return k
