"""One training run, top to bottom: trainer, run directory, Lightning fit, model file.

:func:`fit` takes a :class:`~mixscale.train.settings.TrainingRun` (built from a
config by :func:`mixscale.train.builder.build_run`) and extra Lightning callbacks:
a GUI's progress and stop button, a search's pruning.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from .._lock import held
from ..data import atomic_path
from ..model import ModelInfo, save_model
from .builder import LOCK_NAME, check_run_dir, is_secondary_process
from .checkpoints import EpochShuffle, MetricsHistory, checkpoint_io, newest_intact_checkpoint
from .progress import PlainProgress, display_options
from .settings import TrainingRun

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


def prepare_run_dir(run: TrainingRun) -> Path:
    """Create the run directory and save the resolved config in it."""
    if is_secondary_process():
        return run.run_dir
    run.run_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(run.run_dir / ("config.resumed.yaml" if run.resume else "config.yaml")) as tmp:
        tmp.write_text(run.config_yaml)
    return run.run_dir


def build_trainer(run: TrainingRun, callbacks: Sequence = ()):
    """A Lightning Trainer with checkpoints (best on val_loss, last; written through a temporary name),
    CSV log, early stopping, ``callbacks``."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    ckpt = ModelCheckpoint(dirpath=run.run_dir / "checkpoints", filename="best", monitor="val_loss", mode="min",
                           save_top_k=1, enable_version_counter=False)
    # Lightning's save_last only refreshes when the best improves; resume needs every epoch
    last = ModelCheckpoint(dirpath=run.run_dir / "checkpoints", filename="last", save_top_k=1,
                           enable_version_counter=False)
    extra = [ckpt, last]
    if run.early_stopping_patience:
        extra.append(EarlyStopping(monitor="val_loss", mode="min", patience=run.early_stopping_patience))
    if run.monitor_lr:
        extra.append(LearningRateMonitor(logging_interval="epoch"))
    display = display_options(progress_bar=run.trainer.get("enable_progress_bar", True))
    trainer = L.Trainer(default_root_dir=run.run_dir, logger=CSVLogger(save_dir=run.run_dir, name="", version="logs"),
                        callbacks=[*extra, PlainProgress(), *callbacks], enable_model_summary=False,
                        plugins=[checkpoint_io()], **{**run.trainer, **display})
    return trainer, ckpt


@contextlib.contextmanager
def run_lock(run: TrainingRun):
    """Hold ``run_dir/run.lock`` for the run (rank 0 only): a second run on the same directory is refused."""
    if is_secondary_process():
        yield
        return
    run.run_dir.mkdir(parents=True, exist_ok=True)
    with held(run.run_dir / LOCK_NAME, "resuming training" if run.resume else "training"):
        check_run_dir(run.run_dir, resume=run.resume, locked=True)  # again: another run may have finished meanwhile
        yield


def fit(run: TrainingRun, *, callbacks: Sequence = ()) -> RunResult:
    """Train ``run`` and write its run directory.

    Writes ``config.yaml``, ``checkpoints/{best,last}.ckpt``, ``logs/metrics.csv`` and
    ``model.safetensors`` (the best-on-validation weights) under ``run.run_dir``,
    holding ``run.lock`` meanwhile. A resumed run continues from the newest intact
    checkpoint and keeps the metrics rows logged before it.

    Parameters
    ----------
    run : TrainingRun
    callbacks : sequence of lightning.pytorch.Callback
        Added after mixscale's own (checkpoints, early stopping, learning-rate log).
    """
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        trainer, ckpt = build_trainer(run, callbacks)
    except MisconfigurationException as exc:
        raise ValueError(f"trainer settings: {exc}") from None
    run.module.model_info = model_info(run)  # plain data: a callback can build a live Model from the module
    with run_lock(run):
        prepare_run_dir(run)
        start = newest_intact_checkpoint(run.run_dir) if run.resume else None
        history = MetricsHistory(run.run_dir / "logs")
        if run.resume and trainer.is_global_zero:
            history.keep()
        try:
            trainer.fit(run.module, _loader(run, run.data.train, train=True), _loader(run, run.data.val, train=False),
                        ckpt_path=str(start) if start else None)
        finally:  # Lightning's CSV logger restarts the file on resume: the earlier epochs go back in front
            if trainer.is_global_zero:
                history.merge()
        best = Path(ckpt.best_model_path) if ckpt.best_model_path else None
        model_path = run.run_dir / "model.safetensors"
        if trainer.is_global_zero:
            _write_model_file(run, best, model_path)
    best_score = float(ckpt.best_model_score) if ckpt.best_model_score is not None else None
    return RunResult(run.run_dir, model_path, best, run.run_dir / "checkpoints" / "last.ckpt",
                     history.current, best_score, trainer.current_epoch)


def _loader(run: TrainingRun, dataset, *, train: bool):
    """Training items in an order drawn from (seed, epoch), so a resumed run sees what an uninterrupted one
    would; validation items in order."""
    from torch.utils.data import DataLoader

    sampler = EpochShuffle(len(dataset), getattr(dataset, "seed", 0)) if train else None
    return DataLoader(dataset, batch_size=run.batch_size, sampler=sampler, shuffle=False,
                      num_workers=run.num_workers, persistent_workers=run.num_workers > 0)


def _write_model_file(run: TrainingRun, best: Path | None, path: Path) -> None:
    """Save the best-on-validation weights (a copy from the best checkpoint, not the live ones)."""
    module = run.module
    if best is not None and best.is_file():
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    else:
        logger.warning("no best checkpoint (no validation ran?): the model file holds the last weights")
    save_model(path, module.net, model_info(run))


def model_info(run: TrainingRun) -> ModelInfo:
    """What the run's model file will record: the network's config, classes, normalisation, the run's facts."""
    data = run.data
    return ModelInfo(net_config=run.module.net.config(), class_names=data.class_names,
                     normalization=data.normalization, target_normalization=data.target_normalization,
                     **run.model_record)
