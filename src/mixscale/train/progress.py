"""How training shows its progress: a bar on a terminal, one plain log line per epoch elsewhere.

A progress bar redraws itself with carriage returns; in a log file, a pipe or a
batch system's output it becomes one long line per epoch full of half-drawn bars.
:func:`display_options` gives the Lightning Trainer a bar only where a person
watches a terminal, and :class:`PlainProgress` writes one line per epoch through
:mod:`logging` whenever no bar is shown::

    epoch 3/50: 12 steps (36 in all), train_loss 0.4121, val_loss 0.3987, val_f1_macro 0.8123, 2.1 s

Wiring (in :func:`mixscale.train.fit.build_trainer`)::

    L.Trainer(..., callbacks=[..., PlainProgress()], **{**run.trainer, **display_options(
        progress_bar=run.trainer.get("enable_progress_bar", True))})
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

from lightning.pytorch.callbacks import Callback

logger = logging.getLogger(__name__)


def is_terminal(stream: Any) -> bool:
    """Whether ``stream`` is an interactive terminal (a closed or odd stream counts as not one)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def display_options(stream: TextIO | None = None, *, progress_bar: bool = True) -> dict:
    """Lightning ``Trainer`` keyword arguments for showing progress on ``stream``.

    Parameters
    ----------
    stream : file-like, optional
        Where a person would watch the run; default ``sys.stderr`` (read at call time).
        Lightning's bar draws on ``sys.stdout``, so it is shown only when both are terminals.
    progress_bar : bool
        The config's ``trainer.progress_bar``: ``False`` never shows a bar.

    Returns
    -------
    dict
        ``enable_progress_bar``: a bar only on a terminal.

    Examples
    --------
    >>> import io
    >>> display_options(io.StringIO())
    {'enable_progress_bar': False}
    """
    stream = sys.stderr if stream is None else stream
    on_terminal = is_terminal(stream) and is_terminal(sys.stdout)
    return {"enable_progress_bar": bool(progress_bar) and on_terminal}


def epoch_line(epoch: int, max_epochs: int | None, steps: int, total_steps: int, metrics: dict,
               seconds: float) -> str:
    """The plain line of one epoch: epoch (1-based), steps, the metrics a bar would show, and seconds.

    Examples
    --------
    >>> epoch_line(0, 2, 4, 4, {"train_loss": 0.69, "val_loss": 0.7}, 1.25)
    'epoch 1/2: 4 steps (4 in all), train_loss 0.6900, val_loss 0.7000, 1.2 s'
    """
    of = f"/{max_epochs}" if max_epochs and max_epochs > 0 else ""
    shown = "".join(f"{k} {v:.4f}, " for k, v in metrics.items())
    return f"epoch {epoch + 1}{of}: {steps} steps ({total_steps} in all), {shown}{seconds:.1f} s"


def _scalars(metrics: dict, keys) -> dict[str, float]:
    """The entries ``keys`` of ``metrics`` that are numbers (or one-element tensors), as floats."""
    out = {}
    for key in keys:
        value = metrics.get(key)
        try:
            out[key] = float(value)
        except (TypeError, ValueError, RuntimeError):  # RuntimeError: a tensor of several elements
            continue
    return out


def _ordered(keys) -> list[str]:
    first = [k for k in ("train_loss", "val_loss") if k in keys]
    return first + sorted(k for k in keys if k not in first)


class PlainProgress(Callback):
    """One log line per training epoch when no progress bar is shown (on rank 0 only).

    The line (:func:`epoch_line`) holds the epoch, its optimizer steps, the metrics
    logged with ``prog_bar=True`` (``train_loss``, ``val_loss``, ``val_f1_macro`` ...)
    and the epoch's seconds, logged at INFO on ``mixscale.train.progress``. While
    Lightning shows a bar (:func:`display_options` on a terminal) it stays silent, so
    it can always be among the callbacks.
    """

    def __init__(self) -> None:
        super().__init__()
        self._start, self._first_step = time.perf_counter(), 0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._start, self._first_step = time.perf_counter(), trainer.global_step

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.progress_bar_callback is not None or not trainer.is_global_zero:
            return
        metrics = trainer.progress_bar_metrics
        shown = _scalars(metrics, _ordered([k for k in metrics if k != "v_num"]))
        logger.info("%s", epoch_line(trainer.current_epoch, trainer.max_epochs,
                                     trainer.global_step - self._first_step, trainer.global_step, shown,
                                     time.perf_counter() - self._start))
