"""ISBI 2012 EM membranes: a 100-layer MS-D against a U-Net with the same time budget.

Trains on slices 0-16 (validation 17-19), evaluates on the held-out slices 20-29:
pixel error, membrane F1 and the adjusted Rand index of the cells (connected
components of the predicted cell interior against those of the truth).

    .venv/bin/python examples/isbi2012.py --data ../shared/data/isbi2012_em --minutes 12

The data are not part of the repository (see ../shared/data/README.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from mixscale import api
from mixscale.data import read_image, write_image
from mixscale.metrics import adjusted_rand_index

CLASSES = ["cell", "membrane"]


def prepare(data: Path, out: Path) -> dict[str, str]:
    """PNG slices -> TIFF stacks; labels 255 (cell) -> 0, 0 (membrane) -> 1."""
    out.mkdir(parents=True, exist_ok=True)
    img = np.stack([read_image(str(data / "train" / "image" / f"{i}.png")) for i in range(30)])
    lab = np.stack([read_image(str(data / "train" / "label" / f"{i}.png")) for i in range(30)])
    lab = (lab < 128).astype(np.uint8)
    parts = {"train": slice(0, 17), "val": slice(17, 20), "test": slice(20, 30)}
    paths = {}
    for name, sl in parts.items():
        for kind, array in (("images", img[sl]), ("labels", lab[sl])):
            paths[f"{name}_{kind}"] = str(out / f"{name}_{kind}.tif")
            if not Path(paths[f"{name}_{kind}"]).exists():
                write_image(paths[f"{name}_{kind}"], array)
    return paths


def config(paths: dict[str, str], run_dir: Path, net: dict, minutes: float, patch: int, batch: int) -> dict:
    budget = time.strftime("00:%H:%M:%S", time.gmtime(minutes * 60))
    return {
        "version": 1, "task": "segmentation", "run_dir": str(run_dir), "seed": 0,
        "data": {"train_images": paths["train_images"], "train_labels": paths["train_labels"],
                 "val_images": paths["val_images"], "val_labels": paths["val_labels"],
                 "num_classes": 2, "class_names": CLASSES, "patch_shape": [patch, patch],
                 "samples_per_epoch": 32, "val_samples": 16, "batch_size": batch},
        "net": net, "loss": {"ce": 1.0, "dice": 1.0}, "optim": {"name": "adam", "lr": 1e-3},
        "trainer": {"max_epochs": 100000, "max_time": budget, "progress_bar": False},
    }


def evaluate(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Pixel error, membrane F1, and the ARI of cell instances (4-connected components per slice)."""
    report = api.evaluate(pred, truth, num_classes=2, class_names=CLASSES)
    aris = []
    for p, t in zip(pred, truth):
        cells_p, _ = ndimage.label(p == 0)
        cells_t, _ = ndimage.label(t == 0)
        aris.append(adjusted_rand_index(cells_p, cells_t))
    return {"pixel_error": 1.0 - report["accuracy"], "membrane_f1": report["per_class"]["membrane"]["f1"],
            "f1_macro": report["f1_macro"], "cell_ari": float(np.mean(aris))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="../shared/data/isbi2012_em")
    parser.add_argument("--out", default="runs/isbi2012")
    parser.add_argument("--minutes", type=float, default=12.0, help="training budget per network")
    parser.add_argument("--nets", default="msd,unet")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    out = Path(args.out)
    paths = prepare(Path(args.data), out / "data")
    truth = read_image(paths["test_labels"]).astype(np.int64)
    nets = {"msd": ({"name": "msd", "depth": 100, "width": 1}, 128, 2),
            "unet": ({"name": "unet", "depth": 4, "base_channels": 16}, 128, 2)}
    results = {}
    for name in args.nets.split(","):
        net, patch, batch = nets[name]
        t0 = time.perf_counter()
        run = api.train(config(paths, out / name, net, args.minutes, patch, batch))
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        pred = api.predict(run.model_path, paths["test_images"], out / name / "test_pred.tif", slice_axis=0)
        results[name] = {**evaluate(pred, truth), "train_s": train_s, "epochs": run.epochs,
                         "steps": run.epochs * 32 // batch, "predict_s": time.perf_counter() - t0,
                         "parameters": _count(run.model_path)}
        print(name, json.dumps(results[name]))
    trivial = np.zeros_like(truth)
    results["all_cell_baseline"] = evaluate(trivial, truth)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print(f"{'net':<18}{'params':>9}{'train s':>9}{'pixel err':>11}{'memb. F1':>10}{'cell ARI':>10}")
    for name, r in results.items():
        print(f"{name:<18}{r.get('parameters', 0):>9}{r.get('train_s', 0):>9.0f}{r['pixel_error']:>11.4f}"
              f"{r['membrane_f1']:>10.4f}{r['cell_ari']:>10.4f}")


def _count(model_path) -> int:
    from mixscale.model import load_model

    net, _ = load_model(model_path)
    return sum(p.numel() for p in net.parameters())


if __name__ == "__main__":
    main()
