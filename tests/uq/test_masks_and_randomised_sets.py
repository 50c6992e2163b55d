"""Masks a user can act on, through the whole pipeline: risk-controlled class masks, lower-bound masks of
an ensemble, and randomised APS sets that are the same block-wise as in memory."""

import numpy as np
import pytest
import torch
import zarr
from scipy import stats

from mixscale import api
from mixscale.infer.conformal import pixel_uniforms, risk_control_threshold
from mixscale.model import ModelInfo, open_model, save_ensemble, save_model
from mixscale.nets import create_net
from mixscale.uq.calibrate import unit_ids


def _model(path, *, seed=0, classes=3, task="segmentation"):
    torch.manual_seed(seed)
    net = create_net("msd", depth=4, out_channels=classes)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    info = ModelInfo(net_name="msd", net_config=net.config(), task=task,
                     class_names=[f"c{i}" for i in range(classes)] if task == "segmentation" else None)
    return str(save_model(path, net.eval(), info))


def _probs(model_path, image, temperature=1.0):
    with torch.no_grad():
        logits = open_model(model_path).net(torch.from_numpy(image)[None, None])[0].double()
    return torch.softmax(logits / temperature, 0)


def _labels_from(model_path, image, temperature, seed):
    """Labels drawn from the model's own probabilities at ``temperature``: exchangeable pixels."""
    p = _probs(model_path, image, temperature).reshape(3, -1).T
    y = torch.multinomial(p, 1, generator=torch.Generator().manual_seed(seed))[:, 0]
    return y.reshape(image.shape).numpy()


def _image(seed, shape):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_pixel_uniforms_are_uniform_and_depend_on_place_and_seed():
    u = pixel_uniforms((300, 300), seed=0).numpy().ravel()
    assert stats.kstest(u, "uniform").pvalue > 0.01
    assert abs(np.corrcoef(u[:-1], u[1:])[0, 1]) < 0.01  # neighbours are not alike
    assert not np.array_equal(pixel_uniforms((8, 8), seed=1), pixel_uniforms((8, 8), seed=2))
    volume = pixel_uniforms((3, 8, 9), seed=5)
    one_slice = pixel_uniforms((8, 9), region=(slice(2, 3), slice(0, 8), slice(0, 9)), seed=5)
    assert torch.equal(volume[2], one_slice)
    with pytest.raises(ValueError, match="does not hold"):
        pixel_uniforms((4, 4), region=(slice(0, 2), slice(0, 4)))


def test_unit_ids_number_slices_and_tiles():
    ids, n = unit_ids((2, 5, 4), slice_axis=0, tile=(3, 2))
    assert n == 2 * 2 * 2 and ids.shape == (2, 5, 4)
    assert ids[0, 0, 0] == 0 and ids[0, 0, 2] == 1 and ids[0, 3, 0] == 2 and ids[1, 0, 0] == 4
    assert unit_ids((2, 5, 4), slice_axis=0)[1] == 2 and unit_ids((5, 4))[1] == 1


def test_randomised_aps_covers_exactly_and_blocks_equal_memory(tmp_path):
    model = _model(tmp_path / "m.safetensors")
    cal, test = _image(1, (96, 96)), _image(2, (96, 96))
    out = tmp_path / "cal.safetensors"
    record = api.calibrate(model, cal, _labels_from(model, cal, 1.0, 1), out, alpha=0.2, score="aps",
                           temperature=False, randomized=True)
    assert record["conformal"]["score_options"] == {"randomized": True}
    y = _labels_from(model, test, 1.0, 2)
    sets = api.predict(out, test, sets=True)["sets"]
    covered = ((sets >> y.astype(np.uint8)) & 1).mean()
    assert 0.8 - 0.02 <= covered <= 0.8 + 0.02  # randomised: exactly 1 - alpha in expectation, not above it
    plain = api.predict(tmp_path / "cal.safetensors", test, sets=True)["sets"]
    assert np.array_equal(sets, plain)  # the same pixels get the same u on every run
    volume = _image(3, (3, 30, 26))
    np.save(tmp_path / "vol.npy", volume)
    api.predict_blocks(out, str(tmp_path / "vol.npy"), tmp_path / "o.zarr", slice_axis=0, block_shape=(2, 15, 13),
                       sets=True)
    whole = api.predict(out, volume, slice_axis=0, sets=True)
    blocks = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")["sets"][:]
    assert (blocks == whole["sets"]).mean() > 0.999  # float rounding at a threshold may flip a pixel


