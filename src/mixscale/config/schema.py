"""The training configuration: pydantic schemas only (nothing here executes code).

A config is versioned YAML. Unknown keys and wrong types are errors that name the
key. Network arguments are not repeated here: they are checked against the
network's constructor, the single source of its defaults.
"""

from __future__ import annotations

from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..tasks import TASKS, get_task

CONFIG_VERSION = 1
Paths = Union[str, list[str]]
#: the losses for class scores and for image targets (together :func:`mixscale.losses.list_losses`; a test checks)
CLASS_LOSSES = ("ce", "dice", "focal", "tversky")
IMAGE_LOSSES = ("l1", "mse")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(_Strict):
    """Mirrors :class:`mixscale.data.Augmentation` (a test checks the defaults agree)."""

    dihedral: bool = True
    intensity_scale: tuple[float, float] | None = (0.9, 1.1)
    intensity_shift: tuple[float, float] | None = (-0.1, 0.1)
    noise_std: float = Field(0.0, ge=0)


class PointSamplingConfig(_Strict):
    """Task 'detection': how patches are drawn around points.

    Mirrors :class:`mixscale.data.PointPatchDataset` (a test checks the defaults agree).
    """

    background_per_point: float = Field(1.0, ge=0)  # random background patches per object point, per pass
    min_background_distance: float = Field(4.0, ge=0)  # pixels between a background centre and every object
    jitter: int = Field(0, ge=0)  # shift point patches by up to this many pixels per axis
    class_balance: bool = True  # repeat rarer classes (and top up background) to the largest class count


class DataConfig(_Strict):
    """Where the images and labels (or points) are, and how patches are drawn from them."""

    train_images: Paths
    train_labels: Paths | None = None  # required except for tasks 'reconstruction' and 'detection'
    val_images: Paths | None = None
    val_labels: Paths | None = None
    # task 'detection': one CSV per image (same order), header y,x (2D) or z,y,x (3D) and class
    train_points: Paths | None = None
    val_points: Paths | None = None
    point_sampling: PointSamplingConfig = Field(default_factory=PointSamplingConfig)
    # auto: images for 3+ images, else pixels (detection: else region); 'region' (detection only): the last
    # val_fraction of each image along its longest axis becomes a separate validation image
    split: Literal["auto", "images", "pixels", "region"] = "auto"
    val_fraction: float = Field(0.2, gt=0, lt=1)
    label_convention: Literal["dense", "scribble"] = "dense"
    num_classes: int | None = Field(None, ge=2)
    class_names: list[str] | None = None
    ignore_index: int = -1
    channel_axis: int | None = None
    spatial_dims: Literal[2, 3] = 2
    patch_shape: list[int] = Field(default_factory=lambda: [128, 128])  # larger than an image: padded (a warning)
    slice_axis: int = Field(0, ge=0, le=2)  # 2D nets on volumes: patches are slices along this axis
    context_slices: int = Field(0, ge=0)  # 2.5D: k neighbouring slices on each side become channels (k < slices)
    # detection: rounded up to whole passes over the points (each pass: every point once, fresh background)
    samples_per_epoch: int = Field(256, ge=1)
    val_samples: int = Field(64, ge=1)
    batch_size: int = Field(8, ge=1)
    num_workers: int = Field(0, ge=0)
    label_fraction: float = Field(0.9, ge=0, le=1)
    # train on a block bootstrap of the labelled training data (blocks = patches), drawn by the run's seed
    bootstrap: bool = False
    # leave the images on disk and keep only the labelled planes of the label volumes (segmentation of
    # volumes): true, false, or auto (volumes, when one of them holds more than 1 GiB)
    lazy: bool | Literal["auto"] = "auto"
    augment: AugmentConfig = Field(default_factory=AugmentConfig)

    @model_validator(mode="after")
    def _check_shapes(self):
        if len(self.patch_shape) != self.spatial_dims or min(self.patch_shape) < 1:
            raise ValueError(f"patch_shape={self.patch_shape} must have spatial_dims={self.spatial_dims} "
                             "positive entries")
        if self.val_labels is not None and self.val_images is None:
            raise ValueError("val_labels needs val_images")
        if self.class_names is not None and self.num_classes is not None and len(self.class_names) != self.num_classes:
            raise ValueError(f"class_names has {len(self.class_names)} entries but num_classes={self.num_classes}")
        return self


class NetConfig(BaseModel):
    """``name`` plus the network's constructor arguments (checked against its signature)."""

    model_config = ConfigDict(extra="allow")
    name: str = "msd"

    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class OptimConfig(_Strict):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0)


class ScheduleConfig(_Strict):
    name: Literal["none", "cosine", "step", "plateau"] = "none"
    step_size: int = Field(30, ge=1)
    gamma: float = Field(0.1, gt=0)
    patience: int = Field(10, ge=0)
    min_lr: float = Field(0.0, ge=0)


