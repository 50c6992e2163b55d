"""One training run, top to bottom: trainer, run directory, Lightning fit, model file.

:func:`fit` takes a :class:`~mixscale.train.settings.TrainingRun` (built from a
config by :func:`mixscale.train.builder.build_run`) and extra Lightning callbacks:
a GUI's progress and stop button, a search's pruning.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..data import atomic_path
from ..model import ModelInfo, save_model
from .builder import is_secondary_process
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
    """A Lightning Trainer with checkpoints (best on val_loss, last), CSV log, early stopping, ``callbacks``."""
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
    trainer = L.Trainer(default_root_dir=run.run_dir, logger=CSVLogger(save_dir=run.run_dir, name="", version="logs"),
                        callbacks=[*extra, *callbacks], enable_model_summary=False, **run.trainer)
    return trainer, ckpt


def fit(run: TrainingRun, *, callbacks: Sequence = ()) -> RunResult:
    """Train ``run`` and write its run directory.

    Writes ``config.yaml``, ``checkpoints/{best,last}.ckpt``, ``logs/metrics.csv`` and
    ``model.safetensors`` (the best-on-validation weights) under ``run.run_dir``.

    Parameters
    ----------
    run : TrainingRun
    callbacks : sequence of lightning.pytorch.Callback
        Added after mixscale's own (checkpoints, early stopping, learning-rate log).
    """
    from lightning.fabric.utilities.exceptions import MisconfigurationException
    from torch.utils.data import DataLoader

    try:
        trainer, ckpt = build_trainer(run, callbacks)
    except MisconfigurationException as exc:
        raise ValueError(f"trainer settings: {exc}") from None
    prepare_run_dir(run)
    loader = lambda ds, shuffle: DataLoader(ds, batch_size=run.batch_size, shuffle=shuffle,  # noqa: E731
                                            num_workers=run.num_workers, persistent_workers=run.num_workers > 0)
    last = run.run_dir / "checkpoints" / "last.ckpt"
    metrics_csv = run.run_dir / "logs" / "metrics.csv"
    earlier = read_metrics_rows(metrics_csv) if run.resume else []
    try:
        trainer.fit(run.module, loader(run.data.train, True), loader(run.data.val, False),
                    ckpt_path=str(last) if run.resume else None)
    finally:  # Lightning's CSV logger restarts the file on resume: keep the earlier epochs even after a crash
        if earlier and trainer.is_global_zero:
            merge_metrics_rows(earlier, metrics_csv)
    best = Path(ckpt.best_model_path) if ckpt.best_model_path else None
    model_path = run.run_dir / "model.safetensors"
    if trainer.is_global_zero:
        _write_model_file(run, best, model_path)
    best_score = float(ckpt.best_model_score) if ckpt.best_model_score is not None else None
    return RunResult(run.run_dir, model_path, best, last, metrics_csv, best_score, trainer.current_epoch)


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
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(old + new)


def _write_model_file(run: TrainingRun, best: Path | None, path: Path) -> None:
    """Save the best-on-validation weights (a copy from the best checkpoint, not the live ones)."""
    module, data = run.module, run.data
    if best is not None and best.is_file():
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    else:
        logger.warning("no best checkpoint (no validation ran?): the model file holds the last weights")
    info = ModelInfo(net_config=module.net.config(), class_names=data.class_names, normalization=data.normalization,
                     target_normalization=data.target_normalization, **run.model_record)
    save_model(path, module.net, info)
