"""Bad input fails loudly at the boundary: configs, image files, metrics, patches, models, labels.

Each test feeds one bad input through the public entry points (``load_config``,
``api.train``, ``api.predict``, ``api.evaluate``, ``mixscale`` itself) on real
files and checks the error (or warning) names what is wrong and what is allowed.
"""

import re
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
import yaml

from mixscale import api
from mixscale.cli.main import main
from mixscale.config import ConfigError, load_config, validate_config
from mixscale.data import LabelConventionWarning, open_image, read_image


def _config(tmp_path, **data):
    """A tiny segmentation config on a 24x24 TIFF image (labels: two classes), with ``data`` overrides."""
    rng = np.random.default_rng(0)
    image = tmp_path / "image.tif"
    labels = tmp_path / "labels.tif"
    tifffile.imwrite(image, rng.normal(size=(24, 24)).astype(np.float32))
    tifffile.imwrite(labels, (rng.random((24, 24)) > 0.5).astype(np.uint8))
    raw = {"version": 1, "task": "segmentation", "run_dir": str(tmp_path / "run"),
           "data": {"train_images": str(image), "train_labels": str(labels), "num_classes": 2,
                    "patch_shape": [16, 16], "samples_per_epoch": 2, "val_samples": 2, "batch_size": 2},
           "net": {"name": "msd", "depth": 2, "dilations": [1, 2]},
           "trainer": {"max_epochs": 1, "progress_bar": False, "accelerator": "cpu", "devices": 1}}
    raw["data"].update(data)
    return raw


