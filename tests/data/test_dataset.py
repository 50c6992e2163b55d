"""PyTorch datasets: tensors, reproducibility across workers and epochs."""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mixscale.data import (Augmentation, Normalization, PatchDataset, PatchSampler, WholeImageDataset,
                           compute_normalization)


def _sampler(context_slices=0):
    rng = np.random.default_rng(0)
    image = rng.normal(3.0, 2.0, size=(1, 6, 32, 32)).astype(np.float32)
    label = np.where(rng.random((6, 32, 32)) < 0.05, rng.integers(0, 2, (6, 32, 32)), -1)
    return PatchSampler([image], [label], patch_shape=(8, 8), spatial_dims=2,
                        context_slices=context_slices), image


def _collect(loader):
    return [(x.clone(), y.clone()) for x, y in loader]


def test_items_are_tensors_and_reproducible():
    sampler, image = _sampler()
    norm = compute_normalization([image], channel_axis=0)
    ds = PatchDataset(sampler, augmentation=Augmentation(), samples_per_epoch=5, seed=3, normalization=norm)
    x, y = ds[2]
    assert x.dtype == torch.float32 and x.shape == (1, 8, 8)
    assert y.dtype == torch.int64 and y.shape == (8, 8) and (y != -1).any()
    x2, y2 = ds[2]
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(ds[3][0], x)
    ds.set_epoch(1)
    assert ds.epoch == 1 and not torch.equal(ds[2][0], x)
    with pytest.raises(IndexError, match="out of range for 5 samples"):
        ds[5]


def test_workers_give_the_same_batches_and_see_set_epoch():
    sampler, _ = _sampler()
    ds = PatchDataset(sampler, samples_per_epoch=8, seed=1)
    reference = _collect(DataLoader(ds, batch_size=4))
    loader = DataLoader(ds, batch_size=4, num_workers=2, persistent_workers=True)
    parallel = _collect(loader)
    for (xa, ya), (xb, yb) in zip(reference, parallel):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    ds.set_epoch(4)
    next_epoch = _collect(loader)  # persistent workers must see the new epoch
    expected = _collect(DataLoader(ds, batch_size=4))
    assert not torch.equal(next_epoch[0][0], parallel[0][0])
    for (xa, ya), (xb, yb) in zip(expected, next_epoch):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_normalization_is_repeated_for_context_channels():
    sampler, image = _sampler(context_slices=1)
    norm = Normalization(mean=[3.0], std=[2.0])
    ds = PatchDataset(sampler, samples_per_epoch=2, normalization=norm)
    x, _ = ds[0]
    raw, _ = sampler.sample(np.random.default_rng([0, 0, 0]))
    assert x.shape == (3, 8, 8)
    np.testing.assert_allclose(x.numpy(), (raw - 3.0) / 2.0, rtol=1e-6)


def test_whole_image_dataset():
    images = [np.ones((2, 5, 7), np.uint16), np.zeros((2, 6, 6), np.uint16)]
    labels = [np.zeros((5, 7), np.int32), np.full((1, 6, 6), np.nan, np.float32)]
    ds = WholeImageDataset(images, labels, normalization=Normalization(mean=[1, 0], std=[1, 2]))
    x, y = ds[0]
    assert len(ds) == 2 and x.dtype == torch.float32 and x.shape == (2, 5, 7) and float(x.abs().sum()) == 7 * 5 / 2
    assert y.dtype == torch.int64 and y.shape == (5, 7)
    assert ds[1][1].dtype == torch.float32
    with pytest.raises(ValueError, match=r"labels\[0\] must match its spatial shape"):
        WholeImageDataset([images[0]], [np.zeros((5, 6), int)])


def test_dataset_errors():
    sampler, _ = _sampler()
    with pytest.raises(ValueError, match="samples_per_epoch=0 is not allowed; expected an integer >= 1"):
        PatchDataset(sampler, samples_per_epoch=0)
    with pytest.raises(TypeError, match="sampler must be a PatchSampler"):
        PatchDataset([1, 2])
    with pytest.raises(ValueError, match="normalization describes 2 channel"):
        PatchDataset(sampler, normalization=Normalization(mean=[0, 0], std=[1, 1]))
