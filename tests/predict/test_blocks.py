"""Block-wise prediction from real model files over real zarr/HDF5/TIFF inputs into zarr."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import zarr

from mixscale import api
from mixscale.predict import default_block_shape, even_block, predict_blocks
from mixscale.data import write_image
from mixscale.infer.store import BlockStore
from mixscale.model import ModelInfo, save_model
from mixscale.nets import create_net

CLI = [sys.executable, "-m", "mixscale.cli.main"]


def _doubling_model(path, spatial_dims):
    """An MS-D whose output is exactly 2 * input: hidden weights zero, the input's final weight 2."""
    net = create_net("msd", spatial_dims=spatial_dims, depth=3, dilations=[1, 2])
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.final_weight[0, 0] = 2.0
    return save_model(path, net, ModelInfo(net_name="msd", net_config=net.config(), task="regression"))


def _random_msd(path, spatial_dims=2, depth=6, classes=3, in_channels=1, context_slices=0):
    torch.manual_seed(0)
    net = create_net("msd", spatial_dims=spatial_dims, depth=depth, dilations=[1, 2, 3], out_channels=classes,
                     in_channels=in_channels)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    info = ModelInfo(net_name="msd", net_config=net.config(), task="segmentation",
                     class_names=[f"c{i}" for i in range(classes)],
                     normalization={"mean": [100.0], "std": [20.0]}, context_slices=context_slices)
    return save_model(path, net, info)


@pytest.fixture(scope="module")
def volume(tmp_path_factory):
    d = tmp_path_factory.mktemp("vol")
    vol = np.random.default_rng(0).normal(100, 20, (9, 37, 30)).clip(0).astype(np.uint16)
    write_image(str(d / "in.zarr"), vol, chunks=(2, 16, 16))
    return d / "in.zarr", vol


@pytest.fixture(scope="module")
def seg_model(tmp_path_factory):
    return _random_msd(tmp_path_factory.mktemp("model") / "m.safetensors")


def _read(out, name="labels"):
    return zarr.open_group(str(out), mode="r")[name][:]


@pytest.mark.parametrize("spatial_dims, slice_axis, block, tile, overlap, blend", [
    (2, 0, (2, 16, 16), None, 0.25, "gaussian"),
    (2, 1, (5, 7, 30), (6, 5), 0.5, "gaussian"),
    (2, 2, (9, 37, 4), (8, 8), 0.0, "constant"),
    (3, None, (4, 13, 11), (3, 5, 4), 0.3, "gaussian"),
    (3, None, (9, 37, 30), None, 0.25, "constant"),
])
def test_pointwise_model_is_reproduced_exactly(tmp_path, volume, spatial_dims, slice_axis, block, tile, overlap, blend):
    model = _doubling_model(tmp_path / "m.safetensors", spatial_dims)
    summary = predict_blocks(model, str(volume[0]), tmp_path / "out.zarr", slice_axis=slice_axis, block_shape=block,
                             tile_shape=tile, overlap=overlap, blend=blend)
    assert summary["complete"] and summary["voxels"] == volume[1].size
    out = _read(tmp_path / "out.zarr", "prediction")
    assert out.dtype == np.float32
    assert np.array_equal(out, 2 * volume[1].astype(np.float32))


def test_pointwise_2d_image_from_tiff(tmp_path):
    image = np.random.default_rng(1).normal(size=(45, 38)).astype(np.float32)
    write_image(str(tmp_path / "img.tif"), image)
    model = _doubling_model(tmp_path / "m.safetensors", 2)
    predict_blocks(model, str(tmp_path / "img.tif"), tmp_path / "out.zarr", block_shape=(16, 16), tile_shape=7,
                   overlap=0.4)
    assert np.array_equal(_read(tmp_path / "out.zarr", "prediction"), 2 * image)


def test_constant_volume_gives_seamless_constant_prediction(tmp_path, seg_model):
    write_image(str(tmp_path / "c.h5:/data"), np.full((6, 33, 29), 120, np.uint16))
    predict_blocks(seg_model, str(tmp_path / "c.h5:/data"), tmp_path / "out.zarr", slice_axis=0, block_shape=(2, 10, 12),
                   tile_shape=(7, 9), overlap=0.3, probabilities=True)
    probs = _read(tmp_path / "out.zarr", "probabilities").astype(np.float32)
    assert probs.shape == (3, 6, 33, 29)
    spread = probs.max(axis=(1, 2, 3)) - probs.min(axis=(1, 2, 3))
    assert (spread == 0).all()  # float16 output of an exactly constant prediction: no seams at all
    assert np.unique(_read(tmp_path / "out.zarr")).size == 1


