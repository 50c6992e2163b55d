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


def test_evaluate_reads_an_uncertainty_store_and_draws_the_trust_figures(tmp_path, capsys):
    import torch
    import zarr

    from mixscale.cli.main import main
    from mixscale.metrics.calibration import aurc, auroc
    from mixscale.model import ModelInfo, save_ensemble, save_model
    from mixscale.nets import create_net

    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        net = create_net("msd", depth=4, out_channels=3)
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p) * 0.5)
        info = ModelInfo(net_name="msd", net_config=net.config(), task="segmentation", class_names=["a", "b", "c"])
        paths.append(str(save_model(tmp_path / f"m{seed}.safetensors", net.eval(), info)))
    ens = str(save_ensemble(tmp_path / "ens.safetensors", paths))
    volume = np.random.default_rng(0).normal(size=(3, 32, 28)).astype(np.float32)
    truth = np.random.default_rng(1).integers(0, 3, size=volume.shape)
    truth[:, :4] = -1  # unlabelled rows are skipped
    np.save(tmp_path / "vol.npy", volume)
    np.save(tmp_path / "truth.npy", truth)
    store = tmp_path / "u.zarr"
    assert main(["predict", ens, str(tmp_path / "vol.npy"), "-o", str(store), "--axis", "0", "--uncertainty",
                 "--no-progress"]) == 0
    assert main(["evaluate", str(store), str(tmp_path / "truth.npy"), "--figures", str(tmp_path / "figs"),
                 "--image", str(tmp_path / "vol.npy"), "-o", str(tmp_path / "m.json")]) == 0
    text = capsys.readouterr().out
    assert "calibration.auroc_mutual_info" in text and "uncertainty_panel.png" in text
    assert (tmp_path / "figs" / "reliability.png").stat().st_size > 0
    group = zarr.open_group(str(store), mode="r")
    report = api.evaluate(str(store), truth)
    keep = truth != -1
    labels = group["labels"][:]
    wrong = (labels != truth)[keep]
    mi = group["mutual_info"][:].astype(np.float64)[keep]
    std = np.take_along_axis(group["prob_std"][:], labels[None].astype(np.int64), 0)[0].astype(np.float64)[keep]
    cal = report["calibration"]
    assert cal["auroc_mutual_info"] == pytest.approx(auroc(mi, wrong), abs=1e-12)
    assert cal["aurc_std"] == pytest.approx(aurc(std, wrong), abs=1e-12)
    assert cal == calibration_report(group["prob_mean"][:].astype(np.float32), truth,
                                     uncertainties={"mutual_info": group["mutual_info"][:],
                                                    "std": np.take_along_axis(group["prob_std"][:],
                                                                              labels[None].astype(np.int64), 0)[0]})
    assert report["accuracy"] == pytest.approx((labels == truth)[keep].mean())
