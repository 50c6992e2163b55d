"""MS-D speed and memory: the lean block against the naive implementation, in one run.

Every configuration runs in a fresh process (so peak RSS is its own): forward
(inference, no graph) and training step (forward, cross-entropy, backward, Adam
step); median wall time over repeats after a warm-up, and peak RSS above the
process's baseline (after imports, network and input exist). The naive
implementation (concatenate all earlier maps, library convolutions on
reflect-padded maps: ``impl="direct"``) is skipped where it would not fit in memory
or would take too long, and the table says so. The machine's matrix-product speed
and streaming bandwidth are measured first; each configuration's fraction of the
arithmetic bound is printed (flops / time / matrix-product flop rate).

    .venv/bin/python benchmarks/msd.py                 # full table (about 20 minutes on 2 cores)
    .venv/bin/python benchmarks/msd.py --quick         # 512x512, depth 100 only
    .venv/bin/python benchmarks/msd.py --device cuda --amp fp16   # on a GPU: peak GPU memory, half maps

On CUDA, times are taken after synchronising and memory is the peak of
``torch.cuda.max_memory_allocated`` above what was allocated before the first step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

CONFIGS_2D = [256, 512, 1024]
CONFIGS_3D = [64, 128]
NAIVE_TRAIN_LIMIT_GB = 16.0
NAIVE_SECONDS_LIMIT = 120.0


def msd_flops(depth: int, width: int, c_in: int, c_out: int, spatial_dims: int, pixels: int) -> float:
    """Forward flops (2 per multiply-add) of an MS-D over ``pixels`` pixels."""
    taps = 3**spatial_dims
    macs = taps * width * sum(c_in + i * width for i in range(depth)) + (c_in + depth * width) * c_out
    return 2.0 * macs * pixels


def naive_estimates(depth: int, pixels: int, spatial_dims: int) -> tuple[float, float]:
    """Rough training memory (GB) and step time (s) of the naive implementation.

    Scaled from its measured 11.7 GB and 51.7 s for one 512x512 image at depth 100
    (2 threads): both grow with depth squared times pixels (x3 time per tap count in 3D).
    """
    scale = (depth / 100) ** 2 * pixels / 512**2
    return 11.7 * scale, 51.7 * scale * (3.0 if spatial_dims == 3 else 1.0)


def rss_mb(field: str) -> float:
    """VmRSS or VmHWM of this process in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def reset_peak() -> None:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def run_child(script: str, **options) -> dict:
    """Run ``script --child --key=value ...`` in a fresh process (its own peak RSS) and return the JSON
    object of its last output line; a failure raises with the end of its stderr."""
    cmd = [sys.executable, script, "--child"] + [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip()[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker(args) -> dict:
    """One configuration, in this process; returns times and peak memory."""
    import torch

    from mixscale.nets import MSDNet

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dims, dev = args.dims, torch.device(args.device)
    cuda = dev.type == "cuda"
    shape = (1, 1, *(args.size,) * dims)
    net = MSDNet(spatial_dims=dims, depth=args.depth, width=1, out_channels=2).to(dev)
    x = torch.randn(*shape, device=dev)
    target = torch.randint(0, 2, (1, *shape[2:]), device=dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    amp = {"none": None, "fp16": torch.float16, "bf16": torch.bfloat16}[args.amp]

    def forward():
        with torch.no_grad(), torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            net(x, impl=args.impl)

    def train_step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            loss = torch.nn.functional.cross_entropy(net(x, impl=args.impl).float(), target)
        loss.backward()
        opt.step()

    step = forward if args.mode == "forward" else train_step
    base = torch.cuda.memory_allocated(dev) if cuda else rss_mb("VmRSS")
    torch.cuda.reset_peak_memory_stats(dev) if cuda else reset_peak()
    times = []
    for r in range(args.warmup + args.repeats):
        t0 = time.perf_counter()
        step()
        if cuda:
            torch.cuda.synchronize(dev)
        if r >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 - base / 2**20 if cuda else rss_mb("VmHWM") - base
    return {"median_s": statistics.median(times), "times": times, "peak_above_base_mb": peak}


def matmul_gflops(device: str = "cpu", dtype=None) -> float:
    """GFLOP/s of a 2048^2 matrix product in ``dtype`` (default float32), mean of 5 after one warm-up."""
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    a, b, c = (torch.randn(2048, 2048, device=device, dtype=dtype or torch.float32) for _ in range(3))
    torch.mm(a, b, out=c)
    sync()
    t0 = time.perf_counter()
    for _ in range(5):
        torch.mm(a, b, out=c)
    sync()
    return 5 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9


def machine_bounds(threads: int, device: str = "cpu") -> dict:
    """Matrix-product GFLOP/s (2048^2 sgemm) and streaming copy GB/s (256 MB, preallocated)."""
    import torch

    torch.set_num_threads(threads)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    gflops = matmul_gflops(device)
    src, dst = torch.randn(64 * 2**20, device=device), torch.empty(64 * 2**20, device=device)
    dst.copy_(src)
    sync()
    t0 = time.perf_counter()
    for _ in range(5):
        dst.copy_(src)
    sync()
    gbs = 5 * 2 * src.numel() * 4 / (time.perf_counter() - t0) / 1e9
    return {"matmul_gflops": gflops, "stream_gbs": gbs}


def run_config(impl, dims, size, depth, mode, repeats, warmup, threads, device="cpu", amp="none") -> dict:
    cmd = [sys.executable, __file__, "--worker", "--impl", impl, "--dims", str(dims), "--size", str(size),
           "--depth", str(depth), "--mode", mode, "--repeats", str(repeats), "--warmup", str(warmup),
           "--threads", str(threads), "--device", device, "--amp", amp]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def table(args) -> None:
    bounds = machine_bounds(args.threads, args.device)
    print(f"machine: {bounds['matmul_gflops']:.0f} GFLOP/s (2048^2 sgemm), {bounds['stream_gbs']:.1f} GB/s "
          f"(256 MB copy), {args.threads} threads, device {args.device}, amp {args.amp}")
    configs = [(2, 512, 100)] if args.quick else (
        [(2, s, d) for d in (50, 100) for s in CONFIGS_2D] + [(3, s, d) for d in (50, 100) for s in CONFIGS_3D])
    print(f"{'config':<22}{'mode':<9}{'lean s':>9}{'lean MB':>9}{'naive s':>10}{'naive MB':>10}"
          f"{'speed-up':>9}{'of bound':>9}")
    rows = []
    for dims, size, depth in configs:
        pixels = size**dims
        for mode in ("forward", "train"):
            lean = run_config("lean", dims, size, depth, mode, args.repeats, 1, args.threads, args.device, args.amp)
            mem_gb, secs = naive_estimates(depth, pixels, dims)
            naive_ok = (mode == "forward" or mem_gb < NAIVE_TRAIN_LIMIT_GB) and secs / (1 if mode == "train" else 5) \
                < NAIVE_SECONDS_LIMIT and not args.no_naive
            naive = run_config("direct", dims, size, depth, mode, args.naive_repeats, 0, args.threads, args.device,
                               args.amp) \
                if naive_ok else {"skipped": f"est. {mem_gb:.0f} GB / {secs:.0f} s"}
            flops = msd_flops(depth, 1, 1, 2, dims, pixels) * (3 if mode == "train" else 1)
            row = {"dims": dims, "size": size, "depth": depth, "mode": mode, "lean": lean, "naive": naive,
                   "flops": flops}
            rows.append(row)
            print(format_row(row, bounds), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"bounds": bounds, "rows": rows}, indent=2))


def format_row(row: dict, bounds: dict) -> str:
    name = f"{row['size']}^{row['dims']} d={row['depth']}"
    lean, naive = row["lean"], row["naive"]
    if "error" in lean:
        return f"{name:<22}{row['mode']:<9} lean failed: {lean['error']}"
    ls, lm = lean["median_s"], lean["peak_above_base_mb"]
    if "median_s" in naive:
        nv = f"{naive['median_s']:>10.2f}{naive['peak_above_base_mb']:>10.0f}{naive['median_s'] / ls:>8.1f}x"
    else:
        nv = f"  {'skipped (' + naive.get('skipped', naive.get('error', '?')) + ')':>27}"
    frac = row["flops"] / ls / 1e9 / bounds["matmul_gflops"]
    return f"{name:<22}{row['mode']:<9}{ls:>9.3f}{lm:>9.0f}{nv}{frac:>9.1%}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--naive-repeats", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-naive", action="store_true")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument("--amp", default="none", choices=["none", "fp16", "bf16"],
                   help="autocast dtype (on CUDA the lean MS-D then stores half-precision maps)")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--impl", default="lean", help=argparse.SUPPRESS)
    p.add_argument("--dims", type=int, default=2, help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=512, help=argparse.SUPPRESS)
    p.add_argument("--depth", type=int, default=100, help=argparse.SUPPRESS)
    p.add_argument("--mode", default="forward", help=argparse.SUPPRESS)
    p.add_argument("--warmup", type=int, default=1, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
    else:
        table(args)


if __name__ == "__main__":
    main()
