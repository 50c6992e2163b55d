"""Memory-lean MS-D block: one buffer of maps forward, one of gradients backward.

The whole dense block (all hidden layers and the final 1x1 layer) is one autograd
Function. Forward writes layer ``i``'s maps into slot ``i`` of a preallocated buffer
and reads slots ``0..i-1``; nothing per layer is stored for autograd. Backward walks
the layers in reverse with a second buffer of the same size that accumulates the
gradient with respect to every map, so peak memory is two buffers of
``in_channels + depth * width`` maps, whatever the depth.

Buffers are laid out channels-first, ``(maps, N, *spatial)``, so that the maps a
layer reads are one contiguous ``(k, N * pixels)`` matrix: each layer's dilated
convolution is one matrix product ``(width * taps, k) @ (k, N * pixels)`` followed by
reflect padding of the ``taps`` product maps and shifted adds (reflect indexing is
the same for every input map, so this equals the convolution exactly). Backward is
the two matrix products of the same shapes plus the exact adjoint of the shifts and
of the reflect padding.
"""

from __future__ import annotations

import functools
import itertools
import math

import torch


def tap_offsets(spatial_dims: int) -> list[tuple[int, ...]]:
    """Kernel tap positions in weight order: (0, 0), (0, 1), ... (2, 2), and a third axis in 3D."""
    return list(itertools.product(range(3), repeat=spatial_dims))


def flat_weight(weight: torch.Tensor) -> torch.Tensor:
    """``(width, k, 3, 3[, 3]) -> (width * taps, k)``: row ``j * taps + t`` is tap ``t`` of channel ``j``."""
    width, k = weight.shape[:2]
    return weight.reshape(width, k, -1).transpose(1, 2).reshape(-1, k)


def _window(offset, dilation, spatial):
    return tuple(slice(o * dilation, o * dilation + s) for o, s in zip(offset, spatial))


def _reflect_index(size: int, dilation: int, side: str, device) -> torch.Tensor:
    """Padded-coordinate indices that the border cells of one side copy (reflect, edge not repeated)."""
    if side == "left":  # padded cell d - m takes padded cell d + m, m = d..1
        return torch.arange(2 * dilation, dilation, -1, device=device)
    return torch.arange(size + dilation - 2, size - 2, -1, device=device)  # cell d+S-1+m takes d+S-1-m


class Workspace:
    """Scratch tensors allocated once per call and reused by every layer.

    Reusing them keeps the allocator from fragmenting (which otherwise inflates the
    resident memory several times over) and avoids page faults on fresh memory.
    """

    def __init__(self, like: torch.Tensor, taps: int, width: int, n: int, spatial, max_dilation: int):
        padded = tuple(s + 2 * max_dilation for s in spatial)
        self.spatial = tuple(spatial)
        self.prod = like.new_empty((width * taps, n, *spatial))
        self.padded = like.new_empty((taps, n, *padded))

    def padded_view(self, dilation: int) -> torch.Tensor:
        return self.padded[(slice(None), slice(None)) + tuple(slice(0, s + 2 * dilation) for s in self.spatial)]


def reflect_pad_into(src: torch.Tensor, dst: torch.Tensor, dilation: int) -> torch.Tensor:
    """Reflect-pad the spatial axes (2 onwards) of ``src`` by ``dilation`` into ``dst``, in place."""
    spatial = src.shape[2:]
    dst[(slice(None), slice(None)) + tuple(slice(dilation, dilation + s) for s in spatial)] = src
    for axis, size in enumerate(spatial, start=2):
        for side, start in (("left", 0), ("right", size + dilation)):
            idx = _reflect_index(size, dilation, side, src.device)
            dst.narrow(axis, start, dilation).copy_(dst.index_select(axis, idx))
    return dst


def reflect_pad_adjoint_(padded: torch.Tensor, dilation: int) -> torch.Tensor:
    """Adjoint of :func:`reflect_pad_into`: fold the borders back (in place); returns the centre view."""
    spatial = [s - 2 * dilation for s in padded.shape[2:]]
    for axis, size in reversed(list(enumerate(spatial, start=2))):
        for side, start in (("left", 0), ("right", size + dilation)):
            idx = _reflect_index(size, dilation, side, padded.device)
            padded.index_add_(axis, idx, padded.narrow(axis, start, dilation))
    return padded[(slice(None), slice(None)) + tuple(slice(dilation, dilation + s) for s in spatial)]


