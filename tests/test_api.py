"""api.evaluate against independent references: by-hand PSNR, scikit-image SSIM, a hand-counted confusion matrix.

Probability input and its calibration report: tests/uq/test_reports_and_figures.py.
"""

import json

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from mixscale import api


def _psnr_by_hand(pred, target, data_range):
    err = np.asarray(pred, np.float64) - np.asarray(target, np.float64)
    return 10 * np.log10(data_range**2 / np.mean(err**2))


@pytest.mark.parametrize("shape, dtype, data_range", [((33, 40), np.float32, 1.0), ((9, 12, 11), np.uint8, 255.0)])
def test_regression_matches_the_formula_and_scikit_image(shape, dtype, data_range):
    rng = np.random.default_rng(0)
    target = rng.uniform(0, data_range, size=shape)
    pred = np.clip(target + rng.normal(0, 0.1 * data_range, size=shape), 0, data_range)
    target, pred = target.astype(dtype), pred.astype(dtype)  # uint8: pred - target would wrap around
    report = api.evaluate(pred, target, task="regression", data_range=data_range)
    p, t = pred.astype(np.float64), target.astype(np.float64)
    assert report["num_pixels"] == pred.size
    assert report["psnr"] == pytest.approx(_psnr_by_hand(pred, target, data_range), rel=1e-12)
    assert report["ssim"] == pytest.approx(structural_similarity(p, t, data_range=data_range), rel=1e-9)
    assert report["mse"] == pytest.approx(np.mean((p - t) ** 2), rel=1e-12)
    assert report["mae"] == pytest.approx(np.mean(np.abs(p - t)), rel=1e-12)
    assert report["pearson"] == pytest.approx(np.corrcoef(p.ravel(), t.ravel())[0, 1], rel=1e-9)
    # data_range sets the scale: twice the range is 20 log10(2) dB more, and a different SSIM
    wider = api.evaluate(pred, target, task="regression", data_range=2 * data_range)
    assert wider["psnr"] - report["psnr"] == pytest.approx(20 * np.log10(2), rel=1e-9)
    assert wider["ssim"] == pytest.approx(structural_similarity(p, t, data_range=2 * data_range), rel=1e-9)


def test_regression_from_files_writes_the_report(tmp_path):
    from mixscale.data import write_image

    rng = np.random.default_rng(1)
    target = rng.uniform(0, 1, size=(20, 24)).astype(np.float32)
    pred = target + np.float32(0.05)
    write_image(str(tmp_path / "p.tif"), pred)
    write_image(str(tmp_path / "t.tif"), target)
    out = tmp_path / "m.json"
    report = api.evaluate(tmp_path / "p.tif", str(tmp_path / "t.tif"), task="regression", data_range=1.0, out=out)
    assert report["psnr"] == pytest.approx(_psnr_by_hand(pred, target, 1.0), rel=1e-9)
    assert json.loads(out.read_text())["psnr"] == pytest.approx(report["psnr"], rel=1e-12)


# scribble: 0 = unlabelled, classes 1..3; the prediction holds classes 0..2
SCRIBBLE = np.array([[0, 1, 1, 2],
                     [2, 3, 0, 3],
                     [1, 0, 2, 3]], np.uint8)
PRED = np.array([[2, 0, 1, 1],
                 [1, 2, 0, 2],
                 [0, 1, 1, 0]], np.uint8)  # at the three unlabelled pixels: 2, 0, 1, which must not count
# rows: true class (scribble value - 1), columns: predicted class, over the 9 labelled pixels
CONFUSION = [[2, 1, 0],
             [0, 3, 0],
             [1, 0, 2]]


@pytest.mark.parametrize("num_classes, ignore_index", [(None, -1), (3, -1), (3, 255)])
def test_scribble_convention_skips_unlabelled_pixels_and_shifts_classes(num_classes, ignore_index):
    report = api.evaluate(PRED, SCRIBBLE, label_convention="scribble", num_classes=num_classes,
                          ignore_index=ignore_index, class_names=["pore", "grain", "crack"])
    assert report["confusion_matrix"] == CONFUSION
    assert report["num_labelled"] == 9
    assert report["accuracy"] == pytest.approx(7 / 9)
    # per class: TP / (TP + (FP + FN) / 2), from CONFUSION by hand
    f1 = {"pore": 2 / 3, "grain": 6 / 7, "crack": 4 / 5}
    iou = {"pore": 2 / 4, "grain": 3 / 4, "crack": 2 / 3}
    for name in f1:
        assert report["per_class"][name]["f1"] == pytest.approx(f1[name])
        assert report["per_class"][name]["iou"] == pytest.approx(iou[name])
    assert [report["per_class"][n]["support"] for n in f1] == [3, 3, 3]
    assert report["f1_macro"] == pytest.approx(np.mean(list(f1.values())))
    assert report["f1_micro"] == pytest.approx(7 / 9)


def test_dense_convention_counts_every_class_value():
    """The same arrays read densely: 0 is a class (and value 3 needs num_classes=4), nothing is skipped."""
    report = api.evaluate(PRED, SCRIBBLE)
    assert report["num_labelled"] == SCRIBBLE.size
    matrix = np.zeros((4, 4), int)
    np.add.at(matrix, (SCRIBBLE.ravel(), PRED.ravel()), 1)
    assert report["confusion_matrix"] == matrix.tolist()


def test_evaluate_errors_name_the_problem():
    labels = np.zeros((3, 4), np.uint8)
    with pytest.raises(ValueError, match=r"task='classification' is not allowed; expected one of "
                                         r"\['segmentation', 'regression'\]"):
        api.evaluate(labels, labels, task="classification")
    with pytest.raises(ValueError, match="label_convention='sparse' is not allowed"):
        api.evaluate(labels, labels, label_convention="sparse")
    with pytest.raises(ValueError, match=r"data_range is required for task='regression'"):
        api.evaluate(labels.astype(np.float32), labels.astype(np.float32), task="regression")
    with pytest.raises(ValueError, match=r"pred has shape \(4, 3\) but target has shape \(3, 4\)"):
        api.evaluate(labels.T, labels)
    with pytest.raises(ValueError, match=r"pred has shape \(4, 3\) but target has shape \(3, 4\)"):
        api.evaluate(labels.T.astype(np.float32), labels.astype(np.float32), task="regression", data_range=1.0)
    with pytest.raises(ValueError, match="pred has dtype float64; segmentation metrics need integer labels"):
        api.evaluate(PRED.astype(np.float64), SCRIBBLE, label_convention="scribble")  # whole values, still refused
    with pytest.raises(ValueError, match=r"labels hold values \[4\] that are not allowed by convention='scribble'"):
        api.evaluate(PRED, SCRIBBLE + (SCRIBBLE == 3), label_convention="scribble", num_classes=3)
