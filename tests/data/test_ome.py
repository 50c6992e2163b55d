"""OME-Zarr outputs (NGFF 0.5): valid against the spec's models, levels that are exact 2^k reductions of
level 0 (mean for images, a stride for labels), the voxel size in the scales, chunks on the prediction's
blocks; the converter of a block-wise prediction store carries the MRC voxel size."""

import numpy as np
import pytest
import torch
import zarr

from mixscale import api
from mixscale.data.ome import level_shapes, write_ome_zarr

models = pytest.importorskip("ome_zarr_models", reason="the NGFF check needs ome-zarr-models (extra ome)")


def _naive_mean(x, f):
    """The mean over f-windows of the last three axes (floored), by explicit loops over windows."""
    c, z, y, x_ = x.shape
    out = np.zeros((c, z // f, y // f, x_ // f))
    for k in range(z // f):
        for j in range(y // f):
            for i in range(x_ // f):
                out[:, k, j, i] = x[:, k * f:(k + 1) * f, j * f:(j + 1) * f, i * f:(i + 1) * f].mean(axis=(1, 2, 3))
    return out


def test_levels_are_exact_reductions_and_the_metadata_validates(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(2, 40, 70, 50)).astype(np.float32)
    labels = rng.integers(0, 4, size=(40, 70, 50)).astype(np.uint8)
    out = write_ome_zarr(tmp_path / "o.zarr", image, axes="czyx", labels=labels, voxel_size=(2.0, 0.5, 0.5),
                         unit="micrometer", chunks=(1, 8, 70, 50), class_names=["a", "b", "c", "d"])
    group = models.open_ome_zarr(str(out), version="0.5")  # the spec's own pydantic models
    assert type(group).__name__ == "Image"
    root = zarr.open_group(str(out), mode="r")
    assert [root[str(k)].shape for k in range(2)] == [(2, 40, 70, 50), (2, 20, 35, 25)]
    assert level_shapes(image.shape, 3) == [(2, 40, 70, 50), (2, 20, 35, 25)]  # 10 x 17 x 12 would be < 16
    assert root["0"].chunks == (1, 8, 70, 50) and root["1"].chunks == (1, 8, 35, 25)
    np.testing.assert_array_equal(root["0"][:], image)
    np.testing.assert_allclose(root["1"][:], _naive_mean(image.astype(np.float64), 2), rtol=1e-6)
    np.testing.assert_array_equal(root["labels/segmentation/1"][:], labels[::2, ::2, ::2])
    ms = root.attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == list("czyx") and ms["axes"][1]["unit"] == "micrometer"
    level1 = ms["datasets"][1]["coordinateTransformations"]
    assert level1[0]["scale"] == [1.0, 4.0, 1.0, 1.0]
    assert level1[1]["translation"] == [0.0, 1.0, 0.25, 0.25]  # the centre of a 2-window: half a voxel on
    label_meta = root["labels/segmentation"].attrs["ome"]
    assert [c["label-value"] for c in label_meta["image-label"]["colors"]] == [0, 1, 2, 3]


def test_four_levels_match_the_naive_reduction_of_level_0(tmp_path):
    image = np.random.default_rng(1).normal(size=(1, 32, 48, 40)).astype(np.float32)
    write_ome_zarr(tmp_path / "o.zarr", image, axes="czyx", chunks=(1, 5, 48, 40), levels=4)
    root = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")
    for k in range(1, 4):
        np.testing.assert_allclose(root[str(k)][:], _naive_mean(image.astype(np.float64), 2 ** k), rtol=1e-5,
                                   atol=1e-6)


def test_bad_axes_and_voxel_sizes_are_refused(tmp_path):
    image = np.zeros((8, 20, 20), np.float32)
    with pytest.raises(ValueError, match="axes='cyx' is not allowed|axes='yx' is not allowed"):
        write_ome_zarr(tmp_path / "a.zarr", image, axes="yx")
    for bad in (0, (1.0, 2.0), -3):
        with pytest.raises(ValueError, match="voxel_size=.* is not allowed; expected a finite number > 0"):
            write_ome_zarr(tmp_path / "b.zarr", image, axes="zyx", voxel_size=bad)
    assert not (tmp_path / "a.zarr").exists() and not (tmp_path / "b.zarr").exists()


def test_a_block_wise_prediction_becomes_an_ome_zarr_with_the_mrc_voxel_size(tmp_path):
    pytest.importorskip("mrcfile", reason="the MRC input needs the extra mixscale[em]")
    from mixscale.data import write_image
    from mixscale.model import ModelInfo, save_model
    from mixscale.nets import create_net

    torch.manual_seed(0)
    net = create_net("msd", out_channels=3, depth=3)
    with torch.no_grad():
        net.final_weight.normal_(0, 1.0)
    info = ModelInfo(net_name="msd", net_config=net.config(), task="segmentation", class_names=["a", "b", "c"],
                     normalization={"mean": [0.0], "std": [1.0]})
    model = save_model(tmp_path / "m.safetensors", net, info)
    volume = np.random.default_rng(3).normal(size=(12, 40, 36)).astype(np.float32)
    write_image(tmp_path / "tomo.mrc", volume, voxel_size=(8.0, 4.0, 4.0))
    api.predict(model, str(tmp_path / "tomo.mrc"), tmp_path / "pred.zarr", slice_axis=0, probabilities=True,
                block_shape=(4, 40, 36), progress=False)
    out = api.to_ome_zarr(tmp_path / "pred.zarr", tmp_path / "pred.ome.zarr", levels=2)
    models.open_ome_zarr(str(out), version="0.5")
    root, pred = zarr.open_group(str(out), mode="r"), zarr.open_group(str(tmp_path / "pred.zarr"), mode="r")
    np.testing.assert_array_equal(root["0"][:], pred["probabilities"][:])
    np.testing.assert_array_equal(root["labels/segmentation/0"][:], pred["labels"][:])
    assert root["0"].chunks == (1, 4, 40, 36) and root["labels/segmentation/0"].chunks == (4, 40, 36)
    ms = root.attrs["ome"]["multiscales"][0]
    assert ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 8.0, 4.0, 4.0]
    assert ms["axes"][1] == {"name": "z", "type": "space", "unit": "angstrom"}
    with pytest.raises(FileExistsError):
        api.to_ome_zarr(tmp_path / "pred.zarr", out)
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "mixscale.cli.main", "ome-zarr", str(tmp_path / "pred.zarr"), "-o",
                        str(tmp_path / "cli.zarr"), "--voxel-size", "2", "1", "1", "--unit", "nanometer"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "mixscale.cli.main", "predict", str(model), str(tmp_path / "tomo.mrc"),
                        "-o", str(tmp_path / "p2.zarr"), "--axis", "0", "--ome-zarr", str(tmp_path / "p2.ome.zarr"),
                        "--no-progress"], capture_output=True, text=True)
    assert r.returncode == 0 and "(OME-Zarr)" in r.stdout, r.stderr
    models.open_ome_zarr(str(tmp_path / "p2.ome.zarr"), version="0.5")  # labels only: the image is the input
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "p2.ome.zarr/0"), mode="r")[:], volume)
    cli = zarr.open_group(str(tmp_path / "cli.zarr"), mode="r").attrs["ome"]["multiscales"][0]
    assert cli["datasets"][0]["coordinateTransformations"][0]["scale"] == [1.0, 2.0, 1.0, 1.0]
    assert cli["axes"][3]["unit"] == "nanometer"


