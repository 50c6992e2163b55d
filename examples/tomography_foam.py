"""Tomography of foams: MS-D on few-angle, limited-angle and noisy reconstructions, and Noise2Inverse.

The workflow of Pelt, Batenburg & Sethian (J. Imaging 2018) and Hendriksen, Pelt & Batenburg (IEEE TCI
2020) on simulated foams (``mixscale simulate tomo``): train on object 0, validate on object 1 (where the
baselines' SIRT iterations, TV weights and Gaussian widths are tuned too), test on object 2. Each MS-D
trains for the same number of epochs (so that a busy machine changes the wall time, not the result); every
score is against the phantom on all slices of object 2.

Protocol (fixed before running):

1. ``sparse``: FBP from 64 angles (input) -> FBP from 1024 angles (target), 2.5D (5 slices), against
   FBP-64, FBP-1024, SIRT-64 and TV(FBP-64).
2. ``sparse, target phantom``: the same input, the phantom as target.
3. ``limited``: 64 angles over 120 of 180 degrees -> FBP-1024 (full range).
4. ``noisy``: 10^3 photons per detector bin on every scan; FBP-64 -> FBP-1024 (noisy too).
5. ``Noise2Inverse``: the noisy 1024-angle scan in K = 4 interleaved subsets, no clean target; against a
   supervised MS-D on the same input with the noiseless FBP-1024 of the same object as target (the
   comparison of Hendriksen et al.: the same reconstruction without noise, which the clean scan holds, as
   the foams are the same for the same seed), and Gaussian and TV denoising of it.

    .venv/bin/python examples/tomography_foam.py --out runs/tomo --epochs 80

writes ``results.json``, ``results.md`` (the table) and ``figures/*.png`` (slices and error maps) to OUT.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import zarr
from scipy import ndimage

from mixscale import api
from mixscale.metrics import psnr, ssim
from mixscale.recipes.tomography import TomoSimulation, simulate_tomo

logger = logging.getLogger("tomography_foam")


@dataclass(frozen=True)
class Budget:
    """How long each MS-D trains: ``epochs`` (and at most ``minutes``, if given) at ``depth``."""

    epochs: int
    minutes: float | None
    depth: int


SCANS = {"clean": {}, "limited": {"angular_range": 120.0}, "noisy": {"photons": 1000.0, "splits": 4}}


def simulate(out: Path, size: int, slices: int) -> dict[str, Path]:
    stores = {}
    for name, extra in SCANS.items():
        t0 = time.perf_counter()
        spec = TomoSimulation(objects=3, shape=(slices, size, size), angles=(64, 1024), **extra)
        stores[name] = Path(simulate_tomo(out / f"{name}.zarr", spec, progress=False)["path"])
        logger.info("simulated %s in %.0f s", name, time.perf_counter() - t0)
    return stores


def train_config(store: Path, run_dir: Path, inputs: str, target: str | None, budget: Budget,
                 task: str = "regression", target_store: Path | None = None) -> dict:
    data = {"train_images": f"{store}/object0/{inputs}", "val_images": f"{store}/object1/{inputs}",
            "context_slices": 2, "patch_shape": [128, 128], "samples_per_epoch": 64, "val_samples": 16,
            "batch_size": 4}
    if target is not None:
        labels = target_store or store
        data.update(train_labels=f"{labels}/object0/{target}", val_labels=f"{labels}/object1/{target}")
    trainer = {"max_epochs": budget.epochs, "progress_bar": False, "early_stopping_patience": 15}
    if budget.minutes is not None:
        trainer["max_time"] = time.strftime("00:%H:%M:%S", time.gmtime(budget.minutes * 60))
    return {"version": 1, "task": task, "run_dir": str(run_dir), "seed": 0, "data": data,
            "net": {"name": "msd", "depth": budget.depth, "dilations": list(range(1, 11))},
            "optim": {"lr": 2e-3}, "schedule": {"name": "plateau", "patience": 5}, "trainer": trainer}


def scores(x: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {"psnr": psnr(x, truth, data_range=1.0), "ssim": ssim(x, truth, data_range=1.0, slice_axis=0)}


def train_and_predict(name: str, store: Path, out: Path, *, inputs: str, target: str | None, budget: Budget,
                      task: str = "regression", target_store: Path | None = None) -> tuple[np.ndarray, dict]:
    t0 = time.perf_counter()
    result = api.train(train_config(store, out / "runs" / name, inputs, target, budget, task, target_store))
    pred_path = out / "predictions" / f"{name}.zarr"
    api.predict(result.model_path, f"{store}/object2/{inputs}", pred_path, slice_axis=0,
                channel_axis=0 if task == "noise2inverse" else None, progress=False, overwrite=True)
    pred = zarr.open_array(str(pred_path / "prediction"), mode="r")[:]
    info = {"epochs": result.epochs, "seconds": round(time.perf_counter() - t0, 1)}
    logger.info("%s: %d epochs, %.0f s", name, result.epochs, info["seconds"])
    return pred, info


def tuned_denoiser(noisy_val, truth_val, apply, values) -> tuple[float, float]:
    """The parameter of ``apply`` with the best PSNR on the validation object, and that PSNR."""
    found = [(psnr(apply(noisy_val, v), truth_val, data_range=1.0), v) for v in values]
    best = max(found)
    return best[1], best[0]


def gaussian(x, sigma):
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma))


def tv(x, weight):
    import torch

    from mixscale.tomo import denoise_tv

    return denoise_tv(torch.from_numpy(np.ascontiguousarray(x)), weight).numpy()


def figure(path: Path, truth: np.ndarray, panels: dict[str, np.ndarray], z: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(panels) + 1
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.4))
    axes[0, 0].imshow(truth[z], cmap="gray", vmin=0, vmax=1)
    axes[0, 0].set_title("phantom")
    axes[1, 0].axis("off")
    for k, (name, x) in enumerate(panels.items(), start=1):
        axes[0, k].imshow(x[z], cmap="gray", vmin=0, vmax=1)
        axes[0, k].set_title(f"{name}\n{psnr(x, truth, data_range=1.0):.1f} dB", fontsize=9)
        axes[1, k].imshow(np.abs(x[z] - truth[z]), cmap="magma", vmin=0, vmax=0.5)
        axes[1, k].set_title("|error|", fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(out: Path, size: int, slices: int, budget: Budget) -> dict:
    stores = simulate(out, size, slices)
    results: dict = {"settings": {"size": size, "slices": slices, "epochs": budget.epochs,
                                  "minutes_cap": budget.minutes, "depth": budget.depth}}
    rows = results.setdefault("rows", [])
    z = slices // 2

    def add(group: str, name: str, x: np.ndarray, truth: np.ndarray, **extra) -> None:
        rows.append({"experiment": group, "method": name, **scores(x, truth), **extra})

    for scan, cases in (("clean", [("MS-D (target FBP-1024)", "fbp_1024"), ("MS-D (target phantom)", "phantom")]),
                        ("limited", [("MS-D (target FBP-1024)", "fbp_1024")]),
                        ("noisy", [("MS-D (target FBP-1024)", "fbp_1024")])):
        g = zarr.open_group(str(stores[scan]), mode="r")
        truth = g["object2/phantom"][:]
        base = {"FBP-64": g["object2/fbp_64"][:], "FBP-1024": g["object2/fbp_1024"][:],
                "SIRT-64": g["object2/sirt_64"][:], "TV(FBP-64)": g["object2/tv_64"][:]}
        for name, x in base.items():
            add(scan, name, x, truth)
        panels = dict(base)
        for label, target in cases:
            pred, info = train_and_predict(f"{scan}_{target}", stores[scan], out, inputs="fbp_64", target=target,
                                           budget=budget)
            add(scan, label, pred, truth, **info)
            panels[label] = pred
        figure(out / "figures" / f"{scan}.png", truth, panels, z)

    g = zarr.open_group(str(stores["noisy"]), mode="r")
    truth, noisy = g["object2/phantom"][:], g["object2/fbp_1024"][:]
    truth_val, noisy_val = g["object1/phantom"][:], g["object1/fbp_1024"][:]
    sigma, _ = tuned_denoiser(noisy_val, truth_val, gaussian, [0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0])
    weight, _ = tuned_denoiser(noisy_val, truth_val, tv, list(np.geomspace(0.005, 5.0, 16)))
    panels = {"FBP-1024 (noisy)": noisy, f"Gaussian (sigma {sigma})": gaussian(noisy, sigma),
              f"TV (weight {weight:.3g})": tv(noisy, weight)}
    for name, x in panels.items():
        add("noise2inverse", name, x, truth)
    n2i, info = train_and_predict("noise2inverse", stores["noisy"], out, inputs="subsets_1024", target=None,
                                  budget=budget, task="noise2inverse")
    add("noise2inverse", "Noise2Inverse MS-D (no clean data)", n2i, truth, **info)
    clean = zarr.open_group(str(stores["clean"]), mode="r")
    if not np.array_equal(clean["object0/phantom"][:], g["object0/phantom"][:]):
        raise RuntimeError("the clean and the noisy scans are not of the same foam")
    sup, info = train_and_predict("noisy_supervised", stores["noisy"], out, inputs="fbp_1024", target="fbp_1024",
                                  budget=budget, target_store=stores["clean"])
    add("noise2inverse", "supervised MS-D (target noiseless FBP-1024)", sup, truth, **info)
    add("noise2inverse", "FBP-1024 (noiseless)", clean["object2/fbp_1024"][:], truth)
    panels.update({"Noise2Inverse": n2i, "supervised": sup})
    figure(out / "figures" / "noise2inverse.png", truth, panels, z)
    return results


def table(results: dict) -> str:
    lines = ["| experiment | method | PSNR (dB) | SSIM | epochs | wall (s) |", "|---|---|---|---|---|---|"]
    for r in results["rows"]:
        lines.append(f"| {r['experiment']} | {r['method']} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                     f"{r.get('epochs', '')} | {r.get('seconds', '')} |")
    return "\n".join(lines)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/tomography_foam"))
    p.add_argument("--size", type=int, default=256, help="slice side (default 256)")
    p.add_argument("--slices", type=int, default=64, help="slices per object (default 64)")
    p.add_argument("--epochs", type=int, default=80, help="training epochs per MS-D (default 80)")
    p.add_argument("--minutes", type=float, default=None, help="also stop each MS-D after this many minutes")
    p.add_argument("--depth", type=int, default=100, help="MS-D depth (default 100)")
    args = p.parse_args()
    t0 = time.perf_counter()
    results = run(args.out, args.size, args.slices, Budget(args.epochs, args.minutes, args.depth))
    results["wall_seconds"] = round(time.perf_counter() - t0)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(table(results) + "\n")
    logger.info("done in %.0f min\n%s", results["wall_seconds"] / 60, table(results))


if __name__ == "__main__":
    main()
