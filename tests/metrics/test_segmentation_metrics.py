"""Segmentation metrics: hand-counted cases and scikit-learn as the reference."""

import json
import math
from fractions import Fraction

import numpy as np
import pytest
import sklearn.metrics as skm
import torch

from mixscale.metrics import (
    accuracy,
    adjusted_rand_index,
    class_accuracy,
    confusion_matrix,
    dice_score,
    f1_score,
    iou_score,
    precision_score,
    recall_score,
    segmentation_report,
)

# A 3x3 map counted by hand; the centre pixel is unlabelled (and mispredicted).
TARGET = np.array([[0, 1, 2], [1, -1, 2], [0, 0, 1]])
PRED = np.array([[0, 2, 2], [1, 0, 1], [0, 1, 1]])
# (true, pred) pairs: 0->0, 1->2, 2->2, 1->1, 2->1, 0->0, 0->1, 1->1
HAND_MATRIX = [[2, 1, 0],
               [0, 2, 1],
               [0, 1, 1]]


def test_confusion_matrix_by_hand():
    matrix = confusion_matrix(PRED, TARGET, num_classes=3)
    assert matrix.dtype == np.int64
    np.testing.assert_array_equal(matrix, HAND_MATRIX)


def test_scores_by_hand():
    # TP = (2, 2, 1), FP = (0, 2, 1), FN = (1, 1, 1)
    f1 = [Fraction(4, 5), Fraction(4, 7), Fraction(1, 2)]
    iou = [Fraction(2, 3), Fraction(2, 5), Fraction(1, 3)]
    recall = [Fraction(2, 3), Fraction(2, 3), Fraction(1, 2)]
    np.testing.assert_allclose(f1_score(PRED, TARGET, num_classes=3, average=None),
                               [float(x) for x in f1])
    np.testing.assert_allclose(iou_score(PRED, TARGET, num_classes=3, average=None),
                               [float(x) for x in iou])
    assert f1_score(PRED, TARGET, num_classes=3) == pytest.approx(float(sum(f1) / 3))
    assert iou_score(PRED, TARGET, num_classes=3) == pytest.approx(float(sum(iou) / 3))
    assert accuracy(PRED, TARGET, num_classes=3) == pytest.approx(5 / 8)
    assert f1_score(PRED, TARGET, num_classes=3, average="micro") == pytest.approx(5 / 8)
    assert iou_score(PRED, TARGET, num_classes=3, average="micro") == pytest.approx(5 / 11)
    assert class_accuracy(PRED, TARGET, num_classes=3) == pytest.approx(float(sum(recall) / 3))  # 11/18
    assert dice_score is f1_score


def test_class_absent_from_both_is_nan_and_left_out_of_macro():
    pred, target = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 3])
    # class 2 appears nowhere; class 3 only in target
    # class 0: TP 1, FP 1, FN 1; class 1: TP 1, FP 1, FN 0; class 3: FN 1
    f1 = f1_score(pred, target, num_classes=4, average=None)
    assert math.isnan(f1[2]) and f1[3] == 0.0
    np.testing.assert_allclose(f1[:2], [1 / 2, 2 / 3])
    assert f1_score(pred, target, num_classes=4) == pytest.approx((1 / 2 + 2 / 3 + 0) / 3)
    precision = precision_score(pred, target, num_classes=4, average=None)
    assert math.isnan(precision[2]) and math.isnan(precision[3])
    recall = recall_score(pred, target, num_classes=4, average=None)
    assert math.isnan(recall[2]) and recall[3] == 0.0


def test_no_labelled_pixel_gives_nan():
    target = np.full((2, 3), -1)
    pred = np.zeros((2, 3), dtype=int)
    assert math.isnan(f1_score(pred, target, num_classes=2))
    assert math.isnan(accuracy(pred, target, num_classes=2))
    assert math.isnan(class_accuracy(pred, target, num_classes=2))
    assert math.isnan(adjusted_rand_index(pred, target))
    assert math.isnan(segmentation_report(pred, target, num_classes=2)["ari"])


def random_maps(seed, shape=(4, 9, 10), num_classes=4, ignored=0.3):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, num_classes, shape)
    # predictions right 60 % of the time, so scores are far from trivial
    pred = np.where(rng.random(shape) < 0.6, target, rng.integers(0, num_classes, shape))
    target[rng.random(shape) < ignored] = -1
    keep = target != -1
    return pred, target, pred[keep], target[keep]


@pytest.mark.parametrize("seed", [0, 1])
def test_against_sklearn(seed):
    pred, target, p, t = random_maps(seed)
    labels = list(range(4))
    np.testing.assert_array_equal(confusion_matrix(pred, target, num_classes=4),
                                  skm.confusion_matrix(t, p, labels=labels))
    for ours, theirs in [(f1_score, skm.f1_score), (iou_score, skm.jaccard_score),
                         (precision_score, skm.precision_score),
                         (recall_score, skm.recall_score)]:
        for average in [None, "macro", "micro"]:
            got = ours(pred, target, num_classes=4, average=average)
            want = theirs(t, p, labels=labels, average=average)
            np.testing.assert_allclose(got, want, rtol=1e-12)
    assert accuracy(pred, target, num_classes=4) == pytest.approx(skm.accuracy_score(t, p))
    assert class_accuracy(pred, target, num_classes=4) == pytest.approx(
        skm.balanced_accuracy_score(t, p))