@pytest.mark.parametrize("spatial_dims, slice_axis, block, tile", [(2, 0, (2, 12, 16), None), (2, 2, (9, 20, 7), (9, 11)),
                                                            (3, None, (5, 16, 16), (6, 9, 8))])
def test_real_msd_blocks_equal_whole_volume_prediction(tmp_path, volume, spatial_dims, slice_axis, block, tile):
    model = _random_msd(tmp_path / "m.safetensors", spatial_dims=spatial_dims, depth=4)
    predict_blocks(model, str(volume[0]), tmp_path / "out.zarr", slice_axis=slice_axis, block_shape=block, tile_shape=tile,
                   probabilities=True)
    whole = api.predict(model, volume[1], slice_axis=slice_axis, probabilities=True)  # one pass over the whole volume
    got = _read(tmp_path / "out.zarr", "probabilities").astype(np.float32)
    np.testing.assert_allclose(got, whole, atol=1e-3)  # float16 storage: 2^-11 relative
    labels = _read(tmp_path / "out.zarr")
    assert labels.dtype == np.uint8
    clear = np.sort(whole, axis=0)[-1] - np.sort(whole, axis=0)[-2] > 1e-3  # ties may break either way
    assert np.array_equal(labels[clear], whole.argmax(0)[clear])


def test_25d_context_matches_a_direct_reference(tmp_path, volume):
    """A 2.5D model (k = 1 context slice each side, reflected at the ends) against a hand-built input stack."""
    model = _random_msd(tmp_path / "m.safetensors", in_channels=3, context_slices=1)
    predict_blocks(model, str(volume[0]), tmp_path / "out.zarr", slice_axis=0, block_shape=(2, 37, 30), probabilities=True)
    from mixscale.model import load_model

    net, _ = load_model(model)
    x = (volume[1].astype(np.float32) - 100) / 20
    padded = np.pad(x, ((1, 1), (0, 0), (0, 0)), mode="reflect")
    stack = np.stack([padded[i:i + 3] for i in range(x.shape[0])])  # (S, 3, H, W)
    with torch.no_grad():
        ref = torch.softmax(net(torch.from_numpy(stack)), 1).numpy().transpose(1, 0, 2, 3)
    np.testing.assert_allclose(_read(tmp_path / "out.zarr", "probabilities").astype(np.float32), ref, atol=1e-3)


def test_tta_block_output_equals_in_memory_tta(tmp_path, volume, seg_model):
    predict_blocks(seg_model, str(volume[0]), tmp_path / "out.zarr", slice_axis=0, block_shape=(3, 20, 30), tta=True,
                   probabilities=True)
    ref = api.predict(seg_model, volume[1], slice_axis=0, tta=True, probabilities=True)
    np.testing.assert_allclose(_read(tmp_path / "out.zarr", "probabilities").astype(np.float32), ref, atol=1e-3)
    plain = api.predict(seg_model, volume[1], slice_axis=0, probabilities=True)
    assert np.abs(ref - plain).max() > 1e-2  # the augmentation really changed something


def test_resume_recomputes_only_unfinished_blocks(tmp_path, volume, seg_model):
    out = tmp_path / "out.zarr"
    first = predict_blocks(seg_model, str(volume[0]), out, slice_axis=0, block_shape=(2, 37, 30))
    reference = _read(out)
    markers = out / ".mixscale" / "done"
    for index in ("1", "3"):  # as if killed while writing blocks 1 and 3: garbage written, no marker
        (markers / index).unlink()
    zarr.open_group(str(out), mode="r+")["labels"][2:4] = 255
    zarr.open_group(str(out), mode="r+")["labels"][6:8] = 255
    again = predict_blocks(seg_model, str(volume[0]), out, slice_axis=0, block_shape=(2, 37, 30))
    assert (first["computed"], again["computed"], again["skipped"]) == (5, 2, 3)
    assert np.array_equal(_read(out), reference)


