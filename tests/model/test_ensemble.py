"""Ensembles: one file of several models, mean probabilities, spread, and the same results everywhere."""

import numpy as np
import pytest
import torch
import zarr

from mixscale import api
from mixscale.model import Ensemble, ModelInfo, open_model, read_manifest, save_ensemble, save_model
from mixscale.nets import create_net


def _member(path, name="msd", *, seed=0, classes=3, mean=0.0, std=1.0, task="segmentation", target=None, **kw):
    torch.manual_seed(seed)
    net = create_net(name, out_channels=classes, **kw)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    info = ModelInfo(net_name=name, net_config=net.config(), task=task,
                     class_names=[f"c{i}" for i in range(classes)] if task == "segmentation" else None,
                     normalization={"mean": [mean] * kw.get("in_channels", 1), "std": [std] * kw.get("in_channels", 1)},
                     target_normalization=target)
    return str(save_model(path, net.eval(), info))


@pytest.fixture
def members(tmp_path):
    return [_member(tmp_path / "a.safetensors", seed=0, mean=10.0, std=2.0, depth=4),
            _member(tmp_path / "b.safetensors", seed=1, mean=8.0, std=3.0, depth=6, dilations=[1, 2]),
            _member(tmp_path / "c.safetensors", "unet", seed=2, mean=9.0, std=1.5, depth=2, base_channels=4)]


@pytest.fixture
def image():
    return np.random.default_rng(0).normal(10.0, 2.0, size=(24, 20)).astype(np.float32)


def test_ensemble_probability_is_the_mean_of_its_members_each_with_its_own_normalisation(tmp_path, members, image):
    path = save_ensemble(tmp_path / "ens.safetensors", members)
    each = np.stack([api.predict(m, image, probabilities=True) for m in members]).astype(np.float64)
    mean = api.predict(path, image, probabilities=True)
    np.testing.assert_allclose(mean, each.mean(0), atol=1e-6)
    assert np.array_equal(api.predict(path, image), mean.argmax(0))
    stats = api.predict(path, image, uncertainty=True)
    np.testing.assert_allclose(stats["prob_std"], each.std(0, ddof=1), atol=1e-3)  # float16 arrays
    ent = -(each.mean(0) * np.log(each.mean(0))).sum(0)
    mi = ent - (-(each * np.log(each)).sum(1)).mean(0)
    np.testing.assert_allclose(stats["entropy"], ent, atol=2e-3)
    np.testing.assert_allclose(stats["mutual_info"], mi, atol=1e-3)
    assert read_manifest(path)["members"][1]["source"] == "b.safetensors"


def test_identical_members_have_zero_spread_and_mutual_information(tmp_path, members, image):
    path = save_ensemble(tmp_path / "same.safetensors", [members[0]] * 3)
    stats = api.predict(path, image, uncertainty=True)
    assert not stats["prob_std"].any() and not stats["mutual_info"].any()
    np.testing.assert_allclose(stats["prob_mean"], api.predict(members[0], image, probabilities=True), atol=1e-3)


def test_block_wise_uncertainty_equals_in_memory(tmp_path, members):
    volume = np.random.default_rng(1).normal(10.0, 2.0, size=(3, 22, 18)).astype(np.float32)
    src = tmp_path / "vol.zarr"
    zarr.open_array(str(src), mode="w", shape=volume.shape, dtype="float32")[:] = volume
    # MS-D members: translation-equivariant, so blocks with the receptive-field halo are exact
    # (a U-Net's pooling grid makes tiles at other offsets differ, ensemble or not)
    path = save_ensemble(tmp_path / "ens.safetensors", members[:2])
    api.predict_blocks(path, str(src), tmp_path / "out.zarr", slice_axis=0, block_shape=(2, 11, 9), uncertainty=True)
    group = zarr.open_group(str(tmp_path / "out.zarr"), mode="r")
    whole = api.predict(path, volume, slice_axis=0, uncertainty=True)
    for name in ("prob_mean", "prob_std", "entropy", "mutual_info"):
        np.testing.assert_allclose(group[name][:].astype(np.float32), whole[name].astype(np.float32), atol=2e-3)
    clear = np.sort(whole["prob_mean"].astype(np.float32), axis=0)
    clear = clear[-1] - clear[-2] > 1e-2
    assert np.array_equal(group["labels"][:][clear], whole["labels"][clear])


