"""evaluate reports calibration for probabilities; the trust figures render from computed numbers."""

import numpy as np
import pytest

from mixscale import api
from mixscale.metrics.calibration import calibration_report, reliability
from mixscale.viz import plot_reliability_diagram, plot_uncertainty_panel


def _probs_and_truth(seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(3, 20, 30)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(0)
    truth = probs.argmax(0)
    flip = rng.random(truth.shape) < 0.2
    truth[flip] = rng.integers(0, 3, flip.sum())
    return probs.astype(np.float32), truth


def test_evaluate_takes_probabilities_and_adds_calibration():
    probs, truth = _probs_and_truth()
    report = api.evaluate(probs, truth)
    labels_only = api.evaluate(probs.argmax(0).astype(np.uint8), truth, num_classes=3)
    assert report["f1_macro"] == labels_only["f1_macro"]  # the labels are the argmax
    assert report["calibration"] == calibration_report(probs, truth)
    assert "calibration.ece" in api.flatten_scalars(report)
    with pytest.raises(ValueError, match="holds 3 class probabilities but num_classes=4"):
        api.evaluate(probs, truth, num_classes=4)
    with pytest.raises(ValueError, match="dtype float32; segmentation metrics need integer labels"):
        api.evaluate(probs[0], truth)  # a float map of the target's shape is not probabilities


def test_figures_render(tmp_path):
    probs, truth = _probs_and_truth(1)
    from PIL import Image

    def pixels(path):
        return np.asarray(Image.open(path).convert("RGB")).astype(int)

    path = plot_reliability_diagram(reliability(probs, truth), tmp_path / "rel.png")
    blue = (np.abs(pixels(path) - [31, 119, 180]).sum(-1) < 30).sum()  # the accuracy curve (tab:blue)
    assert blue > 200
    other = plot_reliability_diagram(reliability(probs, np.zeros_like(truth)), tmp_path / "rel2.png")
    assert pixels(path).shape == pixels(other).shape and (pixels(path) != pixels(other)).any()  # data drawn
    entropy = -(probs * np.log(probs)).sum(0)
    panel = plot_uncertainty_panel(probs[0], probs.argmax(0), entropy, entropy / 2, tmp_path / "u.png",
                                   num_classes=3)
    flat = plot_uncertainty_panel(probs[0], probs.argmax(0), 0 * entropy, entropy / 2, tmp_path / "u2.png",
                                  num_classes=3)
    assert (pixels(panel) != pixels(flat)).any()  # the entropy map is what is shown
    with pytest.raises(ValueError, match="must be 2D of one shape"):
        plot_uncertainty_panel(probs[0], probs.argmax(0)[:3], entropy, entropy, tmp_path / "x.png", num_classes=3)
    with pytest.raises(ValueError, match="bins="):
        plot_reliability_diagram({"count": []}, tmp_path / "y.png")
