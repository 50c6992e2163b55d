"""One training run, top to bottom: data, net, loss, Lightning trainer, model file."""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import TrainConfig, dump_config
from ..losses import create_loss
from ..modelfile import ModelInfo, save_model
from ..nets import create_net, net_defaults
from .data import TrainingData, build_training_data
from .module import CLASS_TASKS, MixscaleModule, PatchLoss

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """Where a finished run put its files, and its best validation loss."""

    run_dir: Path
    model_path: Path
    best_checkpoint: Path | None
    last_checkpoint: Path
    metrics_csv: Path
    best_val_loss: float | None
    epochs: int


def is_secondary_process() -> bool:
    """True in the extra processes of a distributed run (they share rank 0's run directory)."""
    return any(os.environ.get(k, "0") not in ("", "0") for k in ("LOCAL_RANK", "NODE_RANK", "RANK", "SLURM_PROCID"))


def check_run_dir(config: TrainConfig, *, resume: bool) -> Path:
    """Refuse to reuse a non-empty run directory unless resuming (which needs a last checkpoint)."""
    run_dir = Path(config.run_dir)
    if is_secondary_process():
        return run_dir
    last = run_dir / "checkpoints" / "last.ckpt"
    if resume:
        if not last.is_file():
            raise FileNotFoundError(f"cannot resume: no checkpoint at {last}")
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"run directory {run_dir} exists and is not empty; choose another run_dir "
                              "or pass --resume to continue it")
    return run_dir


def prepare_run_dir(config: TrainConfig, *, resume: bool) -> Path:
    """Create the run directory and save the resolved config in it."""
    run_dir = check_run_dir(config, resume=resume)
    if is_secondary_process():
        return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    name = "config.resumed.yaml" if resume else "config.yaml"
    tmp = run_dir / f".{name}.tmp"
    tmp.write_text(dump_config(config))
    os.replace(tmp, run_dir / name)
    return run_dir


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
    per_patch = "patch_shape" in defaults
    if per_patch != (config.task == "detection"):
        raise ValueError(f"network {config.net.name!r} does not fit task {config.task!r}: task 'detection' "
                         "trains a patch classifier (net.name: classifier), which gives one class per patch; "
                         "the other tasks need a network that maps images to images")
    return create_net(config.net.name, **kwargs)


