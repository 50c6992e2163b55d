"""Apply to volume (block-wise, stopped and resumed), the reader, and Save -> Load in a new viewer."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari", reason="needs the napari extra (pip install 'mixscale[test-gui]')")
pytest.importorskip("pytestqt", reason="needs pytest-qt (pip install 'mixscale[test-gui]')")

pytestmark = [pytest.mark.gui, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small MS-D trained on scribbles of the 2D sample (the config the widget builds), and a 16x256x256
    zarr volume of the volume sample."""
    import zarr

    from mixscale import api
    from mixscale.napari.session import Settings, training_config
    from mixscale.recipes.samples import sample

    work = tmp_path_factory.mktemp("apply")
    image, truth = sample("shapes")
    scribbles = np.zeros_like(truth)
    scribbles[::16] = truth[::16]
    zarr.save_array(str(work / "image.zarr"), image)
    zarr.save_array(str(work / "scribbles.zarr"), scribbles)
    config = training_config(run_dir=work / "run", image=str(work / "image.zarr"), labels=str(work / "scribbles.zarr"),
                             num_classes=2, class_names=["background", "shapes"],
                             settings=Settings(preset="MS-D 50", epochs=4, patch=64))
    model = api.train(config).model_path
    volume, volume_truth = sample("shapes_volume")
    zarr.open_array(str(work / "volume.zarr"), mode="w", shape=volume.shape, chunks=(1, 256, 256),
                    dtype="float32")[:] = volume
    return {"model": model, "volume": work / "volume.zarr", "truth": volume_truth, "work": work}


def _left():
    from qtpy.QtCore import Qt

    return Qt.MouseButton.LeftButton


def _apply_widget(make_napari_viewer, trained, output):
    from mixscale.napari.apply import ApplyWidget

    viewer = make_napari_viewer(show=True)
    viewer.open(str(trained["volume"]), plugin="napari")
    widget = ApplyWidget(viewer)
    viewer.window.add_dock_widget(widget)
    panel = widget.panel
    panel.model_edit.setText(str(trained["model"]))
    panel.output_edit.setText(str(output))
    return viewer, panel


def test_apply_to_volume_stop_and_resume(make_napari_viewer, qtbot, trained, tmp_path):
    import zarr

    from mixscale import api

    reference = api.predict_blocks(trained["model"], str(trained["volume"]), tmp_path / "reference.zarr",
                                   slice_axis=0, block_shape=(2, 256, 256), scheduler="sync")
    assert reference["complete"] and reference["blocks"] == 8
    viewer, panel = _apply_widget(make_napari_viewer, trained, tmp_path / "gui.zarr")

    seen = []

    def halfway(update):
        seen.append(update["done"])
        if update["done"] >= update["total"] // 2:
            panel.stop()

    qtbot.mouseClick(panel.apply_btn, _left())
    panel.worker.yielded.connect(halfway)
    assert not panel.apply_btn.isEnabled() and panel.stop_btn.isEnabled()
    qtbot.waitUntil(lambda: panel.worker is None, timeout=120_000)
    first = panel.summary
    assert first["stopped"] and not first["complete"] and 0 < first["computed"] < first["blocks"]
    shown = np.asarray(viewer.layers["prediction"].data)
    written = np.asarray(zarr.open_group(str(tmp_path / "gui.zarr"), mode="r")["labels"])
    done_rows = shown.reshape(shown.shape[0], -1).any(axis=1)
    assert 0 < done_rows.sum() < shown.shape[0], "the layer shows the blocks written, the rest transparent"
    np.testing.assert_array_equal(shown[done_rows], written[done_rows] + 1)

    qtbot.mouseClick(panel.apply_btn, _left())
    qtbot.waitUntil(lambda: panel.worker is None, timeout=120_000)
    second = panel.summary
    assert second["complete"] and second["skipped"] == first["computed"]
    assert first["computed"] + second["computed"] == reference["blocks"]
    assert panel.progress.value() == panel.progress.maximum()
    ref = np.asarray(zarr.open_group(str(tmp_path / "reference.zarr"), mode="r")["labels"])
    got = np.asarray(zarr.open_group(str(tmp_path / "gui.zarr"), mode="r")["labels"])
    np.testing.assert_array_equal(got, ref)
    np.testing.assert_array_equal(np.asarray(viewer.layers["prediction"].data), ref + 1)
    accuracy = (ref + 1 == trained["truth"]).mean()
    assert accuracy > 0.9, accuracy


def test_reader_opens_a_prediction_store(make_napari_viewer, trained, tmp_path):
    import zarr

    from mixscale import api

    store = tmp_path / "store.zarr"
    api.predict_blocks(trained["model"], str(trained["volume"]), store, slice_axis=0, scheduler="sync")
    viewer = make_napari_viewer(show=True)
    opened = viewer.open(str(store), plugin="mixscale")
    assert [ly.name for ly in opened] == ["prediction"]
    np.testing.assert_array_equal(np.asarray(opened[0].data),
                                  np.asarray(zarr.open_group(str(store), mode="r")["labels"]) + 1)


def test_save_then_load_in_a_new_viewer_gives_the_same_predictions(make_napari_viewer, qtbot, trained, tmp_path,
                                                                   monkeypatch):
    from qtpy.QtWidgets import QFileDialog

    from mixscale.napari.widgets import TrainWidget

    viewer = make_napari_viewer(show=True)
    viewer.open_sample("mixscale", "shapes")
    widget = TrainWidget(viewer, work_dir=tmp_path / "one")
    viewer.window.add_dock_widget(widget)
    widget.load_model(trained["model"])
    widget.image_combo.setCurrentText("shapes")
    qtbot.mouseClick(widget.predict_btn, _left())
    qtbot.waitUntil(lambda: widget.message.text().startswith("prediction of"), timeout=60_000)
    before = np.asarray(viewer.layers["prediction"].data).copy()
    # the save dialog is a native window a test cannot click through: answer it with a path
    saved = tmp_path / "saved.safetensors"
    monkeypatch.setattr(QFileDialog, "getSaveFileName", lambda *a, **k: (str(saved), ""))
    qtbot.mouseClick(widget.save_btn, _left())
    assert saved.is_file() and not list(tmp_path.glob("*.part"))

    viewer.close()
    other = make_napari_viewer(show=True)
    other.open_sample("mixscale", "shapes")
    assert other.open(str(saved), plugin="mixscale") == []  # the reader loads it into the widget
    _, widget2 = other.window.add_plugin_dock_widget("mixscale", "Train & predict")
    assert widget2.model_path == saved
    qtbot.mouseClick(widget2.predict_btn, _left())
    qtbot.waitUntil(lambda: widget2.message.text().startswith("prediction of"), timeout=60_000)
    np.testing.assert_array_equal(np.asarray(other.layers["prediction"].data), before)
