"""Memory-lean MS-D block: one buffer of maps forward, one of gradients backward.

The whole dense block (all hidden layers and the final 1x1 layer) is one autograd
Function. Forward writes layer ``i``'s maps into slot ``i`` of a preallocated buffer
and reads slots ``0..i-1``; nothing per layer is stored for autograd. Backward walks
the layers in reverse with a second buffer of the same size that accumulates the
gradient with respect to every map, so peak memory is two buffers of
``in_channels + depth * width`` maps (plus the product maps of one block of layers),
whatever the depth.

Buffers are laid out channels-first, ``(maps, N, *spatial)``, so that the maps a
layer reads are one contiguous ``(k, N * pixels)`` matrix. Reflect indexing is the
same for every input map, so a layer's dilated convolution is one matrix product
``(width * taps, k) @ (k, N * pixels)`` followed by a shifted sum of the ``taps``
product maps with the reflect boundary (:mod:`mixscale.nets.msd_shift`). Layers are
taken a block at a time, so the products of the older maps for a whole block are one
matrix product. Backward is the two matrix products of the same shapes plus the exact
adjoint of the shifted sum.

The buffers are lent by a :class:`ScratchPool` kept by the network, so repeated calls
reuse memory instead of having fresh pages zeroed. Under CUDA autocast the maps are
stored in half precision (see :func:`map_dtype`).
"""

from __future__ import annotations

import math
import threading
import weakref

import torch

from .msd_shift import HALF, shift_sum, shift_sum_adjoint, tap_offsets


def flat_weight(weight: torch.Tensor) -> torch.Tensor:
    """``(width, k, 3, 3[, 3]) -> (width * taps, k)``: row ``j * taps + t`` is tap ``t`` of channel ``j``."""
    width, k = weight.shape[:2]
    return weight.reshape(width, k, -1).transpose(1, 2).reshape(-1, k)


def _alias(t: torch.Tensor) -> torch.Tensor:
    """A tensor on ``t``'s memory with its own version counter.

    The backward writes its scratch into the rows after the maps of the buffer that
    autograd saved; through this alias, the saved buffer's version stays the same, so
    a second backward (``retain_graph=True``) still accepts it.
    """
    return t.new_empty(0).set_(t.untyped_storage(), t.storage_offset(), t.shape, t.stride())


