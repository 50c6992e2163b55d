"""Conformal coverage on real data: ISBI 2012 EM membranes (../shared/data/isbi2012_em).

The probabilities come from a real, cheap model fitted here (logistic regression on
Gaussian-smoothed intensities at three scales, trained on slices 0-19); calibration
and test pixels are random splits of the labelled pixels of the held-out slices
20-29, so the coverage guarantee applies and is checked on data no one made up.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import ndimage

from mixscale.uq import class_conditional_quantiles, class_scores, conformal_quantile

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "isbi2012_em" / "train"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"ISBI 2012 data not found at {DATA}")


def _features(img):
    img = img.astype(np.float32) / 255
    return np.stack([img] + [ndimage.gaussian_filter(img, s) for s in (1, 2, 4)], -1).reshape(-1, 4)


@pytest.fixture(scope="module")
def held_out():
    from sklearn.linear_model import LogisticRegression

    from mixscale.data import read_image

    read = lambda kind, i: np.asarray(read_image(str(DATA / kind / f"{i}.png")))  # noqa: E731
    x_train = np.concatenate([_features(read("image", i))[::50] for i in range(20)])
    y_train = np.concatenate([(read("label", i) < 128).reshape(-1)[::50] for i in range(20)]).astype(int)
    clf = LogisticRegression(max_iter=500).fit(x_train, y_train)
    probs = np.concatenate([clf.predict_proba(_features(read("image", i))) for i in range(20, 30)])
    labels = np.concatenate([(read("label", i) < 128).reshape(-1) for i in range(20, 30)]).astype(np.int64)
    return torch.from_numpy(probs.T.copy()), torch.from_numpy(labels)  # (2, N), (N,): 0 cell, 1 membrane


def _coverage(probs, labels, *, alpha, score, per_class, fraction, splits=100, seed=0):
    """Mean coverage (and per class) over random calibration/test halves of a ``fraction`` of the pixels.

    APS is randomised: non-randomised APS has an atom at exactly 1 (every pixel whose true
    class is not the most likely), where coverage jumps instead of meeting 1 - alpha.
    """
    gen = torch.Generator().manual_seed(seed)
    options = {"randomized": True, "generator": torch.Generator().manual_seed(seed + 1)} if score == "aps" else {}
    true = class_scores(probs, score=score, **options).gather(0, labels[None])[0]
    overall, per = [], []
    for _ in range(splits):
        order = torch.randperm(labels.numel(), generator=gen)[: int(fraction * labels.numel())]
        cal, test = order[: order.numel() // 2], order[order.numel() // 2:]
        if per_class:
            q = class_conditional_quantiles(true[cal], labels[cal], num_classes=2, alpha=alpha)[labels[test]]
        else:
            q = conformal_quantile(true[cal], alpha)
        inside = (true[test] <= q).double()  # the true class is in the set {y : s(x, y) <= q_y}
        overall.append(float(inside.mean()))
        per.append([float(inside[labels[test] == c].mean()) for c in range(2)])
    return np.mean(overall), np.mean(per, axis=0)


def test_quick_coverage_check_in_the_default_run(held_out):
    """Ten splits, LAC and Mondrian, all pixels and 1 % of them (the 100-split tests below are slow)."""
    probs, labels = held_out
    for fraction in (1.0, 0.01):
        mean, _ = _coverage(probs, labels, alpha=0.1, score="lac", per_class=False, fraction=fraction, splits=10)
        assert abs(mean - 0.9) <= 0.005
        _, per = _coverage(probs, labels, alpha=0.1, score="lac", per_class=True, fraction=fraction, splits=10)
        assert (per >= 0.89).all()


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.05, 0.1])
@pytest.mark.parametrize("score", ["lac", "aps"])
def test_marginal_coverage_is_one_minus_alpha(held_out, alpha, score):
    probs, labels = held_out
    mean, _ = _coverage(probs, labels, alpha=alpha, score=score, per_class=False, fraction=1.0)
    assert abs(mean - (1 - alpha)) <= 0.005


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [0.05, 0.1])
def test_per_class_coverage_with_mondrian_thresholds_and_one_percent_labelled(held_out, alpha):
    probs, labels = held_out
    for fraction in (1.0, 0.01):
        mean, per = _coverage(probs, labels, alpha=alpha, score="lac", per_class=True, fraction=fraction)
        assert (per >= 1 - alpha - 0.01).all(), (fraction, per)
        sparse, _ = _coverage(probs, labels, alpha=alpha, score="lac", per_class=False, fraction=fraction)
        assert abs(sparse - (1 - alpha)) <= 0.005, fraction
