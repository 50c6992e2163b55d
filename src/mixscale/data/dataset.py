"""PyTorch datasets over patch samplers and whole images."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from .._checks import check_int
from .augment import Augmentation
from .normalize import Normalization, normalize
from .patches import PatchSampler

__all__ = ["PatchDataset", "WholeImageDataset"]


def _expand_norm(norm: Normalization | None, channels: int) -> Normalization | None:
    """Repeat per-channel statistics for 2.5D context slices (channel-major order)."""
    if norm is None or norm.num_channels == channels:
        return norm
    if channels % norm.num_channels:
        raise ValueError(
            f"normalization describes {norm.num_channels} channel(s) but the images have {channels}"
        )
    reps = channels // norm.num_channels
    return Normalization(mean=list(np.repeat(norm.mean, reps)), std=list(np.repeat(norm.std, reps)))


def _label_tensor(label: np.ndarray) -> torch.Tensor:
    if np.issubdtype(label.dtype, np.floating):
        return torch.from_numpy(np.ascontiguousarray(label, dtype=np.float32))
    return torch.from_numpy(np.ascontiguousarray(label, dtype=np.int64))


class PatchDataset(Dataset):
    """A fixed number of random patches per epoch, reproducible with any number of workers.

    Item ``i`` of epoch ``e`` is drawn with ``np.random.default_rng([seed, e, i])``,
    so it does not depend on which worker draws it or in what order. The epoch
    counter lives in shared memory: :meth:`set_epoch` reaches data-loader
    workers, persistent ones included.

    Parameters
    ----------
    sampler : PatchSampler
    augmentation : Augmentation, optional
        Applied after normalisation.
    samples_per_epoch : int
        Length of the dataset.
    seed : int
        Base seed.
    normalization : Normalization, optional
        Applied to every image patch (statistics are repeated for 2.5D context
        channels).

    Notes
    -----
    Each item is ``(x, y)``: ``x`` a float32 Tensor (C, *patch_shape), ``y`` an
    int64 Tensor (*patch_shape), or float32 (C_out, *patch_shape) for regression.
    """

    def __init__(self, sampler: PatchSampler, *, augmentation: Augmentation | None = None,
                 samples_per_epoch: int = 1000, seed: int = 0,
                 normalization: Normalization | None = None):
        if not isinstance(sampler, PatchSampler):
            raise TypeError(f"sampler must be a PatchSampler, got {type(sampler).__name__}")
        if augmentation is not None and not callable(augmentation):
            raise TypeError(f"augmentation must be callable or None, got {augmentation!r}")
        samples_per_epoch = check_int("samples_per_epoch", samples_per_epoch, minimum=1)
        seed = check_int("seed", seed, minimum=0)
        if normalization is not None and not isinstance(normalization, Normalization):
            raise TypeError(f"normalization must be a Normalization or None, got {type(normalization).__name__}")
        self.sampler = sampler
        self.augmentation = augmentation
        self.samples_per_epoch = samples_per_epoch
        self.seed = seed
        self.normalization = _expand_norm(normalization, sampler.in_channels)
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        """Current epoch (set with :meth:`set_epoch`)."""
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose patches are drawn next."""
        self._epoch.fill_(check_int("epoch", epoch, minimum=0))

    def __len__(self) -> int:
        return self.samples_per_epoch

    def __getitem__(self, index: int):
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} is out of range for {len(self)} samples per epoch")
        index = int(index) % len(self)
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image, label = self.sampler.sample(rng)
        if self.normalization is not None:
            image = normalize(image, self.normalization, channel_axis=0)
        if self.augmentation is not None:
            image, label = self.augmentation(image, label, rng)
        return torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)), _label_tensor(label)


class WholeImageDataset(Dataset):
    """Whole images and their labels as tensors (validation on small images).

    Parameters
    ----------
    images : list of array-like, each (C, *S)
    labels : list of arrays, each (*S) int or (C_out, *S) float
    normalization : Normalization, optional

    Notes
    -----
    Each item is ``(x, y)``: ``x`` a float32 Tensor (C, *S), ``y`` an int64
    Tensor (*S), or float32 (C_out, *S) for regression.
    """

    def __init__(self, images, labels, *, normalization: Normalization | None = None):
        images, labels = list(images), list(labels)
        if not images or len(images) != len(labels):
            raise ValueError(
                f"images and labels must be non-empty lists of equal length, got {len(images)} and {len(labels)}"
            )
        for i, (im, lab) in enumerate(zip(images, labels)):
            spatial = tuple(im.shape[1:])
            lab_spatial = tuple(np.shape(lab))[-len(spatial):] if spatial else ()
            if len(im.shape) not in (3, 4) or lab_spatial != spatial:
                raise ValueError(
                    f"images[{i}] must be (C, *S) with 2 or 3 spatial axes and labels[{i}] must match "
                    f"its spatial shape; got {tuple(im.shape)} and {tuple(np.shape(lab))}"
                )
        if normalization is not None and not isinstance(normalization, Normalization):
            raise TypeError(f"normalization must be a Normalization or None, got {type(normalization).__name__}")
        self.images, self.labels, self.normalization = images, labels, normalization

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        image = np.asarray(self.images[index][...], dtype=np.float32)
        if self.normalization is not None:
            image = normalize(image, self.normalization, channel_axis=0)
        return torch.from_numpy(np.ascontiguousarray(image)), _label_tensor(np.asarray(self.labels[index]))