class ScratchPool:
    """The lean block's big buffers, kept between calls and lent out again (CPU only).

    Fresh memory from the operating system is zeroed page by page on first touch:
    for a depth-100 MS-D on a 512x512 image that was about 44,000 page faults and a
    tenth of a second of system time per forward, and three times that per training
    step. The pool lends a buffer as a tensor of its own; when the last user lets go
    of it (the end of a forward, or autograd freeing the graph after backward) it
    comes back to the pool, so a buffer that a pending backward still needs is never
    lent twice. A request takes the smallest idle buffer that is large enough; one
    that none fits lets the smaller idle buffers go before a new one is made (tiles
    of several sizes would otherwise each leave one resident). On
    CUDA, PyTorch's caching allocator already does this, and the pool allocates
    directly.

    Parameters
    ----------
    keep : int
        Most idle buffers kept; the smallest go first.
    max_idle : int
        An idle buffer not lent again within this many requests is let go, so a
        large buffer of an occasional call (validation on whole images between
        training steps on patches) does not stay resident.
    """

    def __init__(self, keep: int = 4, max_idle: int = 8):
        self.keep, self.max_idle = keep, max_idle
        self._idle: list[tuple[torch.Tensor, int]] = []  # (buffer, request count when it came back)
        self._requests = 0
        self._lock = threading.RLock()  # a finalizer can run inside ``take`` on the same thread

    def take(self, shape, like: torch.Tensor) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` with ``like``'s dtype and device."""
        if like.device.type != "cpu":
            return like.new_empty(shape)
        numel = math.prod(shape)
        with self._lock:
            self._requests += 1
            self._idle = [(t, at) for t, at in self._idle if self._requests - at <= self.max_idle]
            fits = [t for t, _ in self._idle if t.dtype == like.dtype and t.numel() >= numel]
            base = min(fits, key=torch.Tensor.numel) if fits else None
            if base is None:  # the new buffer will serve the smaller ones' requests too: let them go first
                self._idle = [(t, at) for t, at in self._idle if t.dtype != like.dtype or t.numel() > numel]
            self._idle = [(t, at) for t, at in self._idle if t is not base]
        if base is None:
            base = like.new_empty(numel)
        lent = _alias(base[:numel].view(shape))
        weakref.finalize(lent, self._give_back, base).atexit = False
        return lent

    def _give_back(self, base: torch.Tensor) -> None:
        with self._lock:
            self._idle.append((base, self._requests))
            self._idle.sort(key=lambda e: e[0].numel())
            del self._idle[: max(0, len(self._idle) - self.keep)]

    @property
    def idle_bytes(self) -> int:
        """Bytes held by idle buffers."""
        with self._lock:
            return sum(t.numel() * t.element_size() for t, _ in self._idle)

    def clear(self) -> None:
        """Let go of every idle buffer (their memory returns to the system)."""
        with self._lock:
            self._idle = []

    def __deepcopy__(self, memo):  # a copied network starts with an empty pool of its own
        return ScratchPool(self.keep, self.max_idle)

    def __reduce__(self):
        return ScratchPool, (self.keep, self.max_idle)


def _alloc(pool: ScratchPool | None, shape, like: torch.Tensor) -> torch.Tensor:
    return like.new_empty(shape) if pool is None else pool.take(shape, like)


# Layers are taken in blocks whose products share one matrix product over the older maps
# (see ``lean_forward`` and ``lean_backward``). A block's product maps live in extra rows at
# the end of the map buffer, used by the forward and again by the backward. Training keeps
# them to about TRAIN_BLOCK_ROWS maps (with the gradient buffer, 512^2 at depth 100 stays
# within 300 MB: 6 layers in 2D, 2 in 3D); inference, which holds no gradient buffer, takes
# INFER_BLOCK_ROWS (8 layers in 2D). Longer blocks make denser matrix products. The budgets
# are for 4-byte maps: half-precision maps take twice the rows in the same bytes (measured on
# a CPU with native bfloat16, 4x128^2 and 1x512^2 at depth 100: 13 % and 8 % faster steps
# than with 54 rows; docs/performance.md).
TRAIN_BLOCK_ROWS = 54
INFER_BLOCK_ROWS = 72


def block_layers(rows: int, width: int, spatial_dims: int) -> int:
    """Layers per block for a budget of ``rows`` product maps (at least one layer)."""
    return max(1, rows // (width * 3**spatial_dims))


def _blocks(depth: int, block: int):
    return [(i0, min(i0 + block, depth)) for i0 in range(0, depth, block)]


def _block_weight(weights, i0: int, i1: int, k0: int) -> torch.Tensor:
    """Rows of layers ``i0..i1-1`` and columns of the maps before the block: ``(sum width*taps, k0)``."""
    return torch.cat([flat_weight(w)[:, :k0] for w in weights[i0:i1]])


def _layout(x_shape, weights, block: int | None, rows_budget: int, dtype: torch.dtype):
    """Sizes shared by forward and backward.

    Returns ``(layers per block, total maps, width, tap offsets, scratch rows)``;
    ``block`` defaults to what ``rows_budget`` 4-byte product maps allow (twice the rows
    for half-precision maps: the same bytes).
    """
    c_in, spatial = x_shape[1], x_shape[2:]
    width = weights[0].shape[0] if weights else 0
    offsets = tap_offsets(len(spatial))
    rows_budget = rows_budget * 2 if dtype in HALF else rows_budget
    block = block or block_layers(rows_budget, max(width, 1), len(spatial))
    scratch = width * len(offsets) * min(block, len(weights))
    return block, c_in + len(weights) * width, width, offsets, scratch


def lean_forward(x, weights, biases, final_weight, final_bias, dilations, *, keep_buffer: bool,
                 block: int | None = None, pool: ScratchPool | None = None):
    """Run the block; return the output ``(N, C_out, *spatial)`` and the map buffer (or None).

    Layers are taken ``block`` at a time: the products of all maps that exist before a
    block with the weights of every layer in it are one matrix product, so the buffer
    is streamed once per block instead of once per layer; each layer then adds the
    products of the few maps made inside the block.

    Parameters
    ----------
    x : (N, C_in, *spatial) Tensor
    weights, biases : lists of per-layer ``(width, k, 3, ...)`` and ``(width,)`` Tensors
    final_weight : (C_out, C_in + depth * width, 1, ...) Tensor
    dilations : list of per-layer lists of ints
    block : int, optional
        Layers per matrix product (default from :data:`TRAIN_BLOCK_ROWS` when the buffer
        is kept for a backward, else :data:`INFER_BLOCK_ROWS`; twice that in half precision).
    pool : ScratchPool, optional
        Where the buffer comes from (and goes back to once unused).

    Returns
    -------
    out : (N, C_out, *spatial) Tensor
    buffer : (C_in + depth * width + scratch, N, *spatial) Tensor or None
        The maps, then the scratch rows that held the products (reused by backward).
    """
    n, c_in, *spatial = x.shape
    rows_budget = TRAIN_BLOCK_ROWS if keep_buffer else INFER_BLOCK_ROWS
    block, total, width, offsets, scratch = _layout(x.shape, weights, block, rows_budget, x.dtype)
    taps, rows = len(offsets), width * len(offsets)
    buf = _alloc(pool, (total + scratch, n, *spatial), x)
    buf[:c_in] = x.transpose(0, 1)
    flat = buf.view(total + scratch, -1)
    scratch_maps = buf[total:]
    for i0, i1 in _blocks(len(weights), block):
        k0 = c_in + i0 * width
        prods = scratch_maps[: rows * (i1 - i0)]
        _products(_block_weight(weights, i0, i1, k0), flat[:k0], prods.view(rows * (i1 - i0), -1))
        for i in range(i0, i1):
            k = c_in + i * width
            prod = prods[(i - i0) * rows : (i - i0 + 1) * rows]
            if k > k0:  # products of the maps made earlier in this block
                prod.view(rows, -1).addmm_(flat_weight(weights[i])[:, k0:k], flat[k0:k])
            for j in range(width):
                d = dilations[i][j]
                z = shift_sum(prod[j * taps : (j + 1) * taps], d, offsets, spatial, out=buf[k + j])
                z.add_(biases[i][j]).relu_()
    out = torch.addmm(final_bias[:, None], final_weight.view(final_weight.shape[0], total), flat[:total])
    out = out.view(-1, n, *spatial).transpose(0, 1)
    return out, (buf if keep_buffer else None)


def _products(weight: torch.Tensor, maps: torch.Tensor, out: torch.Tensor) -> None:
    """``out = weight @ maps``; a single map is a broadcast product (the library's k=1 product is slow)."""
    if maps.shape[0] == 1:
        torch.mul(weight, maps, out=out)
    else:
        torch.mm(weight, maps, out=out)


def lean_backward(grad_out, buf, weights, final_weight, dilations, c_in, *, block: int | None = None,
                  pool: ScratchPool | None = None):
    """Gradients of the block from ``dL/d output``; see the module docstring for the method.

    Blocks of layers are walked in reverse. Inside a block, each layer's product
    gradients update the gradients of the maps made in the block at once; their
    contributions to the older maps (gradient buffer) and all the block's weight
    gradients are one matrix product each per block.

    Parameters
    ----------
    grad_out : (N, C_out, *spatial) Tensor
    buf : (C_in + depth * width + scratch, N, *spatial) Tensor
        From :func:`lean_forward` with the same ``block``; its scratch rows are overwritten.
    pool : ScratchPool, optional
        Where the gradient buffer comes from.

    Returns
    -------
    grad_x, [grad_weight_i], [grad_bias_i], grad_final_weight, grad_final_bias
    """
    n, spatial = buf.shape[1], buf.shape[2:]
    block, total, width, offsets, scratch = _layout((n, c_in, *spatial), weights, block, TRAIN_BLOCK_ROWS,
                                                     buf.dtype)
    taps, rows = len(offsets), width * len(offsets)
    flat = buf.view(buf.shape[0], -1)[:total]
    g_out = grad_out.transpose(0, 1).reshape(grad_out.shape[1], -1)
    fw = final_weight.view(final_weight.shape[0], total)
    grad_fw = (g_out @ flat.t()).view_as(final_weight)
    grad_fb = g_out.sum(1, dtype=_sum_dtype(g_out))
    gbuf = _alloc(pool, (total, g_out.shape[1]), g_out)
    torch.mm(fw.t(), g_out, out=gbuf)  # the final layer's backward, written straight into the gradient buffer
    scratch_maps = _alias(buf[total:total + scratch])
    grad_w = [torch.empty_like(w) for w in weights]
    # float32 scratch of one layer's product gradients for half-precision maps, made once per backward
    work = buf.new_empty((taps, n, *spatial), dtype=torch.float32) if buf.dtype in HALF else None
    for i0, i1 in reversed(_blocks(len(weights), block)):
        k0 = c_in + i0 * width
        g_prods = scratch_maps[: rows * (i1 - i0)]
        for i in reversed(range(i0, i1)):
            k = c_in + i * width
            g_prod = g_prods[(i - i0) * rows : (i - i0 + 1) * rows]
            _layer_product_grads(gbuf, buf, g_prod, k, width, dilations[i], offsets, spatial, work)
            if k > k0:  # maps made earlier in this block: their gradients are needed next
                gbuf[k0:k].addmm_(flat_weight(weights[i])[:, k0:k].t(), g_prod.view(rows, -1))
        g_blk = g_prods.view(rows * (i1 - i0), -1)
        gbuf[:k0].addmm_(_block_weight(weights, i0, i1, k0).t(), g_blk)
        read = g_blk @ flat[: c_in + (i1 - 1) * width].t()  # every map a layer of the block reads
        for i in range(i0, i1):
            k = c_in + i * width
            _set_weight_grad(grad_w[i], read[(i - i0) * rows : (i - i0 + 1) * rows, :k], width, taps)
    grad_x = gbuf[:c_in].view(c_in, n, *spatial).transpose(0, 1).clone()  # no view keeps the buffer alive
    # every map's gradient is final (after its ReLU) once its layer is done: all bias gradients in one sum
    made = gbuf[c_in:total].view(len(weights), width, gbuf.shape[1])
    grad_b = list(made.sum(2, dtype=_sum_dtype(gbuf)).unbind(0))
    return grad_x, grad_w, grad_b, grad_fw, grad_fb


def _sum_dtype(t: torch.Tensor) -> torch.dtype:
    """Sums of half-precision maps are taken in float32."""
    return torch.float32 if t.dtype in HALF else t.dtype


def _layer_product_grads(gbuf, buf, g_prod, k, width, dilations, offsets, spatial, work=None) -> None:
    """ReLU and shift adjoints of one layer: applies the ReLU to its rows of ``gbuf``, fills ``g_prod``.

    ``work``: float32 scratch ``(taps, N, *spatial)`` for half-precision maps (see :func:`shift_sum_adjoint`).
    """
    taps = len(offsets)
    for j in range(width):
        g_z = gbuf[k + j].view(buf.shape[1:])
        # ReLU (this map's gradient is final here): one fused pass, a tenth of the time of a mask and a fill
        torch.ops.aten.threshold_backward.grad_input(g_z, buf[k + j], 0, grad_input=g_z)
        d = dilations[j]
        shift_sum_adjoint(g_z, d, offsets, spatial, out=g_prod[j * taps : (j + 1) * taps], work=work)


def _set_weight_grad(grad: torch.Tensor, rows_by_maps: torch.Tensor, width: int, taps: int) -> None:
    """Write ``(width * taps, k)`` product gradients into a ``(width, k, 3, ...)`` weight's gradient."""
    grad.view(width, grad.shape[1], taps).copy_(rows_by_maps.reshape(width, taps, -1).transpose(1, 2))


def _cast(dtype, weights, biases, final_weight, final_bias):
    """The parameters in the storage dtype (no copy when they already are)."""
    return [w.to(dtype) for w in weights], [b.to(dtype) for b in biases], final_weight.to(dtype), final_bias.to(dtype)


class LeanMSDFunction(torch.autograd.Function):
    """The MS-D block as one autograd node (first derivatives only).

    The maps are stored in ``dtype`` (the parameters' own, or half precision under
    CUDA autocast); gradients are returned in the dtypes of the inputs.
    """

    @staticmethod
    def forward(ctx, x, final_weight, final_bias, dilations, pool, dtype, depth, *params):
        weights, biases, fw, fb = _cast(dtype, params[:depth], params[depth:], final_weight, final_bias)
        out, buf = lean_forward(x.to(dtype), weights, biases, fw, fb, dilations, keep_buffer=True, pool=pool)
        ctx.save_for_backward(buf, fw, *weights)
        ctx.dilations, ctx.c_in, ctx.pool = dilations, x.shape[1], pool
        ctx.dtypes = [t.dtype for t in (x, final_weight, final_bias, *params)]
        return out

    @staticmethod
    def backward(ctx, grad_out):
        buf, final_weight, *weights = ctx.saved_tensors
        with torch.autocast(device_type=buf.device.type, enabled=False):  # a backward called under autocast
            gx, gw, gb, gfw, gfb = lean_backward(grad_out.to(buf.dtype).contiguous(), buf, weights, final_weight,
                                                 ctx.dilations, ctx.c_in, pool=ctx.pool)
        gx, gfw, gfb, *gp = [g.to(d) for g, d in zip([gx, gfw, gfb, *gw, *gb], ctx.dtypes)]
        return (gx, gfw, gfb, None, None, None, None, *gp)


def map_dtype(x: torch.Tensor, param_dtype: torch.dtype) -> torch.dtype:
    """The dtype the lean block stores its maps in.

    Under CUDA autocast with float16 or bfloat16, the maps (and the products) are
    kept in that half precision: half the memory, tensor-core products with float32
    accumulation. Under CPU autocast with bfloat16, on a CPU with native bfloat16
    products (:func:`cpu_has_bf16`), the maps are bfloat16 too (half the memory and
    traffic). Anywhere else, including CPU autocast on a CPU that would emulate
    bfloat16, the parameters' dtype.
    """
    kind = x.device.type
    if kind in ("cuda", "cpu") and torch.is_autocast_enabled(kind) and param_dtype == torch.float32:
        half = torch.get_autocast_dtype(kind)
        if kind == "cuda" and half in HALF:
            return half
        if kind == "cpu" and half == torch.bfloat16 and cpu_has_bf16():
            return half
    return param_dtype


def cpu_has_bf16() -> bool:
    """Whether this CPU has native bfloat16 products (AVX-512 BF16 or AMX tiles).

    oneDNN also computes bfloat16 on plain AVX-512 by emulation, about 3x slower than float32
    (a 3x3 convolution over 4x64x128²: 53 ms against 19 ms on the development machine, which lacks
    both flags); there the maps stay float32.
    """
    cpu = getattr(torch, "cpu", None)
    checks = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    try:
        return any(bool(check()) for check in checks if check is not None)
    except RuntimeError:
        return False


def lean_msd(x, weights, biases, final_weight, final_bias, dilations, pool: ScratchPool | None = None,
             dtype: torch.dtype | None = None) -> torch.Tensor:
    """MS-D block output; under ``torch.no_grad`` only the map buffer and the output are kept.

    Parameters
    ----------
    x : (N, C_in, *spatial) Tensor
    weights, biases, final_weight, final_bias, dilations
        As in :func:`lean_forward`.
    pool : ScratchPool, optional
        Lends the buffers and takes them back once unused.
    dtype : torch.dtype, optional
        Storage dtype of the maps; default :func:`map_dtype` (half precision under
        CUDA autocast, else the parameters' dtype). Autocast itself is switched off
        inside the block, whose products go into preallocated buffers.

    Returns
    -------
    (N, C_out, *spatial) Tensor
        In the storage dtype.
    """
    dtype = dtype or map_dtype(x, final_weight.dtype)
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or final_weight.requires_grad or any(w.requires_grad for w in weights)
    )
    with torch.autocast(device_type=x.device.type, enabled=False):
        if not needs_grad:
            ws, bs, fw, fb = _cast(dtype, weights, biases, final_weight, final_bias)
            return lean_forward(x.to(dtype), ws, bs, fw, fb, dilations, keep_buffer=False, pool=pool)[0]
        return LeanMSDFunction.apply(x, final_weight, final_bias, dilations, pool, dtype, len(weights), *weights,
                                     *biases)
