"""Task 'detection': point CSVs -> patch classifier through the config path -> api.detect / CLI."""

import csv
import inspect

import numpy as np
import pytest
import torch

from mixscale import api
from mixscale.config import ConfigError, validate_config
from mixscale.config.schema import PointSamplingConfig
from mixscale.data import PointPatchDataset, write_image
from mixscale.infer import match_points
from mixscale.model import load_model
from mixscale.data import read_points_csv
from mixscale.train.detection import region_split

PATCH = 11


def _blob_image(seed, size=(72, 72), count=12, sigma=1.5, noise=0.25):
    """Gaussian blobs (peak 1) at least 9 px apart on white noise; returns image and true centres."""
    rng = np.random.default_rng(seed)
    centres = []
    while len(centres) < count:
        p = rng.uniform(3, np.asarray(size) - 3)
        if all(np.hypot(*(p - q)) >= 9 for q in centres):
            centres.append(p)
    yy, xx = np.mgrid[: size[0], : size[1]]
    img = sum(np.exp(-((yy - c[0]) ** 2 + (xx - c[1]) ** 2) / (2 * sigma**2)) for c in centres)
    img = img + rng.normal(0, noise, size=size)
    return img.astype(np.float32), np.array(centres)


def _write_points(path, points, classes=None, header=("y", "x", "class")):
    classes = np.ones(len(points), int) if classes is None else classes
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for p, c in zip(points, classes):
            w.writerow([*np.round(p, 2).tolist(), int(c)][: len(header)])
    return str(path)


@pytest.fixture
def blob_files(tmp_path):
    """Training and validation images with their points CSVs, and a test image with its true centres."""
    paths = {}
    for name, seed, size, count in (("train", 0, (72, 72), 12), ("val", 1, (48, 48), 5), ("test", 2, (72, 72), 12)):
        img, pts = _blob_image(seed, size, count)
        paths[f"{name}_image"] = str(tmp_path / f"{name}.tif")
        write_image(paths[f"{name}_image"], img)
        paths[f"{name}_points"] = _write_points(tmp_path / f"{name}.csv", pts)
        paths[f"{name}_true"] = pts
    return paths


def _config(tmp_path, files, **data):
    return {
        "version": 1, "task": "detection", "run_dir": str(tmp_path / "run"), "seed": 0,
        "data": {"train_images": files["train_image"], "train_points": files["train_points"],
                 "val_images": files["val_image"], "val_points": files["val_points"],
                 "patch_shape": [PATCH, PATCH], "samples_per_epoch": 384, "val_samples": 64, "batch_size": 32,
                 "point_sampling": {"background_per_point": 4, "jitter": 1}, **data},
        "net": {"base_channels": 8, "hidden_channels": 16},
        "optim": {"lr": 3e-3},
        "trainer": {"max_epochs": 8, "progress_bar": False, "accelerator": "cpu", "devices": 1},
    }


def test_train_then_detect_finds_the_blobs_of_another_image(tmp_path, blob_files):
    result = api.train(_config(tmp_path, blob_files))
    _, info = load_model(result.model_path)
    assert info.task == "detection" and info.net_name == "classifier"
    assert info.class_names == ["background", "object"] and info.net_config["patch_shape"] == [PATCH, PATCH]
    with open(result.metrics_csv) as f:
        f1 = [float(r["val_f1_macro"]) for r in csv.DictReader(f) if r.get("val_f1_macro")]
    assert len(f1) == 8 and f1[-1] > 0.8  # the confusion-matrix metrics run on (N, K) logits
    out = tmp_path / "found.csv"
    found = api.detect(result.model_path, blob_files["test_image"], threshold=0.5, min_distance=4, output=out)
    score = match_points(found["points"], blob_files["test_true"], max_distance=3)
    assert score["precision"] >= 0.8 and score["recall"] >= 0.8, score
    assert set(found["classes"].tolist()) <= {1} and np.all(np.diff(found["scores"]) <= 0)
    pts, cls = read_points_csv(out, spatial_dims=2)  # the output reads back as training points
    np.testing.assert_array_equal(pts, found["points"])
    np.testing.assert_array_equal(cls, found["classes"])
    with pytest.raises(FileExistsError, match="exists"):
        api.detect(result.model_path, blob_files["test_image"], output=out)
    coarse = api.detect(result.model_path, blob_files["test_image"], stride=2, min_distance=4)
    assert np.all(coarse["points"] % 2 == 0)
    assert match_points(coarse["points"], blob_files["test_true"], max_distance=3)["recall"] >= 0.6
    tiled = api.detect(result.model_path, blob_files["test_image"], min_distance=4, tile_shape=(20, 32))
    np.testing.assert_array_equal(tiled["points"], found["points"])  # tiles with the patch halo are exact
    np.testing.assert_allclose(tiled["scores"], found["scores"], atol=1e-5)
    tta = api.detect(result.model_path, blob_files["test_image"], min_distance=4, tta=True)
    assert match_points(tta["points"], blob_files["test_true"], max_distance=3)["f1"] >= 0.8
    with pytest.raises(ValueError, match="is a detection model.*mixscale detect"):
        api.predict(result.model_path, blob_files["test_image"])
    with pytest.raises(ValueError, match="is a detection model.*mixscale detect"):
        api.predict(result.model_path, blob_files["test_image"], blob_files["test_image"] + ".zarr")


