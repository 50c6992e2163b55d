"""Training and block-wise prediction as generators of progress updates, for napari's thread workers.

The pattern (as in CAREamics): the job runs in its own thread; a Lightning callback (or the block
driver's ``on_block``) puts small update dicts on a queue; the generator yields them to the
worker, which hands them to the GUI thread. Nothing here touches Qt or a layer: the GUI thread
does that when it receives an update. A ``threading.Event`` stops the job between steps (or blocks).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Callable, Iterator

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from .. import api
from .session import uncertainty

logger = logging.getLogger(__name__)
_DONE = object()


def torch_threads() -> int:
    """One thread fewer than the machine has (at least one), so the GUI thread keeps a core."""
    return max(1, (os.cpu_count() or 2) - 1)


class GuiProgress(Callback):
    """Puts ``step``, ``epoch`` and ``preview`` updates on ``updates``; stops when ``stop`` is set.

    Parameters
    ----------
    updates : queue.Queue
    stop : threading.Event
    preview : callable, optional
        ``preview() -> (index, image)``: the slice (``index`` along axis 0, or None for a 2D image)
        and its pixels to predict after each validation; read in this thread, so it must return
        plain values held outside Qt.
    min_preview_interval : float
        Seconds between previews at least.
    """

    def __init__(self, updates: queue.Queue, stop: threading.Event, preview: Callable | None = None, *,
                 min_preview_interval: float = 1.0) -> None:
        self.updates, self.stop, self.preview = updates, stop, preview
        self.min_preview_interval = min_preview_interval
        self._last_preview, self._losses, self._t0, self._steps = -1e9, [], 0.0, 0

    def on_train_start(self, trainer, pl_module) -> None:
        self._t0 = time.perf_counter()
        self._total = int(trainer.max_epochs) * int(trainer.num_training_batches)
        self._first_step = int(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        self._losses.append(float(loss))
        done = int(trainer.global_step)
        per_step = (time.perf_counter() - self._t0) / max(done - self._first_step, 1)
        self.updates.put({"kind": "step", "step": done, "total": self._total, "loss": self._losses[-1],
                          "seconds_per_step": per_step, "seconds_left": per_step * max(self._total - done, 0),
                          "epoch": int(trainer.current_epoch), "threads": torch.get_num_threads()})
        if self.stop.is_set():
            trainer.should_stop = True

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking:
            return
        val = trainer.callback_metrics.get("val_loss")
        train = float(np.mean(self._losses)) if self._losses else None
        self._losses = []
        self.updates.put({"kind": "epoch", "epoch": int(trainer.current_epoch), "train_loss": train,
                          "val_loss": None if val is None else float(val)})
        now = time.perf_counter()
        if self.preview is not None and now - self._last_preview >= self.min_preview_interval:
            self._last_preview = now
            index, pixels = self.preview()
            probs = api.predict_training(pl_module, pixels)
            self.updates.put({"kind": "preview", "index": index, "probabilities": probs,
                              "uncertainty": uncertainty(probs)})


def in_thread(job: Callable, updates: queue.Queue) -> Iterator[dict]:
    """Run ``job()`` in a thread and yield what it puts on ``updates`` until it ends; return its result.

    An exception of the job is raised here, in the worker, after the updates it made.
    """
    outcome: dict = {}

    def target():
        try:
            outcome["result"] = job()
        except BaseException as exc:  # handed to the worker thread, which reports it to the GUI
            outcome["error"] = exc
        finally:
            updates.put(_DONE)

    thread = threading.Thread(target=target, name="mixscale-job", daemon=True)
    thread.start()
    while (item := updates.get()) is not _DONE:
        yield item
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def training_updates(config: dict, stop: threading.Event, preview: Callable | None = None) -> Iterator[dict]:
    """Train ``config`` (:func:`mixscale.api.train`), yielding progress; return the run's result.

    Torch uses :func:`torch_threads` threads meanwhile (set back afterwards).
    """
    updates: queue.Queue = queue.Queue()
    callback = GuiProgress(updates, stop, preview)

    def job():
        before = torch.get_num_threads()
        torch.set_num_threads(torch_threads())
        try:
            return api.train(config, callbacks=[callback])
        finally:
            torch.set_num_threads(before)

    return (yield from in_thread(job, updates))


def apply_updates(model: str, image: str, output: str, stop: threading.Event, **options) -> Iterator[dict]:
    """Block-wise prediction (:func:`mixscale.api.predict_blocks`) into ``output``, yielding
    ``{"kind": "block", "done", "total"}`` after each block; stops between blocks when ``stop`` is set
    (the store then resumes with the same call). Returns the summary dict."""
    updates: queue.Queue = queue.Queue()

    def on_block(done: int, total: int) -> None:
        updates.put({"kind": "block", "done": done, "total": total})

    def job():
        return api.predict_blocks(model, image, output, on_block=on_block, should_stop=stop.is_set,
                                  scheduler="sync", **options)

    return (yield from in_thread(job, updates))