def test_randomised_lac_is_refused(tmp_path):
    model = _model(tmp_path / "m.safetensors")
    img = _image(1, (16, 16))
    with pytest.raises(ValueError, match="randomized=True is not allowed"):
        api.calibrate(model, img, _labels_from(model, img, 1.0, 1), tmp_path / "c.safetensors", randomized=True)
    assert not (tmp_path / "c.safetensors").exists()


def test_risk_controlled_mask_keeps_the_false_negative_rate(tmp_path):
    model = _model(tmp_path / "m.safetensors")
    cal = _image(1, (4, 64, 64))
    y_cal = np.stack([_labels_from(model, c, 1.0, i) for i, c in enumerate(cal)])
    out = tmp_path / "cal.safetensors"
    record = api.calibrate(model, cal, y_cal, out, alpha=None, temperature=False, slice_axis=0,
                           fnr_class="c1", fnr_alpha=0.1, fnr_tile=16)
    risk = record["risk"]
    assert (risk["class"], risk["n"], risk["unit"], risk["tile_shape"]) == (1, 4 * 16, "tile", [16, 16])
    # the same lambda from the functions directly, on the tiles cut by hand
    maps = [_probs(model, c)[1] for c in cal]
    tiles = [(m[r:r + 16, c:c + 16], torch.from_numpy(y[r:r + 16, c:c + 16] == 1))
             for m, y in zip(maps, y_cal) for r in range(0, 64, 16) for c in range(0, 64, 16)]
    assert risk["lambda"] == pytest.approx(risk_control_threshold([t[0] for t in tiles], [t[1] for t in tiles],
                                                                  alpha=0.1), abs=1e-12)
    test = _image(9, (20, 64, 64))
    y_test = np.stack([_labels_from(model, t, 1.0, 100 + i) for i, t in enumerate(test)])
    mask = api.predict(out, test, slice_axis=0, risk_mask=True)["risk_mask"]
    rates = [1 - mask[i][y_test[i] == 1].mean() for i in range(len(test))]
    assert np.mean(rates) <= 0.1 + 3 * np.std(rates) / np.sqrt(len(rates))
    assert mask.dtype == np.uint8 and 0 < mask.mean() < 1


def test_risk_mask_refusals_name_the_parameter(tmp_path):
    model = _model(tmp_path / "m.safetensors")
    img = _image(1, (16, 16))
    y = _labels_from(model, img, 1.0, 1)
    with pytest.raises(ValueError, match="fnr_class='nuclei' is not allowed"):
        api.calibrate(model, img, y, tmp_path / "c.safetensors", fnr_class="nuclei")
    with pytest.raises(ValueError, match="fnr_class=5"):
        api.calibrate(model, img, y, tmp_path / "c.safetensors", fnr_class=5)
    with pytest.raises(ValueError, match="alpha=0 is not allowed"):
        api.calibrate(model, img, y, tmp_path / "c.safetensors", fnr_class=1, fnr_alpha=0)
    assert not (tmp_path / "c.safetensors").exists()
    with pytest.raises(ValueError, match="no risk-controlled mask"):
        api.predict(model, img, risk_mask=True)


