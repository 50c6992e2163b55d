"""Calibration metrics against torchmetrics, scikit-learn and hand computations; unlabelled pixels skipped."""

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torchmetrics.classification import MulticlassCalibrationError

from mixscale.metrics.calibration import (aurc, auroc, brier_score, calibration_report, classwise_calibration_error,
                                          expected_calibration_error, maximum_calibration_error,
                                          negative_log_likelihood, reliability)


def _sample(seed, k=4, shape=(40, 50), saturate=0.0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(k, *shape)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(0)
    target = np.array([[rng.choice(k, p=probs[:, i, j]) for j in range(shape[1])] for i in range(shape[0])])
    target[rng.random(shape) < 0.3] = -1  # unlabelled
    if saturate:
        probs = probs.astype(np.float32)
        hit = rng.random(shape) < saturate
        probs[:, hit] = np.eye(k, dtype=np.float32)[np.clip(target[hit], 0, None)].T
    return probs, target


@pytest.mark.parametrize("seed, saturate", [(0, 0.0), (1, 0.0), (2, 0.3)])
def test_ece_and_mce_equal_torchmetrics(seed, saturate):
    probs, target = _sample(seed, saturate=saturate)
    keep = target != -1
    p = torch.from_numpy(probs.reshape(probs.shape[0], -1).T[keep.ravel()]).double()
    t = torch.from_numpy(target.ravel()[keep.ravel()])
    for norm, ours in (("l1", expected_calibration_error), ("max", maximum_calibration_error)):
        ref = MulticlassCalibrationError(num_classes=4, n_bins=15, norm=norm)(p, t)
        assert abs(ours(probs, target, n_bins=15) - float(ref)) < 1e-6, norm


def test_brier_and_nll_by_hand_on_labelled_pixels():
    probs = np.array([[[0.7, 0.2, 0.5]], [[0.3, 0.8, 0.5]]])  # (K=2, 1, 3)
    target = np.array([[0, 0, -1]])
    assert brier_score(probs, target) == pytest.approx(((0.3**2 + 0.3**2) + (0.8**2 + 0.8**2)) / 2)
    assert negative_log_likelihood(probs, target) == pytest.approx(-(np.log(0.7) + np.log(0.2)) / 2)


def test_auroc_matches_scikit_learn_and_aurc_prefers_a_good_ranking():
    rng = np.random.default_rng(3)
    error = rng.random(500) < 0.2
    score = error * 0.5 + rng.random(500)  # informative with ties broken by noise
    assert auroc(score, error) == pytest.approx(roc_auc_score(error, score))
    assert auroc(np.r_[1.0, 1.0, 0.0], np.r_[True, False, False]) == pytest.approx(0.75)  # a tie counts 1/2
    assert aurc(error.astype(float), error) < aurc(rng.random(500), error)  # oracle ranking is the best


def test_adaptive_bins_hold_equal_mass_and_classwise_is_zero_when_calibrated_by_construction():
    probs, target = _sample(4)
    r = reliability(probs, target, n_bins=10, strategy="quantile")
    assert r["count"].max() - r["count"].min() <= 1
    onehot = np.eye(3)[np.array([0, 1, 2, 1])].T  # certain and right
    assert classwise_calibration_error(onehot, np.array([0, 1, 2, 1])) == 0.0
    assert expected_calibration_error(onehot, np.array([0, 1, 2, 1])) == 0.0


def test_report_skips_unlabelled_pixels_and_names_bad_input():
    probs, target = _sample(5)
    report = calibration_report(probs, target)
    changed = probs.copy()
    changed[:, target == -1] = np.eye(4)[0][:, None]  # unlabelled pixels changed: nothing moves
    assert calibration_report(changed, target) == report
    assert 0 < report["ece"] < 1 and report["auroc_entropy"] > 0.5
    with pytest.raises(ValueError, match="labels outside 0..3"):
        expected_calibration_error(probs, np.full(target.shape, 7))
    with pytest.raises(ValueError, match="need a target of shape"):
        brier_score(probs, target[:3])
    with pytest.raises(ValueError, match="strategy='equal' is not allowed"):
        reliability(probs, target, strategy="equal")
