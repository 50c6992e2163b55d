"""The "Apply to volume" panel: block-wise prediction of a whole image into a zarr store, in a worker.

Resumable: the store keeps every complete block, so Stop and Apply again computes only the rest
(the same settings are required; :func:`mixscale.api.predict_blocks` checks them). The
``prediction`` layer shows the store lazily and is refreshed as blocks land.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path
from typing import Callable

from qtpy.QtWidgets import QComboBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel, QLineEdit, QProgressBar, \
    QPushButton, QSpinBox, QWidget

from . import layers

logger = logging.getLogger(__name__)


class ApplyPanel(QGroupBox):
    """Image, model, output store; Apply, Stop; a bar that counts blocks.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    model : callable, optional
        Returns the current model file (the Train widget's); otherwise the model field is used.
    work : Path, optional
        Default folder of the output store.
    colours : callable, optional
        Returns a Labels layer whose colours the prediction takes (the scribbles).
    """

    def __init__(self, napari_viewer, *, model: Callable | None = None, work: Path | None = None,
                 colours: Callable | None = None) -> None:
        super().__init__("Apply to volume")
        self.viewer, self._model, self._colours = napari_viewer, model, colours
        self.work = Path(work) if work else Path(tempfile.mkdtemp(prefix="mixscale-napari-"))
        self.worker = None
        self.stop_event = threading.Event()
        self.summary: dict | None = None
        form = QFormLayout(self)
        self.image_combo = QComboBox()
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("the trained model (or a model.safetensors path)")
        self.output_edit = QLineEdit(str(self.work / "prediction.zarr"))
        self.block_spin = QSpinBox()
        self.block_spin.setRange(1, 4096)
        self.block_spin.setValue(2)
        self.block_spin.setToolTip("2D model on a volume: slices per block (each block is one step of the bar "
                                   "and of a resume)")
        for label, w in (("image", self.image_combo), ("model", self.model_edit), ("output", self.output_edit),
                         ("slices per block", self.block_spin)):
            form.addRow(label, w)
        row = QHBoxLayout()
        self.apply_btn, self.stop_btn = QPushButton("Apply to volume"), QPushButton("Stop")
        row.addWidget(self.apply_btn)
        row.addWidget(self.stop_btn)
        form.addRow(row)
        self.progress, self.status = QProgressBar(), QLabel("")
        form.addRow(self.progress)
        form.addRow(self.status)
        self.apply_btn.clicked.connect(self.apply)
        self.stop_btn.clicked.connect(self.stop)
        self.stop_btn.setEnabled(False)
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self._refresh_images()

    def _refresh_images(self, *_) -> None:
        current = self.image_combo.currentText()
        names = layers.image_names(self.viewer)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)

    def model_file(self) -> str | None:
        text = self.model_edit.text().strip()
        if text:
            return text
        current = self._model() if self._model is not None else None
        return None if current is None else str(current)

    def _image_address(self, layer) -> str:
        """The image's own file (block-wise prediction reads it lazily), or a zarr copy of an in-memory one."""
        address = layers.file_address(layer)
        if address is not None:
            return address
        import numpy as np
        import zarr

        path = self.work / f"apply_input_{layer.name}.zarr"
        if not path.exists():
            zarr.save_array(str(path), np.asarray(layer.data))
        return str(path)

    def apply(self) -> None:
        """Start block-wise prediction of the selected image into the output store (or resume it)."""
        from napari.qt.threading import create_worker

        from .workers import apply_updates

        name, model = self.image_combo.currentText(), self.model_file()
        if name not in self.viewer.layers or model is None:
            self._say("choose an image and train or load a model first")
            return
        if self.worker is not None:
            self._say("prediction is running; press Stop first")
            return
        layer = self.viewer.layers[name]
        output = self.output_edit.text().strip()
        options = {}
        if layer.data.ndim == 3 and _model_dims(model) == 2:  # slice by slice, a few slices per block
            options = {"slice_axis": 0, "block_shape": (self.block_spin.value(), *layer.data.shape[1:])}
        self.stop_event.clear()
        self.summary = None
        self.worker = create_worker(apply_updates, model, self._image_address(layer), output, self.stop_event,
                                    _start_thread=False, **options)
        self.worker.yielded.connect(self._on_block)
        self.worker.returned.connect(self._on_done)
        self.worker.errored.connect(lambda exc: self._say(f"prediction failed: {exc}"))
        self.worker.finished.connect(self._on_finished)
        self.apply_btn.setEnabled(False)
        self.stop_btn.setEnabled(True)
        self._shown = None
        self._output = output
        self._say(f"predicting {name} into {output}")
        self.worker.start()

    def stop(self) -> None:
        """Stop after the blocks being computed; Apply again resumes."""
        self.stop_event.set()

    def _on_block(self, update: dict) -> None:
        if self._shown is None:
            self._shown = layers.show_store(self.viewer, Path(self._output),
                                            like=self._colours() if self._colours else None)
        self.progress.setMaximum(update["total"])
        self.progress.setValue(update["done"])
        self.status.setText(f"{update['done']} of {update['total']} blocks")
        self._shown.refresh()

    def _on_done(self, summary: dict) -> None:
        self.summary = summary
        if self._shown is None:
            self._shown = layers.show_store(self.viewer, Path(self._output),
                                            like=self._colours() if self._colours else None)
        self._shown.refresh()
        state = "complete" if summary["complete"] else "stopped: Apply again resumes"
        self._say(f"{summary['computed']} blocks computed, {summary['skipped']} already there; {state}")

    def _on_finished(self) -> None:
        self.worker = None
        self.apply_btn.setEnabled(True)
        self.stop_btn.setEnabled(False)

    def _say(self, text: str) -> None:
        self.status.setText(text)
        logger.info("%s", text)


class ApplyWidget(QWidget):
    """The "Apply to volume" dock widget on its own (a model file from the field, or the Train widget's)."""

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        from qtpy.QtWidgets import QVBoxLayout

        self.panel = ApplyPanel(napari_viewer)
        QVBoxLayout(self).addWidget(self.panel)


def _model_dims(model: str) -> int:
    from .. import api

    return int(api.info(model)["net_config"].get("spatial_dims", 2))
