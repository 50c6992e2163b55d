"""Block-wise prediction of volumes on disk: time, voxels/s and peak RSS, against MONAI.

A synthetic uint16 volume of 1024x1024 slices is written to disk twice, as a
zarr store and as a folder of TIFF slices, and segmented slice by slice by a
depth-50 MS-D (dilations 1..10, 3 classes, random weights: speed does not depend
on them) with ``mixscale.predict.predict_blocks`` into a zarr store. The
same is done for a volume with 4x as many slices, to show that peak memory does
not grow with the volume. In the same run, MONAI's ``sliding_window_inference``
segments the in-memory volume (read whole, as MONAI users do) with the same
net and the same window (one whole slice per window, as mixscale uses here).

Every configuration runs in a fresh process; peak RSS is reported above the
process's baseline (after imports and the model are loaded), plus the absolute
peak.

    .venv/bin/python benchmarks/huge.py                  # 64 and 256 slices (about 15 minutes on 2 cores)
    .venv/bin/python benchmarks/huge.py --quick          # 256x256 slices, 8 and 32: a smoke run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from msd import reset_peak, rss_mb  # noqa: E402  (same-folder helper)

CLASSES = 3


def make_model(path: Path, depth: int) -> Path:
    import torch

    from mixscale.model import ModelInfo, save_model
    from mixscale.nets import MSDNet

    torch.manual_seed(0)
    net = MSDNet(depth=depth, out_channels=CLASSES)
    with torch.no_grad():
        net.final_weight.normal_(0, 0.1)
    info = ModelInfo(net_name="msd", net_config=net.config(), task="segmentation",
                     class_names=[f"class{i}" for i in range(CLASSES)], normalization={"mean": [2000.0], "std": [500.0]})
    return save_model(path, net, info)


def make_volume(folder: Path, slices: int, size: int) -> tuple[str, str]:
    """The same synthetic volume as zarr and as TIFF slices, written slice by slice."""
    import numpy as np
    import tifffile
    import zarr

    rng = np.random.default_rng(0)
    store = zarr.create_array(str(folder / f"vol{slices}.zarr"), shape=(slices, size, size), dtype="uint16",
                              chunks=(1, min(size, 512), min(size, 512)))
    tiffs = folder / f"tif{slices}"
    tiffs.mkdir()
    for z in range(slices):
        coarse = rng.integers(1000, 3000, (size // 32, size // 32))
        image = (np.kron(coarse, np.ones((32, 32))) + rng.normal(0, 300, (size, size))).clip(0, 65535)
        image = image.astype(np.uint16)
        store[z] = image
        tifffile.imwrite(tiffs / f"z{z:05d}.tif", image)
    return str(folder / f"vol{slices}.zarr"), str(tiffs)


def child_mixscale(args) -> dict:
    from mixscale.model import cached_model
    from mixscale.predict import predict_blocks

    cached_model(str(Path(args.model).resolve()), "cpu")  # model in memory before the baseline
    base = rss_mb("VmRSS")
    reset_peak()
    summary = predict_blocks(args.model, args.input, args.output, slice_axis=0,
                             blocks_in_flight=args.workers)
    assert summary["complete"]
    return {"seconds": summary["seconds"], "voxels": summary["voxels"], "baseline_mb": base,
            "peak_mb": rss_mb("VmHWM")}


def child_monai(args) -> dict:
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from mixscale.data import open_image
    from mixscale.model import load_model

    net, info = load_model(args.model)
    base = rss_mb("VmRSS")
    reset_peak()
    start = time.perf_counter()
    volume = np.asarray(open_image(args.input))  # MONAI works on in-memory tensors
    x = torch.from_numpy((volume.astype(np.float32) - 2000.0) / 500.0)[:, None]  # slices as a batch of 2D images
    with torch.no_grad():
        logits = sliding_window_inference(x, roi_size=volume.shape[1:], sw_batch_size=1, predictor=net,
                                          overlap=0.25, mode="gaussian")
    labels = logits.argmax(1).to(torch.uint8).numpy()
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "voxels": int(labels.size), "baseline_mb": base, "peak_mb": rss_mb("VmHWM")}


def run_child(kind: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--child", kind] + [f"--{k.replace('_', '-')}={v}" for k, v in kw.items()]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(rows: list[dict]) -> str:
    lines = ["| run | input | slices | wall s | Mvoxels/s | peak RSS above baseline MB | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['name']} | {r['input']} | {r['slices']} | failed: {r['error']} | | | |")
            continue
        lines.append(f"| {r['name']} | {r['input']} | {r['slices']} | {r['seconds']:.1f} | "
                     f"{r['voxels'] / r['seconds'] / 1e6:.2f} | {r['peak_mb'] - r['baseline_mb']:.0f} | "
                     f"{r['peak_mb']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--slices", type=int, default=64)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    p.add_argument("--input", default=None, help=argparse.SUPPRESS)
    p.add_argument("--output", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child_mixscale(args) if args.child == "mixscale" else child_monai(args)))
        return
    if args.quick:
        args.slices, args.size = 8, 256
    rows = []
    with tempfile.TemporaryDirectory(prefix="mixscale-huge-") as tmp:
        tmp = Path(tmp)
        model = str(make_model(tmp / "msd.safetensors", args.depth))
        for slices in (args.slices, 4 * args.slices):
            zarr_in, tif_in = make_volume(tmp, slices, args.size)
            runs = [("mixscale", "zarr", zarr_in), ("mixscale", "tiff slices", tif_in)]
            if slices == args.slices:
                runs.append(("monai sliding_window_inference", "zarr read whole", zarr_in))
            for name, label, source in runs:
                kind = "monai" if name.startswith("monai") else "mixscale"
                out = tmp / f"out-{slices}-{len(rows)}.zarr"
                r = run_child(kind, model=model, input=source, output=out, workers=args.workers)
                rows.append({"name": name, "input": label, "slices": slices, **r})
                print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(f"\nMS-D depth {args.depth}, {args.size}x{args.size} slices, {CLASSES} classes, "
          f"{args.workers} block workers\n")
    print(table(rows))
    ok = [r for r in rows if "error" not in r]
    ours = next((r for r in ok if r["name"] == "mixscale" and r["slices"] == args.slices and r["input"] == "zarr"), None)
    theirs = next((r for r in ok if r["name"].startswith("monai")), None)
    big = next((r for r in ok if r["name"] == "mixscale" and r["slices"] == 4 * args.slices and r["input"] == "zarr"),
               None)
    if ours and theirs:
        print(f"\nmixscale / MONAI at {args.slices} slices: time x{ours['seconds'] / theirs['seconds']:.2f}, "
              f"peak RSS above baseline x{(ours['peak_mb'] - ours['baseline_mb']) / (theirs['peak_mb'] - theirs['baseline_mb']):.2f}")
    if ours and big:
        print(f"mixscale {4 * args.slices} vs {args.slices} slices: peak RSS above baseline x"
              f"{(big['peak_mb'] - big['baseline_mb']) / (ours['peak_mb'] - ours['baseline_mb']):.2f}, "
              f"time x{big['seconds'] / ours['seconds']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
