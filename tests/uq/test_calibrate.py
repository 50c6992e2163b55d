"""Calibrating a model file: temperature by NLL, conformal sets that cover, and clear refusals."""

import math

import numpy as np
import pytest
import torch
import zarr
from scipy.optimize import minimize_scalar

from mixscale import api
from mixscale.model import ModelInfo, open_model, save_ensemble, save_model
from mixscale.nets import create_net
from mixscale.uq.calibrate import fit_temperature, nll


def _model(path, *, seed=0, task="segmentation", classes=3, train_sha=None):
    torch.manual_seed(seed)
    net = create_net("msd", depth=4, out_channels=classes)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    info = ModelInfo(net_name="msd", net_config=net.config(), task=task, train_data_sha256=train_sha,
                     class_names=[f"c{i}" for i in range(classes)] if task == "segmentation" else None)
    return str(save_model(path, net.eval(), info))


def _image(seed, shape=(48, 40)):
    return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def _labels_from(model_path, image, temperature, seed):
    """Labels drawn from the model's own probabilities at temperature T0: a model that is off by T0."""
    with torch.no_grad():
        net = open_model(model_path).net
        logits = net(torch.from_numpy(image)[None, None])[0]
    p = torch.softmax(logits / temperature, 0).reshape(logits.shape[0], -1).T
    y = torch.multinomial(p, 1, generator=torch.Generator().manual_seed(seed))[:, 0]
    return y.reshape(image.shape).numpy()


def test_fit_temperature_finds_the_nll_minimum_and_the_true_temperature():
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(1, 4, 20000, generator=gen) * 3
    y = torch.multinomial(torch.softmax(z[0] / 2.5, 0).T, 1, generator=gen)[:, 0]
    t = fit_temperature(z, y)
    ref = minimize_scalar(lambda lt: nll(z, y, math.exp(lt)), bounds=(math.log(0.05), math.log(20)),
                          method="bounded", options={"xatol": 1e-6})
    assert t == pytest.approx(math.exp(ref.x), rel=1e-3)
    assert t == pytest.approx(2.5, rel=0.05)


@pytest.mark.parametrize("score, per_class", [("lac", False), ("aps", False), ("lac", True)])
def test_calibrated_sets_cover_held_out_pixels(tmp_path, score, per_class):
    model = _model(tmp_path / "m.safetensors")
    cal, test = _image(1, (96, 96)), _image(2, (96, 96))
    y_cal, y_test = _labels_from(model, cal, 2.0, 1), _labels_from(model, test, 2.0, 2)
    out = tmp_path / "cal.safetensors"
    record = api.calibrate(model, cal, y_cal, out, alpha=0.1, score=score, per_class=per_class)
    assert record["temperature"] == pytest.approx(2.0, rel=0.15)
    c = record["conformal"]
    assert c["n"] == cal.size - cal.size // 2 and c["score"] == score
    result = api.predict(out, test, sets=True)
    sets, size = result["sets"], result["set_size"]
    covered = (sets >> y_test.astype(np.uint8)) & 1
    assert covered.mean() >= 0.9 - 0.015  # 1 - alpha, up to the test sample's own noise (9216 pixels)
    assert np.array_equal(size, np.unpackbits(sets[..., None], axis=-1).sum(-1))
    if per_class:
        for k in range(3):
            assert covered[y_test == k].mean() >= 0.9 - 0.04


def test_temperature_is_stored_and_applied_at_prediction(tmp_path):
    model = _model(tmp_path / "m.safetensors")
    img = _image(3)
    out = tmp_path / "t.safetensors"
    record = api.calibrate(model, img, _labels_from(model, img, 3.0, 3), out, alpha=None)
    with torch.no_grad():
        logits = open_model(model).net(torch.from_numpy(img)[None, None])[0]
    expected = torch.softmax(logits / record["temperature"], 0).numpy()
    np.testing.assert_allclose(api.predict(out, img, probabilities=True), expected, atol=1e-6)
    assert "conformal" not in record and open_model(out).temperature == record["temperature"]


