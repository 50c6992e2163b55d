"""``mixscale gui [IMAGE]``: napari with the widget and the image; without napari, the extra to install."""

import sys

import numpy as np
import pytest


def test_without_napari_the_message_names_the_extra(monkeypatch):
    from mixscale import api
    from mixscale._extras import MissingExtraError

    monkeypatch.setitem(sys.modules, "napari", None)  # as if napari were not installed
    with pytest.raises(MissingExtraError, match=r"pip install 'mixscale\[napari,qt\]'"):
        api.gui(run=False)


@pytest.mark.gui
def test_gui_opens_the_image_with_the_widget(tmp_path, qtbot):
    pytest.importorskip("napari", reason="needs the napari extra (pip install 'mixscale[test-gui]')")
    pytest.importorskip("pytestqt", reason="needs pytest-qt (pip install 'mixscale[test-gui]')")
    from mixscale import api
    from mixscale.data import write_image
    from mixscale.napari.widgets import TrainWidget

    image = np.random.default_rng(0).normal(size=(40, 50)).astype(np.float32)
    write_image(str(tmp_path / "img.tif"), image)
    viewer = api.gui(str(tmp_path / "img.tif"), run=False)
    try:
        assert [ly.name for ly in viewer.layers] == ["img"]
        np.testing.assert_array_equal(np.asarray(viewer.layers["img"].data), image)
        docked = [w for w in viewer.window._qt_window.findChildren(TrainWidget)]
        assert len(docked) == 1 and docked[0].image_combo.currentText() == "img"
    finally:
        viewer.close()
