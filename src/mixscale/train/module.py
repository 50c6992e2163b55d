"""The LightningModule: a net, a loss, validation metrics, an optimiser. Nothing else."""

from __future__ import annotations

import lightning as L
import torch
from torch import nn

from .._checks import check_choice
from ..metrics import confusion_summary
from ..nets import release_scratch
from ..tasks import get_task

OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
SCHEDULES = ("none", "cosine", "step", "plateau")


class PatchLoss(nn.Module):
    """A pixel-wise loss applied to per-patch outputs: ``(N, K)`` logits vs ``(N,)`` labels.

    The segmentation losses take ``(N, K, *spatial)``; each patch becomes one
    labelled pixel (a 1x1 image), so ``ce`` (the default), ``focal``, class weights
    and ``ignore_index`` all work unchanged.

    Examples
    --------
    >>> from mixscale.losses import CrossEntropyLoss
    >>> loss = PatchLoss(CrossEntropyLoss())
    >>> round(float(loss(torch.zeros(4, 3), torch.tensor([0, 1, 2, 1]))), 4)  # log(3)
    1.0986
    """

    def __init__(self, loss: nn.Module) -> None:
        super().__init__()
        self.loss = loss

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if pred.ndim != 2 or target.shape != pred.shape[:1]:
            raise ValueError(f"a patch loss takes (N, K) logits and (N,) labels, got {tuple(pred.shape)} and "
                             f"{tuple(target.shape)}")
        return self.loss(pred[:, :, None, None], target[:, None, None])


def build_optimizer(params, *, name: str, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    """Adam, AdamW or SGD (with momentum) by name."""
    check_choice("optim.name", name, OPTIMIZERS)
    extra = {"momentum": momentum} if name == "sgd" else {}
    return OPTIMIZERS[name](params, lr=lr, weight_decay=weight_decay, **extra)


def build_scheduler(optimizer, *, name: str, max_epochs: int, step_size: int, gamma: float, patience: int,
                    min_lr: float) -> dict | None:
    """A Lightning ``lr_scheduler`` dict for cosine, step or plateau schedules (``None`` for "none")."""
    check_choice("schedule.name", name, SCHEDULES)
    sched = torch.optim.lr_scheduler
    if name == "none":
        return None
    if name == "cosine":
        return {"scheduler": sched.CosineAnnealingLR(optimizer, T_max=max_epochs, eta_min=min_lr)}
    if name == "step":
        return {"scheduler": sched.StepLR(optimizer, step_size=step_size, gamma=gamma)}
    plateau = sched.ReduceLROnPlateau(optimizer, factor=gamma, patience=patience, min_lr=min_lr)
    return {"scheduler": plateau, "monitor": "val_loss"}  # name == "plateau"


class MixscaleModule(L.LightningModule):
    """Train ``net`` with ``loss``; log ``train_loss``, ``val_loss`` and validation metrics.

    Parameters
    ----------
    net : nn.Module
        ``(N, C_in, *spatial) -> (N, C_out, *spatial)``.
    loss : nn.Module
        ``loss(pred, target)``; it skips unlabelled pixels itself.
    task : str
        A task of :mod:`mixscale.tasks`; class tasks (segmentation, detection) are
        validated with a confusion matrix, image tasks with MSE and MAE.
    num_classes : int or None
        For segmentation and detection metrics (confusion matrix over labelled pixels or patches).
    ignore_index : int
    optim, schedule : dict
        Keyword arguments of :func:`build_optimizer` and :func:`build_scheduler`.

    A net with ``deep_supervision=True`` (UNet 3+) trains on the mean of the loss
    over ``net.deep_outputs(x)`` (all full-size outputs, the main one first);
    validation and prediction use ``net(x)`` only.
    """

    def __init__(self, net: nn.Module, loss: nn.Module, *, task: str, num_classes: int | None,
                 ignore_index: int = -1, optim: dict, schedule: dict) -> None:
        super().__init__()
        self.net, self.loss = net, loss
        self.task, self.num_classes, self.ignore_index = task, num_classes, ignore_index
        self._classes = get_task(task).classes
        self.optim_kwargs, self.schedule_kwargs = optim, schedule
        self._confusion: torch.Tensor | None = None
        self._sq_err = self._abs_err = self._count = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_train_epoch_start(self) -> None:
        # patch datasets draw new patches per epoch; Lightning only tells samplers, so tell the dataset
        dataset = getattr(self.trainer.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(self.current_epoch)

    def training_loss(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The loss of ``net(x)``, or its mean over the deep-supervision outputs."""
        if getattr(self.net, "deep_supervision", False) is True and hasattr(self.net, "deep_outputs"):
            outputs = self.net.deep_outputs(x)
            return torch.stack([self.loss(out, y) for out in outputs]).mean()
        return self.loss(self.net(x), y)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.training_loss(x, y)
        self.log("train_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0],
                 sync_dist=True)
        return loss

    def on_validation_epoch_start(self) -> None:
        if self._classes:
            self._confusion = torch.zeros(self.num_classes, self.num_classes, dtype=torch.long, device=self.device)
        self._sq_err = self._abs_err = self._count = 0.0

    def validation_step(self, batch, batch_idx):
        x, y = batch
        pred = self.net(x)
        loss = self.loss(pred, y)
        self.log("val_loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=x.shape[0],
                 sync_dist=True)
        if self._classes:
            self._accumulate_confusion(pred.argmax(1), y)
        else:
            valid = ~torch.isnan(y)
            diff = (pred - torch.nan_to_num(y))[valid]
            self._sq_err += float((diff**2).sum())
            self._abs_err += float(diff.abs().sum())
            self._count += int(valid.sum())

    def _accumulate_confusion(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        keep = target != self.ignore_index
        idx = target[keep] * self.num_classes + pred[keep]
        self._confusion += torch.bincount(idx, minlength=self.num_classes**2).view(self.num_classes, -1)

    def on_validation_epoch_end(self) -> None:
        if self._classes:
            cm = self.all_gather(self._confusion)
            cm = cm.sum(0) if cm.ndim == 3 else cm
            summary = confusion_summary(cm.cpu().numpy())
            for name in ("f1_macro", "iou_macro", "accuracy", "class_accuracy"):
                self.log(f"val_{name}", summary[name], prog_bar=name == "f1_macro")
        elif self._count:
            self.log("val_mse", self._sq_err / self._count, sync_dist=True)
            self.log("val_mae", self._abs_err / self._count, sync_dist=True)

    def on_fit_end(self) -> None:
        # the lean MS-D keeps its map buffers between steps; training is over, let them go
        release_scratch(self.net)

    def configure_optimizers(self):
        opt = build_optimizer(self.net.parameters(), **self.optim_kwargs)
        sched = build_scheduler(opt, max_epochs=self.trainer.max_epochs, **self.schedule_kwargs)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}
