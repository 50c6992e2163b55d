"""Training throughput in the configurations users train with: MS-D against a U-Net, one run.

Each configuration trains for real through ``mixscale.api.train`` (Lightning, the patch dataset with
label-favouring sampling and dihedral/intensity augmentation, the loss, Adam) in a fresh process, on a
1024^2 synthetic image (TIFF) with dense labels of K classes (K = 5: CE + Dice) or a regression target
(1 output: MSE). The first epoch warms up; the second is timed by a callback:

- step: median wall time from one training batch's start to the next one's (data loading, forward,
  loss, backward, optimiser step), and pixels per second over the batch's pixels;
- val: the validation pass of that epoch (64 patches, the default ``data.val_samples``);
- bound: flops of one step (forward and backward as counted by ``torch.utils.flop_counter`` on the
  plain form of the net, MS-D with ``impl="direct"``, the same arithmetic as the lean block; counted on
  a 64^2 image and scaled by the pixels) over the
  step time, as a fraction of the machine's float32 matrix-product rate measured in the same run;
- peak RSS above the process's baseline (after importing torch and mixscale).

Ratios MS-D / U-Net of pixels per second are printed per configuration (above 1: MS-D is faster).

    .venv/bin/python benchmarks/train_throughput.py            # 3 batch shapes x 2 tasks x 2 nets (~10 min)
    .venv/bin/python benchmarks/train_throughput.py --quick    # 4x128^2, 5 classes only
    .venv/bin/python benchmarks/train_throughput.py --precision bf16-mixed --batches 4x128,1x512 --tasks 5

``--precision bf16-mixed`` trains both nets under CPU bfloat16 autocast (Lightning's ``bf16-mixed``); MS-D
keeps bfloat16 maps there only on a CPU with native bfloat16 products (AVX-512 BF16 or AMX). The bound
stays the float32 matrix-product rate, and the bfloat16 rate of the same run is printed beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from msd import machine_bounds, matmul_gflops, reset_peak, rss_mb, run_child  # noqa: E402  (same-folder helpers)

BATCHES = [(4, 128), (2, 256), (1, 512)]
TASKS = [5, 1]  # classes (CE + Dice), or 1: one regression output (MSE)
NETS = {"msd": {"name": "msd", "depth": 100, "dilations": list(range(1, 11))},
        "unet": {"name": "unet", "depth": 4, "base_channels": 16}}
STEPS = 12


def make_data(folder: Path, classes: int) -> tuple[str, str]:
    """A 1024^2 image of blurred blobs and its labels (K classes by intensity) or its clean target."""
    import numpy as np
    from scipy import ndimage

    from mixscale.data import write_image

    rng = np.random.default_rng(0)
    clean = ndimage.gaussian_filter(rng.normal(size=(1024, 1024)), 8)
    clean = (clean - clean.mean()) / clean.std()
    image = (clean + rng.normal(0, 0.5, clean.shape)).astype(np.float32)
    write_image(str(folder / "image.tif"), image)
    if classes == 1:
        write_image(str(folder / "target.tif"), clean.astype(np.float32))
        return str(folder / "image.tif"), str(folder / "target.tif")
    edges = np.quantile(clean, np.linspace(0, 1, classes + 1)[1:-1])
    write_image(str(folder / "labels.tif"), np.digitize(clean, edges).astype(np.uint8))
    return str(folder / "image.tif"), str(folder / "labels.tif")


def step_flops(net_cfg: dict, classes: int, batch: int, size: int, counted: int = 64) -> float:
    """Flops of one training step's forward and backward (the plain form of the net), counted on one
    ``counted``^2 image and scaled by the pixels (both nets' flops are proportional to them)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from mixscale.nets import create_net

    cfg = {k: v for k, v in net_cfg.items() if k != "name"}
    net = create_net(net_cfg["name"], in_channels=1, out_channels=classes, **cfg)
    x = torch.randn(1, 1, counted, counted)
    kwargs = {"impl": "direct"} if net_cfg["name"] == "msd" else {}
    with FlopCounterMode(display=False) as counter:
        net(x, **kwargs).square().mean().backward()
    return float(counter.get_total_flops()) * batch * size**2 / counted**2


def child(args) -> dict:
    import lightning as L
    import torch  # noqa: F401

    from mixscale import api

    class Timer(L.Callback):
        def __init__(self):
            self.starts, self.val = [], None

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.current_epoch == 1:
                self.starts.append(time.perf_counter())

        def on_train_epoch_end(self, trainer, module):
            if trainer.current_epoch == 1:
                self.starts.append(time.perf_counter())  # the end of the last step

        def on_validation_epoch_start(self, trainer, module):
            self._v0 = time.perf_counter()

        def on_validation_epoch_end(self, trainer, module):
            if trainer.current_epoch == 1 and not trainer.sanity_checking:
                self.val = time.perf_counter() - self._v0

    classes = args.classes
    data = {"train_images": args.image, "train_labels": args.labels, "spatial_dims": 2,
            "patch_shape": [args.size, args.size], "batch_size": args.batch, "samples_per_epoch": args.batch * STEPS,
            "val_samples": 64, "augment": {"dihedral": True}}
    cfg = {"version": 1, "run_dir": args.run_dir, "data": data, "net": json.loads(args.net),
           "trainer": {"max_epochs": 2, "progress_bar": False, "accelerator": "cpu", "devices": 1,
                       "precision": args.precision}}
    if classes == 1:
        cfg |= {"task": "regression", "loss": {"mse": 1.0}}
    else:
        cfg |= {"task": "segmentation", "loss": {"ce": 1.0, "dice": 1.0}}
        data["num_classes"] = classes
    timer = Timer()
    base = rss_mb("VmRSS")
    reset_peak()
    api.train(cfg, callbacks=[timer])
    steps = [b - a for a, b in zip(timer.starts, timer.starts[1:])]
    return {"step_s": statistics.median(steps), "val_s": timer.val, "peak_mb": rss_mb("VmHWM") - base}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="4x128^2 with 5 classes only")
    p.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed"],
                   help="Lightning precision of both nets (default 32-true)")
    p.add_argument("--batches", default=None, help="batch shapes, e.g. 4x128,1x512 (default all three)")
    p.add_argument("--tasks", default=None, help="outputs, e.g. 5 or 5,1 (default 5,1)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    for name in ("image", "labels", "run-dir", "net"):  # the child's own arguments
        p.add_argument(f"--{name}", default=None, help=argparse.SUPPRESS)
    for name in ("classes", "batch", "size"):
        p.add_argument(f"--{name}", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    import torch

    from mixscale.nets.msd_lean import cpu_has_bf16

    bounds = machine_bounds(torch.get_num_threads())
    print(f"machine: {bounds['matmul_gflops']:.0f} GFLOP/s float32 matrix product, "
          f"{matmul_gflops(dtype=torch.bfloat16):.0f} GFLOP/s bfloat16, {torch.get_num_threads()} threads; "
          f"precision {args.precision}; native bfloat16: {cpu_has_bf16()}")
    print("| net | batch | outputs | step s | Mpixels/s | val s/epoch | % of bound | peak RSS MB | MS-D / U-Net "
          "pixels/s |\n|---|---|---|---|---|---|---|---|---|")
    batches, tasks = (BATCHES[:1], TASKS[:1]) if args.quick else (BATCHES, TASKS)
    if args.batches:
        batches = [tuple(int(v) for v in b.split("x")) for b in args.batches.split(",")]
    if args.tasks:
        tasks = [int(v) for v in args.tasks.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for classes in tasks:
            (folder / f"data_{classes}").mkdir()
            image, labels = make_data(folder / f"data_{classes}", classes)
            for batch, size in batches:
                rows = {}
                for name, net in NETS.items():
                    r = run_child(__file__, image=image, labels=labels, net=json.dumps(net), classes=classes,
                                  precision=args.precision,
                                  batch=batch, size=size, run_dir=folder / f"run_{name}_{classes}_{batch}")
                    r["mpix"] = batch * size * size / r["step_s"] / 1e6
                    r["bound"] = step_flops(net, classes, batch, size) / r["step_s"] / 1e9 / bounds["matmul_gflops"]
                    rows[name] = r
                ratio = rows["msd"]["mpix"] / rows["unet"]["mpix"]
                for name, r in rows.items():
                    last = f"{ratio:.2f}" if name == "msd" else ""
                    print(f"| {name} | {batch}x{size}^2 | {classes} | {r['step_s']:.3f} | {r['mpix']:.3f} | "
                          f"{r['val_s']:.2f} | {100 * r['bound']:.0f} | {r['peak_mb']:.0f} | {last} |", flush=True)


if __name__ == "__main__":
    main()
