"""Ensemble prediction memory: peak RSS of 10 members against 1 on one 512x512 block, in one run.

Streaming statistics (Welford) keep one running mean, one sum of squares and one
mean entropy whatever the number of members, so peak memory should not grow with
the ensemble: the goal is <= 1.2x. Each configuration runs in a fresh process,
with every member already loaded (weights are not counted as prediction memory);
peak RSS is measured above that baseline.

    .venv/bin/python benchmarks/ensemble_memory.py [--size 512] [--depth 50]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from msd import reset_peak, rss_mb  # noqa: E402  (same-folder helper)


def make_members(folder: Path, count: int, depth: int) -> list[str]:
    import torch

    from mixscale.model import ModelInfo, save_model
    from mixscale.nets import create_net

    paths = []
    for i in range(count):
        torch.manual_seed(i)
        net = create_net("msd", depth=depth, out_channels=3)
        info = ModelInfo(net_name="msd", net_config=net.config(), class_names=["a", "b", "c"],
                         normalization={"mean": [0.0], "std": [1.0]})
        paths.append(str(save_model(folder / f"m{i}.safetensors", net, info)))
    return paths


def child(args) -> dict:
    import numpy as np
    import torch

    from mixscale.model import open_model
    from mixscale.predict import predict_array

    torch.set_num_threads(2)
    model = open_model(args.model)
    image = np.random.default_rng(0).normal(size=(args.size, args.size)).astype(np.float32)
    base = rss_mb("VmRSS")
    reset_peak()
    start = time.perf_counter()
    with torch.no_grad():
        out = predict_array(model, image, uncertainty=args.uncertainty)
    seconds = time.perf_counter() - start
    assert out["entropy"].shape == image.shape if args.uncertainty else out.shape == image.shape
    return {"seconds": seconds, "baseline_mb": base, "peak_mb": rss_mb("VmHWM")}


def run(model: str, size: int, uncertainty: bool) -> dict:
    cmd = [sys.executable, __file__, "--child", "--model", model, "--size", str(size)]
    cmd += ["--uncertainty"] if uncertainty else []
    result = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--depth", type=int, default=50)
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--uncertainty", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)))
        return
    from mixscale.model import save_ensemble

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        members = make_members(folder, 10, args.depth)
        rows = {"1 member (a model file), labels": run(members[0], args.size, False)}
        for count in (2, 10):
            ensemble = str(save_ensemble(folder / f"ens{count}.safetensors", members[:count]))
            rows[f"{count} members, uncertainty"] = run(ensemble, args.size, True)
    base = rows["1 member (a model file), labels"]
    print(f"| run ({args.size}x{args.size}, MS-D depth {args.depth}) | seconds | peak RSS above baseline MB | "
          "ratio to 1 member |")
    print("|---|---|---|---|")
    for name, r in rows.items():
        above = r["peak_mb"] - r["baseline_mb"]
        ratio = above / (base["peak_mb"] - base["baseline_mb"])
        print(f"| {name} | {r['seconds']:.2f} | {above:.0f} | {ratio:.2f}x |")


if __name__ == "__main__":
    main()