def test_block_wise_sets_equal_in_memory(tmp_path):
    model = _model(tmp_path / "m.safetensors")
    img = _image(4, (3, 30, 26))
    out = tmp_path / "cal.safetensors"
    api.calibrate(model, img[0], _labels_from(model, img[0], 1.0, 4), out, alpha=0.2, score="aps")
    src = tmp_path / "vol.npy"
    np.save(src, img)
    api.predict_blocks(out, str(src), tmp_path / "o.zarr", slice_axis=0, block_shape=(2, 15, 13), sets=True)
    group = zarr.open_group(str(tmp_path / "o.zarr"), mode="r")
    whole = api.predict(out, img, slice_axis=0, sets=True)
    assert (group["sets"][:] == whole["sets"]).mean() > 0.999  # float rounding at a threshold may flip a pixel
    assert np.array_equal(group["labels"][:], whole["labels"])


def test_ensembles_calibrate_too(tmp_path):
    members = [_model(tmp_path / f"{i}.safetensors", seed=i) for i in range(2)]
    ens = save_ensemble(tmp_path / "ens.safetensors", members)
    img = _image(5, (64, 64))
    out = tmp_path / "ens_cal.safetensors"
    record = api.calibrate(ens, img, _labels_from(members[0], img, 1.0, 5), out, alpha=0.1)
    assert open_model(out).calibration == record and len(open_model(out).members) == 2
    assert api.predict(out, img, sets=True)["set_size"].max() <= 3


def test_bad_calibration_input_is_refused_and_nothing_written(tmp_path):
    model = _model(tmp_path / "m.safetensors")
    img = _image(6)
    y = _labels_from(model, img, 1.0, 6)
    out = tmp_path / "out.safetensors"
    with pytest.raises(ValueError, match="alpha=1.5 is not allowed"):
        api.calibrate(model, img, y, out, alpha=1.5)
    with pytest.raises(ValueError, match="no labelled pixel"):
        api.calibrate(model, img, np.full(img.shape, -1), out)
    with pytest.raises(ValueError, match="label|class"):
        api.calibrate(model, img, np.full(img.shape, 7), out)
    reg = _model(tmp_path / "r.safetensors", task="regression", classes=1)
    with pytest.raises(ValueError, match="is a regression model: calibration"):
        api.calibrate(reg, img, y, out)
    from mixscale.data import array_sha256

    trained = _model(tmp_path / "trained.safetensors", train_sha=[array_sha256(img)])
    with pytest.raises(ValueError, match="one of the model's training images"):
        api.calibrate(trained, img, y, out)
    assert not out.exists()
    with pytest.raises(ValueError, match="no conformal calibration"):
        api.predict(model, img, sets=True)
    api.calibrate(trained, img, y, out, allow_training_images=True)
    with pytest.raises(FileExistsError, match="exists"):
        api.calibrate(model, img, y, out)


def test_cli_calibrate_and_predict_sets(tmp_path, capsys):
    from mixscale.cli.main import main

    model = _model(tmp_path / "m.safetensors")
    img = _image(7, (64, 64))
    np.save(tmp_path / "img.npy", img)
    np.save(tmp_path / "lab.npy", _labels_from(model, img, 1.5, 7))
    out = tmp_path / "cal.safetensors"
    assert main(["calibrate", model, str(tmp_path / "img.npy"), str(tmp_path / "lab.npy"), "-o", str(out),
                 "--alpha", "0.1", "--score", "aps"]) == 0
    assert "aps sets at alpha 0.1" in capsys.readouterr().out
    assert main(["predict", str(out), str(tmp_path / "img.npy"), "-o", str(tmp_path / "s.zarr"), "--sets",
                 "--no-progress"]) == 0
    assert "sets" in zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    assert main(["calibrate", model, str(tmp_path / "img.npy"), str(tmp_path / "lab.npy"), "-o",
                 str(tmp_path / "x.safetensors"), "--alpha", "0"]) == 2
    assert "alpha=0.0 is not allowed" in capsys.readouterr().err