def test_killed_cli_run_resumes_to_identical_result(tmp_path, volume):
    model = _random_msd(tmp_path / "m.safetensors", depth=40)
    big = np.random.default_rng(2).normal(100, 20, (24, 96, 96)).astype(np.float32)
    write_image(str(tmp_path / "big.zarr"), big)
    cmd = CLI + ["predict", str(model), str(tmp_path / "big.zarr"), "--axis", "0", "--block-shape", "1", "96", "96",
                 "--workers", "1", "--no-progress"]
    proc = subprocess.Popen(cmd + ["-o", str(tmp_path / "killed.zarr")], stderr=subprocess.PIPE)
    markers = tmp_path / "killed.zarr" / ".mixscale" / "done"
    deadline = time.time() + 120
    while time.time() < deadline and (not markers.is_dir() or len(os.listdir(markers)) < 3):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len([p for p in os.listdir(markers) if p.isdigit()])
    assert 3 <= done < 24, f"kill came too late or too early ({done} blocks done)"
    subprocess.run(cmd + ["-o", str(tmp_path / "killed.zarr")], check=True, capture_output=True)
    subprocess.run(cmd + ["-o", str(tmp_path / "clean.zarr")], check=True, capture_output=True)
    assert np.array_equal(_read(tmp_path / "killed.zarr"), _read(tmp_path / "clean.zarr"))


def test_distributed_local_cluster_gives_identical_result(tmp_path, volume, seg_model):
    from distributed import Client, LocalCluster

    predict_blocks(seg_model, str(volume[0]), tmp_path / "local.zarr", slice_axis=0, block_shape=(2, 20, 30),
                   probabilities=True)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            summary = predict_blocks(seg_model, str(volume[0]), tmp_path / "dist.zarr", slice_axis=0,
                                     block_shape=(2, 20, 30), probabilities=True, scheduler=cluster.scheduler_address)
            assert len(client.scheduler_info()["workers"]) == 2
    assert summary["complete"] and summary["computed"] == 10
    for name in ("labels", "probabilities"):
        assert np.array_equal(_read(tmp_path / "dist.zarr", name), _read(tmp_path / "local.zarr", name))


