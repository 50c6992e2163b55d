"""Experiment, not used by the library: the lean MS-D forward with a block's products kept in cache.

Reproduces the measurements of "Tried in the third session" in docs/performance.md.
It compiles a small C kernel (shifted sum, bias and ReLU of a run of output rows,
read from a ring of product rows) with the system compiler into a temporary folder,
checks the banded forward's maps against the library's lean forward, and times the
two interleaved in one process (A/B, median of the per-pair ratios; below 1 means
the experiment is faster).

    .venv/bin/python benchmarks/experiments/msd_banded.py                  # 64-row bands, 8-layer blocks
    .venv/bin/python benchmarks/experiments/msd_banded.py --band 512       # the kernel alone, whole-image products
    .venv/bin/python benchmarks/experiments/msd_banded.py --band 32 --block 6

The banded forward: the block's matrix product is taken ``band`` image rows at a
time into a ring of ``cap`` rows per product map, and the layers follow as a
wavefront (a layer's output row ``y`` is final once its product rows up to ``y + d``
exist and the rows of the maps made earlier in the block are final).
"""

from __future__ import annotations

import argparse
import ctypes
import math
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from mixscale.nets import MSDNet
from mixscale.nets import msd_lean as lean

KERNEL_C = r"""
/* Shifted sum of one MS-D layer's tap products, read from a ring of product rows.
 *
 * Plain C (no Python headers), compiled by compile_kernel below and called through
 * ctypes. Output rows y0..y1-1 of one 2D map:
 *
 *   out[y, x] = relu(bias + sum_{a, b} ring[3a + b][slot(reflect(y + (a - 1) d))][reflect(x + (b - 1) d)])
 *
 * where slot(r) = r % cap: product row r of tap t lives at ring + t * tap_stride + (r % cap) * nx.
 * Reflection does not repeat the edge and is valid for d < ny and d < nx.
 */
#include <stddef.h>

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define MS_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define MS_CLONES
#endif

static inline long reflect(long i, long n)
{
    if (i < 0) i = -i;
    if (i >= n) i = 2 * (n - 1) - i;
    return i;
}

static inline void add_shifted(float *restrict o, const float *restrict s, long nx, long off)
{
    long lo = off < 0 ? -off : 0, hi = off > 0 ? nx - off : nx;
    for (long x = lo; x < hi; x++) o[x] += s[x + off];
    for (long x = 0; x < lo; x++) o[x] += s[-(x + off)];
    for (long x = hi; x < nx; x++) o[x] += s[2 * (nx - 1) - (x + off)];
}

MS_CLONES
void msd_ring_layer(const float *ring, long tap_stride, long cap, long ny, long nx, long d, float bias,
                    float *out, long y0, long y1)
{
    for (long y = y0; y < y1; y++) {
        float *restrict o = out + y * nx;
        for (long x = 0; x < nx; x++) o[x] = bias;
        for (long a = 0; a < 3; a++) {
            long slot = reflect(y + (a - 1) * d, ny) % cap;
            for (long b = 0; b < 3; b++)
                add_shifted(o, ring + (3 * a + b) * tap_stride + slot * nx, nx, (b - 1) * d);
        }
        for (long x = 0; x < nx; x++) o[x] = o[x] > 0.0f ? o[x] : 0.0f;
    }
}
"""

BAND_ROWS = 64


def ring_rows(block_dilations, height: int, band: int) -> int:
    """Rows per product map of the ring for one block of layers (``[[d per channel] per layer]``).

    Layer ``l`` lags the front by at most the largest dilations of the layers before it
    (their maps must be final first) plus twice its own (its product rows reach ``d``
    past the output rows it finishes, and it finishes rows ``d`` behind what it can read).
    """
    lag, need = 0, 0
    for layer in block_dilations:
        need = max(need, lag + 2 * max(layer))
        lag += max(layer)
    return min(height, band * math.ceil((band + need) / band))


