"""Training on Lightning: run directory, best-vs-last, resume, seeds, tasks, DDP."""

import csv
import math
import os
import subprocess
import sys

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import EarlyStopping

from mixscale import api
from mixscale.model import load_model


def _epochs_logged(metrics_csv):
    with open(metrics_csv) as f:
        return sorted({int(r["epoch"]) for r in csv.DictReader(f) if r.get("val_loss")})


class _Recorder(L.Callback):
    """What the trainer really does: its settings, the learning rate of each step, gradients, forward dtypes."""

    def __init__(self):
        self.settings, self.epochs_ended = None, []
        self.lr_per_epoch = {}  # epoch -> learning rates the optimiser stepped with
        self.grad_before_clip, self.grad_after_clip = [], []  # max |grad| of each step
        self.forward = []  # (output dtype, autocast on, autocast dtype) of each training forward of the net
        self.val_loss = []  # per epoch, as the schedulers and callbacks saw it

    def on_fit_start(self, trainer, pl_module):
        early = [c for c in trainer.callbacks if isinstance(c, EarlyStopping)]
        self.settings = {"gradient_clip_val": trainer.gradient_clip_val,
                         "gradient_clip_algorithm": trainer.gradient_clip_algorithm, "precision": trainer.precision,
                         "early_stopping": [(c.monitor, c.mode, c.patience) for c in early]}
        pl_module.net.register_forward_hook(self._on_forward)

    def _on_forward(self, module, inputs, output):
        if module.training:
            self.forward.append((output.dtype, torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))

    @staticmethod
    def _max_grad(module):
        return max(float(p.grad.abs().max()) for p in module.parameters() if p.grad is not None)

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):  # Lightning clips right after this hook
        self.lr_per_epoch.setdefault(trainer.current_epoch, []).append(optimizer.param_groups[0]["lr"])
        self.grad_before_clip.append(self._max_grad(pl_module))

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):  # the step's gradients, clipped
        self.grad_after_clip.append(self._max_grad(pl_module))

    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs_ended.append(trainer.current_epoch)

    def on_validation_epoch_end(self, trainer, pl_module):
        if not trainer.sanity_checking:
            self.val_loss.append(float(trainer.callback_metrics["val_loss"]))


def _plateau_replay(lr, val_loss, *, factor, patience):
    """The learning rate of each epoch that ReduceLROnPlateau gives for these validation losses."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=factor, patience=patience)
    rates = [lr]
    for loss in val_loss[:-1]:
        plateau.step(loss)
        rates.append(opt.param_groups[0]["lr"])
    return rates


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


def test_extra_callbacks_reach_the_trainer(tiny_config):
    """api.train(callbacks=...): a GUI's or a search's Lightning callback sees every epoch of the run."""
    seen = _Recorder()
    result = api.train(tiny_config, callbacks=[seen])
    assert seen.settings is not None  # on_fit_start ran
    assert seen.epochs_ended == [0, 1] == _epochs_logged(result.metrics_csv)
    assert sorted(seen.lr_per_epoch) == [0, 1] and all(len(v) == 2 for v in seen.lr_per_epoch.values())


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


@pytest.mark.parametrize("schedule", ["cosine", "plateau"])
def test_scribbles_with_pixel_split_and_schedule_and_clipping(tiny_config, tiny_dataset, tmp_path, schedule):
    from mixscale.data import read_image, write_image

    lab = read_image(tiny_dataset["train_labels"]).astype(np.uint8) + 1  # classes 1..2
    scribble = np.zeros_like(lab)
    scribble[:, ::7, :] = lab[:, ::7, :]  # every 7th row annotated, 0 = unlabelled
    path = tmp_path / "scribble.tif"
    write_image(str(path), scribble)
    cfg = dict(tiny_config)
    cfg["data"] = {k: v for k, v in tiny_config["data"].items() if not k.startswith("val_")}
    cfg["data"].update(train_labels=str(path), label_convention="scribble", split="pixels")
    if schedule == "cosine":
        cfg["optim"] = {"lr": 0.01}
        cfg["schedule"] = {"name": "cosine", "min_lr": 0.001}
    else:  # a huge step size: validation loss stops improving, and patience 0 cuts the rate at once
        cfg["optim"] = {"lr": 0.5}
        cfg["schedule"] = {"name": "plateau", "patience": 0, "gamma": 0.5}
    clip = 1e-3  # small enough that every step is clipped
    cfg["trainer"] = {**tiny_config["trainer"], "max_epochs": 3, "gradient_clip_val": clip,
                      "gradient_clip_algorithm": "value", "early_stopping_patience": 5}
    seen = _Recorder()
    result = api.train(cfg, callbacks=[seen])
    assert result.model_path.is_file()
    saved = yaml.safe_load((result.run_dir / "config.yaml").read_text())
    assert saved["data"]["label_convention"] == "scribble"
    assert seen.settings["gradient_clip_val"] == clip and seen.settings["gradient_clip_algorithm"] == "value"
    assert seen.settings["early_stopping"] == [("val_loss", "min", 5)]
    # clipping by value: the largest gradient is cut to exactly the clip value in every step
    assert len(seen.grad_after_clip) == len(seen.grad_before_clip) == 3 * 2  # 8 samples / batch 4, 3 epochs
    assert all(g > clip for g in seen.grad_before_clip)
    assert seen.grad_after_clip == pytest.approx([clip] * 6, rel=1e-6)
    if schedule == "cosine":  # annealing over max_epochs from lr to min_lr, stepped once per epoch
        expected = [0.001 + (0.01 - 0.001) * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    else:  # halved after each epoch whose val_loss is no new best
        expected = _plateau_replay(0.5, seen.val_loss, factor=0.5, patience=0)
        assert len(seen.val_loss) == 3 and expected[-1] < 0.5  # the schedule did act in this run
    assert sorted(seen.lr_per_epoch) == [0, 1, 2]
    for epoch, lrs in seen.lr_per_epoch.items():
        assert lrs == pytest.approx([expected[epoch]] * 2, rel=1e-9), epoch


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
    """bf16-mixed (the CPU form of Lightning's mixed precision) runs end to end with both nets, really in bf16."""
    seen = _Recorder()
    result = api.train(tiny_config, overrides=["trainer.precision=bf16-mixed", "trainer.max_epochs=1"],
                       callbacks=[seen])
    net, _ = load_model(result.model_path)
    assert all(torch.isfinite(p).all() for p in net.parameters())
    assert all(p.dtype == torch.float32 for p in net.parameters())  # mixed: the model file keeps float32 weights
    assert seen.settings["precision"] == "bf16-mixed"
    # the forward ran under bf16 autocast; the lean MS-D keeps its maps in the parameters' dtype there, unless
    # the CPU has native bfloat16 products (nets.msd_lean.map_dtype)
    from mixscale.nets.msd_lean import cpu_has_bf16

    maps = torch.bfloat16 if cpu_has_bf16() else torch.float32
    assert len(seen.forward) == 2 and set(seen.forward) == {(maps, True, torch.bfloat16)}
    unet_dir = str(result.run_dir) + "_unet"
    seen = _Recorder()
    result = api.train(tiny_config, overrides=["trainer.precision=bf16-mixed", "trainer.max_epochs=1",
                                               "net={name: unet, depth: 2, base_channels: 4}", f"run_dir={unet_dir}"],
                       callbacks=[seen])
    assert result.model_path.is_file()
    assert seen.settings["precision"] == "bf16-mixed"
    assert len(seen.forward) == 2 and set(seen.forward) == {(torch.bfloat16, True, torch.bfloat16)}  # convs in bf16
