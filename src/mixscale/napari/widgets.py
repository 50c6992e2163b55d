"""The "Train & predict" dock widget: scribble, train, watch, correct, continue, predict, save.

A thin client: the numbers come from :mod:`mixscale.api` (through :mod:`mixscale.napari.workers`,
run in napari thread workers); this module only builds buttons and updates layers and the curve on
the GUI thread. Nothing here blocks the window: every long call is in a worker.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path

import numpy as np
import yaml
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QGroupBox, QHBoxLayout,
                            QLabel, QPlainTextEdit, QProgressBar, QPushButton, QVBoxLayout, QWidget)

from . import layers
from .apply import ApplyPanel
from .curve import LossCurve
from .model_actions import ModelActions
from .qt_parts import ClassTable, CloseWatcher, devices, duration, spin
from .session import PRESETS, ScribbleError, Settings, check_scribbles, next_run_dir, training_config

logger = logging.getLogger(__name__)


class TrainWidget(ModelActions, QWidget):
    """Scribble, train, stop, continue, predict the view, apply to the volume, save or load the model.

    Parameters
    ----------
    napari_viewer : napari.Viewer
    work_dir : str or Path, optional
        Where runs, snapshots of the scribbles and predictions go; default a new temporary folder.
    """

    def __init__(self, napari_viewer, work_dir=None) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.work = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="mixscale-napari-"))
        self.work.mkdir(parents=True, exist_ok=True)
        self.model_path: Path | None = None
        self.config_path: Path | None = None
        self.step_losses: list[float] = []  # of the current (or last) run, one per optimiser step
        self.worker = None
        self.stop_event = threading.Event()
        self._view_index = 0
        self._image_files: dict[int, str] = {}
        self._build()
        self._connect()
        self._refresh_images()
        self._set_running(False)

    # -- layout -------------------------------------------------------------------------
    def _build(self) -> None:
        box = QVBoxLayout(self)
        form = QFormLayout()
        self.image_combo = QComboBox()
        form.addRow("image", self.image_combo)
        box.addLayout(form)
        self.new_scribbles_btn = QPushButton("New scribbles layer")
        box.addWidget(self.new_scribbles_btn)
        self.class_table = ClassTable()
        box.addWidget(self.class_table)
        self.add_class_btn = QPushButton("Add class")
        box.addWidget(self.add_class_btn)
        box.addWidget(self._model_group())
        box.addWidget(self._advanced_group())
        row = QHBoxLayout()
        self.train_btn, self.stop_btn = QPushButton("Train"), QPushButton("Stop")
        self.continue_btn = QPushButton("Continue training")
        for b in (self.train_btn, self.stop_btn, self.continue_btn):
            row.addWidget(b)
        box.addLayout(row)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.curve = LossCurve()
        for w in (self.progress, self.status, self.curve):
            box.addWidget(w)
        row = QHBoxLayout()
        self.predict_btn, self.save_btn = QPushButton("Predict view"), QPushButton("Save model")
        self.load_btn, self.copy_cli_btn = QPushButton("Load model"), QPushButton("Copy CLI command")
        for b in (self.predict_btn, self.save_btn, self.load_btn, self.copy_cli_btn):
            row.addWidget(b)
        box.addLayout(row)
        self.apply_panel = ApplyPanel(self.viewer, model=lambda: self.model_path, work=self.work,
                                      colours=self._scribbles)
        box.addWidget(self.apply_panel)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        box.addWidget(self.message)
        self._fill_class_table()

    def _model_group(self) -> QGroupBox:
        group = QGroupBox("model")
        form = QFormLayout(group)
        self.preset_combo = QComboBox()
        self.preset_combo.addItems(list(PRESETS))
        self.dims_combo = QComboBox()
        self.dims_combo.addItems(["2D", "3D"])
        self.epochs_spin = spin(1, 10000, Settings.epochs)
        self.patch_spin = spin(16, 1024, Settings.patch)
        self.device_combo = QComboBox()
        self.device_combo.addItems(devices())
        for label, w in (("preset", self.preset_combo), ("net sees", self.dims_combo), ("epochs", self.epochs_spin),
                         ("patch size", self.patch_spin), ("device", self.device_combo)):
            form.addRow(label, w)
        return group

    def _advanced_group(self) -> QGroupBox:
        group = QGroupBox("Advanced: the config as YAML")
        group.setCheckable(True)
        group.setChecked(False)
        inner = QVBoxLayout(group)
        self.yaml_edit = QPlainTextEdit()
        self.yaml_edit.setMinimumHeight(120)
        self.fill_yaml_btn = QPushButton("Show the config of these settings")
        self.use_yaml_check = QCheckBox("train with this YAML (its run_dir is replaced by a new one)")
        for w in (self.fill_yaml_btn, self.yaml_edit, self.use_yaml_check):
            inner.addWidget(w)
        group.toggled.connect(lambda on: [w.setVisible(on) for w in (self.fill_yaml_btn, self.yaml_edit,
                                                                     self.use_yaml_check)])
        group.toggled.emit(False)
        self.advanced = group
        return group

    def _connect(self) -> None:
        self.new_scribbles_btn.clicked.connect(self.new_scribbles)
        self.add_class_btn.clicked.connect(self._add_class)
        self.train_btn.clicked.connect(lambda: self.train(resume=False))
        self.continue_btn.clicked.connect(lambda: self.train(resume=True))
        self.stop_btn.clicked.connect(self.stop)
        self.predict_btn.clicked.connect(self.predict_view)
        self.save_btn.clicked.connect(self._save_dialog)
        self.load_btn.clicked.connect(self._load_dialog)
        self.copy_cli_btn.clicked.connect(self.copy_cli)
        self.fill_yaml_btn.clicked.connect(self._fill_yaml)
        self.viewer.layers.events.inserted.connect(self._refresh_images)
        self.viewer.layers.events.removed.connect(self._refresh_images)
        self.viewer.dims.events.current_step.connect(self._remember_view)
        self._count_timer = QTimer(self)
        self._count_timer.setSingleShot(True)
        self._count_timer.timeout.connect(self._fill_class_table)
        self._closer = CloseWatcher(self.shutdown)
        self._watched: set[int] = set()

    def showEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        """Once docked, watch the main window: closing it stops the jobs (Qt's own API, no napari internals)."""
        super().showEvent(event)
        if not self._closer.watching:
            self.window().installEventFilter(self._closer)
            self._closer.watching = True

    # -- small helpers --------------------------------------------------------------------
    def say(self, text: str, *, error: bool = False) -> None:
        """Show a message under the buttons (errors in red) and log it."""
        self.message.setStyleSheet("color: #e05050" if error else "")
        self.message.setText(text)
        (logger.warning if error else logger.info)("%s", text)

    def _image_layer(self):
        name = self.image_combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def _scribbles(self):
        return self.viewer.layers["scribbles"] if "scribbles" in self.viewer.layers else None

    def _refresh_images(self, *_) -> None:
        current = self.image_combo.currentText()
        names = layers.image_names(self.viewer)
        self.image_combo.clear()
        self.image_combo.addItems(names)
        if current in names:
            self.image_combo.setCurrentText(current)
        layer = self._scribbles()
        if layer is not None and id(layer.data) not in self._watched:
            layer.events.paint.connect(lambda *_: self._count_timer.start(300))
            self._watched.add(id(layer.data))

    def _remember_view(self, *_) -> None:
        step = self.viewer.dims.current_step
        self._view_index = int(step[0]) if len(step) else 0

    def _set_running(self, running: bool) -> None:
        self.train_btn.setEnabled(not running)
        self.continue_btn.setEnabled(not running and self.model_path is not None)
        self.stop_btn.setEnabled(running)
        for b in (self.predict_btn, self.save_btn, self.copy_cli_btn):
            b.setEnabled(not running and self.model_path is not None)
        self.load_btn.setEnabled(not running)

    # -- classes -----------------------------------------------------------------------------
    def new_scribbles(self) -> None:
        """Add (or replace) the ``scribbles`` layer for the selected image."""
        image = self._image_layer()
        if image is None:
            self.say("open an image first (File > Open, or File > Open Sample > mixscale)", error=True)
            return
        try:
            layers.new_scribbles(self.viewer, image, self.work)
        except ValueError as exc:
            self.say(str(exc), error=True)
            return
        self._refresh_images()
        self._fill_class_table()
        self.say("paint class 1, 2, ... on 'scribbles' (0 erases); then Train")

    def _add_class(self) -> None:
        n = self.class_table.rowCount() + 1
        self._fill_class_table(rows=n)
        layer = self._scribbles()
        if layer is not None:
            layer.selected_label = n

    def _fill_class_table(self, *_, rows: int | None = None) -> None:
        self.class_table.refresh(self._scribbles(), rows=rows)

    def class_names(self) -> list[str]:
        """The names in the class table, in class order."""
        return self.class_table.names()

    # -- training ------------------------------------------------------------------------------
    def settings(self) -> Settings:
        """The training fields as :class:`~mixscale.napari.session.Settings`."""
        return Settings(preset=self.preset_combo.currentText(), spatial_dims=3 if self.dims_combo.currentIndex() else 2,
                        epochs=self.epochs_spin.value(), patch=self.patch_spin.value(),
                        device=self.device_combo.currentText())

    def _data_addresses(self, image, scribbles, run_dir: Path) -> tuple[str, str]:
        """Files the run reads: the image's own file when it has a readable one (else a zarr copy, made once),
        and the scribbles (their zarr store, or a snapshot of the painted array beside the run)."""
        import zarr

        image_address = layers.file_address(image)
        if image_address is None:
            key = id(image.data)
            if key not in self._image_files:
                path = self.work / f"image_{len(self._image_files) + 1:03d}.zarr"
                zarr.save_array(str(path), np.asarray(image.data))
                self._image_files[key] = str(path)
            image_address = self._image_files[key]
        if isinstance(scribbles.data, zarr.Array):
            return image_address, str(scribbles.data.store.root)
        snapshot = run_dir.with_name(run_dir.name + "_scribbles.zarr")
        zarr.save_array(str(snapshot), np.asarray(scribbles.data))
        return image_address, str(snapshot)

    def training_config(self, *, resume: bool) -> dict:
        """The config Train (or Continue) would run; raises ScribbleError or ValueError with the reason."""
        image, scribbles = self._image_layer(), self._scribbles()
        if image is None or scribbles is None:
            raise ScribbleError("open an image and press 'New scribbles layer', then paint at least two classes")
        painted = check_scribbles(layers.image_shape(image), scribbles.data)
        settings = self.settings()
        if settings.spatial_dims == 3 and image.data.ndim != 3:
            raise ValueError(f"a 3D net needs a volume; the image has shape {tuple(image.data.shape)}: choose 2D")
        run_dir = next_run_dir(self.work)
        image_address, labels_address = self._data_addresses(image, scribbles, run_dir)
        init = str(self.model_path) if resume and self.model_path is not None else None
        if self.advanced.isChecked() and self.use_yaml_check.isChecked():
            config = yaml.safe_load(self.yaml_edit.toPlainText()) or {}
            if not isinstance(config, dict):
                raise ValueError("the Advanced YAML is not a mapping of config keys")
            config["run_dir"] = str(run_dir)
            if init:
                config["init_from"] = init
            return config
        k = max(painted)
        names = (self.class_names() + [f"class {i}" for i in range(1, k + 1)])[:k]
        return training_config(run_dir=run_dir, image=image_address, labels=labels_address, num_classes=k,
                               class_names=names, settings=settings, init_from=init)

    def _fill_yaml(self) -> None:
        try:
            self.yaml_edit.setPlainText(yaml.safe_dump(self.training_config(resume=False), sort_keys=False))
        except ValueError as exc:
            self.say(str(exc), error=True)

    def train(self, *, resume: bool = False) -> None:
        """Start training (``resume``: from the current model's weights) in a thread worker."""
        from napari.qt.threading import create_worker

        from .workers import training_updates

        if self.worker is not None:
            self.say("a job is running; press Stop first", error=True)
            return
        try:
            config = self.training_config(resume=resume)
        except ValueError as exc:
            self.say(str(exc), error=True)
            return
        image = np.asarray(self._image_layer().data) if self._image_layer().data.ndim == 2 else None
        volume = self._image_layer().data
        spatial = 2 if config.get("data", {}).get("spatial_dims", 2) == 2 else 3

        def preview():  # runs in the training thread: reads only the arrays captured here and an int
            if image is not None:
                return None, image
            index = min(self._view_index, volume.shape[0] - 1)
            return (index, np.asarray(volume[index])) if spatial == 2 else (None, np.asarray(volume))

        self.stop_event.clear()
        self.curve.clear()
        self.step_losses = []
        self.progress.setValue(0)
        self.config_path = Path(config["run_dir"]) / "config.yaml"
        self.worker = create_worker(training_updates, config, self.stop_event, preview, _start_thread=False)
        self.worker.yielded.connect(self._on_update)
        self.worker.returned.connect(self._on_trained)
        self.worker.errored.connect(lambda exc: self.say(f"training failed: {exc}", error=True))
        self.worker.finished.connect(self._on_finished)
        self._set_running(True)
        self.say(("continuing from " + Path(config["init_from"]).parent.name) if config.get("init_from")
                 else f"training in {config['run_dir']}")
        self.worker.start()

    def stop(self) -> None:
        """Ask the running job to stop after its current step (training keeps its checkpoints)."""
        self.stop_event.set()
        self.apply_panel.stop()
        self.say("stopping after the current step...")

    def _on_update(self, update: dict) -> None:
        kind = update["kind"]
        if kind == "step":
            self.step_losses.append(update["loss"])
            self.progress.setMaximum(update["total"])
            self.progress.setValue(min(update["step"], update["total"]))
            self.status.setText(f"epoch {update['epoch'] + 1}, step {update['step']}/{update['total']}: "
                                f"loss {update['loss']:.4f}, {1000 * update['seconds_per_step']:.0f} ms/step, "
                                f"{duration(update['seconds_left'])} left")
        elif kind == "epoch":
            self.curve.add(update["epoch"], update["train_loss"], update["val_loss"])
        elif kind == "preview":
            layer = self._image_layer()
            if layer is not None:
                layers.show_preview(self.viewer, layers.image_shape(layer), update["index"], update["probabilities"],
                                    update["uncertainty"], like=self._scribbles())

    def _on_trained(self, result) -> None:
        self.model_path = Path(result.model_path)
        best = "" if result.best_val_loss is None else f", best validation loss {result.best_val_loss:.4f}"
        self.say(f"trained {result.epochs} epochs{best}; model {self.model_path}"
                 + (" (stopped; checkpoints kept)" if self.stop_event.is_set() else ""))

    def _on_finished(self) -> None:
        self.worker = None
        self._set_running(False)
        if self.model_path is not None and not self.stop_event.is_set():
            self.predict_view()

    def shutdown(self) -> None:
        """Stop every job and wait for it (the viewer is closing)."""
        self.stop_event.set()
        self.apply_panel.stop()
        for worker in (self.worker, getattr(self, "_predict_worker", None), self.apply_panel.worker):
            if worker is not None:
                worker.quit()
        from napari.qt.threading import WorkerBase

        WorkerBase.await_workers(msecs=15000)