def test_ari_against_sklearn_on_instance_labels():
    rng = np.random.default_rng(3)
    target = rng.integers(0, 40, (6, 7, 8)) * 1000 + 17  # sparse, large instance ids
    pred = np.where(rng.random(target.shape) < 0.7, target // 3, -rng.integers(0, 9, target.shape))
    target[rng.random(target.shape) < 0.2] = -1
    keep = target != -1
    got = adjusted_rand_index(pred, target)
    assert got == pytest.approx(skm.adjusted_rand_score(target[keep], pred[keep]), rel=1e-12)


@pytest.mark.parametrize("pred,target", [
    ([1, 1, 1], [2, 2, 2]),          # one cluster each
    ([0, 1, 2, 3], [5, 6, 7, 8]),    # all singletons
    ([4], [0]),                      # one pixel
    ([0, 0, 1, 1], [0, 1, 0, 1]),    # independent
    ([0, 0, 1, 2], [1, 1, 0, 0]),
])
def test_ari_edge_cases_against_sklearn(pred, target):
    assert adjusted_rand_index(pred, target) == pytest.approx(
        skm.adjusted_rand_score(target, pred))


def test_report_matches_functions_and_is_json():
    pred, target, p, t = random_maps(4)
    report = segmentation_report(pred, target, num_classes=4,
                                 class_names=["pore", "solid", "crack", "edge"])
    decoded = json.loads(json.dumps(report))
    assert decoded["confusion_matrix"] == confusion_matrix(pred, target, num_classes=4).tolist()
    assert report["num_labelled"] == t.size
    assert report["ari"] == pytest.approx(skm.adjusted_rand_score(t, p))
    assert report["ari"] == pytest.approx(adjusted_rand_index(pred, target))
    assert report["f1_macro"] == pytest.approx(f1_score(pred, target, num_classes=4))
    assert report["iou_micro"] == pytest.approx(
        iou_score(pred, target, num_classes=4, average="micro"))
    assert report["class_accuracy"] == pytest.approx(
        class_accuracy(pred, target, num_classes=4))
    per_class_f1 = f1_score(pred, target, num_classes=4, average=None)
    assert report["per_class"]["crack"]["f1"] == pytest.approx(per_class_f1[2])
    assert report["per_class"]["edge"]["support"] == int((t == 3).sum())
    assert all(type(v) is float for v in report["per_class"]["pore"].values()
               if not isinstance(v, int))


def test_report_default_names_and_nan():
    report = segmentation_report(np.array([0, 0]), np.array([0, 0]), num_classes=2)
    assert list(report["per_class"]) == ["class_0", "class_1"]
    assert math.isnan(report["per_class"]["class_1"]["f1"])
    assert "NaN" in json.dumps(report)


def test_torch_tensors_are_accepted():
    pred, target, _, _ = random_maps(5)
    got = f1_score(torch.from_numpy(pred), torch.from_numpy(target), num_classes=4)
    assert got == pytest.approx(f1_score(pred, target, num_classes=4))


def test_custom_ignore_index_and_bool_maps():
    target = np.array([1, 0, 255, 1], dtype=np.uint8)
    pred = np.array([True, False, True, False])
    matrix = confusion_matrix(pred, target, num_classes=2, ignore_index=255)
    np.testing.assert_array_equal(matrix, [[1, 0], [1, 1]])


def test_errors():
    good = np.zeros((3, 3), dtype=int)
    with pytest.raises(ValueError, match=r"pred shape \(3, 4\) does not match target shape"):
        f1_score(np.zeros((3, 4), dtype=int), good, num_classes=2)
    bad = good.copy()
    bad[1, 1] = 5
    with pytest.raises(ValueError, match=r"target contains label 5, outside 0\.\.1"):
        iou_score(good, bad, num_classes=2)
    with pytest.raises(ValueError, match=r"pred contains label 5, outside 0\.\.1"):
        confusion_matrix(bad, good, num_classes=2)
    bad[1, 1] = -3
    with pytest.raises(ValueError, match=r"target contains label -3.*ignore_index=-1"):
        accuracy(good, bad, num_classes=2)
    with pytest.raises(TypeError, match=r"target must hold integer labels, got dtype float64"):
        f1_score(good, good.astype(float), num_classes=2)
    with pytest.raises(ValueError, match=r"average='weighted' is not allowed; expected one of \['macro', 'micro', None\]"):
        f1_score(good, good, num_classes=2, average="weighted")
    with pytest.raises(ValueError, match=r"num_classes=0 is not allowed; expected an integer >= 1"):
        f1_score(good, good, num_classes=0)
    with pytest.raises(TypeError, match=r"num_classes=2\.0 is not allowed; expected an integer >= 1"):
        f1_score(good, good, num_classes=2.0)
    with pytest.raises(ValueError, match=r"class_names must be a sequence of 2 names"):
        segmentation_report(good, good, num_classes=2, class_names=["a"])
    with pytest.raises(ValueError, match=r"class_names must be unique"):
        segmentation_report(good, good, num_classes=2, class_names=["a", "a"])