def test_cli_train_and_detect(tmp_path, blob_files, capsys):
    import yaml

    from mixscale.cli.main import main

    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(_config(tmp_path, blob_files)))
    assert main(["train", str(cfg), "--set", "trainer.max_epochs=1"]) == 0
    model = tmp_path / "run" / "model.safetensors"
    out = tmp_path / "points.csv"
    assert main(["detect", str(model), blob_files["test_image"], "-o", str(out), "--threshold", "0.3",
                 "--min-distance", "4"]) == 0
    assert "detections" in capsys.readouterr().out
    pts, _ = read_points_csv(out, spatial_dims=2)
    assert pts.ndim == 2 and pts.shape[1] == 2
    assert main(["predict", str(model), blob_files["test_image"], "-o", str(tmp_path / "x.tif")]) == 2
    assert "mixscale detect" in capsys.readouterr().err


def _rewrite(path, text):
    with open(path, "w") as f:
        f.write(text)
    return str(path)


@pytest.mark.parametrize("case, error, match", [
    ("missing", FileNotFoundError, "points file not found"),
    ("columns", ValueError, r"columns \['row', 'col', 'class'\] but lacks \['y', 'x'\]"),
    ("outside", ValueError, r"1 point\(s\) outside image .* spatial shape \(72, 72\), e.g. line 3"),
    ("negative", ValueError, "line 2: class '-1' is not allowed"),
    ("fraction", ValueError, "line 2: class '1.5' is not allowed"),
    ("too_high", ValueError, r"has class 3 but data.num_classes=2 allows classes 0..1"),
    ("no_objects", ValueError, "no object point"),
    ("text", ValueError, "line 2: column 'x' holds 'abc', not a number"),
    ("net", ValueError, "does not fit task 'detection'"),
    ("patch", ValueError, r"net.patch_shape=\[9, 9\] must equal data.patch_shape=\[11, 11\]"),
])
def test_config_errors_are_named_and_nothing_is_written(tmp_path, blob_files, case, error, match):
    cfg = _config(tmp_path, blob_files)
    bad = tmp_path / "bad.csv"
    texts = {"columns": "row,col,class\n3,4,1\n", "outside": "y,x,class\n3,4,1\n80,2,1\n",
             "negative": "y,x,class\n3,4,-1\n", "fraction": "y,x,class\n3,4,1.5\n", "too_high": "y,x,class\n3,4,3\n",
             "no_objects": "y,x,class\n3,4,0\n", "text": "y,x\n3,abc\n"}
    if case == "missing":
        cfg["data"]["train_points"] = str(tmp_path / "nowhere.csv")
    elif case in texts:
        cfg["data"]["train_points"] = _rewrite(bad, texts[case])
        if case == "too_high":
            cfg["data"]["num_classes"] = 2
    elif case == "net":
        cfg["net"] = {"name": "msd", "depth": 3}
    else:
        cfg["net"]["patch_shape"] = [9, 9]
    with pytest.raises(error, match=match):
        api.train(cfg)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("change, match", [
    ({"train_points": None}, "data.train_points is required for task 'detection'"),
    ({"train_labels": "labels.tif"}, "learns from points"),
    ({"val_points": None}, "val_images and val_points must be given together"),
    ({"split": "pixels"}, "cannot hold out pixels"),
])
def test_schema_rejects_inconsistent_detection_configs(tmp_path, blob_files, change, match):
    cfg = _config(tmp_path, blob_files)
    cfg["data"].update(change)
    cfg["data"] = {k: v for k, v in cfg["data"].items() if v is not None}
    with pytest.raises(ConfigError, match=match):
        validate_config(cfg)


