"""A TIFF that can only be read whole warns, and block-wise prediction refuses it.

tifffile views nearly every TIFF lazily (memory map or zarr view); producing one it
cannot is impractical here, so the zarr view is made to fail (the one mock in this
file) on a real zlib-compressed TIFF, which also rules out the memory map.
"""

import numpy as np
import pytest
import tifffile
import zarr

from mixscale import api
from mixscale.data import WholeFileReadWarning, open_image, read_image
from mixscale.model import ModelInfo, save_model
from mixscale.nets import create_net


@pytest.fixture
def unviewable_tiff(tmp_path, monkeypatch):
    path = tmp_path / "vol.tif"
    tifffile.imwrite(path, np.arange(3 * 16 * 16, dtype=np.uint16).reshape(3, 16, 16), compression="zlib")

    def no_view(*args, **kwargs):
        raise ValueError("no zarr view of this TIFF")

    monkeypatch.setattr(zarr, "open", no_view)
    return path


def test_whole_file_read_warns_and_says_so(unviewable_tiff):
    with pytest.warns(WholeFileReadWarning, match="read into memory as a whole"):
        array = open_image(str(unviewable_tiff))
    assert array.whole_file and array.shape == (3, 16, 16)
    assert np.array_equal(array, tifffile.imread(unviewable_tiff))
    assert np.array_equal(read_image(str(unviewable_tiff)), array)  # a whole read is what read_image means


def test_block_wise_prediction_refuses_a_whole_file_input(unviewable_tiff, tmp_path):
    net = create_net("msd", depth=2, out_channels=2)
    model = save_model(tmp_path / "m.safetensors", net, ModelInfo(net_name="msd", net_config=net.config()))
    with pytest.warns(WholeFileReadWarning), pytest.raises(ValueError, match="once per block; convert it first"):
        api.predict_blocks(model, str(unviewable_tiff), tmp_path / "out.zarr", slice_axis=0)
    assert not (tmp_path / "out.zarr").exists()  # refused before anything is written