def shift_sum(products: torch.Tensor, dilation: int, offsets, spatial, *, out=None, padded=None) -> torch.Tensor:
    """``sum_t shift_t(products[t])`` with reflect boundary.

    Parameters
    ----------
    products : (taps, N, *spatial) Tensor
        One map per kernel tap (the matrix product of the weights with the maps).
    out, padded : Tensor, optional
        Where to write the result ``(N, *spatial)`` and scratch for the padded taps.

    Returns
    -------
    (N, *spatial) Tensor
    """
    out = products.new_empty(products.shape[1:]) if out is None else out
    frame = _frame_indices(dilation, tuple(spatial), len(offsets), str(products.device))
    tracked = torch.is_grad_enabled() and products.requires_grad  # the "taps" path differentiates this
    if frame is not None and not tracked and products.is_contiguous() and out.is_contiguous():
        return _shift_sum_framed(products, dilation, offsets, spatial, out, frame)
    if padded is None:
        padded = products.new_empty((products.shape[0], products.shape[1], *(s + 2 * dilation for s in spatial)))
    reflect_pad_into(products, padded, dilation)
    out.copy_(padded[(0, slice(None)) + _window(offsets[0], dilation, spatial)])
    for t in range(1, len(offsets)):
        out += padded[(t, slice(None)) + _window(offsets[t], dilation, spatial)]
    return out


FRAME_INDEX_LIMIT = 1 << 21  # taps x frame pixels; above it (large 3D volumes) padding is used instead