def test_schema_defaults_mirror_the_point_dataset_and_the_net_defaults_to_classifier(tmp_path, blob_files):
    signature = inspect.signature(PointPatchDataset.__init__).parameters
    for key, value in PointSamplingConfig().model_dump().items():
        assert signature[key].default == value, key
    cfg = _config(tmp_path, blob_files)
    del cfg["net"]
    assert validate_config(cfg).net.name == "classifier"
    seg = {**cfg, "task": "segmentation"}
    seg["data"] = {**cfg["data"], "num_classes": 2}
    with pytest.raises(ConfigError, match="train_points/val_points are for task 'detection'"):
        validate_config(seg)


def test_region_split_shares_no_pixel_and_keeps_every_point():
    from mixscale.train.builder import data_settings

    cfg = data_settings(validate_config({"version": 1, "task": "detection", "run_dir": "unused",
                           "data": {"train_images": "a.tif", "train_points": "a.csv", "patch_shape": [5, 5],
                                    "val_fraction": 0.25}}))
    x = np.arange(2 * 20 * 32, dtype=np.float32).reshape(2, 20, 32)  # longest axis: the last (32 -> 24 + 8)
    p = np.array([[1.0, 3.0], [10.0, 23.4], [5.0, 23.6], [19.0, 31.0]])
    c = np.array([1, 0, 1, 2])
    tx, tp, tc, vx, vp, vc = region_split([x], [p], [c], cfg)
    np.testing.assert_array_equal(np.concatenate([tx[0], vx[0]], axis=2), x)
    assert tx[0].shape == (2, 20, 24) and vx[0].shape == (2, 20, 8)
    np.testing.assert_array_equal(tp[0], p[:2])
    np.testing.assert_array_equal(vp[0], p[2:] - [0, 24])
    assert tc[0].tolist() == [1, 0] and vc[0].tolist() == [1, 2]
    with pytest.raises(ValueError, match="holds no object point"):
        region_split([x], [p[:2]], [c[:2]], cfg)


def test_single_image_builds_a_region_split_with_class_balance(tmp_path, blob_files):
    from mixscale.train.builder import build_data

    cfg = _config(tmp_path, blob_files, val_fraction=0.3)
    for key in ("val_images", "val_points"):
        del cfg["data"][key]
    data = build_data(validate_config(cfg))
    assert data.out_channels == 2 and data.in_channels == 1
    assert data.val.parts[0].images[0].shape == (1, 22, 72)  # the last 30% of the rows (first longest axis)
    counts = data.train.class_counts()
    assert counts[0] == counts[1] and len(data.train) >= 384
    x, y = data.train[0]
    assert x.shape == (1, PATCH, PATCH) and y.ndim == 0


def test_patch_loss_equals_torch_cross_entropy():
    from mixscale.losses import create_loss
    from mixscale.train.module import PatchLoss

    torch.manual_seed(0)
    logits, labels = torch.randn(7, 3), torch.tensor([0, 2, 1, 1, 0, 2, 2])
    got = PatchLoss(create_loss("ce"))(logits, labels)
    torch.testing.assert_close(got, torch.nn.functional.cross_entropy(logits, labels))
    with pytest.raises(ValueError, match=r"\(N, K\) logits and \(N,\) labels"):
        PatchLoss(create_loss("ce"))(logits, labels[:3])


def test_object_peaks_take_the_object_score_and_the_likeliest_object_class():
    from mixscale.infer.detect import object_peaks

    prob = np.zeros((3, 9, 12))
    prob[0] = 1.0
    prob[:, 2, 3] = [0.3, 0.4, 0.3]  # split between classes 1 and 2: no class reaches 0.5, the object does
    prob[:, 6, 9] = [0.1, 0.1, 0.8]
    prob[:, 6, 2] = [0.6, 0.3, 0.1]  # below the threshold
    pts, cls, score = object_peaks(prob, threshold=0.5, stride=(2, 3))
    assert pts.tolist() == [[12, 27], [4, 9]] and cls.tolist() == [2, 1]
    np.testing.assert_allclose(score, [0.9, 0.7])
    empty = object_peaks(np.stack([np.ones((4, 4)), np.zeros((4, 4))]), threshold=0.5)
    assert empty[0].shape == (0, 2) and empty[1].shape == (0,)
    with pytest.raises(ValueError, match="K >= 2"):
        object_peaks(np.ones((1, 4, 4)), threshold=0.5)