def _write_yaml(tmp_path, raw, name="config.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def _cli_error(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err, err  # one line, no traceback
    return err


# -- 1. a YAML alias bomb ---------------------------------------------------------------
def _alias_bomb(levels=9) -> str:
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_yaml_alias_bomb_is_refused_at_once_naming_the_file(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(_alias_bomb())
    # in a child process: an expanding bomb runs in compiled code that no test timeout interrupts
    code = ("import sys; from mixscale.config import ConfigError, load_config\n"
            "try:\n    load_config(sys.argv[1])\nexcept ConfigError as exc:\n    print(exc)")
    start = time.perf_counter()
    try:
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("loading an alias bomb did not stop within 60 s")
    assert re.search(r"bomb\.yaml: the document expands to more than 100000 values through nested anchors and "
                     r"aliases; a config may hold at most 100000", done.stdout), done.stdout + done.stderr
    assert time.perf_counter() - start < 30
    with pytest.raises(ConfigError, match=r"bomb\.yaml: the document expands"):
        load_config(path)
    assert "bomb.yaml" in _cli_error(["train", str(path)], capsys)
    assert not (tmp_path / "run").exists()


def test_recursive_alias_huge_file_and_bombed_override_are_refused(tmp_path):
    path = tmp_path / "loop.yaml"
    path.write_text("a: &a [1, *a]\n")
    with pytest.raises(ConfigError, match=r"loop\.yaml: an alias refers to a node that contains it"):
        load_config(path)
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200_000)
    with pytest.raises(ConfigError, match=r"big\.yaml has \d+ bytes; a config may have at most 1048576"):
        load_config(big)
    good = _write_yaml(tmp_path, _config(tmp_path))
    bomb = "[" + ", ".join(["&a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + ["*a"] * 20) + "]"
    assert load_config(good, [f"net.extra={bomb}"]).net.kwargs()["extra"][1] == [1] * 10  # aliases stay usable
    nested = _alias_bomb().replace("\n", ", ")
    with pytest.raises(ConfigError, match=r"override .*expands to more than 100000 values"):
        load_config(good, ["net.extra={" + nested.rstrip(", ") + "}"])


# -- 2. duplicate keys ------------------------------------------------------------------
def test_duplicate_keys_are_refused_naming_key_file_and_line(tmp_path, capsys):
    text = yaml.safe_dump(_config(tmp_path), sort_keys=False)
    top = tmp_path / "top.yaml"
    top.write_text(text + "run_dir: elsewhere\n")
    line = text.count("\n") + 1
    with pytest.raises(ConfigError, match=rf"top\.yaml: duplicate key 'run_dir' at line {line} "
                                          r"\(first given at line 3\)"):
        load_config(top)
    nested = tmp_path / "nested.yaml"
    nested.write_text(text.replace("  num_classes: 2\n", "  num_classes: 2\n  num_classes: 3\n"))
    err = _cli_error(["train", str(nested)], capsys)
    assert "nested.yaml" in err and "duplicate key 'num_classes'" in err
    from mixscale.config.load import parse_yaml

    # a key may override one merged in with '<<': that is no duplicate
    assert parse_yaml("base: &b {x: 1, y: 2}\nother:\n  <<: *b\n  x: 3\n")["other"] == {"x": 3, "y": 2}


# -- 3. a config that is not UTF-8 ------------------------------------------------------
def test_non_utf8_config_is_one_line_naming_the_file(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes(yaml.safe_dump(_config(tmp_path)).replace("run", "r\xe9sum\xe9").encode("latin-1"))
    with pytest.raises(ConfigError, match=r"latin1\.yaml is not UTF-8 text \(byte 0xe9 on line \d+\); "
                                          r"a config must be a UTF-8 YAML file"):
        load_config(path)
    assert "latin1.yaml is not UTF-8" in _cli_error(["train", str(path)], capsys)
    bom = tmp_path / "bom.yaml"  # a UTF-8 byte-order mark is fine
    bom.write_bytes(b"\xef\xbb\xbf" + yaml.safe_dump(_config(tmp_path)).encode())
    assert load_config(bom).data.num_classes == 2


# -- 4. a loss that does not fit the task -----------------------------------------------
def test_loss_of_another_task_is_one_line_listing_the_allowed_losses(tmp_path, capsys):
    raw = _config(tmp_path)
    raw["loss"] = "mse"
    with pytest.raises(ConfigError) as info:
        validate_config(raw)
    assert str(info.value) == ("invalid config: loss: loss='mse' is not allowed for task 'segmentation'; expected "
                               "one of ['ce', 'dice', 'focal', 'tversky'] or a mapping {name: weight} of them")
    err = _cli_error(["train", str(_write_yaml(tmp_path, raw))], capsys)
    assert "loss='mse' is not allowed" in err
    raw["loss"] = {"ce": 1.0, "l1": 0.5}
    with pytest.raises(ConfigError, match=r"loss=\{'ce': 1.0, 'l1': 0.5\} is not allowed for task"):
        validate_config(raw)
    raw.update(task="regression", loss="dice")
    with pytest.raises(ConfigError, match=r"loss='dice' is not allowed for task 'regression'; expected one of "
                                          r"\['l1', 'mse'\]"):
        validate_config(raw)
    assert not (tmp_path / "run").exists()


def test_the_losses_of_the_schema_are_those_of_the_registry():
    from mixscale.config.schema import CLASS_LOSSES, IMAGE_LOSSES
    from mixscale.losses import list_losses

    assert sorted(CLASS_LOSSES + IMAGE_LOSSES) == sorted(list_losses())


# -- 5. images without pixels -----------------------------------------------------------
@pytest.fixture
def pixelless(tmp_path):
    """Addresses of a scalar HDF5 dataset and of empty (zero-size) HDF5, TIFF and zarr volumes."""
    import zarr

    with h5py.File(tmp_path / "scalar.h5", "w") as f:
        f["data"] = 3.0
    with h5py.File(tmp_path / "empty.h5", "w") as f:
        f["data"] = np.zeros((0, 16, 16), np.float32)
    with pytest.warns(UserWarning, match="zero-size"):  # tifffile writes it, with a warning
        tifffile.imwrite(tmp_path / "empty.tif", np.zeros((0, 16), np.float32))
    zarr.save_array(str(tmp_path / "empty.zarr"), np.zeros((0, 8, 8), np.float32))
    return {"scalar": f"{tmp_path}/scalar.h5:/data", "hdf5": f"{tmp_path}/empty.h5:/data",
            "tiff": str(tmp_path / "empty.tif"), "zarr": str(tmp_path / "empty.zarr")}


@pytest.mark.parametrize("kind", ["scalar", "hdf5", "tiff", "zarr"])
def test_scalar_and_empty_images_are_refused_naming_the_address(pixelless, kind):
    address = pixelless[kind]
    what = r"a scalar \(a 0-d dataset\), not an image" if kind == "scalar" else r"an empty array of shape \(0, "
    match = rf"address '{address}' holds {what}.*an image needs >= 1 axis, each of size >= 1"
    with pytest.raises(ValueError, match=match):
        read_image(address)
    with pytest.raises(ValueError, match=match):
        open_image(address)
    with pytest.raises(ValueError, match=match):
        api.evaluate(address, np.zeros((4, 4), np.int64))


def test_training_on_an_empty_volume_is_refused_before_the_run(tmp_path, pixelless):
    raw = _config(tmp_path, train_images=pixelless["hdf5"])
    with pytest.raises(ValueError, match=r"empty\.h5:/data' holds an empty array of shape \(0, 16, 16\)"):
        api.train(raw)
    assert not Path(raw["run_dir"]).exists()


# -- 6. SSIM of a regression stack ------------------------------------------------------
def test_evaluate_scores_ssim_of_a_thin_regression_stack_slice_by_slice(tmp_path):
    from skimage.metrics import structural_similarity

    rng = np.random.default_rng(3)
    target = rng.random((3, 32, 30))
    pred = np.clip(target + rng.normal(0, 0.05, target.shape), 0, 1)
    tifffile.imwrite(tmp_path / "pred.tif", pred.astype(np.float32), photometric="minisblack")
    tifffile.imwrite(tmp_path / "target.tif", target.astype(np.float32), photometric="minisblack")
    report = api.evaluate(str(tmp_path / "pred.tif"), str(tmp_path / "target.tif"), task="regression", data_range=1.0)
    p, t = (read_image(str(tmp_path / n)).astype(np.float64) for n in ("pred.tif", "target.tif"))
    each = [structural_similarity(p[k], t[k], data_range=1.0) for k in range(3)]
    assert report["ssim"] == pytest.approx(np.mean(each), rel=1e-9) and report["ssim_slice_axis"] == 0
    moved = api.evaluate(np.moveaxis(p, 0, 2), np.moveaxis(t, 0, 2), task="regression", data_range=1.0)
    assert moved["ssim"] == pytest.approx(report["ssim"], rel=1e-9) and moved["ssim_slice_axis"] == 2
    with pytest.raises(ValueError, match=r"shape \(3, 4, 30\) has 2 axes shorter than the 7-wide window"):
        api.evaluate(p[:, :4], t[:, :4], task="regression", data_range=1.0)


def test_ssim_slice_axis_is_checked_and_combines_with_channels():
    from mixscale.metrics import ssim

    rng = np.random.default_rng(4)
    t = rng.random((2, 8, 9, 10))
    p = t + 0.1
    per_channel = [ssim(p[c], t[c], data_range=1.0, slice_axis=1) for c in range(2)]
    assert ssim(p, t, data_range=1.0, channel_axis=0, slice_axis=2) == pytest.approx(np.mean(per_channel))
    with pytest.raises(ValueError, match=r"slice_axis=3 is not allowed; expected an axis of the 3D image"):
        ssim(p[0], t[0], data_range=1.0, slice_axis=3)
    with pytest.raises(ValueError, match=r"slice_axis=0 is not allowed; expected an axis other than channel_axis=0"):
        ssim(p, t, data_range=1.0, channel_axis=0, slice_axis=0)


# -- 7. silent acceptance: patch, context, slice axis, dtype ----------------------------
def _training_data(raw):
    from mixscale.train.builder import data_settings
    from mixscale.train.data import build_training_data

    return build_training_data(data_settings(validate_config(raw)))


def test_patch_larger_than_the_image_warns_naming_both(tmp_path):
    raw = _config(tmp_path, patch_shape=[32, 16])
    with pytest.warns(UserWarning, match=r"data\.patch_shape=\[32, 16\] is larger than image .*image\.tif "
                                         r"\(shape \(24, 24\) per patch plane\).*at most \[24, 16\] fits"):
        data = _training_data(raw)
    x, y = data.train[0]
    assert tuple(x.shape) == (1, 32, 16)  # still works: padded, padding unlabelled


def test_more_context_slices_than_the_stack_has_are_refused(tmp_path):
    from mixscale.data import PatchSampler

    rng = np.random.default_rng(5)
    tifffile.imwrite(tmp_path / "stack.tif", rng.normal(size=(6, 20, 20)).astype(np.float32))
    tifffile.imwrite(tmp_path / "stack_labels.tif", rng.integers(0, 2, (6, 20, 20)).astype(np.uint8))
    raw = _config(tmp_path, train_images=str(tmp_path / "stack.tif"), train_labels=str(tmp_path / "stack_labels.tif"),
                  context_slices=100)
    with pytest.raises(ValueError, match=r"data\.context_slices=100 is not allowed; expected at most 5 for image "
                                         r".*stack\.tif, which has 6 slices along data\.slice_axis=0"):
        api.train(raw)
    assert not Path(raw["run_dir"]).exists()
    with pytest.raises(ValueError, match=r"context_slices=6 is not allowed; expected at most 5: images\[0\] has 6"):
        PatchSampler([np.zeros((1, 6, 20, 20))], [np.zeros((6, 20, 20), np.int64)], patch_shape=(8, 8),
                     spatial_dims=2, context_slices=6)


def _model_file(tmp_path, *, spatial_dims=2, context_slices=0, name="model.safetensors"):
    from mixscale.model import ModelInfo, save_model
    from mixscale.nets import create_net

    net = create_net("msd", spatial_dims=spatial_dims, depth=2, in_channels=2 * context_slices + 1, out_channels=2)
    info = ModelInfo(net_name="msd", net_config=net.config(), class_names=["a", "b"], context_slices=context_slices,
                     normalization={"mean": [0.5], "std": [0.25]})  # per channel of the image
    return str(save_model(tmp_path / name, net.eval(), info))


def test_slice_axis_for_a_3d_model_is_refused(tmp_path):
    model = _model_file(tmp_path, spatial_dims=3)
    tifffile.imwrite(tmp_path / "volume.tif", np.random.default_rng(6).random((8, 9, 10)).astype(np.float32))
    with pytest.raises(ValueError, match=r"slice_axis=1 is not allowed for a 3D model, which predicts a volume as a "
                                         r"whole; expected None"):
        api.predict(model, str(tmp_path / "volume.tif"), slice_axis=1)
    assert api.predict(model, str(tmp_path / "volume.tif")).shape == (8, 9, 10)


def test_a_25d_model_refuses_a_stack_too_thin_for_its_context(tmp_path):
    from mixscale.model import Model

    model = Model.load(_model_file(tmp_path, context_slices=2))
    with pytest.raises(ValueError, match=r"has 2 slices along slice_axis=0; the model takes context_slices=2 .*"
                                         r"at least 3 slices"):
        model.layout((2, 12, 12), slice_axis=0)  # what block-wise prediction checks first
    assert model.layout((3, 12, 12), slice_axis=0).slice_axis == 0


def test_integer_counts_given_to_a_model_trained_on_floats_warn_naming_the_dtype(tmp_path):
    model = _model_file(tmp_path)
    rng = np.random.default_rng(8)
    tifffile.imwrite(tmp_path / "counts.tif", rng.integers(0, 60000, (16, 16)).astype(np.uint16))
    tifffile.imwrite(tmp_path / "floats.tif", rng.random((16, 16)).astype(np.float32))
    with pytest.warns(UserWarning, match=r"input of dtype uint16 does not look like the model's training data: with "
                                         r"the training normalisation \(mean \[0\.5\], std \[0\.25\]\)"):
        labels = api.predict(model, str(tmp_path / "counts.tif"))
    assert labels.shape == (16, 16)  # still predicted
    api.predict(model, str(tmp_path / "floats.tif"))  # data like the training data: no warning (it would fail)


# -- 8. labels without a labelled pixel -------------------------------------------------
@pytest.mark.parametrize("case", ["dense", "scribble", "one_pixel"])
def test_labels_without_labelled_pixels_are_refused_before_the_run(tmp_path, case):
    raw = _config(tmp_path)
    if case == "dense":
        tifffile.imwrite(tmp_path / "none.tif", np.full((24, 24), -1, np.int8))
        raw["data"]["train_labels"] = str(tmp_path / "none.tif")
        match = r"none\.tif' hold no labelled pixel \(label_convention='dense': ignore_index=-1 is unlabelled"
    elif case == "scribble":
        tifffile.imwrite(tmp_path / "none.tif", np.zeros((24, 24), np.uint8))
        raw["data"].update(train_labels=str(tmp_path / "none.tif"), label_convention="scribble")
        match = r"none\.tif' hold no labelled pixel \(label_convention='scribble': 0 is unlabelled"
    else:
        tifffile.imwrite(tmp_path / "pixel.tif", np.ones((1, 1), np.float32))
        tifffile.imwrite(tmp_path / "pixel_label.tif", np.ones((1, 1), np.uint8))
        raw["data"].update(train_images=str(tmp_path / "pixel.tif"), train_labels=str(tmp_path / "pixel_label.tif"))
        match = r"pixel_label\.tif' hold 1 labelled pixel\(s\): too few to hold out validation pixels"
    with pytest.warns(UserWarning), pytest.raises(ValueError, match=match):
        api.train(raw)
    assert not Path(raw["run_dir"]).exists()


def test_validation_labels_without_a_labelled_pixel_warn(tmp_path):
    tifffile.imwrite(tmp_path / "val_labels.tif", np.full((24, 24), -1, np.int8))
    raw = _config(tmp_path)
    raw["data"].update(val_images=raw["data"]["train_images"], val_labels=str(tmp_path / "val_labels.tif"))
    with pytest.warns(LabelConventionWarning) as record:  # also: class 0 and class 1 have no labelled pixels
        _training_data(raw)
    expected = r"data\.val_labels=.*val_labels\.tif' hold no labelled pixel: val_loss will be 0 every epoch"
    assert any(re.search(expected, str(w.message)) for w in record)