def test_three_parts_as_three_processes_give_identical_result(tmp_path, volume, seg_model):
    predict_blocks(seg_model, str(volume[0]), tmp_path / "one.zarr", slice_axis=0, block_shape=(1, 37, 30))
    cmd = CLI + ["predict", str(seg_model), str(volume[0]), "-o", str(tmp_path / "parts.zarr"), "--axis", "0",
                 "--block-shape", "1", "37", "30", "--num-parts", "3", "--no-progress"]
    procs = [subprocess.Popen(cmd + ["--part-id", str(i)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    assert sorted(int(o.split(": ")[1].split(" blocks")[0]) for o, _ in outs) == [3, 3, 3]
    assert np.array_equal(_read(tmp_path / "parts.zarr"), _read(tmp_path / "one.zarr"))
    assert len(os.listdir(tmp_path / "parts.zarr" / ".mixscale" / "done")) == 9


def test_cli_progress_and_summary(tmp_path, volume, seg_model):
    r = subprocess.run(CLI + ["predict", str(seg_model), str(volume[0]), "-o", str(tmp_path / "o.zarr"), "--axis",
                              "0", "--tta", "--probabilities"], capture_output=True, text=True, check=True)
    assert "blocks computed" in r.stdout and "complete" in r.stdout
    assert "block" in r.stderr and "Mvox/s" in r.stderr  # the tqdm bar on stderr
    assert zarr.open_group(str(tmp_path / "o.zarr"), mode="r")["probabilities"].shape == (3, 9, 37, 30)


def test_errors_name_the_problem_and_write_nothing(tmp_path, volume, seg_model):
    out = tmp_path / "x.zarr"
    with pytest.raises(ValueError, match="pass slice_axis=0"):
        predict_blocks(seg_model, str(volume[0]), out)
    with pytest.raises(ValueError, match="part_id=2"):
        predict_blocks(seg_model, str(volume[0]), out, slice_axis=0, num_parts=2, part_id=2)
    with pytest.raises(ValueError, match=r"block_shape=\(2, 3\) is not allowed; expected 3 integers >= 1"):
        predict_blocks(seg_model, str(volume[0]), out, slice_axis=0, block_shape=(2, 3))
    with pytest.raises(ValueError, match=r"tile_shape=\(2, 3, 4\) is not allowed; expected 2 integers >= 1"):
        predict_blocks(seg_model, str(volume[0]), out, slice_axis=0, tile_shape=(2, 3, 4))
    with pytest.raises(ValueError, match=r"overlap=1.0 is not allowed; expected a fraction in \[0, 1\)"):
        predict_blocks(seg_model, str(volume[0]), out, slice_axis=0, overlap=1.0)
    assert not out.exists()
    r = subprocess.run(CLI + ["predict", str(seg_model), str(volume[0]), "-o", str(tmp_path / "x.npy"), "--axis",
                              "0", "--num-parts", "2"], capture_output=True, text=True)
    assert r.returncode == 2 and "--num-parts/--part-id need a .zarr output" in r.stderr
    assert not (tmp_path / "x.npy").exists()


def test_settings_change_is_refused_then_overwritten(tmp_path, volume, seg_model):
    out = tmp_path / "out.zarr"
    predict_blocks(seg_model, str(volume[0]), out, slice_axis=0)
    with pytest.raises(FileExistsError, match="other settings"):
        predict_blocks(seg_model, str(volume[0]), out, slice_axis=0, tta=True)
    assert predict_blocks(seg_model, str(volume[0]), out, slice_axis=0, tta=True, overwrite=True)["computed"] > 0


def test_api_predict_routes_zarr_output_to_blocks(tmp_path, volume, seg_model):
    labels = api.predict(seg_model, str(volume[0]), tmp_path / "o.zarr", slice_axis=0, block_shape=(3, 37, 30))
    assert labels.shape == volume[1].shape and labels.dtype == np.uint8
    assert np.array_equal(labels[:], api.predict(seg_model, volume[1], slice_axis=0))
    with pytest.raises(TypeError, match="block_shape"):
        api.predict(seg_model, volume[1], tmp_path / "o.npy", slice_axis=0, block_shape=(3, 37, 30))
    with pytest.raises(ValueError, match="expected a zarr store"):
        predict_blocks(seg_model, str(volume[0]), tmp_path / "o.tif", slice_axis=0)


def test_default_blocks_are_even_and_bounded():
    assert even_block(2560, 2048, 256) == 1280
    assert even_block(1000, 2048, 256) == 1000
    assert default_block_shape((2160, 2560, 2560), slice_axis=0, spatial_dims=2) == (8, 1280, 1280)
    assert default_block_shape((300, 300, 300), slice_axis=None, spatial_dims=3) == (112, 112, 112)


def test_whole_image_norms_are_flagged(caplog):
    from mixscale.model import warn_if_not_tile_exact

    assert warn_if_not_tile_exact(create_net("unet", depth=2, base_channels=4, norm="instance"))
    assert "InstanceNorm2d" in caplog.text
    assert not warn_if_not_tile_exact(create_net("unet", depth=2, base_channels=4, norm="batch"))
    assert not warn_if_not_tile_exact(create_net("msd", depth=3))


def test_25d_model_trains_from_config_and_predicts_block_wise(tmp_path, tiny_config, tiny_dataset):
    tiny_config["data"]["context_slices"] = 1
    result = api.train(tiny_config)
    from mixscale.model import read_model_info

    info = read_model_info(result.model_path)
    assert info.in_channels == 3 and info.context_slices == 1 == info.train_config["data"]["context_slices"]
    summary = predict_blocks(result.model_path, tiny_dataset["val_images"], tmp_path / "o.zarr", slice_axis=0,
                             block_shape=(1, 40, 40))
    assert summary["complete"] and _read(tmp_path / "o.zarr").shape == (3, 40, 40)
    with pytest.raises(ValueError, match="2.5D"):
        api.predict(result.model_path, tiny_dataset["val_images"], slice_axis=0)


def test_local_process_scheduler_gives_identical_result(tmp_path, volume, seg_model):
    kw = dict(slice_axis=0, block_shape=(3, 37, 30), probabilities=True)
    predict_blocks(seg_model, str(volume[0]), tmp_path / "threads.zarr", **kw)
    summary = predict_blocks(seg_model, str(volume[0]), tmp_path / "procs.zarr", scheduler="processes", blocks_in_flight=2,
                             **kw)
    assert summary["complete"] and summary["computed"] == 3
    for name in ("labels", "probabilities"):
        assert np.array_equal(_read(tmp_path / "procs.zarr", name), _read(tmp_path / "threads.zarr", name))


@pytest.mark.parametrize("name", ["vol.tif", "slices/", "vol.h5:/entry/data"])
def test_pointwise_volume_from_tiff_stack_slice_folder_and_hdf5(tmp_path, volume, name):
    vol = volume[1]
    if name == "slices/":
        (tmp_path / "slices").mkdir()
        for z, image in enumerate(vol):
            write_image(str(tmp_path / "slices" / f"z{z}.tif"), image)
    else:
        write_image(str(tmp_path / name), vol)
    model = _doubling_model(tmp_path / "m.safetensors", 2)
    predict_blocks(model, str(tmp_path / name), tmp_path / "out.zarr", slice_axis=1, block_shape=(4, 9, 30))
    assert np.array_equal(_read(tmp_path / "out.zarr", "prediction"), 2 * vol.astype(np.float32))


@pytest.mark.parametrize("channel_axis", [0, 3])
def test_multichannel_input_with_channel_axis(tmp_path, channel_axis):
    torch.manual_seed(1)
    net = create_net("msd", depth=4, dilations=[1, 2], in_channels=2, out_channels=3)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    model = save_model(tmp_path / "m.safetensors", net, ModelInfo(
        net_name="msd", net_config=net.config(), task="segmentation", class_names=["a", "b", "c"],
        normalization={"mean": [1.0, -1.0], "std": [2.0, 0.5]}))
    vol = np.random.default_rng(3).normal(size=(5, 19, 23, 2) if channel_axis == 3 else (2, 5, 19, 23))
    write_image(str(tmp_path / "in.zarr"), vol.astype(np.float32))
    predict_blocks(model, str(tmp_path / "in.zarr"), tmp_path / "o.zarr", slice_axis=0, channel_axis=channel_axis,
                   block_shape=(2, 10, 23), probabilities=True)
    ref = api.predict(model, vol.astype(np.float32), slice_axis=0, channel_axis=channel_axis, probabilities=True)
    np.testing.assert_allclose(_read(tmp_path / "o.zarr", "probabilities").astype(np.float32), ref, atol=1e-3)


def test_info_reports_block_store_progress(tmp_path, volume, seg_model):
    out = tmp_path / "o.zarr"
    predict_blocks(seg_model, str(volume[0]), out, slice_axis=0, block_shape=(3, 37, 30), num_parts=3, part_id=1)
    shown = api.info(str(out))
    assert shown["blocks_complete"] == "1 of 3 (resumable)"
    assert shown["arrays"] == {"labels": "(9, 37, 30) uint8"} and shown["axis"] == 0
    predict_blocks(seg_model, str(volume[0]), out, slice_axis=0, block_shape=(3, 37, 30))
    assert api.info(str(out))["blocks_complete"] == "3 of 3 (complete)"
    assert api.info(str(out / "labels"))["shape"] == (9, 37, 30)


def test_stop_flag_leaves_blocks_undone_and_a_rerun_completes_them(tmp_path, volume, seg_model):
    """should_stop ends a run between blocks (nothing half-marked), on_block counts, a rerun resumes; the live
    view (api.open_blocks) shows complete blocks only."""

    path, _ = volume
    kw = dict(slice_axis=0, block_shape=(2, 37, 30), scheduler="sync")
    whole = predict_blocks(seg_model, str(path), tmp_path / "whole.zarr", **kw)
    ticks = []
    first = predict_blocks(seg_model, str(path), tmp_path / "out.zarr", on_block=lambda d, t: ticks.append((d, t)),
                           should_stop=lambda: len(ticks) >= 2, **kw)
    assert first["blocks"] == 5 and first["computed"] == 2 and first["stopped"] and not first["complete"]
    assert ticks[:2] == [(1, 5), (2, 5)]
    view = np.asarray(api.open_blocks(tmp_path / "out.zarr", "labels", offset=1, missing=0))
    ref = _read(tmp_path / "whole.zarr")
    done = sorted(BlockStore(tmp_path / "out.zarr").done())
    assert len(done) == 2
    for i in range(5):
        rows = slice(2 * i, 2 * i + 2)
        expected = ref[rows] + 1 if i in done else np.zeros_like(ref[rows])
        np.testing.assert_array_equal(view[rows], expected)
    second = predict_blocks(seg_model, str(path), tmp_path / "out.zarr", **kw)
    assert second["complete"] and second["skipped"] == 2 and second["computed"] == 3 and not second["stopped"]
    np.testing.assert_array_equal(_read(tmp_path / "out.zarr"), ref)
    assert whole["complete"]
    with pytest.raises(ValueError, match="should_stop works with the local schedulers"):
        predict_blocks(seg_model, str(path), tmp_path / "p.zarr", slice_axis=0, scheduler="processes",
                       should_stop=lambda: False)
    assert not (tmp_path / "p.zarr").exists()
