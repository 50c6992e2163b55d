"""Predict one large 2D image with a depth-100 MS-D, tiled, and report time and peak memory.

    .venv/bin/python benchmarks/msd_predict_large.py --size 8192 --tile 2048 --overlap 0

The whole-image forward would need a buffer of 101 maps of the image (27 GB at
8192x8192 in float32); tiles read with the network's 550-pixel halo give the same
result with memory bounded by the tile.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from mixscale.infer import predict_tiled
from mixscale.nets import MSDNet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=8192)
    p.add_argument("--tile", type=int, default=2048)
    p.add_argument("--overlap", type=float, default=0.0)
    p.add_argument("--depth", type=int, default=100)
    args = p.parse_args()
    torch.manual_seed(0)
    net = MSDNet(depth=args.depth, out_channels=2).eval()
    image = torch.randn(1, args.size, args.size)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    t0 = time.perf_counter()
    out = predict_tiled(net, image, tile_shape=args.tile, overlap=args.overlap, halo=net.halo)
    elapsed = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{args.size}^2, depth {args.depth}, tiles {args.tile}^2 (halo {net.halo}), overlap {args.overlap}: "
          f"{elapsed:.0f} s, {args.size**2 / elapsed / 1e6:.2f} Mpixel/s, peak RSS {peak:.1f} GB "
          f"(before prediction {base:.1f} GB), output {tuple(out.shape)}")


if __name__ == "__main__":
    main()
