"""The Train & predict widget's model-file actions: Predict view, Save, Load, Copy CLI command.

A mixin of :class:`mixscale.napari.widgets.TrainWidget`, which provides ``viewer``, ``work``,
``model_path``, ``config_path``, ``class_table``, ``say``, ``_image_layer``, ``_scribbles``,
``_set_running`` and ``_view_index``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import yaml
from qtpy.QtWidgets import QApplication, QFileDialog

from .. import api
from . import layers
from .session import cli_commands, uncertainty


class ModelActions:
    """Predict the view, save and load the model file, copy the command lines."""

    def predict_view(self) -> None:
        """Predict the visible slice (2D net) or the image with the current model file, in a worker."""
        from napari.qt.threading import create_worker

        layer = self._image_layer()
        if layer is None or self.model_path is None:
            self.say("train or load a model first", error=True)
            return
        model, data = str(self.model_path), layer.data
        dims = api.info(model)["net_config"].get("spatial_dims", 2)
        index = None if data.ndim == 2 or dims == 3 else min(self._view_index, data.shape[0] - 1)
        pixels = np.asarray(data if index is None else data[index])

        def job():
            probs = api.predict(model, pixels, probabilities=True)
            return index, probs

        worker = create_worker(job, _start_thread=False)
        worker.returned.connect(self._show_prediction)
        worker.errored.connect(lambda exc: self.say(f"prediction failed: {exc}", error=True))
        self._predict_worker = worker
        worker.start()

    def _show_prediction(self, result) -> None:
        index, probs = result
        layer = self._image_layer()
        if layer is not None:
            layers.show_preview(self.viewer, layers.image_shape(layer), index, probs, uncertainty(probs),
                                like=self._scribbles())
        self.say("prediction of " + ("the image" if index is None else f"slice {index}") + " shown")

    def save_model(self, path) -> Path:
        """Copy the current model file to ``path`` (through a temporary name)."""
        if self.model_path is None:
            raise ValueError("no model to save: train or load one first")
        path = Path(path)
        tmp = path.with_name(path.name + ".part")
        shutil.copyfile(self.model_path, tmp)
        tmp.replace(path)
        self.say(f"model saved to {path}")
        return path

    def load_model(self, path) -> None:
        """Use the model file ``path`` (checked: a segmentation model; never unpickled)."""
        meta = api.info(str(path))
        if meta.get("format") != "mixscale model" or meta.get("task") != "segmentation":
            raise ValueError(f"{path} is not a mixscale segmentation model file (format {meta.get('format')!r}, "
                             f"task {meta.get('task')!r})")
        self.model_path = Path(path)
        names = meta.get("class_names") or []
        self.class_table.set_names(names, self._scribbles())
        self._set_running(False)
        self.say(f"model {path} loaded: {len(names)} classes")

    def _save_dialog(self) -> None:
        path, _ = QFileDialog.getSaveFileName(self, "Save model", str(self.work / "model.safetensors"),
                                              "mixscale model (*.safetensors)")
        if path:
            self.save_model(path)

    def _load_dialog(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load model", str(self.work), "mixscale model (*.safetensors)")
        if path:
            try:
                self.load_model(path)
            except ValueError as exc:
                self.say(str(exc), error=True)

    def copy_cli(self) -> str:
        """The ``mixscale train`` / ``predict`` lines of the last run, put on the clipboard."""
        if self.config_path is None:
            self.say("train once first: the command lines repeat a run", error=True)
            return ""
        config = yaml.safe_load(self.config_path.read_text())
        text = cli_commands(self.config_path, config["data"]["train_images"], str(self.work / "prediction.zarr"))
        QApplication.clipboard().setText(text)
        self.say("copied:\n" + text)
        return text