def test_lower_bound_mask_is_mean_minus_k_std_over_members(tmp_path):
    members = [_model(tmp_path / f"{i}.safetensors", seed=i) for i in range(4)]
    ens = save_ensemble(tmp_path / "ens.safetensors", members)
    img = _image(5, (3, 24, 20))
    each = np.stack([api.predict(m, img, slice_axis=0, probabilities=True) for m in members]).astype(np.float64)
    expected = each.mean(0) - 0.5 * each.std(0, ddof=1) > 0.4
    result = api.predict(ens, img, slice_axis=0, lower_bound=(0.5, 0.4))
    assert set(result) == {"labels", "lower_bound"}  # uncertainty maps only when asked for
    close = np.abs(each.mean(0) - 0.5 * each.std(0, ddof=1) - 0.4) < 1e-5
    assert np.array_equal(result["lower_bound"].astype(bool)[~close], expected[~close]) and expected.any()
    np.save(tmp_path / "vol.npy", img)
    api.predict_blocks(ens, str(tmp_path / "vol.npy"), tmp_path / "o.zarr", slice_axis=0, block_shape=(2, 11, 9),
                       lower_bound=(0.5, 0.4))
    group = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")
    assert np.array_equal(group["lower_bound"][:], result["lower_bound"]) and "prob_std" not in group


def test_lower_bound_refusals(tmp_path):
    model = _model(tmp_path / "m.safetensors")
    img = _image(1, (16, 16))
    with pytest.raises(ValueError, match=r"lower_bound=\(1.0, 2.0\) is not allowed"):
        api.predict(model, img, lower_bound=(1.0, 2.0), tta=True)
    with pytest.raises(ValueError, match="lower_bound=.* is not allowed"):
        api.predict(model, img, lower_bound="high", tta=True)
    with pytest.raises(ValueError, match="pass tta=True"):
        api.predict(model, img, lower_bound=(1.0, 0.5))
    reg = _model(tmp_path / "r.safetensors", classes=1, task="regression")
    with pytest.raises(ValueError, match="is a regression model: sets, risk masks and lower-bound masks"):
        api.predict(reg, img, lower_bound=(1.0, 0.5), tta=True)
    with pytest.raises(ValueError, match="written to a zarr store"):
        api.predict(model, img, tmp_path / "o.tif", lower_bound=(1.0, 0.5), tta=True)


def test_cli_risk_control_randomised_sets_and_lower_bound(tmp_path, capsys):
    from mixscale.cli.main import main

    members = [_model(tmp_path / f"{i}.safetensors", seed=i) for i in range(2)]
    ens = str(save_ensemble(tmp_path / "ens.safetensors", members))
    img = _image(7, (64, 64))
    np.save(tmp_path / "img.npy", img)
    np.save(tmp_path / "lab.npy", _labels_from(members[0], img, 1.0, 7))
    out = str(tmp_path / "cal.safetensors")
    assert main(["calibrate", ens, str(tmp_path / "img.npy"), str(tmp_path / "lab.npy"), "-o", out, "--score", "aps",
                 "--randomized", "--fnr-class", "c2", "--fnr-tile", "16", "--fnr-alpha", "0.2"]) == 0
    text = capsys.readouterr().out
    assert "risk control of class 2" in text and "over 16 tiles" in text
    assert main(["predict", out, str(tmp_path / "img.npy"), "-o", str(tmp_path / "s.zarr"), "--sets", "--risk-mask",
                 "--lower-bound", "1", "0.5", "--no-progress"]) == 0
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert {"labels", "sets", "set_size", "risk_mask", "lower_bound"} <= set(group)
    whole = api.predict(out, img, sets=True, risk_mask=True, lower_bound=(1, 0.5))
    for name in ("risk_mask", "lower_bound", "labels"):
        assert np.array_equal(group[name][:], whole[name]), name
    assert main(["predict", out, str(tmp_path / "img.npy"), "-o", str(tmp_path / "s.tif"), "--risk-mask"]) == 2
    assert "need a .zarr output" in capsys.readouterr().err