def _reflect(i: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect indices once into ``[0, size)`` (edge not repeated)."""
    i = i.abs()
    return torch.where(i >= size, 2 * (size - 1) - i, i)


@functools.lru_cache(maxsize=64)
def _frame_indices(dilation: int, spatial: tuple, taps: int, device: str):
    """Linear indices of the ``dilation``-wide border frame, and for every tap the reflected
    source pixel of each frame pixel: ``(F,)`` and ``(taps, F)``; None when not worth it."""
    if any(s <= 2 * dilation for s in spatial):
        return None
    size = math.prod(spatial)
    interior = math.prod(s - 2 * dilation for s in spatial)
    if taps * (size - interior) > FRAME_INDEX_LIMIT:
        return None
    grids = torch.meshgrid(*[torch.arange(s) for s in spatial], indexing="ij")
    mask = torch.zeros(spatial, dtype=torch.bool)
    for g, s in zip(grids, spatial):
        mask |= (g < dilation) | (g >= s - dilation)
    pos = [g[mask] for g in grids]
    strides = [math.prod(spatial[a + 1:]) for a in range(len(spatial))]
    target = sum(p * st for p, st in zip(pos, strides))
    sources = []
    for offset in tap_offsets(len(spatial)):
        coords = [_reflect(p + (o - 1) * dilation, s) for p, o, s in zip(pos, offset, spatial)]
        sources.append(sum(c * st for c, st in zip(coords, strides)))
    return target.to(device), torch.stack(sources).to(device)


def _shift_sum_framed(products, dilation, offsets, spatial, out, frame) -> torch.Tensor:
    """:func:`shift_sum` without padding: shifted slices inside, reflected gathers on the border frame."""
    taps, n = products.shape[:2]
    inner = (slice(None),) + tuple(slice(dilation, s - dilation) for s in spatial)
    source = [(slice(None),) + _window(o, dilation, tuple(s - 2 * dilation for s in spatial)) for o in offsets]
    view = out[inner]
    torch.add(products[0][source[0]], products[1][source[1]], out=view)
    for t in range(2, taps):
        view += products[t][source[t]]
    target, sources = frame
    flat = products.view(taps, n, -1)
    gathered = torch.gather(flat, 2, sources[:, None, :].expand(taps, n, sources.shape[1]))
    out.view(n, -1).index_copy_(1, target, gathered.sum(0))
    return out


def _shift_sum_adjoint_framed(grad, dilation, offsets, spatial, out, frame) -> torch.Tensor:
    """Adjoint of :func:`_shift_sum_framed`: interior slices copied, frame pixels scattered back."""
    taps, n = out.shape[:2]
    inner = (slice(None),) + tuple(slice(dilation, s - dilation) for s in spatial)
    out.zero_()
    g_inner = grad[inner]
    for t, offset in enumerate(offsets):
        out[t][(slice(None),) + _window(offset, dilation, tuple(s - 2 * dilation for s in spatial))] = g_inner
    target, sources = frame
    g_frame = grad.reshape(n, -1).index_select(1, target)
    out.view(taps, n, -1).scatter_add_(2, sources[:, None, :].expand(taps, n, sources.shape[1]),
                                       g_frame[None].expand(taps, n, sources.shape[1]))
    return out


def shift_sum_adjoint(grad: torch.Tensor, dilation: int, offsets, spatial, *, out=None, padded=None):
    """Exact adjoint of :func:`shift_sum`: ``(N, *spatial) -> (taps, N, *spatial)``."""
    taps = len(offsets)
    frame = _frame_indices(dilation, tuple(spatial), taps, str(grad.device))
    tracked = torch.is_grad_enabled() and grad.requires_grad
    if frame is not None and not tracked and grad.is_contiguous() and (out is None or out.is_contiguous()):
        out = grad.new_empty((taps, *grad.shape)) if out is None else out
        return _shift_sum_adjoint_framed(grad, dilation, offsets, spatial, out, frame)
    if padded is None:
        padded = grad.new_empty((taps, grad.shape[0], *(s + 2 * dilation for s in spatial)))
    padded.zero_()
    for t, offset in enumerate(offsets):
        padded[(t, slice(None)) + _window(offset, dilation, spatial)] = grad
    centre = reflect_pad_adjoint_(padded, dilation)
    if out is None:
        return centre.clone()
    return out.copy_(centre)


# layers whose products share one matrix product over the older maps (see ``lean_forward``):
# each costs ``width * taps`` maps of scratch; backward holds the gradient buffer too, so
# it takes fewer to stay within two buffers plus a little
FORWARD_BLOCK_LAYERS = 8
BACKWARD_BLOCK_LAYERS = 4


def _blocks(depth: int, block: int):
    return [(i0, min(i0 + block, depth)) for i0 in range(0, depth, block)]


def _block_weight(weights, i0: int, i1: int, k0: int) -> torch.Tensor:
    """Rows of layers ``i0..i1-1`` and columns of the maps before the block: ``(sum width*taps, k0)``."""
    return torch.cat([flat_weight(w)[:, :k0] for w in weights[i0:i1]])


def lean_forward(x, weights, biases, final_weight, final_bias, dilations, *, keep_buffer: bool,
                 block: int = FORWARD_BLOCK_LAYERS):
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
    """
    n, c_in, *spatial = x.shape
    width = biases[0].shape[0] if biases else 0
    total = c_in + len(weights) * width
    offsets = tap_offsets(len(spatial))
    taps, rows = len(offsets), width * len(offsets)
    buf = x.new_empty((total, n, *spatial))
    buf[:c_in] = x.transpose(0, 1)
    flat = buf.view(total, -1)
    ws = Workspace(x, taps, width * min(block, max(len(weights), 1)), n, spatial,
                   max((max(d) for d in dilations), default=1))
    for i0, i1 in _blocks(len(weights), block):
        k0 = c_in + i0 * width
        prods = ws.prod[: rows * (i1 - i0)]
        torch.mm(_block_weight(weights, i0, i1, k0), flat[:k0], out=prods.view(rows * (i1 - i0), -1))
        for i in range(i0, i1):
            k = c_in + i * width
            prod = prods[(i - i0) * rows : (i - i0 + 1) * rows]
            if k > k0:  # products of the maps made earlier in this block
                prod.view(rows, -1).addmm_(flat_weight(weights[i])[:, k0:k], flat[k0:k])
            for j in range(width):
                d = dilations[i][j]
                z = shift_sum(prod[j * taps : (j + 1) * taps], d, offsets, spatial, out=buf[k + j],
                              padded=ws.padded_view(d))
                z.add_(biases[i][j]).relu_()
    out = torch.addmm(final_bias[:, None], final_weight.view(final_weight.shape[0], total), flat)
    out = out.view(-1, n, *spatial).transpose(0, 1)
    return out, (buf if keep_buffer else None)


def lean_backward(grad_out, buf, weights, final_weight, dilations, c_in, *, block: int = BACKWARD_BLOCK_LAYERS):
    """Gradients of the block from ``dL/d output``; see the module docstring for the method.

    Blocks of layers are walked in reverse. Inside a block, each layer's product
    gradients update the gradients of the maps made in the block at once; their
    contributions to the older maps (gradient buffer and weight gradients) are one
    matrix product per block.

    Returns
    -------
    grad_x, [grad_weight_i], [grad_bias_i], grad_final_weight, grad_final_bias
    """
    total, n, *spatial = buf.shape
    width = weights[0].shape[0] if weights else 0
    offsets = tap_offsets(len(spatial))
    taps, rows = len(offsets), width * len(offsets)
    flat = buf.view(total, -1)
    g_out = grad_out.transpose(0, 1).reshape(grad_out.shape[1], -1)
    fw = final_weight.view(final_weight.shape[0], total)
    grad_fw = (g_out @ flat.t()).view_as(final_weight)
    grad_fb = g_out.sum(1)
    gbuf = fw.t() @ g_out  # the final layer's backward, written straight into the gradient buffer
    ws = Workspace(buf, taps, width * min(block, max(len(weights), 1)), n, spatial,
                   max((max(d) for d in dilations), default=1))
    mask = torch.empty(buf.shape[1:], dtype=torch.bool, device=buf.device)
    grad_w = [torch.empty_like(w) for w in weights]
    grad_b = [None] * len(weights)
    for i0, i1 in reversed(_blocks(len(weights), block)):
        k0 = c_in + i0 * width
        g_prods = ws.prod[: rows * (i1 - i0)]
        for i in reversed(range(i0, i1)):
            k = c_in + i * width
            g_prod = g_prods[(i - i0) * rows : (i - i0 + 1) * rows]
            grad_b[i] = _layer_product_grads(gbuf, buf, mask, g_prod, k, width, dilations[i], offsets, spatial, ws)
            g_flat = g_prod.view(rows, -1)
            if k > k0:  # maps made earlier in this block: their gradients are needed next
                fl = flat_weight(weights[i])
                gbuf[k0:k].addmm_(fl[:, k0:k].t(), g_flat)
                _set_weight_grad(grad_w[i], g_flat @ flat[k0:k].t(), slice(k0, k), width, taps)
        g_blk = g_prods.view(rows * (i1 - i0), -1)
        gbuf[:k0].addmm_(_block_weight(weights, i0, i1, k0).t(), g_blk)
        older = g_blk @ flat[:k0].t()
        for i in range(i0, i1):
            _set_weight_grad(grad_w[i], older[(i - i0) * rows : (i - i0 + 1) * rows], slice(0, k0), width, taps)
    grad_x = gbuf[:c_in].view(c_in, n, *spatial).transpose(0, 1)
    return grad_x, grad_w, grad_b, grad_fw, grad_fb


def _layer_product_grads(gbuf, buf, mask, g_prod, k, width, dilations, offsets, spatial, ws) -> torch.Tensor:
    """ReLU and shift adjoints of one layer: fills ``g_prod``; returns the bias gradient ``(width,)``."""
    taps = len(offsets)
    gb = []
    for j in range(width):
        g_z = gbuf[k + j].view(buf.shape[1:])
        g_z.masked_fill_(torch.le(buf[k + j], 0, out=mask), 0)  # ReLU; this map's gradient is final here
        gb.append(g_z.sum())
        d = dilations[j]
        shift_sum_adjoint(g_z, d, offsets, spatial, out=g_prod[j * taps : (j + 1) * taps], padded=ws.padded_view(d))
    return torch.stack(gb)


def _set_weight_grad(grad: torch.Tensor, rows_by_maps: torch.Tensor, maps: slice, width: int, taps: int) -> None:
    """Write ``(width * taps, m)`` product gradients into ``grad[:, maps]`` of a ``(width, k, 3, ...)`` weight."""
    block = rows_by_maps.reshape(width, taps, -1).transpose(1, 2)
    grad.view(width, grad.shape[1], taps)[:, maps] = block


class LeanMSDFunction(torch.autograd.Function):
    """The MS-D block as one autograd node (first derivatives only)."""

    @staticmethod
    def forward(ctx, x, final_weight, final_bias, dilations, depth, *params):
        weights, biases = list(params[:depth]), list(params[depth:])
        out, buf = lean_forward(x, weights, biases, final_weight, final_bias, dilations, keep_buffer=True)
        ctx.save_for_backward(buf, final_weight, *weights)
        ctx.dilations, ctx.c_in = dilations, x.shape[1]
        return out

    @staticmethod
    def backward(ctx, grad_out):
        buf, final_weight, *weights = ctx.saved_tensors
        gx, gw, gb, gfw, gfb = lean_backward(grad_out.contiguous(), buf, weights, final_weight, ctx.dilations,
                                             ctx.c_in)
        return (gx, gfw, gfb, None, None, *gw, *gb)


def lean_msd(x, weights, biases, final_weight, final_bias, dilations) -> torch.Tensor:
    """MS-D block output; under ``torch.no_grad`` only the map buffer and the output are kept.

    Under autocast the block runs in the parameters' precision (the products are
    written into preallocated buffers, which autocast cannot retype).
    """
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or final_weight.requires_grad or any(w.requires_grad for w in weights)
    )
    with torch.autocast(device_type=x.device.type, enabled=False):
        x = x.to(final_weight.dtype)
        if not needs_grad:
            return lean_forward(x, weights, biases, final_weight, final_bias, dilations, keep_buffer=False)[0]
        return LeanMSDFunction.apply(x, final_weight, final_bias, dilations, len(weights), *weights, *biases)
