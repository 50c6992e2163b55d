"""The one reader of the training configuration: config -> a :class:`TrainingRun` ready to fit.

Everything that can be checked (data, network, loss, trainer settings) is
checked here, before :func:`mixscale.train.fit` creates the run directory.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from ..config import TrainConfig, dump_config
from ..config.load import parse_yaml
from ..losses import create_loss
from ..nets import create_net, net_defaults
from ..tasks import get_task
from .data import build_training_data
from .detection import build_detection_data
from .module import MixscaleModule, PatchLoss
from .settings import DataSettings, TrainingData, TrainingRun

logger = logging.getLogger(__name__)

#: the trainer section keys that are not ``lightning.Trainer`` arguments
_NOT_TRAINER_ARGS = ("early_stopping_patience", "progress_bar")


def is_secondary_process() -> bool:
    """True in the extra processes of a distributed run (they share rank 0's run directory)."""
    return any(os.environ.get(k, "0") not in ("", "0") for k in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"))


#: the lock file of a run directory: one writer at a time
LOCK_NAME = "run.lock"
#: config keys a resumed run may change (how long and where it runs); every other key must match
RESUMABLE_CHANGES = ("run_dir", "trainer.max_epochs", "trainer.max_time", "trainer.early_stopping_patience",
                     "trainer.progress_bar", "trainer.log_every_n_steps", "trainer.accelerator", "trainer.devices",
                     "trainer.strategy", "trainer.num_nodes", "data.num_workers")


def check_run_dir(run_dir: Path, *, resume: bool, locked: bool = False) -> Path:
    """Refuse a run directory in use by a live run, and a non-empty one unless resuming (which needs an
    intact checkpoint); ``locked``: this process holds the lock."""
    from .._lock import LockedError, describe, is_stale, read_owner
    from .checkpoints import newest_intact_checkpoint

    if is_secondary_process():
        return run_dir
    holder = None if locked else read_owner(run_dir / LOCK_NAME)
    if holder is not None and not is_stale(holder):
        raise LockedError(f"run directory {run_dir} is in use by {describe(holder)}; wait for it to finish "
                          f"(or, if that process is gone on another host, remove {run_dir / LOCK_NAME})")
    if resume:
        if newest_intact_checkpoint(run_dir) is None:
            raise FileNotFoundError(f"cannot resume: no intact checkpoint in {run_dir / 'checkpoints'}")
    elif run_dir.exists() and any(p.name != LOCK_NAME for p in run_dir.iterdir()):
        raise FileExistsError(f"run directory {run_dir} exists and is not empty; choose another run_dir "
                              "or pass --resume to continue it")
    return run_dir


def _flat(tree, prefix: str = "") -> dict:
    """``{"a": {"b": 1}} -> {"a.b": 1}``."""
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}."))
    return out


def check_resumed_config(run_dir: Path, config_yaml: str) -> None:
    """A resumed run must train what the run directory holds: refuse a config whose network, data, loss
    or optimiser differ from the saved one, naming the keys (before anything is written)."""
    saved_path = run_dir / "config.yaml"
    if not saved_path.is_file():
        raise FileNotFoundError(f"cannot resume: {saved_path} is missing, so the run's settings are unknown")
    saved, new = _flat(parse_yaml(saved_path.read_text())), _flat(parse_yaml(config_yaml))
    changed = sorted(k for k in set(saved) | set(new)
                     if saved.get(k) != new.get(k) and not k.startswith(RESUMABLE_CHANGES))
    if changed:
        detail = "; ".join(f"{k}: {saved.get(k)!r} -> {new.get(k)!r}" for k in changed[:6])
        raise ValueError(f"cannot resume {run_dir} with a different config ({detail}"
                         f"{'; ...' if len(changed) > 6 else ''}); a resumed run may change only "
                         f"{', '.join(RESUMABLE_CHANGES)}: start a new run_dir for other settings")


def data_settings(config: TrainConfig) -> DataSettings:
    """The data section as plain values, with the task's row and the seed."""
    return DataSettings(task=get_task(config.task), seed=config.seed, **config.data.model_dump())


def build_data(config: TrainConfig) -> TrainingData:
    """Training and validation datasets for the config's task."""
    settings = data_settings(config)
    if settings.task.targets == "points":
        return build_detection_data(settings)
    return build_training_data(settings)


def build_net(config: TrainConfig, data: TrainingData) -> torch.nn.Module:
    """The configured network, with channels taken from the data."""
    kwargs = config.net.kwargs()
    kwargs.setdefault("spatial_dims", config.data.spatial_dims)
    kwargs.setdefault("in_channels", data.in_channels)
    kwargs.setdefault("out_channels", data.out_channels)
    for key, value in (("in_channels", data.in_channels), ("out_channels", data.out_channels)):
        if kwargs[key] != value:
            raise ValueError(f"net.{key}={kwargs[key]} does not match the data, which needs {value}")
    if kwargs["spatial_dims"] != config.data.spatial_dims:
        raise ValueError(f"net.spatial_dims={kwargs['spatial_dims']} differs from "
                         f"data.spatial_dims={config.data.spatial_dims}")
    defaults = net_defaults(config.net.name)
    patch = list(config.data.patch_shape)
    # fixed-size nets take whole patches: the autoencoder (image_shape), the patch classifier (patch_shape)
    for key in ("image_shape", "patch_shape"):
        if key in defaults:
            kwargs.setdefault(key, patch)
            if not isinstance(kwargs[key], (list, tuple)) or list(kwargs[key]) != patch:
                raise ValueError(f"net.{key}={kwargs[key]} must equal data.patch_shape={patch}: network "
                                 f"{config.net.name!r} accepts inputs of exactly that size")
    if ("patch_shape" in defaults) != get_task(config.task).per_patch:
        raise ValueError(f"network {config.net.name!r} does not fit task {config.task!r}: task 'detection' "
                         "trains a patch classifier (net.name: classifier), which gives one class per patch; "
                         "the other tasks need a network that maps images to images")
    return create_net(config.net.name, **kwargs)


def warm_start(net: torch.nn.Module, path: str, net_name: str) -> None:
    """Load the weights of the model file ``path`` into ``net``, which must be the same network.

    Raises
    ------
    ValueError
        The file's network (name or settings, channels included) differs from ``net``.
    """
    from ..model import load_model

    if not Path(path).is_file():
        raise ValueError(f"init_from={path!r} is not a file; expected a model file (model.safetensors)")
    other, info = load_model(path)
    ours, theirs = net.config(), other.config()
    if info.net_name != net_name or ours != theirs:
        diff = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        raise ValueError(f"init_from={path!r} holds network {info.net_name!r} with other settings than this run's "
                         f"{net_name!r} (differing: {diff or ['name']}); it can start only the same network")
    net.load_state_dict(other.state_dict())
    logger.info("starting from the weights of %s", path)


def build_module(config: TrainConfig, net: torch.nn.Module) -> MixscaleModule:
    """Loss, optimiser and schedule settings around ``net``."""
    task = get_task(config.task)
    kwargs = {"ignore_index": config.data.ignore_index} if task.classes else {}
    loss = create_loss(config.loss_spec(), **kwargs)
    num_classes = config.data.num_classes
    if task.per_patch:  # (N, K) logits vs (N,) labels; K may come from the points
        loss, num_classes = PatchLoss(loss), net.out_channels
    return MixscaleModule(net, loss, task=config.task, num_classes=num_classes,
                          ignore_index=config.data.ignore_index, optim=config.optim.model_dump(),
                          schedule=config.schedule.model_dump())


def dry_run(module: MixscaleModule, data: TrainingData) -> None:
    """One forward pass and loss on one training patch, so shape errors surface before any file is written."""
    x, y = data.train[0]
    with torch.no_grad():
        module.training_loss(x[None], y[None])


def build_run(config: TrainConfig, *, resume: bool = False) -> TrainingRun:
    """Seed, read and check the data, build the network and module: a run ready for :func:`fit`.

    Nothing is written: a config that cannot train fails here, before the run directory exists.
    """
    import lightning as L

    run_dir = check_run_dir(Path(config.run_dir), resume=resume)
    if resume and not is_secondary_process():
        check_resumed_config(run_dir, dump_config(config))
    L.seed_everything(config.seed, workers=True, verbose=False)
    data = build_data(config)
    net = build_net(config, data)
    if config.init_from is not None and not resume:
        warm_start(net, config.init_from, config.net.name)
    module = build_module(config, net)
    dry_run(module, data)
    t = config.trainer.model_dump()
    trainer = {k: v for k, v in t.items() if k not in _NOT_TRAINER_ARGS}
    trainer["enable_progress_bar"] = t["progress_bar"]
    record = {"net_name": config.net.name, "task": get_task(config.task).model_task,
              "context_slices": config.data.context_slices, "slice_axis": config.data.slice_axis,
              "train_config": config.model_dump(mode="json"), "train_data_sha256": data.image_sha256,
              "splits": data.splits}
    return TrainingRun(run_dir=run_dir, resume=resume, data=data, module=module, trainer=trainer,
                       early_stopping_patience=t["early_stopping_patience"],
                       monitor_lr=config.schedule.name != "none", batch_size=config.data.batch_size,
                       num_workers=config.data.num_workers, config_yaml=dump_config(config), model_record=record)
