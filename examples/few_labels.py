"""MS-D against a U-Net with few training images, each trained to convergence: where does MS-D win?

Protocol (fixed before running; whatever it shows is reported):

ISBI 2012 EM membranes (``../shared/data/isbi2012_em``, 30 slices of 512^2)
    Test slices 20-29, validation slices 17-19 (fixed). For ``n`` in 1, 2, 4, 8 training slices and
    seeds 0, 1, 2, the training slices are the first ``n`` of a permutation of slices 0-16 drawn by the
    seed (so the slices change with the seed, and the ``n`` slices of a seed contain its smaller sets).
Synthetic mixed-scale shapes (``mixscale.synthetic.mixed_scale_shapes``, 128^2, 6 classes)
    An object's class depends on shape, size and texture together (the PNAS 2018 kind of task). For
    ``n`` in 1, 2, 5, 10 training images and the same seeds: training images from the seed's stream,
    4 fixed validation images, 20 fixed test images.

Both nets: MS-D depth 100 (dilations 1..10, 46k parameters) and a U-Net of depth 4 with 16 base
channels (483k), trained with CE + Dice, Adam (lr 1e-3), 128^2 patches, batch 4, 32 patches per
epoch, validation on 16 patches of the validation images, early stopping on the validation loss
(patience 20 epochs) within the same maximum of 300 epochs; the model file holds the best epoch.
Reported per net and ``n``, mean and standard deviation over the seeds: ISBI membrane F1, pixel
error and cell ARI (connected components of the predicted cell interior, per slice); synthetic
macro F1 and pixel error; parameters, epochs, optimiser steps and wall time. A figure of the test
score against ``n`` for both nets goes to ``--figure``.

    .venv/bin/python examples/few_labels.py                          # the whole protocol (hours on 2 cores)
    .venv/bin/python examples/few_labels.py --quick                  # a smoke run of the pipeline (minutes)
    .venv/bin/python examples/few_labels.py --parts synthetic --seeds 0

Not part of ``make test``; the ISBI data are not in the repository (see ../shared/data/README.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from mixscale import api
from mixscale.data import read_image, write_image
from mixscale.metrics import adjusted_rand_index

NETS = {"msd": {"name": "msd", "depth": 100, "dilations": list(range(1, 11))},
        "unet": {"name": "unet", "depth": 4, "base_channels": 16}}
COUNTS = {"isbi": [1, 2, 4, 8], "synthetic": [1, 2, 5, 10]}


def isbi_sets(data: Path, out: Path, n: int, seed: int) -> dict:
    """TIFF stacks of the seed's ``n`` training slices, the validation slices 17-19 and the test slices 20-29."""
    img = np.stack([read_image(str(data / "train" / "image" / f"{i}.png")) for i in range(30)])
    lab = (np.stack([read_image(str(data / "train" / "label" / f"{i}.png")) for i in range(30)]) < 128)
    order = np.random.default_rng(seed).permutation(17)
    parts = {"train": order[:n], "val": np.arange(17, 20), "test": np.arange(20, 30)}
    return _write_parts(out / f"isbi_n{n}_s{seed}", {k: (img[v], lab[v].astype(np.uint8)) for k, v in parts.items()})


def synthetic_sets(out: Path, n: int, seed: int) -> dict:
    """The seed's ``n`` training images; validation and test images fixed (seeds 1000 and 2000)."""
    from mixscale.synthetic import mixed_scale_shapes

    parts = {"train": mixed_scale_shapes(n, seed=seed), "val": mixed_scale_shapes(4, seed=1000),
             "test": mixed_scale_shapes(20, seed=2000)}
    return _write_parts(out / f"synthetic_n{n}_s{seed}", {k: (x, y.astype(np.uint8)) for k, (x, y) in parts.items()})


def _write_parts(folder: Path, parts: dict) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, (images, labels) in parts.items():
        for kind, array in (("images", images), ("labels", labels)):
            path = folder / f"{name}_{kind}.tif"
            if not path.exists():
                write_image(str(path), array)
            paths[f"{name}_{kind}"] = str(path)
    return paths


def config(paths: dict, run_dir: Path, net: dict, classes: int, seed: int, args) -> dict:
    return {"version": 1, "task": "segmentation", "run_dir": str(run_dir), "seed": seed,
            "data": {"train_images": paths["train_images"], "train_labels": paths["train_labels"],
                     "val_images": paths["val_images"], "val_labels": paths["val_labels"],
                     "num_classes": classes, "patch_shape": [128, 128], "slice_axis": 0,
                     "samples_per_epoch": 32, "val_samples": 16, "batch_size": 4},
            "net": net, "loss": {"ce": 1.0, "dice": 1.0}, "optim": {"name": "adam", "lr": 1e-3},
            "trainer": {"max_epochs": args.max_epochs, "early_stopping_patience": args.patience,
                        "progress_bar": False}}


def scores(part: str, pred: np.ndarray, truth: np.ndarray, classes: int) -> dict:
    report = api.evaluate(pred, truth, num_classes=classes)
    out = {"pixel_error": 1.0 - report["accuracy"], "f1_macro": report["f1_macro"]}
    if part == "isbi":  # class 1 = membrane, 0 = cell interior
        out["membrane_f1"] = report["per_class"][list(report["per_class"])[1]]["f1"]
        out["cell_ari"] = float(np.mean([adjusted_rand_index(ndimage.label(p == 0)[0], ndimage.label(t == 0)[0])
                                         for p, t in zip(pred, truth)]))
    return out