def build_trainer(config: TrainConfig, run_dir: Path):
    """A Lightning Trainer with checkpoints (best on val_loss, last), CSV log, early stopping."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    t = config.trainer
    ckpt = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val_loss", mode="min",
                           save_top_k=1, enable_version_counter=False)
    # Lightning's save_last only refreshes when the best improves; resume needs every epoch
    last = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="last", save_top_k=1,
                           enable_version_counter=False)
    callbacks = [ckpt, last]
    if t.early_stopping_patience:
        callbacks.append(EarlyStopping(monitor="val_loss", mode="min", patience=t.early_stopping_patience))
    if config.schedule.name != "none":
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    return L.Trainer(
        default_root_dir=run_dir, max_epochs=t.max_epochs, max_time=t.max_time, precision=t.precision,
        gradient_clip_val=t.gradient_clip_val, gradient_clip_algorithm=t.gradient_clip_algorithm,
        accelerator=t.accelerator, devices=t.devices, strategy=t.strategy, num_nodes=t.num_nodes,
        logger=CSVLogger(save_dir=run_dir, name="", version="logs"), callbacks=callbacks,
        log_every_n_steps=t.log_every_n_steps, deterministic=t.deterministic,
        enable_progress_bar=t.progress_bar, enable_model_summary=False,
    ), ckpt


def build_module(config: TrainConfig, net: torch.nn.Module) -> MixscaleModule:
    """Loss, optimiser and schedule settings around ``net``."""
    kwargs = {"ignore_index": config.data.ignore_index} if config.task in CLASS_TASKS else {}
    loss = create_loss(config.loss_spec(), **kwargs)
    num_classes = config.data.num_classes
    if config.task == "detection":  # (N, K) logits vs (N,) labels; K may come from the points
        loss, num_classes = PatchLoss(loss), net.out_channels
    return MixscaleModule(net, loss, task=config.task, num_classes=num_classes,
                          ignore_index=config.data.ignore_index, optim=config.optim.model_dump(),
                          schedule=config.schedule.model_dump())


def dry_run(module: MixscaleModule, data: TrainingData) -> None:
    """One forward pass and loss on one training patch, so shape errors surface before any file is written."""
    x, y = data.train[0]
    with torch.no_grad():
        module.training_loss(x[None], y[None])


def fit(config: TrainConfig, *, resume: bool = False) -> RunResult:
    """Train as ``config`` says and write the run directory.

    Writes ``config.yaml``, ``checkpoints/{best,last}.ckpt``, ``logs/metrics.csv`` and
    ``model.safetensors`` (the best-on-validation weights) under ``config.run_dir``.
    Everything that can be checked (data, network, loss, trainer settings) is checked
    before the run directory is created.
    """
    import lightning as L
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from torch.utils.data import DataLoader

    run_dir = check_run_dir(config, resume=resume)
    L.seed_everything(config.seed, workers=True, verbose=False)
    data = build_training_data(config)
    module = build_module(config, build_net(config, data))
    dry_run(module, data)
    try:
        trainer, ckpt = build_trainer(config, run_dir)
    except MisconfigurationException as exc:
        raise ValueError(f"trainer settings: {exc}") from None
    prepare_run_dir(config, resume=resume)
    d = config.data
    loader = lambda ds, shuffle: DataLoader(ds, batch_size=d.batch_size, shuffle=shuffle,  # noqa: E731
                                            num_workers=d.num_workers, persistent_workers=d.num_workers > 0)
    last = run_dir / "checkpoints" / "last.ckpt"
    metrics_csv = run_dir / "logs" / "metrics.csv"
    earlier = read_metrics_rows(metrics_csv) if resume else []
    try:
        trainer.fit(module, loader(data.train, True), loader(data.val, False), ckpt_path=str(last) if resume else None)
    finally:  # Lightning's CSV logger restarts the file on resume: keep the earlier epochs even after a crash
        if earlier and trainer.is_global_zero:
            merge_metrics_rows(earlier, metrics_csv)
    best = Path(ckpt.best_model_path) if ckpt.best_model_path else None
    model_path = run_dir / "model.safetensors"
    if trainer.is_global_zero:
        _write_model_file(module, best, data, config, model_path)
    best_score = float(ckpt.best_model_score) if ckpt.best_model_score is not None else None
    return RunResult(run_dir, model_path, best, last, metrics_csv, best_score, trainer.current_epoch)


def read_metrics_rows(path: Path) -> list[dict]:
    """Rows of a metrics CSV (empty if there is none)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def merge_metrics_rows(earlier: list[dict], path: Path) -> None:
    """Put the rows logged before a resume back in front of the new ones.

    Lightning's CSV logger starts a fresh file when a run resumes; the epochs
    before the resume point are kept from the old file.
    """
    new = read_metrics_rows(path)
    first_new = min((int(r["epoch"]) for r in new if r.get("epoch")), default=None)
    old = [r for r in earlier if first_new is None or int(r.get("epoch") or 0) < first_new]
    fields = list(dict.fromkeys([k for r in old + new for k in r]))
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(old + new)
    os.replace(tmp, path)


def _write_model_file(module: MixscaleModule, best: Path | None, data: TrainingData, config: TrainConfig,
                      path: Path) -> None:
    """Save the best-on-validation weights (a copy from the best checkpoint, not the live ones)."""
    if best is not None and best.is_file():
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    else:
        logger.warning("no best checkpoint (no validation ran?): the model file holds the last weights")
    info = ModelInfo(
        # a reconstruction model maps images to images like a regression one (outputs de-normalised)
        net_name=config.net.name, net_config=module.net.config(),
        task="regression" if config.task == "reconstruction" else config.task,
        class_names=data.class_names, normalization=data.normalization,
        target_normalization=data.target_normalization, train_config=config.model_dump(mode="json"),
    )
    save_model(path, module.net, info)
