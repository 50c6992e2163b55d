"""The block bootstrap of labelled training data: blocks, draws, weights, and members that see different data."""

import numpy as np
import pytest
from scipy import stats

from mixscale.data import PatchSampler
from mixscale.data.bootstrap import block_bootstrap, block_ids


def test_block_ids_against_a_loop():
    ids, n = block_ids((5, 7, 4), (2, 3, 4))
    expected = np.empty((5, 7, 4), np.int64)
    for z in range(5):
        for y in range(7):
            for x in range(4):
                expected[z, y, x] = (z // 2) * 3 * 1 + (y // 3) * 1 + x // 4
    assert n == 3 * 3 * 1 and np.array_equal(ids, expected)


def test_bootstrap_draws_as_many_blocks_as_hold_labels_and_unlabels_the_rest():
    lab = np.full((2, 64, 64), -1, np.int64)
    lab[0, :32] = 1  # 32 labelled blocks of 8x8 in image 0, scribbles (5 blocks) in image 1
    lab[1, 5, 5:40] = 0
    boot, weights = block_bootstrap(list(lab), block_shape=(8, 8), seed=3)
    holding = 4 * 8 + 5  # blocks with a label: 32 in image 0, 5 in image 1
    per_block = [w[::8, ::8] for w in weights]
    assert sum(int(p.sum()) for p in per_block) == holding
    for y, b, w in zip(lab, boot, weights):
        assert np.array_equal(b[w > 0], y[w > 0])  # drawn blocks keep their labels
        assert (b[w == 0] == -1).all()  # blocks never drawn are unlabelled
        unlabelled_blocks = np.array([[not (y[r:r + 8, c:c + 8] != -1).any() for c in range(0, 64, 8)]
                                      for r in range(0, 64, 8)])
        assert not w[::8, ::8][unlabelled_blocks].any()  # a block without labels is never drawn
    again, _ = block_bootstrap(list(lab), block_shape=(8, 8), seed=3)
    other, _ = block_bootstrap(list(lab), block_shape=(8, 8), seed=4)
    assert all(np.array_equal(a, b) for a, b in zip(again, boot))
    assert any(not np.array_equal(a, b) for a, b in zip(other, boot))


def test_share_of_blocks_drawn_is_one_minus_one_over_e():
    lab = np.zeros((160, 160), np.int64)  # 400 blocks
    shares = [float((block_bootstrap([lab], block_shape=(8, 8), seed=s)[1][0][::8, ::8] > 0).mean())
              for s in range(200)]
    expected = 1 - (1 - 1 / 400) ** 400
    assert abs(np.mean(shares) - expected) < 3 * np.std(shares) / np.sqrt(len(shares))


def test_regression_targets_become_nan_outside_the_drawn_blocks():
    target = np.random.default_rng(0).normal(size=(2, 32, 32)).astype(np.float32)
    (boot,), (w,) = block_bootstrap([target], block_shape=(8, 8), seed=1)
    assert np.isnan(boot[:, w == 0]).all() and np.array_equal(boot[:, w > 0], target[:, w > 0])
    with pytest.raises(ValueError, match="no labelled pixel"):
        block_bootstrap([np.full((8, 8), -1)], block_shape=(4, 4), seed=0)


def test_sampler_centres_follow_the_weights():
    lab = np.zeros((32, 32), np.int64)
    weights = np.zeros((32, 32), np.uint8)
    weights[:16, :16], weights[:16, 16:], weights[16:, :16] = 1, 2, 3  # the last quarter: never
    img = np.zeros((1, 32, 32), np.float32)
    sampler = PatchSampler([img], [lab], patch_shape=(4, 4), spatial_dims=2, label_fraction=1.0,
                           weights=[weights])
    rng = np.random.default_rng(0)
    quarters = np.zeros(4)
    for _ in range(3000):
        loc = sampler.draw(rng)
        cy, cx = loc.starts[0] + 2, loc.starts[1] + 2
        quarters[(cy >= 16) * 2 + (cx >= 16)] += 1
    assert quarters[3] == 0
    assert stats.chisquare(quarters[:3], quarters[:3].sum() * np.array([1, 2, 3]) / 6).pvalue > 0.001
    with pytest.raises(ValueError, match="weights\\[0\\] must be non-negative integers"):
        PatchSampler([img], [lab], patch_shape=(4, 4), spatial_dims=2, weights=[weights[:8]])


def test_members_train_on_their_own_bootstrap(tiny_config):
    from mixscale.api import _member_config, _train_config
    from mixscale.train.builder import build_data, data_settings

    cfg = _train_config(tiny_config, ["ensemble.members=2", "ensemble.bootstrap=true"])
    first, second = _member_config(cfg, 0), _member_config(cfg, 1)
    assert first.data.bootstrap and second.data.bootstrap
    a, b = build_data(first), build_data(second)
    plain = build_data(_train_config(tiny_config, []))
    la, lb, lp = (d.train.sampler.labels for d in (a, b, plain))
    assert all((x == -1).any() for x in la) and any(not np.array_equal(x, y) for x, y in zip(la, lb))
    assert not any((x == -1).any() for x in lp)  # without bootstrap every pixel stays labelled
    assert all(np.array_equal(x, y) for x, y in zip(a.val.sampler.labels, plain.val.sampler.labels))
    assert data_settings(first).bootstrap


def test_detection_refuses_bootstrap(tiny_config):
    from mixscale.config import validate_config

    raw = {**tiny_config, "task": "detection", "ensemble": {"members": 2, "bootstrap": True}}
    raw["data"] = {**raw["data"], "train_labels": None, "val_labels": None, "val_images": None,
                   "train_points": "points.csv"}
    with pytest.raises(ValueError, match="data.bootstrap and ensemble.bootstrap resample"):
        validate_config(raw)


def test_cli_train_members_with_bootstrap(tiny_config_file, tmp_path):
    import yaml

    from mixscale.cli.main import main

    assert main(["train", str(tiny_config_file), "--members", "2", "--bootstrap", "--set", "trainer.max_epochs=1"]) == 0
    for i in range(2):
        saved = yaml.safe_load((tmp_path / "run" / f"member_{i}" / "config.yaml").read_text())
        assert saved["data"]["bootstrap"] is True and saved["seed"] == i
    assert (tmp_path / "run" / "ensemble.safetensors").is_file()