def run_one(part: str, n: int, seed: int, name: str, args) -> dict:
    out = Path(args.out)
    paths = isbi_sets(Path(args.data), out / "data", n, seed) if part == "isbi" else \
        synthetic_sets(out / "data", n, seed)
    classes = 2 if part == "isbi" else 6
    t0 = time.perf_counter()
    run = api.train(config(paths, out / part / f"{name}_n{n}_s{seed}", NETS[name], classes, seed, args))
    train_s = time.perf_counter() - t0
    pred = api.predict(run.model_path, paths["test_images"], slice_axis=0)
    truth = read_image(paths["test_labels"]).astype(np.int64)
    from mixscale.model import load_model

    net, _ = load_model(run.model_path)
    import torch

    return {**scores(part, pred, truth, classes), "train_s": train_s, "threads": torch.get_num_threads(),
            "epochs": run.epochs,
            "steps": run.epochs * 32 // 4, "parameters": sum(p.numel() for p in net.parameters())}


def summarise(results: list[dict], part: str) -> list[str]:
    cols = ["membrane_f1", "pixel_error", "cell_ari"] if part == "isbi" else ["f1_macro", "pixel_error"]
    lines = [f"| net | n | {' | '.join(cols)} | epochs | steps | train s | parameters |",
             "|---" * (len(cols) + 6) + "|"]
    for name in NETS:
        for n in sorted({r["n"] for r in results if r["part"] == part}):
            rs = [r for r in results if r["part"] == part and r["net"] == name and r["n"] == n]
            if not rs:
                continue
            cell = lambda k: f"{statistics.mean(r[k] for r in rs):.3f} ± {_std([r[k] for r in rs]):.3f}"  # noqa: E731
            lines.append(f"| {name} | {n} | {' | '.join(cell(c) for c in cols)} | "
                         f"{statistics.mean(r['epochs'] for r in rs):.0f} | {statistics.mean(r['steps'] for r in rs):.0f}"
                         f" | {statistics.mean(r['train_s'] for r in rs):.0f} | {rs[0]['parameters']} |")
    return lines


def _std(values) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = sorted({r["part"] for r in results})
    fig, axes = plt.subplots(1, len(parts), figsize=(5 * len(parts), 3.6), squeeze=False)
    for ax, part in zip(axes[0], parts):
        key = "membrane_f1" if part == "isbi" else "f1_macro"
        for name in NETS:
            ns = sorted({r["n"] for r in results if r["part"] == part and r["net"] == name})
            mean = [statistics.mean(r[key] for r in results if (r["part"], r["net"], r["n"]) == (part, name, n))
                    for n in ns]
            std = [_std([r[key] for r in results if (r["part"], r["net"], r["n"]) == (part, name, n)]) for n in ns]
            ax.errorbar(ns, mean, yerr=std, marker="o", capsize=3, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("training images")
        ax.set_ylabel("membrane F1 (test)" if part == "isbi" else "macro F1 (test)")
        ax.set_title("ISBI 2012" if part == "isbi" else "mixed-scale shapes")
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/isbi2012_em")
    p.add_argument("--out", default="runs/few_labels")
    p.add_argument("--parts", default="isbi,synthetic")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--counts", default=None, help="training image counts (default: the protocol's per part)")
    p.add_argument("--max-epochs", type=int, default=300)
    p.add_argument("--patience", type=int, default=20)
    p.add_argument("--figure", default="docs/figures/few_labels/score_vs_images.png")
    p.add_argument("--quick", action="store_true", help="1 and 2 images, seed 0, 3 epochs: checks the pipeline")
    args = p.parse_args()
    if args.quick:
        args.seeds, args.counts, args.max_epochs, args.patience = "0", "1,2", 3, 2
        args.figure = str(Path(args.out) / "quick.png")
    logging.basicConfig(level=logging.WARNING)
    results_path = Path(args.out) / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() and not args.quick else []
    done = {(r["part"], r["n"], r["seed"], r["net"]) for r in results}
    t_all = time.perf_counter()
    for part in args.parts.split(","):
        counts = [int(c) for c in args.counts.split(",")] if args.counts else COUNTS[part]
        for n in counts:
            for seed in (int(s) for s in args.seeds.split(",")):
                for name in NETS:
                    if (part, n, seed, name) in done:
                        continue  # a rerun continues where the last one stopped
                    r = {"part": part, "n": n, "seed": seed, "net": name, **run_one(part, n, seed, name, args)}
                    results.append(r)
                    results_path.parent.mkdir(parents=True, exist_ok=True)
                    results_path.write_text(json.dumps(results, indent=1))
                    print(json.dumps(r), flush=True)
    for part in args.parts.split(","):
        print("\n".join(summarise(results, part)))
    plot(results, Path(args.figure))
    print(f"wall time {time.perf_counter() - t_all:.0f} s; figure {args.figure}")


if __name__ == "__main__":
    main()
