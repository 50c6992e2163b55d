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

import itertools

import torch
import torch.nn.functional as F


def tap_offsets(spatial_dims: int) -> list[tuple[int, ...]]:
    """Kernel tap positions in weight order: (0, 0), (0, 1), ... (2, 2), and a third axis in 3D."""
    return list(itertools.product(range(3), repeat=spatial_dims))


def flat_weight(weight: torch.Tensor) -> torch.Tensor:
    """``(width, k, 3, 3[, 3]) -> (width * taps, k)``: row ``j * taps + t`` is tap ``t`` of channel ``j``."""
    width, k = weight.shape[:2]
    return weight.reshape(width, k, -1).transpose(1, 2).reshape(-1, k)


def _window(offset, dilation, spatial):
    return tuple(slice(o * dilation, o * dilation + s) for o, s in zip(offset, spatial))


def shift_sum(products: torch.Tensor, dilation: int, offsets, spatial) -> torch.Tensor:
    """``sum_t shift_t(products[t])`` with reflect boundary.

    Parameters
    ----------
    products : (taps, N, *spatial) Tensor
        One map per kernel tap (the matrix product of the weights with the maps).

    Returns
    -------
    (N, *spatial) Tensor
    """
    padded = F.pad(products, (dilation,) * (2 * len(spatial)), mode="reflect")
    out = padded[(0, slice(None)) + _window(offsets[0], dilation, spatial)].clone()
    for t in range(1, len(offsets)):
        out += padded[(t, slice(None)) + _window(offsets[t], dilation, spatial)]
    return out


def shift_sum_adjoint(grad: torch.Tensor, dilation: int, offsets, spatial) -> torch.Tensor:
    """Exact adjoint of :func:`shift_sum`: ``(N, *spatial) -> (taps, N, *spatial)``."""
    taps = len(offsets)
    padded_shape = (taps, grad.shape[0], *(s + 2 * dilation for s in spatial))
    placed = grad.new_zeros(padded_shape)
    for t, offset in enumerate(offsets):
        placed[(t, slice(None)) + _window(offset, dilation, spatial)] = grad
    pad = [dilation] * (2 * len(spatial))
    like = grad.new_empty((taps, grad.shape[0], *spatial))
    if len(spatial) == 2:
        return torch.ops.aten.reflection_pad2d_backward(placed, like, pad)
    return torch.ops.aten.reflection_pad3d_backward(placed, like, pad)


def lean_forward(x, weights, biases, final_weight, final_bias, dilations, *, keep_buffer: bool):
    """Run the block; return the output ``(N, C_out, *spatial)`` and the map buffer (or None).

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
    taps = len(offsets)
    buf = x.new_empty((total, n, *spatial))
    buf[:c_in] = x.transpose(0, 1)
    flat = buf.view(total, -1)
    for i, (w, b) in enumerate(zip(weights, biases)):
        k = c_in + i * width
        prod = (flat_weight(w) @ flat[:k]).view(width * taps, n, *spatial)
        for j in range(width):
            z = shift_sum(prod[j * taps : (j + 1) * taps], dilations[i][j], offsets, spatial)
            buf[k + j] = torch.relu_(z.add_(b[j]))
    out = torch.addmm(final_bias[:, None], final_weight.view(final_weight.shape[0], total), flat)
    out = out.view(-1, n, *spatial).transpose(0, 1)
    return out, (buf if keep_buffer else None)


def lean_backward(grad_out, buf, weights, final_weight, dilations, c_in):
    """Gradients of the block from ``dL/d output``; see the module docstring for the method.

    Returns
    -------
    grad_x, [grad_weight_i], [grad_bias_i], grad_final_weight, grad_final_bias
    """
    total, n, *spatial = buf.shape
    width = weights[0].shape[0] if weights else 0
    offsets = tap_offsets(len(spatial))
    taps = len(offsets)
    flat = buf.view(total, -1)
    g_out = grad_out.transpose(0, 1).reshape(grad_out.shape[1], -1)
    fw = final_weight.view(final_weight.shape[0], total)
    grad_fw = (g_out @ flat.t()).view_as(final_weight)
    grad_fb = g_out.sum(1)
    gbuf = fw.t() @ g_out  # the final layer's backward, written straight into the gradient buffer
    grad_w, grad_b = [None] * len(weights), [None] * len(weights)
    for i in reversed(range(len(weights))):
        k = c_in + i * width
        g_prod = buf.new_empty((width * taps, n, *spatial))
        gb = []
        for j in range(width):
            g_z = gbuf[k + j].view(n, *spatial) * (buf[k + j] > 0)
            gb.append(g_z.sum())
            g_prod[j * taps : (j + 1) * taps] = shift_sum_adjoint(g_z, dilations[i][j], offsets, spatial)
        g_prod = g_prod.view(width * taps, -1)
        grad_w[i] = (g_prod @ flat[:k].t()).view(width, taps, k).transpose(1, 2).reshape(weights[i].shape)
        grad_b[i] = torch.stack(gb)
        gbuf[:k].addmm_(flat_weight(weights[i]).t(), g_prod)
    grad_x = gbuf[:c_in].view(c_in, n, *spatial).transpose(0, 1)
    return grad_x, grad_w, grad_b, grad_fw, grad_fb


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
    """MS-D block output; under ``torch.no_grad`` only the map buffer and the output are kept."""
    needs_grad = torch.is_grad_enabled() and (
        x.requires_grad or final_weight.requires_grad or any(w.requires_grad for w in weights)
    )
    if not needs_grad:
        return lean_forward(x, weights, biases, final_weight, final_bias, dilations, keep_buffer=False)[0]
    return LeanMSDFunction.apply(x, final_weight, final_bias, dilations, len(weights), *weights, *biases)
