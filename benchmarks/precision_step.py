"""Training step of MS-D and a U-Net in float32 and under CPU bfloat16 autocast, alternated in one process.

A plain PyTorch step (forward, cross-entropy over 5 classes, backward, Adam), without Lightning or data
loading, so that the four configurations (two nets x two precisions) are timed in turns within one process
and the machine's drift affects them alike: median of ``--repeats`` steps each after two warm-up steps.
MS-D is depth 100 (dilations 1..10, the lean block), the U-Net depth 4 with 16 base channels. Under
autocast MS-D keeps bfloat16 maps only on a CPU with native bfloat16 products (AVX-512 BF16 or AMX);
elsewhere it stays float32 while the U-Net's convolutions are emulated in bfloat16.

    .venv/bin/python benchmarks/precision_step.py                  # 4x128^2 and 1x512^2
    .venv/bin/python benchmarks/precision_step.py --batches 2x256
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from mixscale.nets import create_net
from mixscale.nets.msd_lean import cpu_has_bf16

NETS = {"msd": {"depth": 100, "dilations": list(range(1, 11))}, "unet": {"depth": 4, "base_channels": 16}}
CLASSES = 5


def step_fn(net, opt, x, y, bf16: bool):
    """One training step of ``net`` on ``x (N, 1, H, W)`` and labels ``y (N, H, W)``."""

    def step():
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = net(x)
        torch.nn.functional.cross_entropy(out.float(), y).backward()
        opt.step()

    return step


def measure(batch: int, size: int, repeats: int) -> dict:
    """Median step seconds of every (net, precision), alternated round by round."""
    torch.manual_seed(0)
    x = torch.randn(batch, 1, size, size)
    y = torch.randint(0, CLASSES, (batch, size, size))
    steps = {}
    for name, cfg in NETS.items():
        net = create_net(name, in_channels=1, out_channels=CLASSES, **cfg)
        opt = torch.optim.Adam(net.parameters(), 1e-3)
        for bf16 in (False, True):
            steps[name, bf16] = step_fn(net, opt, x, y, bf16)
    for step in steps.values():
        step()
        step()
    times = {key: [] for key in steps}
    for r in range(repeats):
        for key in (list(steps) if r % 2 else list(steps)[::-1]):
            t0 = time.perf_counter()
            steps[key]()
            times[key].append(time.perf_counter() - t0)
    return {key: statistics.median(t) for key, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batches", default="4x128,1x512", help="batch shapes, e.g. 4x128,1x512")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    print(f"{torch.get_num_threads()} threads; native bfloat16: {cpu_has_bf16()}")
    print("| batch | MS-D fp32 s | MS-D bf16 s | U-Net fp32 s | U-Net bf16 s | MS-D bf16/fp32 speed-up | "
          "MS-D / U-Net pixels/s, fp32 | bf16 |\n|---|---|---|---|---|---|---|---|")
    for shape in args.batches.split(","):
        batch, size = (int(v) for v in shape.split("x"))
        t = measure(batch, size, args.repeats)
        print(f"| {batch}x{size}^2 | {t['msd', False]:.3f} | {t['msd', True]:.3f} | {t['unet', False]:.3f} | "
              f"{t['unet', True]:.3f} | {t['msd', False] / t['msd', True]:.2f} | "
              f"{t['unet', False] / t['msd', False]:.2f} | {t['unet', True] / t['msd', True]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