def test_regression_ensemble_averages_outputs_in_target_units(tmp_path, image):
    kw = dict(classes=1, task="regression", depth=3)
    a = _member(tmp_path / "a.safetensors", seed=0, target={"mean": [100.0], "std": [5.0]}, **kw)
    b = _member(tmp_path / "b.safetensors", seed=1, target={"mean": [90.0], "std": [10.0]}, **kw)
    path = save_ensemble(tmp_path / "reg.safetensors", [a, b])
    each = np.stack([api.predict(m, image) for m in (a, b)]).astype(np.float64)
    np.testing.assert_allclose(api.predict(path, image), each.mean(0), rtol=1e-5)
    stats = api.predict(path, image, uncertainty=True)
    np.testing.assert_allclose(stats["prediction_std"], each.std(0, ddof=1), rtol=1e-4, atol=1e-3)


def test_ensemble_of_2p5d_models_applies_each_members_statistics_to_every_context_slice(tmp_path):
    """2.5D members take ``2k + 1`` slices as channels; their one-channel statistics apply to each."""
    volume = np.random.default_rng(2).normal(10.0, 2.0, size=(6, 20, 18)).astype(np.float32)
    paths = []
    for seed, (mean, std) in enumerate([(10.0, 2.0), (7.0, 4.0)]):
        torch.manual_seed(seed)
        net = create_net("msd", in_channels=3, out_channels=1, depth=3)
        info = ModelInfo(net_name="msd", net_config=net.config(), task="regression", context_slices=1,
                         normalization={"mean": [mean], "std": [std]},
                         target_normalization={"mean": [1.0 + seed], "std": [3.0]})
        paths.append(str(save_model(tmp_path / f"m{seed}.safetensors", net.eval(), info)))
    src = tmp_path / "vol.zarr"
    zarr.create_array(str(src), data=volume)

    def predicted(model, name):  # 2.5D predicts block-wise, into zarr
        api.predict(model, str(src), tmp_path / name, slice_axis=0, progress=False)
        return zarr.open_array(str(tmp_path / name / "prediction"), mode="r")[:].astype(np.float64)

    each = np.stack([predicted(p, f"m{i}.zarr") for i, p in enumerate(paths)])
    ensemble = predicted(save_ensemble(tmp_path / "ens.safetensors", paths), "ens.zarr")
    np.testing.assert_allclose(ensemble, each.mean(0), rtol=1e-5, atol=1e-5)
    assert np.abs(each[0] - each[1]).max() > 0.1  # the members differ, so the mean is a real check


@pytest.mark.parametrize("change, match", [
    (dict(classes=2), "class_names="), (dict(task="regression", classes=3), "task='regression'"),
    (dict(in_channels=2), "image channels=2"), (dict(spatial_dims=3), "spatial_dims=3"),
])
def test_members_that_disagree_are_refused_naming_the_member(tmp_path, members, change, match):
    odd = _member(tmp_path / "odd.safetensors", seed=3, depth=2, **change)
    with pytest.raises(ValueError, match=f"member {odd} has {match}"):
        save_ensemble(tmp_path / "bad.safetensors", [members[0], odd])
    assert not (tmp_path / "bad.safetensors").exists()
    with pytest.raises(ValueError, match="at least 2 members"):
        save_ensemble(tmp_path / "one.safetensors", members[:1])


def test_single_model_uncertainty_comes_from_test_time_augmentation(members, image):
    with pytest.raises(ValueError, match="pass tta=True"):
        api.predict(members[0], image, uncertainty=True)
    stats = api.predict(members[0], image, uncertainty=True, tta=True)
    np.testing.assert_allclose(stats["prob_mean"], api.predict(members[0], image, tta=True, probabilities=True),
                               atol=1e-3)
    assert stats["prob_std"].max() > 0


