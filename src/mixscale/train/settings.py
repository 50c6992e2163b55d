"""What the data readers of training need, as plain values: the builder fills it from the config.

Only :mod:`mixscale.train.builder` (and :mod:`mixscale.api`) read the training
configuration; the rest of ``train/`` takes these settings, so that a GUI, a
search or a test can drive it without a config file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..tasks import Task


@dataclass(frozen=True)
class DataSettings:
    """The ``data`` section of a config plus the task and seed; no defaults here (the schema has them).

    The fields are the :class:`~mixscale.config.DataConfig` keys (``augment`` and
    ``point_sampling`` as plain dicts), plus ``task`` (a row of the task table)
    and ``seed``.
    """

    task: Task
    seed: int
    train_images: str | list[str]
    train_labels: str | list[str] | None
    val_images: str | list[str] | None
    val_labels: str | list[str] | None
    train_points: str | list[str] | None
    val_points: str | list[str] | None
    point_sampling: dict
    split: str
    val_fraction: float
    label_convention: str
    num_classes: int | None
    class_names: list[str] | None
    ignore_index: int
    channel_axis: int | None
    spatial_dims: int
    patch_shape: list[int]
    slice_axis: int
    context_slices: int
    samples_per_epoch: int
    val_samples: int
    batch_size: int
    num_workers: int
    label_fraction: float
    bootstrap: bool
    lazy: bool | str
    augment: dict


@dataclass
class TrainingData:
    """Datasets plus what the model file must remember about the data."""

    train: object  # a torch Dataset of (x, y) pairs
    val: object
    in_channels: int
    out_channels: int
    normalization: dict
    target_normalization: dict | None
    class_names: list[str] | None
    image_sha256: list[str] = field(default_factory=list)  # of each training image array, as read
    splits: int = 0  # Noise2Inverse: subset reconstructions per input image (0: none)


def addresses(value) -> list[str]:
    """One address or a list of them -> a list."""
    return [value] if isinstance(value, str) else list(value)


def to_channels_first(array: np.ndarray, *, channel_axis: int | None) -> np.ndarray:
    """``(*S)`` or an array with a channel axis -> ``(C, *S)``."""
    if channel_axis is None:
        return array[None]
    if not -array.ndim <= channel_axis < array.ndim:
        raise ValueError(f"channel_axis={channel_axis} is out of range for an array of shape {array.shape}")
    return np.moveaxis(array, channel_axis, 0)


@dataclass
class TrainingRun:
    """A run ready to fit: everything :func:`mixscale.train.fit` needs, built by
    :func:`mixscale.train.builder.build_run` (or by hand, without a config).

    Attributes
    ----------
    run_dir : Path
    resume : bool
        Continue from ``run_dir/checkpoints/last.ckpt``.
    data : TrainingData
    module : MixscaleModule
    trainer : dict
        Keyword arguments of ``lightning.Trainer`` (no callbacks, logger or root dir).
    early_stopping_patience : int or None
    monitor_lr : bool
        Log the learning rate each epoch (a schedule is set).
    batch_size, num_workers : int
        Of the data loaders.
    config_yaml : str
        The resolved config, saved as ``run_dir/config.yaml``.
    model_record : dict
        What the model file records besides the network: ``net_name``, ``task``,
        ``context_slices``, ``slice_axis``, ``train_config``.
    """

    run_dir: Path
    resume: bool
    data: TrainingData
    module: object
    trainer: dict
    early_stopping_patience: int | None
    monitor_lr: bool
    batch_size: int
    num_workers: int
    config_yaml: str
    model_record: dict