def test_ome_zarr_inputs_open_at_a_level_with_its_voxel_size_in_0_4_and_0_5(tmp_path):
    from mixscale.data import image_info, open_image

    image = np.random.default_rng(4).normal(size=(32, 40, 36)).astype(np.float32)
    write_ome_zarr(tmp_path / "v05.zarr", image, axes="zyx", voxel_size=(3.0, 1.0, 1.0), unit="nanometer",
                   chunks=(8, 40, 36), levels=2)
    np.testing.assert_array_equal(open_image(tmp_path / "v05.zarr")[:], image)  # the group opens level 0
    assert open_image(str(tmp_path / "v05.zarr/1")).shape == (16, 20, 18)
    info = image_info(str(tmp_path / "v05.zarr/1"))
    assert info["voxel_size"] == (6.0, 2.0, 2.0) and info["unit"] == "nanometer" and info["ome_version"] == "0.5"
    # NGFF 0.4: zarr v2, the metadata in .zattrs, written here by hand as other tools write it
    root = zarr.open_group(str(tmp_path / "v04.zarr"), mode="w", zarr_format=2)
    for k, f in enumerate((1, 2)):
        root.create_array(str(k), data=image[::f, ::f, ::f])
    root.attrs["multiscales"] = [{"version": "0.4", "axes": [{"name": n, "type": "space", "unit": "micrometer"}
                                                             for n in "zyx"],
                                  "datasets": [{"path": str(k), "coordinateTransformations": [
                                      {"type": "scale", "scale": [0.5 * f, 0.25 * f, 0.25 * f]}]}
                                      for k, f in enumerate((1, 2))]}]
    np.testing.assert_array_equal(open_image(tmp_path / "v04.zarr")[:], image)
    info = image_info(str(tmp_path / "v04.zarr/1"))
    assert info["voxel_size"] == (1.0, 0.5, 0.5) and info["unit"] == "micrometer" and info["ome_version"] == "0.4"


def test_napari_ome_zarr_reads_the_levels_the_voxel_size_and_the_label_colours(tmp_path):
    reader_plugin = pytest.importorskip("napari_ome_zarr", reason="napari-ome-zarr is not installed")
    rng = np.random.default_rng(0)
    image = rng.uniform(size=(2, 40, 70, 50)).astype(np.float32)
    labels = rng.integers(0, 4, size=(40, 70, 50)).astype(np.uint8)
    out = str(write_ome_zarr(tmp_path / "x.ome.zarr", image, axes="czyx", labels=labels, voxel_size=(8.0, 4.0, 4.0),
                             unit="angstrom", levels=3, class_names=["a", "b", "c", "d"]))
    layers = {kind: (data, kw) for data, kw, kind in reader_plugin.napari_get_reader(out)(out)}
    data, kw = layers["image"]
    assert [tuple(a.shape) for a in data] == [(2, 40, 70, 50), (2, 20, 35, 25), (2, 10, 17, 12)]
    assert kw["channel_axis"] == 0 and list(kw["scale"]) == [8.0, 4.0, 4.0]
    assert tuple(kw["units"]) == ("angstrom",) * 3
    np.testing.assert_array_equal(np.asarray(data[0]), image)
    data, kw = layers["labels"]
    assert [tuple(a.shape) for a in data] == level_shapes((40, 70, 50), 3, 3)
    np.testing.assert_array_equal(np.asarray(data[1]), labels[::2, ::2, ::2])
    assert sorted(kw["colormap"]) == [0, 1, 2, 3] and kw["colormap"][0][3] == 0.0  # class 0 transparent
