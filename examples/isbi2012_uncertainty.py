"""ISBI 2012 EM membranes: an ensemble of MS-D members against each member, with calibration and sets.

Trains ``--members`` MS-D networks (different seeds, the same budget each: ``--epochs``
of 16 optimiser steps, or ``--minutes`` of wall clock) on slices 0-16 (validation
17-19) and combines them into one ensemble file. Every model (each member and the
ensemble) is then judged on the held-out slices 20-29: pixel error, membrane F1, NLL,
ECE, the AUROC of the predictive entropy against the pixel error, and, calibrated two
ways, the ECE after temperature scaling and the coverage and mean size of LAC sets at
alpha 0.1:

- ``shifted``: calibrated on the validation slices 17-19, judged on all of 20-29 (the
  slices are not exchangeable, so the coverage guarantee does not apply);
- ``exchangeable``: calibrated on a random half of the labelled pixels of 20-29,
  judged on the other half (the guarantee applies).

Figures (``--out``): the ensemble's reliability diagram before and after scaling, and
its uncertainty panel on slice 20 (input | prediction | entropy | mutual information).

    .venv/bin/python examples/isbi2012_uncertainty.py --data ../shared/data/isbi2012_em --epochs 60

The data are not part of the repository (see ../shared/data/README.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from isbi2012 import CLASSES, prepare  # noqa: E402  (the same stacks and split as the MS-D vs U-Net example)

from mixscale import api  # noqa: E402
from mixscale.data import read_image  # noqa: E402
from mixscale.infer.conformal import prediction_sets  # noqa: E402
from mixscale.metrics.calibration import (auroc, expected_calibration_error, negative_log_likelihood,  # noqa: E402
                                          reliability)
from mixscale.viz import plot_reliability_diagram, plot_uncertainty_panel  # noqa: E402

STEPS_PER_EPOCH = 16  # samples_per_epoch 32 / batch_size 2


def config(paths: dict[str, str], run_dir: Path, members: int, epochs: int | None, minutes: float | None,
           bootstrap: bool = False) -> dict:
    trainer = {"max_epochs": epochs or 100000, "progress_bar": False}
    if minutes:
        trainer["max_time"] = time.strftime("00:%H:%M:%S", time.gmtime(minutes * 60))
    return {
        "version": 1, "task": "segmentation", "run_dir": str(run_dir), "seed": 0,
        "data": {"train_images": paths["train_images"], "train_labels": paths["train_labels"],
                 "val_images": paths["val_images"], "val_labels": paths["val_labels"],
                 "num_classes": 2, "class_names": CLASSES, "patch_shape": [128, 128],
                 "samples_per_epoch": 32, "val_samples": 16, "batch_size": 2},
        "net": {"name": "msd", "depth": 100, "width": 1}, "loss": {"ce": 1.0, "dice": 1.0},
        "optim": {"name": "adam", "lr": 1e-3},
        "trainer": trainer,
        "ensemble": {"members": members, "bootstrap": bootstrap},
    }


def entropy_of(probs: np.ndarray) -> np.ndarray:
    """Predictive entropy (nats) of class probabilities ``(C, *spatial)``."""
    return -(np.where(probs > 0, probs * np.log(np.maximum(probs, 1e-30)), 0)).sum(0)


def calibrated_figures(model: str, images, labels, judged: np.ndarray, test: dict, out: Path, name: str) -> dict:
    """Calibrate ``model`` on (images, labels), predict the test slices ``test["images"]`` with it, judge on
    ``judged`` labels."""
    calibrated = out / f"{name}.safetensors"
    record = api.calibrate(model, images, labels, calibrated, alpha=0.1, slice_axis=0, overwrite=True)
    scaled = api.predict(calibrated, test["images"], slice_axis=0, probabilities=True)
    sets = prediction_sets(scaled, record["conformal"]["threshold"], score="lac").numpy()
    keep = judged >= 0
    covered = np.take_along_axis(sets, np.maximum(judged, 0)[None], 0)[0]
    return {"temperature": record["temperature"], "ece_scaled": expected_calibration_error(scaled, judged),
            "nll_scaled": negative_log_likelihood(scaled, judged), "coverage": float(covered[keep].mean()),
            "mean_set_size": float(sets.sum(0)[keep].mean()), "_scaled": scaled}


def judge(model: str, paths: dict[str, str], test: dict, out: Path, half: np.ndarray) -> dict:
    """Every figure of one model file on the test slices ``test`` (images, labels; see the module docstring)."""
    truth = test["labels"]
    probs = api.predict(model, test["images"], slice_axis=0, probabilities=True)
    pred = probs.argmax(0)
    report = api.evaluate(pred.astype(np.uint8), truth, num_classes=2, class_names=CLASSES)
    stem = Path(model).parent.name if Path(model).name == "model.safetensors" else Path(model).stem
    shifted = calibrated_figures(model, paths["val_images"], paths["val_labels"], truth, test, out,
                                 f"{stem}_shifted")
    exch = calibrated_figures(model, test["images"], np.where(half, truth, -1), np.where(half, -1, truth), test, out,
                              f"{stem}_exchangeable")
    row = {"pixel_error": 1 - report["accuracy"], "membrane_f1": report["per_class"]["membrane"]["f1"],
           "nll": negative_log_likelihood(probs, truth), "ece": expected_calibration_error(probs, truth),
           "auroc_entropy": auroc(entropy_of(probs), pred != truth)}
    row.update({f"{k}_shifted": v for k, v in shifted.items() if not k.startswith("_")})
    row.update({f"{k}_exch": v for k, v in exch.items() if not k.startswith("_")})
    row["_probs"], row["_scaled_exch"] = probs, exch["_scaled"]
    return row


def ensemble_figures(ensemble: str, row: dict, test: dict, half: np.ndarray, out: Path) -> dict:
    """Reliability diagrams before/after scaling and the uncertainty panel of slice 20; MI's AUROC."""
    truth = test["labels"]
    judged = np.where(half, -1, truth)
    plot_reliability_diagram(reliability(row["_probs"], judged), out / "reliability_ensemble.png",
                             title="ensemble, slices 20-29")
    plot_reliability_diagram(reliability(row["_scaled_exch"], judged), out / "reliability_ensemble_scaled.png",
                             title="ensemble, temperature-scaled")
    maps = api.predict(ensemble, test["images"], slice_axis=0, uncertainty=True)
    plot_uncertainty_panel(test["images"][0], maps["labels"][0], maps["entropy"][0], maps["mutual_info"][0],
                           out / "uncertainty_panel_slice20.png", num_classes=2)
    error = row["_probs"].argmax(0) != truth
    return {"auroc_mutual_info": auroc(np.asarray(maps["mutual_info"], np.float64), error),
            "auroc_std": auroc(np.asarray(maps["prob_std"], np.float64).max(0), error)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/isbi2012_em")
    parser.add_argument("--out", default="runs/isbi2012_uncertainty")
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=60, help=f"training budget per member ({STEPS_PER_EPOCH} "
                        "steps each)")
    parser.add_argument("--minutes", type=float, default=None, help="wall-clock budget per member instead")
    parser.add_argument("--seed", type=int, default=0, help="of the calibration/test split of the test pixels")
    parser.add_argument("--bootstrap", action="store_true", help="members also train on block bootstraps")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    paths = prepare(Path(args.data), out / "data")
    test = {"images": np.asarray(read_image(paths["test_images"])),
            "labels": np.asarray(read_image(paths["test_labels"])).astype(np.int64)}
    half = np.random.default_rng(args.seed).random(test["labels"].shape) < 0.5
    run_dir = out / "run"
    t0 = time.perf_counter()
    epochs = None if args.minutes else args.epochs
    cfg = config(paths, run_dir, args.members, epochs, args.minutes, args.bootstrap)
    result = api.train(cfg, resume=run_dir.exists())
    train_s = time.perf_counter() - t0
    rows = {f"member_{i}": judge(str(run_dir / f"member_{i}" / "model.safetensors"), paths, test, out, half)
            for i in range(args.members)}
    rows["ensemble"] = judge(str(result.model_path), paths, test, out, half)
    extra = ensemble_figures(str(result.model_path), rows["ensemble"], test, half, out)
    rows = {name: {k: v for k, v in r.items() if not k.startswith("_")} for name, r in rows.items()}
    keys = list(rows["ensemble"])
    rows["mean_member"] = {k: float(np.mean([rows[f"member_{i}"][k] for i in range(args.members)])) for k in keys}
    ratio = rows["ensemble"]["nll"] / rows["mean_member"]["nll"]
    (out / "results.json").write_text(json.dumps({"train_s": train_s, "epochs": epochs, "minutes": args.minutes,
                                                  "bootstrap": args.bootstrap,
                                                  "rows": rows, "ensemble_extra": extra, "nll_ratio": ratio},
                                                 indent=2))
    print("| model | " + " | ".join(keys) + " |")
    print("|---" * (len(keys) + 1) + "|")
    for name, r in rows.items():
        print(f"| {name} | " + " | ".join(f"{r[k]:.4f}" for k in keys) + " |")
    print(f"ensemble NLL / mean member NLL: {ratio:.3f}; ensemble AUROC of MI {extra['auroc_mutual_info']:.4f}, "
          f"of max std {extra['auroc_std']:.4f} (training {train_s:.0f} s for {args.members} members)")


if __name__ == "__main__":
    main()
