"""Shared fixtures: a tiny segmentation data set on disk and a fast training config."""

import os

import numpy as np
import pytest
import yaml


@pytest.fixture(autouse=True)
def _environment_restored():
    """Each test sees the environment it started with: ``distributed.LocalCluster`` sets OMP_NUM_THREADS=1
    (and MKL/OpenBLAS) in the *parent's* ``os.environ`` and never resets it, so every later subprocess
    (``mixscale train`` in the kill-and-resume tests) ran on one thread and rounded differently."""
    before = dict(os.environ)
    yield
    if os.environ != before:
        os.environ.clear()
        os.environ.update(before)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one intra-op thread avoids thread-pool contention on a busy 2-core machine
    (a module asks for it with ``pytestmark = pytest.mark.usefixtures("one_thread")``)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tiny_dataset(tmp_path):
    """Two 40x40 images with two classes (bright squares on a dark background), as TIFF files."""
    from mixscale.data import write_image

    rng = np.random.default_rng(0)
    paths = {}
    for split in ("train", "val"):
        img = rng.normal(0, 0.3, size=(3, 40, 40)).astype(np.float32)
        lab = np.zeros((3, 40, 40), np.uint8)
        for k in range(3):
            y, x = rng.integers(4, 24, size=2)
            lab[k, y : y + 12, x : x + 12] = 1
        img += lab
        for kind, array in (("images", img), ("labels", lab)):
            paths[f"{split}_{kind}"] = str(tmp_path / f"{split}_{kind}.tif")
            write_image(paths[f"{split}_{kind}"], array)
    return paths


@pytest.fixture
def tiny_config(tmp_path, tiny_dataset):
    """A config dict that trains a 4-layer MS-D for 2 quick epochs on ``tiny_dataset``."""
    return {
        "version": 1, "task": "segmentation", "run_dir": str(tmp_path / "run"), "seed": 0,
        "data": {"train_images": tiny_dataset["train_images"], "train_labels": tiny_dataset["train_labels"],
                 "val_images": tiny_dataset["val_images"], "val_labels": tiny_dataset["val_labels"],
                 "num_classes": 2, "patch_shape": [24, 24], "samples_per_epoch": 8, "val_samples": 4,
                 "batch_size": 4},
        "net": {"name": "msd", "depth": 4, "dilations": [1, 2, 3]},
        "trainer": {"max_epochs": 2, "progress_bar": False, "accelerator": "cpu", "devices": 1},
    }


@pytest.fixture
def tiny_config_file(tmp_path, tiny_config):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(tiny_config))
    return path
