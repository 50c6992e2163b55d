"""Training on Lightning: run directory, best-vs-last, resume, seeds, tasks, DDP."""

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from mixscale import api
from mixscale.model import load_model


def _epochs_logged(metrics_csv):
    with open(metrics_csv) as f:
        return sorted({int(r["epoch"]) for r in csv.DictReader(f) if r.get("val_loss")})


def test_model_file_holds_best_not_last_weights(tiny_config):
    tiny_config["trainer"]["max_epochs"] = 3
    tiny_config["optim"] = {"lr": 0.5}  # a huge step size makes later epochs worse than the best one
    result = api.train(tiny_config)
    best = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    last = torch.load(result.last_checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    net, info = load_model(result.model_path)
    saved = net.state_dict()
    for k, v in saved.items():
        torch.testing.assert_close(v, best[f"net.{k}"], rtol=0, atol=0)
    assert info.task == "segmentation" and info.normalization["std"][0] > 0
    with open(result.metrics_csv) as f:
        val = [float(r["val_loss"]) for r in csv.DictReader(f) if r.get("val_loss")]
    assert result.best_val_loss == pytest.approx(min(val), rel=1e-5)
    assert int(np.argmin(val)) != len(val) - 1  # the huge step size makes the last epoch not the best
    assert any(not torch.equal(best[k], last[k]) for k in best if k.startswith("net."))


def test_resume_continues_from_saved_epoch(tiny_config):
    tiny_config["trainer"]["max_epochs"] = 2
    first = api.train(tiny_config)
    assert _epochs_logged(first.metrics_csv) == [0, 1]
    resumed = api.train(tiny_config, overrides=["trainer.max_epochs=4"], resume=True)
    assert _epochs_logged(resumed.metrics_csv) == [0, 1, 2, 3]
    ckpt = torch.load(resumed.last_checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 3
    assert (resumed.run_dir / "config.resumed.yaml").is_file()


def test_same_seed_same_weights(tiny_config, tmp_path):
    a = api.train(tiny_config, overrides=[f"run_dir={tmp_path / 'a'}", "trainer.deterministic=true"])
    b = api.train(tiny_config, overrides=[f"run_dir={tmp_path / 'b'}", "trainer.deterministic=true"])
    wa, wb = load_model(a.model_path)[0].state_dict(), load_model(b.model_path)[0].state_dict()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_scribbles_with_pixel_split_and_schedule_and_clipping(tiny_config, tiny_dataset, tmp_path):
    from mixscale.data import read_image, write_image

    lab = read_image(tiny_dataset["train_labels"]).astype(np.uint8) + 1  # classes 1..2
    scribble = np.zeros_like(lab)
    scribble[:, ::7, :] = lab[:, ::7, :]  # every 7th row annotated, 0 = unlabelled
    path = tmp_path / "scribble.tif"
    write_image(str(path), scribble)
    cfg = dict(tiny_config)
    cfg["data"] = {k: v for k, v in tiny_config["data"].items() if not k.startswith("val_")}
    cfg["data"].update(train_labels=str(path), label_convention="scribble", split="pixels")
    cfg["schedule"] = {"name": "plateau", "patience": 1}
    cfg["trainer"].update(gradient_clip_val=0.5, gradient_clip_algorithm="value", early_stopping_patience=5)
    result = api.train(cfg)
    assert result.model_path.is_file()
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["data"]["label_convention"] == "scribble"


def test_regression_task_and_denormalised_output(tmp_path):
    from mixscale.data import write_image

    rng = np.random.default_rng(0)
    clean = rng.uniform(100, 200, size=(4, 32, 32)).astype(np.float32)
    noisy = clean + rng.normal(0, 5, size=clean.shape).astype(np.float32)
    paths = [tmp_path / "noisy.tif", tmp_path / "clean.tif"]
    write_image(str(paths[0]), noisy)
    write_image(str(paths[1]), clean)
    cfg = {"version": 1, "task": "regression", "run_dir": str(tmp_path / "run"),
           "data": {"train_images": str(paths[0]), "train_labels": str(paths[1]), "patch_shape": [16, 16],
                    "samples_per_epoch": 8, "val_samples": 4, "batch_size": 4, "augment": {"dihedral": True}},
           "net": {"name": "unet", "depth": 2, "base_channels": 4},
           "loss": "l1", "trainer": {"max_epochs": 1, "progress_bar": False, "accelerator": "cpu", "devices": 1}}
    result = api.train(cfg)
    out = api.predict(result.model_path, noisy[0])
    assert out.shape == (32, 32) and out.dtype == np.float32
    assert 50 < float(out.mean()) < 250  # in the target's units, not normalised ones


def test_3d_training_and_prediction(tmp_path):
    from mixscale.data import write_image

    rng = np.random.default_rng(1)
    lab = np.zeros((14, 14, 14), np.uint8)
    lab[3:9, 4:10, 2:11] = 1
    img = (lab + rng.normal(0, 0.3, lab.shape)).astype(np.float32)
    pi, pl = tmp_path / "v.tif", tmp_path / "l.tif"
    write_image(str(pi), img)
    write_image(str(pl), lab)
    cfg = {"version": 1, "run_dir": str(tmp_path / "run"),
           "data": {"train_images": [str(pi)] * 2, "train_labels": [str(pl)] * 2, "num_classes": 2,
                    "spatial_dims": 3, "patch_shape": [12, 12, 12], "samples_per_epoch": 2, "val_samples": 2,
                    "batch_size": 2, "split": "images", "val_fraction": 0.5},
           "net": {"name": "msd", "depth": 3, "dilations": [1, 2]},
           "trainer": {"max_epochs": 1, "progress_bar": False, "accelerator": "cpu", "devices": 1}}
    result = api.train(cfg)
    assert api.predict(result.model_path, img).shape == (14, 14, 14)
    with pytest.raises(ValueError, match="is 2D but the model is 3D"):
        api.predict(result.model_path, img[0])


def test_2d_model_needs_an_axis_for_a_volume(tiny_config):
    result = api.train(tiny_config, overrides=["trainer.max_epochs=1"])
    vol = np.zeros((5, 40, 40), np.float32)
    with pytest.raises(ValueError, match="is 3D but the model is 2D; pass slice_axis=0"):
        api.predict(result.model_path, vol)
    assert api.predict(result.model_path, vol, slice_axis=2).shape == (5, 40, 40)


def test_ddp_on_cpu_with_gloo(tiny_config_file, tmp_path):
    """Two processes, gloo backend, through the real CLI (Lightning re-launches the command)."""
    cmd = [sys.executable, "-m", "mixscale.cli.main", "train", str(tiny_config_file), "--set",
           "trainer.strategy=ddp", "--set", "trainer.devices=2", "--set", "trainer.accelerator=cpu",
           "--set", "data.samples_per_epoch=16"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "distributed_backend=gloo" in out.stderr + out.stdout
    run = tmp_path / "run"
    assert (run / "model.safetensors").is_file() and _epochs_logged(run / "logs" / "metrics.csv") == [0, 1]


def test_multichannel_regression_with_channel_axis_last(tmp_path):
    """Inpainting-style input (image, mask) on the last axis, one-channel target."""
    from mixscale.data import write_image

    rng = np.random.default_rng(2)
    clean = rng.uniform(0, 1, size=(2, 24, 24)).astype(np.float32)
    mask = (rng.uniform(size=clean.shape) > 0.2).astype(np.float32)
    inputs = np.stack([clean * mask, mask], axis=-1)  # (Z, Y, X, 2)
    write_image(str(tmp_path / "in.npy"), inputs)
    write_image(str(tmp_path / "target.npy"), clean)
    cfg = {"version": 1, "task": "regression", "run_dir": str(tmp_path / "run"),
           "data": {"train_images": str(tmp_path / "in.npy"), "train_labels": str(tmp_path / "target.npy"),
                    "channel_axis": -1, "patch_shape": [16, 16], "samples_per_epoch": 4, "val_samples": 2,
                    "batch_size": 2},
           "net": {"name": "msd", "depth": 3, "dilations": [1, 2]},
           "trainer": {"max_epochs": 1, "progress_bar": False, "accelerator": "cpu"}}
    result = api.train(cfg)
    _, info = load_model(result.model_path)
    assert info.net_config["in_channels"] == 2 and info.net_config["out_channels"] == 1
    out = api.predict(result.model_path, inputs[0], channel_axis=-1)
    assert out.shape == (24, 24)
    with pytest.raises(ValueError, match="has 24 channels on axis 0; the model expects 2"):
        api.predict(result.model_path, inputs[0])  # channels are not on axis 0 here
    with pytest.raises(ValueError, match="device='gpu' is not allowed"):
        api.predict(result.model_path, inputs[0], channel_axis=-1, device="gpu")


def test_tiled_prediction_equals_whole_image(tiny_config, tmp_path):
    result = api.train(tiny_config, overrides=["trainer.max_epochs=1"])
    vol = np.random.default_rng(3).normal(size=(2, 40, 37)).astype(np.float32)
    whole = api.predict(result.model_path, vol, slice_axis=0, probabilities=True)
    tiled = api.predict(result.model_path, vol, slice_axis=0, probabilities=True, tile_shape=(16, 12), overlap=0.3)
    np.testing.assert_allclose(tiled, whole, rtol=1e-5, atol=1e-5)
    out = tmp_path / "tiled.tif"
    from mixscale.cli.main import main

    assert main(["predict", str(result.model_path), tiny_config["data"]["val_images"], "-o", str(out),
                 "--axis", "0", "--tile-shape", "16"]) == 0


def test_mixed_precision_on_cpu_trains(tiny_config):
    """bf16-mixed (the CPU form of Lightning's mixed precision) runs end to end with both nets."""
    result = api.train(tiny_config, overrides=["trainer.precision=bf16-mixed", "trainer.max_epochs=1"])
    net, _ = load_model(result.model_path)
    assert all(torch.isfinite(p).all() for p in net.parameters())
    unet_dir = str(result.run_dir) + "_unet"
    result = api.train(tiny_config, overrides=["trainer.precision=bf16-mixed", "trainer.max_epochs=1",
                                               "net={name: unet, depth: 2, base_channels: 4}", f"run_dir={unet_dir}"])
    assert result.model_path.is_file()