class TrainerConfig(_Strict):
    """Passed through to ``lightning.Trainer``."""

    max_epochs: int = Field(50, ge=1)
    max_time: str | None = Field(None, pattern=r"^\d{2}:\d{2}:\d{2}:\d{2}$", description="DD:HH:MM:SS budget")
    precision: Literal["32-true", "16-mixed", "bf16-mixed", "64-true"] = "32-true"
    gradient_clip_val: float | None = Field(None, gt=0)
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    early_stopping_patience: int | None = Field(None, ge=1)
    accelerator: str = "auto"
    devices: Union[int, str, list[int]] = 1  # "auto" would silently start DDP on every GPU of a workstation
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    log_every_n_steps: int = Field(10, ge=1)
    deterministic: bool = False
    progress_bar: bool = True


class EnsembleConfig(_Strict):
    """Train several members and combine them into one ensemble file (``run_dir/ensemble.safetensors``)."""

    members: int = Field(1, ge=1)  # 1: a single model; N: members differing by seed (and graph for smsnet/random_unet)
    bootstrap: bool = False  # each member also trains on its own block bootstrap of the labelled data


class TrainConfig(_Strict):
    """A whole training run."""

    version: Literal[1] = CONFIG_VERSION
    task: Literal[tuple(TASKS)] = "segmentation"  # the rows of mixscale.tasks
    run_dir: str
    seed: int = 0
    data: DataConfig
    net: NetConfig = Field(default_factory=NetConfig)
    loss: Union[str, dict[str, float], None] = None
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    ensemble: EnsembleConfig = Field(default_factory=EnsembleConfig)
    init_from: str | None = None  # a model file of the same network: training starts from its weights

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, v):
        if v != CONFIG_VERSION:
            raise ValueError(f"config version {v!r} is not supported; this mixscale reads version {CONFIG_VERSION}")
        return v

    @field_validator("loss")
    @classmethod
    def _loss_fits_task(cls, v, info):
        task = info.data.get("task")  # validated before 'loss'; absent when it is itself invalid
        if v is None or task is None:
            return v
        allowed = CLASS_LOSSES if get_task(task).classes else IMAGE_LOSSES
        if not v or any(name not in allowed for name in ([v] if isinstance(v, str) else v)):
            raise ValueError(f"loss={v!r} is not allowed for task {task!r}; expected one of {list(allowed)} "
                             "or a mapping {name: weight} of them")
        return v

    @model_validator(mode="before")
    @classmethod
    def _detection_net(cls, raw):
        # a detector is a patch classifier: that is the default network of task 'detection'
        if isinstance(raw, dict) and raw.get("task") == "detection":
            net = raw.get("net")
            if net is None or (isinstance(net, dict) and "name" not in net):
                raw = {**raw, "net": {**(net or {}), "name": "classifier"}}
        return raw

    @model_validator(mode="after")
    def _task_needs(self):
        task, d = get_task(self.task), self.data
        if task.targets == "labels" and d.num_classes is None:
            raise ValueError(f"data.num_classes is required for task {self.task!r}")
        if task.targets == "points":
            return self._detection_needs()
        if d.train_points is not None or d.val_points is not None:
            raise ValueError(f"data.train_points/val_points are for task 'detection', not {self.task!r}")
        self._check_split()
        if task.target_key is None:  # an autoencoder learns to give back its input
            if d.train_labels is not None or d.val_labels is not None:
                raise ValueError(f"task {self.task!r} uses the images as targets: remove data.train_labels "
                                 "and data.val_labels")
        elif d.train_labels is None:
            raise ValueError(f"data.train_labels is required for task {self.task!r}")
        elif (d.val_images is None) != (d.val_labels is None):
            raise ValueError("val_images and val_labels must be given together")
        return self

    def _detection_needs(self):
        d = self.data
        if d.bootstrap or self.ensemble.bootstrap:
            raise ValueError("data.bootstrap and ensemble.bootstrap resample blocks of label maps or image "
                             "targets; task 'detection' learns from points (members differ by seed)")
        if d.train_points is None:
            raise ValueError("data.train_points is required for task 'detection' (one CSV of points per image)")
        if d.train_labels is not None or d.val_labels is not None:
            raise ValueError("task 'detection' learns from points: use data.train_points (and val_points) "
                             "instead of data.train_labels (and val_labels)")
        if (d.val_images is None) != (d.val_points is None):
            raise ValueError("val_images and val_points must be given together")
        self._check_split()
        if d.context_slices:
            raise ValueError("task 'detection' does not take data.context_slices")
        return self

    def _check_split(self) -> None:
        split, task = self.data.split, get_task(self.task)
        if split in task.splits:
            return
        why = {"pixels": f"task {self.task!r} cannot hold out pixels",
               "region": "data.split='region' is for task 'detection'"}.get(split, f"data.split={split!r}")
        raise ValueError(f"{why}; data.split must be one of {list(task.splits)} for task {self.task!r}")

    def loss_spec(self) -> str | dict[str, float]:
        """The loss: the config's, else the task's default (cross-entropy for class tasks, MSE for images)."""
        if self.loss is not None:
            return self.loss
        return get_task(self.task).default_loss
