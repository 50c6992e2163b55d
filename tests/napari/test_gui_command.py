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
        import dask.array as da

        assert [ly.name for ly in viewer.layers] == ["img"]
        layer = viewer.layers["img"]
        assert isinstance(layer.data, da.Array), "opened lazily"
        assert layer.metadata["mixscale_address"] == str(tmp_path / "img.tif")
        np.testing.assert_array_equal(np.asarray(layer.data), image)
        docked = [w for w in viewer.window._qt_window.findChildren(TrainWidget)]
        assert len(docked) == 1 and docked[0].image_combo.currentText() == "img"
    finally:
        viewer.close()


@pytest.mark.gui
def test_reader_opens_an_hdf5_volume_lazily_and_training_reads_the_file(make_napari_viewer, tmp_path):
    pytest.importorskip("napari", reason="needs the napari extra (pip install 'mixscale[test-gui]')")
    import dask.array as da

    from mixscale.data import write_image
    from mixscale.napari.widgets import TrainWidget

    vol = np.random.default_rng(1).normal(size=(6, 30, 40)).astype(np.float32)
    write_image(str(tmp_path / "v.h5:/entry/data"), vol)
    viewer = make_napari_viewer()
    (layer,) = viewer.open(str(tmp_path / "v.h5"), plugin="mixscale")
    assert isinstance(layer.data, da.Array) and layer.data.chunksize == (1, 30, 40)
    np.testing.assert_array_equal(np.asarray(layer.data), vol)
    widget = TrainWidget(viewer, work_dir=tmp_path / "work")
    widget.new_scribbles()
    scribbles = viewer.layers["scribbles"]
    scribbles.data[2, 5:9, 5:20] = 1
    scribbles.data[2, 20:25, 5:20] = 2
    config = widget.training_config(resume=False)
    assert config["data"]["train_images"] == str(tmp_path / "v.h5")
    assert not list((tmp_path / "work").glob("image_*.zarr")), "the volume was not copied"