def banded_block(kernel, flat, ring, block_weight, inner_weights, biases, dilations, k0: int, width: int,
                 shape, band: int) -> None:
    """Write the maps of one block of layers (all images) into ``flat``.

    Parameters
    ----------
    kernel : ctypes function
        From :func:`compile_kernel`.
    flat : (maps, N * H * W) Tensor
        The map buffer; maps ``k0 ..`` of the block are written.
    ring : (taps * width * layers, cap * W) Tensor
        Contiguous scratch (``cap`` from :func:`ring_rows`).
    block_weight : (taps * width * layers, k0) Tensor
        Weights of the block's layers for the maps before the block.
    inner_weights : list of (taps * width, width * l) Tensors
        Layer ``l``'s weights for the maps made earlier in the block.
    biases, dilations : per-layer ``(width,)`` Tensors and lists of ints
    shape : (N, H, W)
    """
    n, h, w = shape
    for b in range(n):
        state = _Wavefront(kernel, flat, ring, inner_weights, biases, dilations, k0, width, b * h * w, h, w)
        for r0 in range(0, h, band):
            r1 = min(h, r0 + band)
            state.check_room(r1)
            s = r0 % state.cap * w
            src = flat[:k0, state.base + r0 * w : state.base + r1 * w]
            dst = ring[:, s : s + (r1 - r0) * w]
            if k0 == 1:  # the library's k=1 product is slow
                torch.mul(block_weight, src, out=dst)
            else:
                torch.mm(block_weight, src, out=dst)
            state.advance(r1)


class _Wavefront:
    """Progress of the layers of one block over one image: rows final per channel, rows of
    products completed with the block's own maps per layer."""

    def __init__(self, kernel, flat, ring, inner_weights, biases, dilations, k0, width, base, h, w):
        self.kernel, self.flat, self.ring, self.inner = kernel, flat, ring, inner_weights
        self.bias = [float(v) for layer in biases for v in layer]
        self.dil = [d for layer in dilations for d in layer]
        self.k0, self.width, self.base, self.h, self.w = k0, width, base, h, w
        self.taps = 9
        self.cap = ring.shape[1] // w
        self.done = [0] * len(self.dil)  # output rows final, per channel
        self.inner_done = [0] * len(inner_weights)  # product rows holding the in-block maps' terms, per layer

    def check_room(self, r1: int) -> None:
        """Writing product rows up to ``r1`` overwrites rows below ``r1 - cap``: none may still be needed."""
        low = min([max(0, y - d) for y, d in zip(self.done, self.dil) if y < self.h] +
                  [y for y, wt in zip(self.inner_done, self.inner) if wt.shape[1] and y < self.h] + [self.h])
        if r1 - self.cap > low:
            raise RuntimeError(f"ring of {self.cap} rows too short: row {low} still needed, band ends at {r1}")

    def advance(self, front: int) -> None:
        """Finish every output row that the product rows below ``front`` allow, layer by layer."""
        ready = front
        for layer, inner in enumerate(self.inner):
            avail = min(front, ready)
            if inner.shape[1] and avail > self.inner_done[layer]:
                self._add_inner(layer, inner, self.inner_done[layer], avail)
            self.inner_done[layer] = avail
            for j in range(self.width):
                c = layer * self.width + j
                y0, d = self.done[c], self.dil[c]
                y1 = self.h if avail >= self.h else max(y0, avail - d)
                if y1 > y0:
                    out = self.flat[self.k0 + c, self.base :]
                    self.kernel(self.ring[c * self.taps].data_ptr(), self.ring.stride(0), self.cap, self.h, self.w,
                                d, self.bias[c], out.data_ptr(), y0, y1)
                self.done[c] = y1
            ready = min(ready, *self.done[layer * self.width : (layer + 1) * self.width])

    def _add_inner(self, layer: int, inner: torch.Tensor, y0: int, y1: int) -> None:
        """Product rows ``y0..y1-1`` of ``layer`` += its weights @ the maps made earlier in the block."""
        per, w = self.taps * self.width, self.w
        maps = self.flat[self.k0 : self.k0 + inner.shape[1]]
        while y0 < y1:  # split where the ring wraps
            s = y0 % self.cap
            rows = min(y1 - y0, self.cap - s)
            dst = self.ring[layer * per : (layer + 1) * per, s * w : (s + rows) * w]
            dst.addmm_(inner, maps[:, self.base + y0 * w : self.base + (y0 + rows) * w])
            y0 += rows


def compile_kernel(folder: Path):
    """Build the C kernel with ``cc`` and return the ctypes function."""
    src, lib = folder / "ring.c", folder / "ring.so"
    src.write_text(KERNEL_C)
    subprocess.run(["cc", "-O3", "-shared", "-fPIC", "-std=c99", str(src), "-o", str(lib)], check=True)
    fn = ctypes.CDLL(str(lib)).msd_ring_layer
    c_long, ptr = ctypes.c_long, ctypes.c_void_p
    fn.argtypes = [ptr, c_long, c_long, c_long, c_long, c_long, ctypes.c_float, ptr, c_long, c_long]
    return fn


