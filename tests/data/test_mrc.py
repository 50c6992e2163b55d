"""MRC files (extra ``em``): lazy reading of the selected slices, writing that mrcfile validates, voxel size
and origin written, read and carried from an MRC input to an MRC prediction, dtypes MRC cannot hold refused."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from mixscale import api
from mixscale.data import image_info, open_image, read_image, write_image

mrcfile = pytest.importorskip("mrcfile", reason="MRC needs the extra mixscale[em]")


def test_a_volume_round_trips_with_its_voxel_size_and_origin_and_validates(tmp_path):
    volume = np.random.default_rng(0).normal(size=(7, 12, 10)).astype(np.float32)
    path = tmp_path / "v.mrc"
    write_image(path, volume, voxel_size=(2.0, 1.5, 1.25), origin=(10.0, 20.0, 30.0))
    assert mrcfile.validate(str(path), print_file=open("/dev/null", "w"))
    with mrcfile.open(str(path)) as mrc:  # mrcfile's own view: x, y, z order
        np.testing.assert_array_equal(mrc.data, volume)
        assert tuple(mrc.voxel_size.item()) == (1.25, 1.5, 2.0)
        assert tuple(mrc.header.origin.item()) == (30.0, 20.0, 10.0)
    np.testing.assert_array_equal(read_image(path), volume)
    info = image_info(path)
    assert (info["format"], info["shape"], info["dtype"]) == ("mrc", (7, 12, 10), "float32")
    assert info["voxel_size"] == (2.0, 1.5, 1.25) and info["origin"] == (10.0, 20.0, 30.0)
    lazy = open_image(path)
    for key in [(slice(2, 5), slice(3, None)), (slice(None, None, 3), 4), (-1,), (Ellipsis, slice(1, 2))]:
        np.testing.assert_array_equal(lazy[key], volume[key])


def test_a_file_written_by_mrcfile_is_read_with_its_header(tmp_path):
    data = np.arange(3 * 4 * 5, dtype=np.int16).reshape(3, 4, 5)
    with mrcfile.new(str(tmp_path / "m.mrc")) as mrc:
        mrc.set_extended_header(np.zeros(4, dtype=[("a", "<i4")]))  # data start after an extended header
        mrc.set_data(data)
        mrc.voxel_size = (3.0, 2.0, 1.0)
    np.testing.assert_array_equal(read_image(tmp_path / "m.mrc"), data)
    assert image_info(tmp_path / "m.mrc")["voxel_size"] == (1.0, 2.0, 3.0)


def test_labels_keep_their_values_and_what_mrc_cannot_hold_is_refused_writing_nothing(tmp_path):
    labels = np.random.default_rng(1).integers(0, 5, size=(4, 8, 8)).astype(np.uint8)
    write_image(tmp_path / "l.mrc", labels)
    assert read_image(tmp_path / "l.mrc").dtype == np.int8  # mrcfile would make uint8 uint16 silently
    np.testing.assert_array_equal(read_image(tmp_path / "l.mrc"), labels)
    big = labels.copy()
    big[0, 0, 0] = 200
    write_image(tmp_path / "b.mrc", big)
    np.testing.assert_array_equal(read_image(tmp_path / "b.mrc"), big)
    with pytest.raises(ValueError, match="cannot hold dtype float64; it holds int8, int16, uint16, float16, float32"):
        write_image(tmp_path / "f.mrc", labels.astype(np.float64))
    with pytest.raises(ValueError, match=r"holds a 2D image or a 3D volume, not an array of shape \(2, 4, 8, 8\)"):
        write_image(tmp_path / "4d.mrc", np.zeros((2, 4, 8, 8), np.float32))
    for bad in (0, -1.0, (1.0, 2.0), (1.0, float("nan"), 1.0)):
        with pytest.raises(ValueError, match="voxel_size=.* is not allowed; expected a finite number > 0, or 3"):
            write_image(tmp_path / "v.mrc", labels, voxel_size=bad)
    with pytest.raises(ValueError, match="voxel_size and origin are written into MRC outputs"):
        write_image(tmp_path / "v.tif", labels, voxel_size=1.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.mrc", "l.mrc"]


def _regression_model(path):
    from mixscale.model import ModelInfo, save_model
    from mixscale.nets import create_net

    torch.manual_seed(0)
    net = create_net("msd", out_channels=1, depth=3)
    info = ModelInfo(net_name="msd", net_config=net.config(), task="regression",
                     normalization={"mean": [0.0], "std": [1.0]}, target_normalization={"mean": [0.0], "std": [1.0]})
    return save_model(path, net, info)


def test_prediction_of_an_mrc_volume_keeps_its_voxel_size_and_origin(tmp_path):
    model = _regression_model(tmp_path / "m.safetensors")
    volume = np.random.default_rng(2).normal(size=(4, 20, 18)).astype(np.float32)
    write_image(tmp_path / "in.mrc", volume, voxel_size=(4.0, 3.0, 3.0), origin=(-5.0, 0.0, 5.0))
    out = api.predict(model, str(tmp_path / "in.mrc"), tmp_path / "out.mrc", slice_axis=0)
    np.testing.assert_array_equal(read_image(tmp_path / "out.mrc"), out)
    meta = image_info(tmp_path / "out.mrc")
    assert meta["voxel_size"] == (4.0, 3.0, 3.0) and meta["origin"] == (-5.0, 0.0, 5.0)


def test_a_micrometer_voxel_size_goes_into_an_mrc_prediction_in_angstrom(tmp_path):
    import tifffile

    model = _regression_model(tmp_path / "m.safetensors")
    volume = np.random.default_rng(3).normal(size=(4, 20, 18)).astype(np.float32)
    tifffile.imwrite(tmp_path / "in.tif", volume, imagej=True, resolution=(1 / 0.25, 1 / 0.2),
                     metadata={"spacing": 0.5, "unit": "um", "axes": "ZYX"})
    api.predict(model, str(tmp_path / "in.tif"), tmp_path / "out.mrc", slice_axis=0)
    meta = image_info(tmp_path / "out.mrc")
    np.testing.assert_allclose(meta["voxel_size"], (5000.0, 2000.0, 2500.0), rtol=1e-6)  # float32 header
    assert meta["unit"] == "angstrom"


READ_BLOCKS = """
import sys
import numpy as np
from mixscale.data import open_image

def status(key):  # kB in /proc/self/status
    return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith(key))

arr = open_image(sys.argv[1])
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # the peak (VmHWM) starts again from the current RSS
before = status("VmRSS:")
total = 0.0
for z in range(0, arr.shape[0], 8):
    total += float(arr[z:z + 8].sum(dtype=np.float64))
print((status("VmHWM:") - before) / 1024, total)
"""


def test_reading_a_256_mib_mrc_block_wise_grows_memory_by_less_than_two_blocks(tmp_path):
    path = tmp_path / "big.mrc"
    with mrcfile.new_mmap(str(path), shape=(64, 1024, 1024), mrc_mode=2) as mrc:  # 256 MiB of float32
        for z in range(64):
            mrc.data[z] = z
    r = subprocess.run([sys.executable, "-c", READ_BLOCKS, str(path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    growth_mb, total = (float(v) for v in r.stdout.split())
    assert total == sum(z * 1024 * 1024 for z in range(64))  # every block was read
    block_mb = 8 * 1024 * 1024 * 4 / 2**20  # 32 MiB
    assert growth_mb < 2 * block_mb, growth_mb  # measured: 32 MiB, one block