def test_info_and_the_cli_take_ensembles(tmp_path, members, image, capsys):
    from mixscale.cli.main import main

    out = tmp_path / "cli.safetensors"
    assert main(["ensemble", *members, "-o", str(out)]) == 0
    info = api.info(str(out))
    assert info["format"] == "mixscale ensemble" and info["members"] == 3 and info["net_name"] == ["msd", "msd", "unet"]
    loaded = open_model(out)
    assert isinstance(loaded, Ensemble) and not any(m.net.training for m in loaded.members)  # all in eval mode
    assert main(["ensemble", *members, "-o", str(out)]) == 2  # never overwritten
    assert "exists" in capsys.readouterr().err
    src = tmp_path / "img.npy"
    np.save(src, image)
    assert main(["predict", str(out), str(src), "-o", str(tmp_path / "u.zarr"), "--uncertainty", "--no-progress"]) == 0
    group = zarr.open_group(str(tmp_path / "u.zarr"), mode="r")
    assert {"labels", "prob_mean", "prob_std", "entropy", "mutual_info"} <= set(group.array_keys())
    assert main(["predict", str(out), str(src), "-o", str(tmp_path / "u.tif"), "--uncertainty"]) == 2


def test_train_members_gives_an_ensemble_of_resumable_runs(tiny_config, tiny_dataset, tmp_path):
    from mixscale.model import read_manifest

    tiny_config["trainer"]["max_epochs"] = 1
    result = api.train(tiny_config, overrides=["ensemble.members=3"])
    run = tmp_path / "run"
    assert result.model_path == run / "ensemble.safetensors"
    manifest = read_manifest(result.model_path)
    seeds = [m["info"]["train_config"]["seed"] for m in manifest["members"]]
    assert seeds == [0, 1, 2] and all((run / f"member_{i}" / "model.safetensors").is_file() for i in range(3))
    from mixscale.data import array_sha256, read_image

    trained_on = [array_sha256(read_image(tiny_dataset["train_images"]))]
    assert all(m["info"]["train_data_sha256"] == trained_on for m in manifest["members"])
    import hashlib

    digests = {m["sha256"] for m in manifest["members"]}
    assert len(digests) == 3  # different seeds, different members
    assert hashlib.sha256((run / "member_1" / "model.safetensors").read_bytes()).hexdigest() in digests
    # a rerun resumes: finished members are kept as they are, the ensemble file is written again
    before = (run / "member_0" / "model.safetensors").stat().st_mtime_ns
    (run / "ensemble.safetensors").unlink()
    api.train(tiny_config, overrides=["ensemble.members=3"], resume=True)
    assert (run / "member_0" / "model.safetensors").stat().st_mtime_ns == before
    assert (run / "ensemble.safetensors").is_file()
    with pytest.raises(FileExistsError, match="not empty"):
        api.train(tiny_config, overrides=["ensemble.members=3"])
    labels = api.predict(result.model_path, tiny_dataset["val_images"], slice_axis=0)
    assert labels.dtype == np.uint8


def test_members_of_random_nets_draw_their_own_graphs(tiny_config):
    from mixscale.api import _member_config, _train_config

    tiny_config["net"] = {"name": "smsnet", "seed": 5}
    cfg = _train_config(tiny_config, ["ensemble.members=2"])
    first, second = _member_config(cfg, 0), _member_config(cfg, 1)
    assert (first.net.kwargs()["seed"], second.net.kwargs()["seed"]) == (5, 6)
    assert (first.seed, second.seed, second.ensemble.members) == (0, 1, 1)
    assert second.run_dir.endswith("member_1")


def test_mean_of_logits_is_an_option_and_the_spread_stays_that_of_probabilities(tmp_path, members, image):
    path = save_ensemble(tmp_path / "logits.safetensors", members[:2], combine="logits")
    logits = []
    for m in members[:2]:
        model = open_model(m)
        with torch.no_grad():
            logits.append(model.net(torch.from_numpy(model.prepare(image))[None])[0].double())
    expected = torch.softmax(torch.stack(logits).mean(0), 0).numpy()
    np.testing.assert_allclose(api.predict(path, image, probabilities=True), expected, atol=1e-6)
    by_probs = save_ensemble(tmp_path / "probs.safetensors", members[:2])
    a, b = api.predict(path, image, uncertainty=True), api.predict(by_probs, image, uncertainty=True)
    assert np.array_equal(a["prob_std"], b["prob_std"]) and np.array_equal(a["mutual_info"], b["mutual_info"])
    assert not np.array_equal(a["prob_mean"], b["prob_mean"])
    with pytest.raises(ValueError, match="combine='median' is not allowed"):
        save_ensemble(tmp_path / "x.safetensors", members[:2], combine="median")