def banded_forward(kernel, x, weights, biases, final_weight, final_bias, dilations, block: int, band: int,
                   buf: torch.Tensor | None = None):
    """The lean forward with every block banded; returns the output and the map buffer.

    ``buf`` (flat, float32) is reused when large enough, as the library's pool reuses its buffers.
    """
    n, c_in, h, w = x.shape
    width, depth = weights[0].shape[0], len(weights)
    total, rows = c_in + depth * width, 9 * width * block
    size = total * n * h * w + rows * h * w
    buf = x.new_empty(size) if buf is None or buf.numel() < size else buf[:size]
    flat = buf[: total * n * h * w].view(total, n * h * w)
    flat[:c_in] = x.transpose(0, 1).reshape(c_in, -1)
    for i0 in range(0, depth, block):
        i1, k0 = min(depth, i0 + block), c_in + i0 * width
        cap = ring_rows(dilations[i0:i1], h, band)
        ring = buf[total * n * h * w:][: 9 * width * (i1 - i0) * cap * w].view(-1, cap * w)
        inner = [lean.flat_weight(weights[i])[:, k0:k0 + (i - i0) * width] for i in range(i0, i1)]
        banded_block(kernel, flat, ring, lean._block_weight(weights, i0, i1, k0), inner, biases[i0:i1],
                     dilations[i0:i1], k0, width, (n, h, w), band)
    out = torch.addmm(final_bias[:, None], final_weight.view(final_weight.shape[0], total), flat)
    return out.view(-1, n, h, w).transpose(0, 1), flat


def check(kernel, block, band) -> float:
    """Largest difference of the maps from the library's lean forward over several shapes."""
    worst = 0.0
    for h, w, depth, width, n, dil in [(512, 512, 100, 1, 1, None), (37, 53, 12, 1, 1, None),
                                       (130, 70, 20, 2, 2, None), (200, 190, 15, 1, 1, [30, 1, 25, 40, 2])]:
        torch.manual_seed(0)
        net = MSDNet(depth=depth, width=width, out_channels=2, **({} if dil is None else {"dilations": dil}))
        params = _params_with_output_weights(net)
        x = torch.randn(n, 1, h, w)
        with torch.no_grad():
            ref_out, ref = lean.lean_forward(x, *params, keep_buffer=True, block=block)
            out, flat = banded_forward(kernel, x, *params, block=block, band=band)
        maps = ref.view(ref.shape[0], -1)[: flat.shape[0]]
        worst = max(worst, (maps - flat).abs().max().item(), (out - ref_out).abs().max().item())
    return worst


def _params_with_output_weights(net):
    """The lean forward's parameter arguments, the final weights (zero at initialisation) drawn at random."""
    with torch.no_grad():
        net.final_weight.normal_(0, 0.1)
    return ([p.detach() for p in net.weights], [p.detach() for p in net.biases], net.final_weight.detach(),
            net.final_bias.detach(), net.channel_dilations)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--band", type=int, default=BAND_ROWS, help="image rows per band of products")
    p.add_argument("--block", type=int, default=8, help="layers per block")
    p.add_argument("--pairs", type=int, default=12)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        kernel = compile_kernel(Path(tmp))
        print(f"largest difference of the maps from the lean forward: {check(kernel, args.block, args.band):.2e}")
        torch.manual_seed(0)
        params = _params_with_output_weights(MSDNet(depth=100, width=1, out_channels=2))
        x, pool = torch.randn(1, 1, 512, 512), lean.ScratchPool()
        buf = torch.empty((101 + 9 * args.block) * 512 * 512)
        runs = {"lean": lambda: lean.lean_forward(x, *params, keep_buffer=False, pool=pool, block=args.block),
                "banded": lambda: banded_forward(kernel, x, *params, block=args.block, band=args.band, buf=buf)}
        times = {name: [] for name in runs}
        with torch.no_grad():
            for f in runs.values():
                f()
            for r in range(args.pairs):
                for name in (["lean", "banded"] if r % 2 == 0 else ["banded", "lean"]):
                    t0 = time.perf_counter()
                    runs[name]()
                    times[name].append(time.perf_counter() - t0)
    ratio = statistics.median(b / a for a, b in zip(times["lean"], times["banded"]))
    print(f"512^2 depth 100 forward, {args.block}-layer blocks, {args.band}-row bands: "
          f"lean {statistics.median(times['lean']):.3f} s, banded {statistics.median(times['banded']):.3f} s, "
          f"banded/lean per pair {ratio:.3f}")


if __name__ == "__main__":
    main()
