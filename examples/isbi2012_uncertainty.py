"""ISBI 2012 EM membranes: an ensemble of MS-D members against each member, with calibration and sets.

Trains ``--members`` MS-D networks (different seeds, the same time budget each) on
slices 0-16 (validation 17-19), combines them into one ensemble file, calibrates
every model (temperature by NLL, then split-conformal LAC sets) on slices 17-19,
and reports on the held-out slices 20-29, for each member and for the ensemble:
pixel error, membrane F1, NLL, ECE before and after temperature scaling, the
AUROC of the predictive entropy against the pixel error, and the coverage and
mean size of the conformal sets.

    .venv/bin/python examples/isbi2012_uncertainty.py --data ../shared/data/isbi2012_em --minutes 3

The data are not part of the repository (see ../shared/data/README.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import sys

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from isbi2012 import CLASSES, prepare  # noqa: E402  (the same stacks and split as the MS-D vs U-Net example)

from mixscale import api  # noqa: E402
from mixscale.data import read_image  # noqa: E402
from mixscale.infer.conformal import prediction_sets  # noqa: E402
from mixscale.metrics.calibration import auroc, expected_calibration_error, negative_log_likelihood  # noqa: E402


def config(paths: dict[str, str], run_dir: Path, members: int, minutes: float) -> dict:
    budget = time.strftime("00:%H:%M:%S", time.gmtime(minutes * 60))
    return {
        "version": 1, "task": "segmentation", "run_dir": str(run_dir), "seed": 0,
        "data": {"train_images": paths["train_images"], "train_labels": paths["train_labels"],
                 "val_images": paths["val_images"], "val_labels": paths["val_labels"],
                 "num_classes": 2, "class_names": CLASSES, "patch_shape": [128, 128],
                 "samples_per_epoch": 32, "val_samples": 16, "batch_size": 2},
        "net": {"name": "msd", "depth": 100, "width": 1}, "loss": {"ce": 1.0, "dice": 1.0},
        "optim": {"name": "adam", "lr": 1e-3},
        "trainer": {"max_epochs": 100000, "max_time": budget, "progress_bar": False},
        "ensemble": {"members": members},
    }


def judge(model: str, paths: dict[str, str], out: Path) -> dict[str, float]:
    """Every figure of one model (file) on the test slices, calibrated on the validation slices."""
    truth = np.asarray(read_image(paths["test_labels"])).astype(np.int64)
    probs = api.predict(model, paths["test_images"], slice_axis=0, probabilities=True)
    pred = probs.argmax(0)
    report = api.evaluate(pred.astype(np.uint8), truth, num_classes=2, class_names=CLASSES)
    entropy = -(np.where(probs > 0, probs * np.log(probs), 0)).sum(0)
    calibrated = out / (Path(model).stem + "_calibrated.safetensors")
    record = api.calibrate(model, paths["val_images"], paths["val_labels"], calibrated, alpha=0.1, slice_axis=0,
                           overwrite=True)
    scaled = api.predict(calibrated, paths["test_images"], slice_axis=0, probabilities=True)
    members = prediction_sets(scaled, record["conformal"]["threshold"], score="lac").numpy()
    covered = np.take_along_axis(members, truth[None], 0)[0]
    return {"pixel_error": 1 - report["accuracy"], "membrane_f1": report["per_class"]["membrane"]["f1"],
            "nll": negative_log_likelihood(probs, truth), "ece": expected_calibration_error(probs, truth),
            "temperature": record["temperature"], "ece_scaled": expected_calibration_error(scaled, truth),
            "nll_scaled": negative_log_likelihood(scaled, truth),
            "auroc_entropy": auroc(entropy, pred != truth), "coverage": float(covered.mean()),
            "mean_set_size": float(members.sum(0).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/isbi2012_em")
    parser.add_argument("--out", default="runs/isbi2012_uncertainty")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--minutes", type=float, default=3.0, help="training budget per member")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    paths = prepare(Path(args.data), out / "data")
    run_dir = out / "run"
    t0 = time.perf_counter()
    result = api.train(config(paths, run_dir, args.members, args.minutes), resume=run_dir.exists())
    train_s = time.perf_counter() - t0
    rows = {f"member_{i}": judge(str(run_dir / f"member_{i}" / "model.safetensors"), paths, out)
            for i in range(args.members)}
    rows["ensemble"] = judge(str(result.model_path), paths, out)
    mean_member = {k: float(np.mean([rows[f"member_{i}"][k] for i in range(args.members)])) for k in rows["ensemble"]}
    rows["mean_member"] = mean_member
    (out / "results.json").write_text(json.dumps({"train_s": train_s, "rows": rows}, indent=2))
    keys = list(rows["ensemble"])
    print(f"{'model':<13}" + "".join(f"{k:>15}" for k in keys))
    for name, r in rows.items():
        print(f"{name:<13}" + "".join(f"{r[k]:>15.4f}" for k in keys))
    print(f"ensemble NLL / mean member NLL: {rows['ensemble']['nll'] / mean_member['nll']:.3f} "
          f"(training {train_s:.0f} s for {args.members} members)")


if __name__ == "__main__":
    main()
