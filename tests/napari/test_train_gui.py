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


def test_paint_train_watch(make_napari_viewer, qtbot, tmp_path, gui):
    viewer, widget, truth = _open(make_napari_viewer, tmp_path)
    layer = _paint(viewer, widget, truth, gui, qtbot)
    painted = np.asarray(layer.data)
    assert set(np.unique(painted)) == {0, 1, 2}
    assert (painted[painted > 0] == truth[painted > 0]).all(), "strokes were painted inside their class"
    assert (painted > 0).sum() > 600
    qtbot.waitUntil(lambda: widget.class_table.item(1, 2).text() == str((painted == 2).sum()), timeout=5000)

    widget.epochs_spin.setValue(12)
    with gui.Responsiveness() as probe:
        qtbot.mouseClick(widget.train_btn, _left())
        assert not widget.train_btn.isEnabled() and widget.stop_btn.isEnabled()
        qtbot.waitUntil(lambda: widget.worker is None, timeout=240_000)
    assert widget.train_btn.isEnabled() and not widget.stop_btn.isEnabled()
    assert widget.progress.value() == widget.progress.maximum() > 0
    assert probe.ticks > 100 and probe.worst < 1.0, f"the GUI thread waited {probe.worst:.2f} s"
    val = [v for _, v in widget.curve.val]
    assert len(widget.curve.train) == 12 and len(val) == 12 and min(val[-3:]) < val[0]
    qtbot.waitUntil(lambda: widget.message.text().startswith("prediction of"), timeout=60_000)
    pred, unc = viewer.layers["prediction"].data, viewer.layers["uncertainty"].data
    assert pred.shape == unc.shape == truth.shape
    accuracy = (np.asarray(pred) == truth).mean()
    assert accuracy > 0.9, accuracy
    assert 0 <= unc.min() and unc.max() <= 0.5 + 1e-6
