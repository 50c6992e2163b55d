"""Task 'noise2inverse' (Hendriksen, Pelt & Batenburg 2020), the X:1 strategy: training pairs, the model
file's record, prediction as the mean over the K combinations (whole and block-wise), and a denoiser that
learns from noisy subsets alone."""

import numpy as np
import pytest
import torch

from mixscale import api
from mixscale.model import Model, load_model
from mixscale.model.model import noise2inverse_forward
from mixscale.data import read_image, write_image
from mixscale.tasks import get_task
from mixscale.train.data import load_subset_pairs


def _smooth_volume(rng, shape):
    """Blobs: a sum of Gaussians, values in about [0, 1]."""
    z, y, x = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    out = np.zeros(shape, np.float32)
    for _ in range(12):
        c = rng.uniform(0, 1, 3) * shape
        out += np.exp(-((z - c[0]) ** 2 / 40 + (y - c[1]) ** 2 / 30 + (x - c[2]) ** 2 / 30))
    return out / out.max()


def _subsets(clean, k, sigma, rng):
    """K independent noisy versions (as reconstructions from disjoint projection subsets are)."""
    return np.stack([clean + rng.normal(0, sigma, clean.shape).astype(np.float32) for _ in range(k)])


def _psnr(a, b):
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def _settings(**over):
    from mixscale.train.settings import DataSettings

    base = dict(task=get_task("noise2inverse"), seed=0, train_images="x", train_labels=None, val_images=None,
                val_labels=None, train_points=None, val_points=None, point_sampling={}, split="auto",
                val_fraction=0.2, label_convention="dense", num_classes=None, class_names=None, ignore_index=-1,
                channel_axis=None, spatial_dims=2, patch_shape=[16, 16], slice_axis=0, context_slices=0,
                samples_per_epoch=8, val_samples=4, batch_size=2, num_workers=0, label_fraction=0.0,
                bootstrap=False, lazy=False, augment={})
    return DataSettings(**{**base, **over})


def test_the_training_pairs_are_the_mean_of_the_others_and_the_one_left_out(tmp_path):
    rng = np.random.default_rng(0)
    subsets = rng.normal(size=(3, 4, 20, 20)).astype(np.float32)
    write_image(tmp_path / "s.tif", subsets)
    xs, ys = load_subset_pairs([str(tmp_path / "s.tif")], _settings())
    assert len(xs) == len(ys) == 3
    for j in range(3):
        others = [subsets[i].astype(np.float64) for i in range(3) if i != j]
        np.testing.assert_allclose(xs[j][0], sum(others) / 2, atol=1e-6)  # naive mean in float64
        np.testing.assert_array_equal(ys[j][0], subsets[j])
    write_image(tmp_path / "one.tif", subsets[:1])
    with pytest.raises(ValueError, match="data.train_images.*K >= 2 subset reconstructions"):
        load_subset_pairs([str(tmp_path / "one.tif")], _settings())


def test_without_validation_files_whole_images_are_held_out_never_some_of_their_pairs(tmp_path):
    from mixscale.train.data import load_pairs, split_train_val

    rng = np.random.default_rng(1)
    paths = []
    for i in range(5):  # each image: K = 4 subsets; its 4 pairs carry its index as their value
        write_image(tmp_path / f"s{i}.tif", np.full((4, 16, 16), float(i), np.float32) + rng.normal(
            0, 1e-3, (4, 16, 16)).astype(np.float32))
        paths.append(str(tmp_path / f"s{i}.tif"))
    s = _settings(train_images=paths)
    xs, ys = load_pairs(paths, None, s)
    tx, _, vx, vy = split_train_val(xs, ys, s)
    train_images = {round(float(x.mean())) for x in tx}
    val_images = {round(float(x.mean())) for x in vx}
    assert len(tx) == 4 * len(train_images) and len(vx) == len(vy) == 4 * len(val_images)  # all 4 pairs each
    assert train_images.isdisjoint(val_images) and len(train_images | val_images) == 5


def test_prediction_averages_the_k_combinations():
    net = torch.nn.Conv2d(1, 1, 3, padding=1)
    x = torch.randn(2, 4, 9, 9)
    naive = sum(net(torch.stack([x[:, i] for i in range(4) if i != j], 1).mean(1, keepdim=True))
                for j in range(4)) / 4
    torch.testing.assert_close(noise2inverse_forward(net, x, 4), naive, rtol=1e-5, atol=1e-6)
    for splits in (1, 3):
        with pytest.raises(ValueError, match=f"splits >= 2 dividing the input's 4 channels; got splits={splits}"):
            noise2inverse_forward(net, x, splits)


@pytest.fixture
def noisy_volumes(tmp_path):
    rng = np.random.default_rng(1)
    paths, clean = {}, {}
    for name in ("train", "val", "test"):
        clean[name] = _smooth_volume(rng, (8, 48, 48))
        paths[name] = str(tmp_path / f"{name}.tif")
        write_image(paths[name], _subsets(clean[name], 4, 0.3, rng))
    return paths, clean


def test_noise2inverse_trains_from_noisy_subsets_alone_and_denoises(noisy_volumes, tmp_path):
    paths, clean = noisy_volumes
    config = {"version": 1, "task": "noise2inverse", "run_dir": str(tmp_path / "run"), "seed": 0,
              "data": {"train_images": paths["train"], "val_images": paths["val"], "patch_shape": [32, 32],
                       "context_slices": 1, "samples_per_epoch": 64, "val_samples": 8, "batch_size": 8},
              "net": {"name": "msd", "depth": 10, "dilations": [1, 2, 4]},
              "optim": {"lr": 3e-3},
              "trainer": {"max_epochs": 12, "progress_bar": False, "accelerator": "cpu", "devices": 1}}
    result = api.train(config)
    net, info = load_model(result.model_path)
    assert (info.task, info.splits, info.image_channels, net.in_channels) == ("noise2inverse", 4, 4, 3)
    assert len(info.normalization["mean"]) == 4
    subsets = read_image(paths["test"])
    whole = api.predict(result.model_path, paths["test"], tmp_path / "whole.zarr", channel_axis=0, slice_axis=0,
                        block_shape=[8, 48, 48], progress=False)
    pred = np.asarray(whole)
    assert pred.shape == clean["test"].shape
    mean_of_all = subsets.mean(0)  # the reconstruction from every projection: noise sigma / 2
    assert _psnr(pred, clean["test"]) > _psnr(mean_of_all, clean["test"]) + 6.0  # measured: 29.3 against 16.5 dB
    blocks = api.predict(result.model_path, paths["test"], tmp_path / "blocks.zarr", channel_axis=0,
                         slice_axis=0, block_shape=[3, 24, 48], progress=False)
    np.testing.assert_allclose(np.asarray(blocks), pred, atol=1e-5)
    # a model of one input channel given 3 subsets is refused, naming what it expects
    with pytest.raises(ValueError, match="has 3 channels on axis 0; the model expects 4"):
        Model.load(result.model_path).layout(subsets[:3].shape, slice_axis=0, channel_axis=0)
