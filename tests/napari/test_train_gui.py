"""Paint scribbles with the mouse, click Train, watch it, stop, continue: the plugin as a person uses it."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari", reason="needs the napari extra (pip install 'mixscale[test-gui]')")
pytest.importorskip("pytestqt", reason="needs pytest-qt (pip install 'mixscale[test-gui]')")

pytestmark = [pytest.mark.gui, pytest.mark.timeout(300)]


def _open(make_napari_viewer, tmp_path):
    from mixscale.napari.widgets import TrainWidget

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("mixscale", "shapes")
    widget = TrainWidget(viewer, work_dir=tmp_path / "work")
    viewer.window.add_dock_widget(widget, name="Train & predict")
    viewer.window.resize(1500, 1050)
    viewer.reset_view()
    return viewer, widget, viewer.layers["ground truth"].data


def _paint(viewer, widget, truth, gui, qtbot, *, rows=range(8, 256, 16)):
    """Press 'New scribbles layer', then paint strokes of class 1 and 2 with the mouse, inside each class."""
    qtbot.mouseClick(widget.new_scribbles_btn, _left())
    layer = viewer.layers["scribbles"]
    layer.brush_size = 3
    for value in (1, 2):
        layer.selected_label = value
        for path in gui.stroke_paths(truth, value, margin=3, rows=rows):
            gui.stroke(viewer, path, qtbot)
    return layer


def _left():
    from qtpy.QtCore import Qt

    return Qt.MouseButton.LeftButton


def _screenshot(viewer, tmp_path, name):
    """The whole window (canvas and dock widget) as a PNG; into MIXSCALE_SCREENSHOTS (the docs' folder) when set.
    The canvas must show the image: not a black or uniform picture."""
    import os
    from pathlib import Path

    folder = Path(os.environ.get("MIXSCALE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    canvas = viewer.screenshot(canvas_only=True, flash=False)
    assert canvas[..., :3].std() > 10 and canvas[..., :3].mean() > 10, f"{name}: the canvas is blank"
    viewer.screenshot(str(folder / f"{name}.png"), canvas_only=False, flash=False)
    return canvas


def test_paint_train_watch(make_napari_viewer, qtbot, tmp_path, gui):
    viewer, widget, truth = _open(make_napari_viewer, tmp_path)
    _screenshot(viewer, tmp_path, "1_empty")
    layer = _paint(viewer, widget, truth, gui, qtbot)
    _screenshot(viewer, tmp_path, "2_scribbled")
    painted = np.asarray(layer.data)
    assert set(np.unique(painted)) == {0, 1, 2}
    assert (painted[painted > 0] == truth[painted > 0]).all(), "strokes were painted inside their class"
    assert (painted > 0).sum() > 600
    qtbot.waitUntil(lambda: widget.class_table.item(1, 2).text() == str((painted == 2).sum()), timeout=5000)

    widget.epochs_spin.setValue(12)
    with gui.Responsiveness() as probe:
        qtbot.mouseClick(widget.train_btn, _left())
        assert not widget.train_btn.isEnabled() and widget.stop_btn.isEnabled()
        qtbot.waitUntil(lambda: len(widget.curve.val) >= 5 or widget.worker is None, timeout=240_000)
        if widget.worker is not None:
            _screenshot(viewer, tmp_path, "3_training")
        qtbot.waitUntil(lambda: widget.worker is None, timeout=240_000)
    assert widget.train_btn.isEnabled() and not widget.stop_btn.isEnabled()
    assert widget.progress.value() == widget.progress.maximum() > 0
    print(f"GUI timer: {probe.ticks} ticks, longest wait {probe.worst:.3f} s")
    assert probe.ticks > 100 and probe.worst < 1.0, f"the GUI thread waited {probe.worst:.2f} s"
    val = [v for _, v in widget.curve.val]
    assert len(widget.curve.train) == 12 and len(val) == 12 and min(val[-3:]) < val[0]
    qtbot.waitUntil(lambda: widget.message.text().startswith("prediction of"), timeout=60_000)
    pred, unc = viewer.layers["prediction"].data, viewer.layers["uncertainty"].data
    assert pred.shape == unc.shape == truth.shape
    accuracy = (np.asarray(pred) == truth).mean()
    print(f"pixel accuracy of the prediction against the sample's truth: {accuracy:.4f}")
    assert accuracy > 0.9, accuracy
    assert 0 <= unc.min() and unc.max() <= 0.5 + 1e-6
    viewer.layers["scribbles"].visible = False
    _screenshot(viewer, tmp_path, "4_result")


def config_image(widget):
    import yaml

    return yaml.safe_load(widget.config_path.read_text())["data"]["train_images"]


def _bad(widget, qtbot, expected):
    qtbot.mouseClick(widget.train_btn, _left())
    assert widget.worker is None and widget.train_btn.isEnabled()
    assert expected in widget.message.text(), widget.message.text()


def test_bad_scribbles_start_nothing(make_napari_viewer, qtbot, tmp_path, gui):
    viewer, widget, truth = _open(make_napari_viewer, tmp_path)
    _bad(widget, qtbot, "New scribbles layer")  # no scribbles layer yet
    qtbot.mouseClick(widget.new_scribbles_btn, _left())
    _bad(widget, qtbot, "nothing is painted")
    layer = viewer.layers["scribbles"]
    layer.selected_label = 1
    for path in gui.stroke_paths(truth, 1, margin=3, rows=[40, 120]):
        gui.stroke(viewer, path, qtbot)
    _bad(widget, qtbot, "only class 1 is painted")
    viewer.layers.remove("scribbles")
    viewer.add_labels(np.ones((64, 64), np.uint8), name="scribbles")
    _bad(widget, qtbot, "has shape (64, 64) but the image has (256, 256)")
    assert not list((tmp_path / "work").glob("run_*/checkpoints"))


def test_stop_keeps_checkpoint_and_continue_starts_from_it(make_napari_viewer, qtbot, tmp_path, gui):
    import time

    viewer, widget, truth = _open(make_napari_viewer, tmp_path)
    _paint(viewer, widget, truth, gui, qtbot)
    widget.epochs_spin.setValue(1000)
    qtbot.mouseClick(widget.train_btn, _left())
    qtbot.waitUntil(lambda: len(widget.curve.val) >= 3, timeout=120_000)
    first_run = list(widget.step_losses)
    preview_layers = viewer.layers["prediction"], viewer.layers["uncertainty"]
    t0 = time.perf_counter()
    qtbot.mouseClick(widget.stop_btn, _left())
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    assert time.perf_counter() - t0 < 10
    run = widget.model_path.parent
    assert (run / "checkpoints" / "last.ckpt").is_file() and widget.model_path.is_file()
    assert widget.progress.value() < widget.progress.maximum()
    assert "stopped; checkpoints kept" in widget.message.text()

    assert widget.continue_btn.isEnabled()
    qtbot.mouseClick(widget.continue_btn, _left())
    assert widget.worker is not None and not widget.continue_btn.isEnabled()
    qtbot.waitUntil(lambda: len(widget.step_losses) >= 3, timeout=60_000)
    qtbot.mouseClick(widget.stop_btn, _left())
    qtbot.waitUntil(lambda: widget.worker is None, timeout=10_000)
    # the first steps of the continued run start where the first run ended, far below its start
    assert np.mean(widget.step_losses[:3]) < 0.5 * np.mean(first_run[:3])
    assert widget.model_path.parent != run
    assert viewer.layers["prediction"] is preview_layers[0] and viewer.layers["uncertainty"] is preview_layers[1], \
        "rerunning updates the layers in place"
    assert len([ly for ly in viewer.layers if ly.name.startswith("prediction")]) == 1
    import yaml

    qtbot.mouseClick(widget.copy_cli_btn, _left())
    from qtpy.QtWidgets import QApplication

    assert QApplication.clipboard().text() == (
        f"mixscale train {widget.model_path.parent / 'config.yaml'}\n"
        f"mixscale predict {widget.model_path} {config_image(widget)} -o {tmp_path / 'work' / 'prediction.zarr'}")

    config = yaml.safe_load((widget.model_path.parent / "config.yaml").read_text())
    assert config["init_from"] == str(run / "model.safetensors")


def test_closing_the_viewer_stops_training(make_napari_viewer, qtbot, tmp_path, gui):
    import threading

    viewer, widget, truth = _open(make_napari_viewer, tmp_path)
    _paint(viewer, widget, truth, gui, qtbot, rows=[40, 100, 160])
    widget.epochs_spin.setValue(1000)
    qtbot.mouseClick(widget.train_btn, _left())
    qtbot.waitUntil(lambda: len(widget.step_losses) >= 2, timeout=60_000)
    assert any(t.name == "mixscale-job" for t in threading.enumerate())
    viewer.close()
    qtbot.waitUntil(lambda: not any(t.name == "mixscale-job" for t in threading.enumerate()), timeout=15_000)


def test_large_images_get_zarr_scribbles_that_write_only_painted_chunks(make_napari_viewer, qtbot, tmp_path, gui,
                                                                        monkeypatch):
    import zarr

    from mixscale.napari import layers as plugin_layers
    from mixscale.napari.widgets import TrainWidget

    monkeypatch.setattr(plugin_layers, "LARGE_BYTES", 0)  # this 4 MB volume counts as large
    viewer = make_napari_viewer(show=True)
    viewer.open_sample("mixscale", "shapes_volume")
    truth = viewer.layers["ground truth"].data
    widget = TrainWidget(viewer, work_dir=tmp_path / "work")
    viewer.window.add_dock_widget(widget)
    viewer.dims.set_current_step(0, 5)
    qtbot.mouseClick(widget.new_scribbles_btn, _left())
    layer = viewer.layers["scribbles"]
    assert isinstance(layer.data, zarr.Array)
    layer.brush_size = 3
    for value in (1, 2):
        layer.selected_label = value
        for path in gui.stroke_paths(truth[5], value, margin=3, rows=range(8, 256, 32)):
            gui.stroke(viewer, path, qtbot)
    on_disk = zarr.open_array(str(tmp_path / "work" / "scribbles.zarr"), mode="r")
    painted = np.asarray(on_disk)
    assert set(np.unique(painted[5])) == {0, 1, 2} and not painted[np.arange(16) != 5].any()
    assert (painted[5][painted[5] > 0] == truth[5][painted[5] > 0]).all()
    assert on_disk.nchunks_initialized == 1, "only the painted plane's chunk was written"
    config = widget.training_config(resume=False)
    assert config["data"]["train_labels"] == str(tmp_path / "work" / "scribbles.zarr")
