"""Block-wise prediction never loses data: --overwrite never removes the input or a folder mixscale did not
write, and a second writer with other settings is refused while the first runs (real processes, real files)."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import zarr

from mixscale.data import read_image, write_image
from mixscale.model import ModelInfo, save_model
from mixscale.nets import create_net
from mixscale.predict import predict_blocks

CLI = [sys.executable, "-m", "mixscale.cli.main"]


def _model(path, depth=6):
    torch.manual_seed(0)
    net = create_net("msd", spatial_dims=2, depth=depth, dilations=[1, 2, 3], out_channels=3)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    info = ModelInfo(net_name="msd", net_config=net.config(), task="segmentation", class_names=["a", "b", "c"],
                     normalization={"mean": [100.0], "std": [20.0]})
    save_model(path, net, info)
    return path


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return _model(tmp_path_factory.mktemp("m") / "m.safetensors")


def _volume(path, shape=(6, 32, 32)):
    vol = np.random.default_rng(0).normal(100, 20, shape).astype(np.float32)
    write_image(str(path), vol)
    return vol


def test_overwrite_onto_the_input_store_is_refused_and_the_input_kept(tmp_path, model):
    vol = _volume(tmp_path / "in.zarr")
    r = subprocess.run(CLI + ["predict", str(model), str(tmp_path / "in.zarr"), "-o", str(tmp_path / "in.zarr"),
                              "--axis", "0", "--overwrite"], capture_output=True, text=True)
    assert r.returncode != 0 and "is the input" in r.stderr and "never writes over its input" in r.stderr
    assert np.array_equal(read_image(str(tmp_path / "in.zarr")), vol)


@pytest.mark.parametrize("image, output, problem", [
    ("vol.zarr/raw", "vol.zarr", "is the input"),          # the store that holds the input array
    ("stack", "stack/pred.zarr", "lies inside the input"),  # into the input's folder
    ("link.zarr", "vol.zarr", "is the input"),             # the same store under another name
])
def test_outputs_that_would_replace_the_input_are_refused(tmp_path, model, image, output, problem):
    vol = np.random.default_rng(0).normal(100, 20, (4, 24, 24)).astype(np.float32)
    write_image(str(tmp_path / "vol.zarr/raw"), vol)
    (tmp_path / "stack").mkdir()
    for i in range(2):
        write_image(str(tmp_path / "stack" / f"s{i}.tif"), vol[i])
    os.symlink(tmp_path / "vol.zarr", tmp_path / "link.zarr")
    src = str(tmp_path / image) + ("/raw" if image == "link.zarr" else "")
    with pytest.raises(ValueError, match=problem):
        predict_blocks(model, src, tmp_path / output, slice_axis=0, overwrite=True)
    assert np.array_equal(read_image(str(tmp_path / "vol.zarr/raw")), vol)
    assert sorted(p.name for p in (tmp_path / "stack").iterdir()) == ["s0.tif", "s1.tif"]


def test_another_array_of_the_same_hdf5_file_is_allowed(tmp_path, model):
    from mixscale.data.guard import check_not_input

    check_not_input(f"{tmp_path}/v.h5:/raw", f"{tmp_path}/v.h5:/labels")  # different datasets: fine
    with pytest.raises(ValueError, match="is the input"):
        check_not_input(f"{tmp_path}/v.h5:/raw", f"{tmp_path}/v.h5:/raw")
    with pytest.raises(ValueError, match="is the input"):
        check_not_input(f"{tmp_path}/v.tif", f"{tmp_path}/./v.tif")


def test_overwrite_never_removes_a_zarr_folder_mixscale_did_not_write(tmp_path, model):
    _volume(tmp_path / "in.zarr")
    theirs = np.arange(12, dtype=np.int32).reshape(3, 4)
    write_image(str(tmp_path / "theirs.zarr"), theirs)  # a user's zarr store, no mixscale plan
    r = subprocess.run(CLI + ["predict", str(model), str(tmp_path / "in.zarr"), "-o", str(tmp_path / "theirs.zarr"),
                              "--axis", "0", "--overwrite"], capture_output=True, text=True)
    assert r.returncode != 0 and "never replaced, with or without overwrite" in r.stderr
    assert np.array_equal(read_image(str(tmp_path / "theirs.zarr")), theirs)


def _wait_for(predicate, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_a_second_writer_with_other_settings_is_refused_while_the_first_runs(tmp_path):
    slow = _model(tmp_path / "slow.safetensors", depth=40)
    _volume(tmp_path / "in.zarr", shape=(16, 64, 64))
    out = tmp_path / "out.zarr"
    base = CLI + ["predict", str(slow), str(tmp_path / "in.zarr"), "--axis", "0", "--block-shape", "1", "64", "64",
                  "--workers", "1", "--no-progress"]
    first = subprocess.Popen(base + ["-o", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        markers = out / ".mixscale" / "done"
        assert _wait_for(lambda: markers.is_dir() and len(os.listdir(markers)) >= 1), "first writer never started"
        first.send_signal(signal.SIGSTOP)  # still running (paused), however fast this machine is
        assert len(os.listdir(markers)) < 16, "the first writer finished before it could be paused"
        second = subprocess.run(base + ["-o", str(out), "--probabilities", "--overwrite"], capture_output=True,
                                text=True)
        assert second.returncode != 0 and "is being written by pid" in second.stderr, second.stderr
        assert f"pid {first.pid}" in second.stderr
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=300)
        assert first.returncode == 0, err
    finally:
        first.kill()
    plan = json.loads((out / "zarr.json").read_text())["attributes"]["mixscale_plan"]
    assert "probabilities" not in zarr.open_group(str(out))
    clean = tmp_path / "clean.zarr"
    subprocess.run(base + ["-o", str(clean)], check=True, capture_output=True)
    assert np.array_equal(zarr.open_group(str(out))["labels"][:], zarr.open_group(str(clean))["labels"][:])
    assert not list((out / ".mixscale" / "writers").iterdir())  # the writer's record went with it
    # once it has finished, overwriting with other settings is allowed
    subprocess.run(base + ["-o", str(out), "--probabilities", "--overwrite"], check=True, capture_output=True)
    assert "probabilities" in zarr.open_group(str(out))


def test_the_record_of_a_killed_writer_does_not_block_an_overwrite(tmp_path, model):
    _volume(tmp_path / "in.zarr")
    out = tmp_path / "out.zarr"
    predict_blocks(model, str(tmp_path / "in.zarr"), out, slice_axis=0)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    record = {"pid": int(dead.stdout), "host": socket.gethostname(), "started": 0, "what": "writing blocks"}
    (out / ".mixscale" / "writers").mkdir(exist_ok=True)
    (out / ".mixscale" / "writers" / "dead").write_text(json.dumps(record))
    summary = predict_blocks(model, str(tmp_path / "in.zarr"), out, slice_axis=0, tta=True, overwrite=True)
    assert summary["complete"]


def test_in_memory_prediction_onto_its_input_file_is_refused(tmp_path, model):
    from mixscale import api

    vol = _volume(tmp_path / "in.tif")
    with pytest.raises(ValueError, match="is the input"):
        api.predict(model, str(tmp_path / "in.tif"), tmp_path / "in.tif", slice_axis=0, overwrite=True)
    assert np.array_equal(read_image(str(tmp_path / "in.tif")), vol)
    write_image(f"{tmp_path}/v.h5:/raw", vol)
    api.predict(model, f"{tmp_path}/v.h5:/raw", f"{tmp_path}/v.h5:/labels", slice_axis=0)  # another dataset: fine
    assert read_image(f"{tmp_path}/v.h5:/labels").shape == vol.shape
