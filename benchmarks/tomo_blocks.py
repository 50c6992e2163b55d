"""Block-wise prediction of a 512^3 tomographic reconstruction into zarr: bounded memory, and equal to
predicting a crop of it whole.

A foam (512 slices of 512x512) is reconstructed by FBP from 64 analytic projections, slab by slab,
into a zarr volume (float32, 512 MiB on disk). A 2.5D regression MS-D (depth 30, dilations 1..10,
5 slices as channels, random weights: speed and memory do not depend on them) predicts it with
``mixscale predict`` semantics (``predict_blocks``, blocks of 16 slices) in a fresh process whose
peak RSS above its baseline is reported next to the volume's size. In the same run, slices 192..256
are cut out as a volume of their own and predicted as one block ("whole"): away from the cut ends
(2 slices of 2.5D context each side) the two must agree to float tolerance.

    .venv/bin/python benchmarks/tomo_blocks.py                 # 512^3 (a few minutes on 2 cores)
    .venv/bin/python benchmarks/tomo_blocks.py --slices 128    # 128 slices of 512^2: the same peak
    .venv/bin/python benchmarks/tomo_blocks.py --size 128      # a smoke run

Bounded memory means the peak does not grow with the volume: it is set by one block of slices going
through the network (16 slices x 35 feature maps of 512^2 in float32 is 560 MiB for depth 30), so a
volume of a quarter of the slices must show the same peak.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from msd import reset_peak, rss_mb, run_child  # noqa: E402  (same-folder helper)

CONTEXT = 2


def make_reconstruction(path: Path, slices: int, size: int, slab: int = 16) -> str:
    """FBP-64 of a foam of ``slices`` slices of ``size``^2, written slab by slab (never whole in memory)."""
    import numpy as np
    import torch
    import zarr

    from mixscale.synthetic import foam_phantom, foam_sinograms
    from mixscale.tomo import fbp, parallel_angles

    foam = foam_phantom((slices, size, size), seed=0, n_voids=4 * size)
    angles = parallel_angles(64)
    volume = zarr.create_array(str(path), shape=(slices, size, size), dtype="float32", chunks=(1, size, size))
    for z0 in range(0, slices, slab):
        sino = foam_sinograms(foam, angles, z=list(range(z0, min(z0 + slab, slices))))
        volume[z0:z0 + slab] = fbp(torch.from_numpy(np.asarray(sino)), angles).numpy()
    return str(path)


def make_model(path: Path, depth: int) -> Path:
    import torch

    from mixscale.model import ModelInfo, save_model
    from mixscale.nets import MSDNet

    torch.manual_seed(0)
    net = MSDNet(depth=depth, in_channels=2 * CONTEXT + 1, out_channels=1, dilations=list(range(1, 11)))
    with torch.no_grad():
        net.final_weight.normal_(0, 0.1)
    info = ModelInfo(net_name="msd", net_config=net.config(), task="regression", context_slices=CONTEXT,
                     normalization={"mean": [0.3], "std": [0.4]}, target_normalization={"mean": [0.5], "std": [0.5]})
    return save_model(path, net, info)


def child(args) -> dict:
    from mixscale.model import cached_model
    from mixscale.predict import predict_blocks

    cached_model(str(Path(args.model).resolve()), "cpu")  # model in memory before the baseline
    base = rss_mb("VmRSS")
    reset_peak()
    block = [args.block, args.size, args.size]
    summary = predict_blocks(args.model, args.input, args.output, slice_axis=0, block_shape=block, progress=False)
    assert summary["complete"]
    return {"seconds": summary["seconds"], "voxels": summary["voxels"], "baseline_mb": base,
            "peak_mb": rss_mb("VmHWM")}


def compare_crop(folder: Path, volume: str, model: Path, blocks_out: str, slices: int, size: int) -> float:
    """Max |difference| between the block-wise prediction and a whole prediction of slices 3/8..1/2."""
    import numpy as np
    import zarr

    z0, z1 = (3 * slices) // 8, slices // 2
    crop = zarr.open_array(volume, mode="r")[z0:z1]
    zarr.create_array(str(folder / "crop.zarr"), data=crop, chunks=crop.shape)
    run_child(__file__, model=model, input=folder / "crop.zarr", output=folder / "crop_pred.zarr", block=z1 - z0,
              size=size)
    whole = zarr.open_array(str(folder / "crop_pred.zarr" / "prediction"), mode="r")[CONTEXT:-CONTEXT]
    blocks = zarr.open_array(f"{blocks_out}/prediction", mode="r")[z0 + CONTEXT:z1 - CONTEXT]
    return float(np.abs(whole - blocks).max() / max(np.abs(whole).max(), 1e-12))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512, help="slice side (default 512)")
    p.add_argument("--slices", type=int, default=None, help="slices (default: the slice side)")
    p.add_argument("--depth", type=int, default=30)
    p.add_argument("--block", type=int, default=16, help="slices per block")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--input", default=None, help=argparse.SUPPRESS)
    p.add_argument("--output", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        slices = args.slices or args.size
        volume = make_reconstruction(folder / "fbp64.zarr", slices, args.size)
        made = time.perf_counter() - t0
        model = make_model(folder / "model.safetensors", args.depth)
        out = str(folder / "pred.zarr")
        r = run_child(__file__, model=model, input=volume, output=out, block=args.block, size=args.size)
        diff = compare_crop(folder, volume, model, out, slices, args.size)
    volume_mb = slices * args.size ** 2 * 4 / 2**20
    print(f"| volume | block | reconstruction s | predict s | Mvoxels/s | peak RSS above baseline MB | "
          f"volume MB | crop vs blocks (max rel. diff) |\n|---|---|---|---|---|---|---|---|\n"
          f"| {slices}x{args.size}^2 float32 | {args.block} slices | {made:.0f} | {r['seconds']:.0f} | "
          f"{r['voxels'] / r['seconds'] / 1e6:.2f} | {r['peak_mb'] - r['baseline_mb']:.0f} | {volume_mb:.0f} | "
          f"{diff:.1e} |")


if __name__ == "__main__":
    main()
