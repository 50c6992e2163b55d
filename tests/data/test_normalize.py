"""Normalisation statistics against a float64 NumPy reference; streaming; round trips."""

import importlib
import json
import logging

import numpy as np
import pytest

from mixscale.data import Normalization, compute_normalization, denormalize, normalize, write_image, open_image

# the package re-exports the function normalize(), which hides the submodule attribute
normalize_module = importlib.import_module("mixscale.data.normalize")


def _reference(images, channel_axis):
    stacked = np.concatenate(
        [np.moveaxis(np.asarray(im, np.float64), channel_axis, 0).reshape(im.shape[channel_axis], -1)
         for im in images], axis=1)
    return stacked.mean(axis=1), stacked.std(axis=1)


def test_per_channel_stats_match_numpy_float64():
    rng = np.random.default_rng(1)
    images = [rng.normal(5, 3, (7, 3, 11)).astype(np.float32) * [[1], [10], [0.1]],
              rng.integers(0, 1000, (4, 3, 9)).astype(np.uint16)]
    norm = compute_normalization(images, channel_axis=1)
    mean, std = _reference(images, 1)
    np.testing.assert_allclose(norm.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(norm.std, std, rtol=1e-12)


def test_streaming_over_small_blocks_matches(monkeypatch, tmp_path):
    rng = np.random.default_rng(2)
    volume = (rng.normal(size=(2, 30, 17, 13)) * 1e3 + 1e6).astype(np.float64)  # large offset
    write_image(tmp_path / "v.h5:/x", volume, chunks=(1, 5, 17, 13))
    monkeypatch.setattr(normalize_module, "BLOCK_ELEMENTS", 500)  # forces ~60 blocks
    norm = compute_normalization([open_image(f"{tmp_path}/v.h5:/x")], channel_axis=0)
    mean, std = _reference([volume], 0)
    np.testing.assert_allclose(norm.mean, mean, rtol=1e-12)
    np.testing.assert_allclose(norm.std, std, rtol=1e-9)


def test_single_channel_and_single_array_input():
    image = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    norm = compute_normalization(image)
    assert norm.mean == [image.mean()] and norm.std == pytest.approx([image.std()])


def test_normalize_denormalize_round_trip_float32():
    rng = np.random.default_rng(3)
    image = rng.normal(size=(12, 2, 8)).astype(np.float64) * [[3.0], [0.5]] + [[1.0], [-2.0]]
    norm = compute_normalization([image], channel_axis=1)
    out = normalize(image, norm, channel_axis=1)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out.mean(axis=(0, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(out.std(axis=(0, 2)), 1, atol=1e-5)
    back = denormalize(out, norm, channel_axis=1)
    assert back.dtype == np.float32
    np.testing.assert_allclose(back, image, rtol=1e-5, atol=1e-5)


def test_constant_channel_uses_std_one_with_warning(caplog):
    image = np.stack([np.full((5, 5), 7.0), np.arange(25.0).reshape(5, 5)])
    with caplog.at_level(logging.WARNING):
        norm = compute_normalization([image], channel_axis=0)
    assert norm.std[0] == 1.0 and norm.mean[0] == 7.0
    assert "channel 0 is constant" in caplog.text


def test_dict_is_json_safe_and_validated():
    norm = Normalization(mean=np.array([1.5, 2.0]), std=(0.5, 3))
    assert Normalization.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm
    with pytest.raises(ValueError, match=r"exactly the keys \['mean', 'std'\], got \['mean'\]"):
        Normalization.from_dict({"mean": [1.0]})
    with pytest.raises(ValueError, match="one entry per channel, got 2 and 1"):
        Normalization(mean=[0.0, 1.0], std=[1.0])
    with pytest.raises(ValueError, match="std must be positive"):
        Normalization(mean=[0.0], std=[0.0])


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"images\[1\] holds NaN or inf"):
        compute_normalization([np.ones(3), np.array([1.0, np.inf])])
    with pytest.raises(ValueError, match="empty sequence"):
        compute_normalization([])
    with pytest.raises(ValueError, match=r"images\[1\] has 3 channels.*earlier images have 2"):
        compute_normalization([np.ones((2, 4)), np.ones((3, 4))], channel_axis=0)
    norm = Normalization(mean=[0.0], std=[1.0])
    with pytest.raises(ValueError, match="image holds NaN"):
        normalize(np.array([np.nan]), norm)
    with pytest.raises(ValueError, match=r"image has 2 channel\(s\).*norm describes 1"):
        normalize(np.ones((2, 4)), norm, channel_axis=0)
    with pytest.raises(ValueError, match="channel_axis=3 is out of range"):
        normalize(np.ones((2, 4)), norm, channel_axis=3)
