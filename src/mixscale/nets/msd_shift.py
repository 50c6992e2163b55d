"""Shifted sums of tap maps with the reflect boundary, and their exact adjoints.

A dilated 3x3 (3x3x3) convolution with reflect padding equals a matrix product of the
weights with the input maps, giving one product map per kernel tap, followed by
``sum_t shift_t(products[t])``, where ``shift_t`` reads the map displaced by the tap's
offset times the dilation and reflects (edge not repeated) where that leaves the
image. This module holds that shifted sum (:func:`shift_sum`) and its adjoint
(:func:`shift_sum_adjoint`) in three forms: through reflect padding (differentiable,
for the ``taps`` path), and two unpadded forms for the lean block: matrix products
over strided views inside plus reflected index tables on the ``dilation``-wide border
frame, or, where those tables would be large (3D volumes), shifted and flipped boxes.
"""

from __future__ import annotations

import functools
import itertools
import math

import torch

HALF = (torch.float16, torch.bfloat16)  # half-precision map dtypes, which take their own paths here and in msd_lean


def tap_offsets(spatial_dims: int) -> list[tuple[int, ...]]:
    """Kernel tap positions in weight order: (0, 0), (0, 1), ... (2, 2), and a third axis in 3D."""
    return list(itertools.product(range(3), repeat=spatial_dims))


def _window(offset, dilation, spatial):
    return tuple(slice(o * dilation, o * dilation + s) for o, s in zip(offset, spatial))


def _reflect_index(size: int, dilation: int, side: str, device) -> torch.Tensor:
    """Padded-coordinate indices that the border cells of one side copy (reflect, edge not repeated)."""
    if side == "left":  # padded cell d - m takes padded cell d + m, m = d..1
        return torch.arange(2 * dilation, dilation, -1, device=device)
    return torch.arange(size + dilation - 2, size - 2, -1, device=device)  # cell d+S-1+m takes d+S-1-m


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
    out : Tensor, optional
        Where to write the result ``(N, *spatial)``.
    padded : Tensor, optional
        Scratch for the padded taps ``(taps, N, *(spatial + 2 * dilation))``; only
        used under autograd (the ``taps`` path). Otherwise the interior is summed by
        ``(1, 3)`` matrix products over strided views of the products, and the
        ``dilation``-wide border frame from reflected index tables (or, where those
        would be large, by shifted and flipped boxes).

    Returns
    -------
    (N, *spatial) Tensor
    """
    out = products.new_empty(products.shape[1:]) if out is None else out
    frame = _frame_indices(dilation, tuple(spatial), len(offsets), str(products.device))
    tracked = torch.is_grad_enabled() and products.requires_grad  # the "taps" path differentiates this
    if not tracked and products.is_contiguous() and out.is_contiguous():
        if frame is not None:
            return _shift_sum_framed(products, dilation, spatial, out, frame)
        return _shift_sum_boxes(products, dilation, offsets, spatial, out)
    padded = _padded_scratch(padded, products, dilation, spatial)
    reflect_pad_into(products, padded, dilation)
    out.copy_(padded[(0, slice(None)) + _window(offsets[0], dilation, spatial)])
    for t in range(1, len(offsets)):
        out += padded[(t, slice(None)) + _window(offsets[t], dilation, spatial)]
    return out


def _padded_scratch(padded, like: torch.Tensor, dilation: int, spatial) -> torch.Tensor:
    """``padded`` itself, or a new ``(taps, N, *(spatial + 2 * dilation))`` tensor."""
    if padded is None:
        return like.new_empty((like.shape[0], like.shape[1], *(s + 2 * dilation for s in spatial)))
    return padded


FRAME_INDEX_LIMIT = 1 << 21  # taps x frame pixels; above it (large 3D volumes) flipped slabs are used instead


def _strides(spatial) -> list[int]:
    """Flat strides of a contiguous ``spatial`` grid."""
    return [math.prod(spatial[a + 1:]) for a in range(len(spatial))]


def _reflect(i: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect indices once into ``[0, size)`` (edge not repeated)."""
    i = i.abs()
    return torch.where(i >= size, 2 * (size - 1) - i, i)


@functools.lru_cache(maxsize=64)
def _frame_indices(dilation: int, spatial: tuple, taps: int, device: str):
    """Linear indices of the ``dilation``-wide border frame, and for every tap the reflected
    source pixel of each frame pixel: ``(F,)`` and ``(taps, F)``; None when not worth it.

    Only frame-sized temporaries are made (no whole-image grids): the frame is the
    union over axes ``a`` of the pixels inside along the axes before ``a``, on the
    border along ``a``, and anywhere along the axes after it.
    """
    if any(s <= 2 * dilation for s in spatial):
        return None
    size = math.prod(spatial)
    interior = math.prod(s - 2 * dilation for s in spatial)
    if taps * (size - interior) > FRAME_INDEX_LIMIT:
        return None
    frame = size - interior
    target, sources = torch.empty(frame, dtype=torch.long), torch.empty(taps, frame, dtype=torch.long)
    pos, start = torch.empty(len(spatial), frame, dtype=torch.long), 0
    for a, s_a in enumerate(spatial):
        ranges = [torch.arange(dilation, s - dilation) for s in spatial[:a]]
        ranges.append(torch.cat([torch.arange(dilation), torch.arange(s_a - dilation, s_a)]))
        ranges += [torch.arange(s) for s in spatial[a + 1:]]
        part = torch.cartesian_prod(*ranges).view(-1, len(spatial)).t()
        pos[:, start : start + part.shape[1]] = part
        start += part.shape[1]
    strides = _strides(spatial)
    torch.sort(sum(p * st for p, st in zip(pos, strides)), out=(target, torch.empty(0, dtype=torch.long)))
    pos = torch.stack([target // st % s for st, s in zip(strides, spatial)])  # sorted like the target
    for t, offset in enumerate(tap_offsets(len(spatial))):
        sources[t] = sum(_reflect(p + (o - 1) * dilation, s) * st for p, o, s, st in zip(pos, offset, spatial, strides))
    return target.to(device), sources.to(device)


@functools.lru_cache(maxsize=64)
def _interior_span(dilation: int, spatial: tuple):
    """Flat pixel range ``[lo, lo + m)`` from the first to the last interior pixel, and for each
    group of three taps that differ only along the last axis, its first tap and its shift at
    that tap: ``(lo, m, [(tap, shift)])``.

    Every tap's shifted read of that range stays inside the tap's own map (the range starts
    ``dilation`` pixels in along every axis); pixels of the border frame inside it are read
    wrongly (the flat shift wraps) and are overwritten by the frame pass.
    """
    strides = _strides(spatial)
    lo = dilation * sum(strides)
    m = sum((s - 1 - dilation) * st for s, st in zip(spatial, strides)) + 1 - lo
    groups = [(t, sum((o - 1) * dilation * st for o, st in zip(offset, strides)))
              for t, offset in enumerate(tap_offsets(len(spatial))) if offset[-1] == 0]
    return lo, m, groups


def _span_rows(maps: torch.Tensor, t: int, shift: int, lo: int, m: int, dilation: int) -> torch.Tensor:
    """Taps ``t, t + 1, t + 2`` of ``maps (taps, N, *spatial)`` (contiguous), each read over the
    flat span ``[lo, lo + m)`` of the ``N * pixels`` of a map, displaced by its shift: one ``(3, m)``
    strided view (the three shifts differ by ``dilation``, so the rows sit at map stride plus
    dilation)."""
    start = maps.storage_offset() + t * maps.stride(0) + lo + shift
    return maps.as_strided((3, m), (maps.stride(0) + dilation, 1), start)


def _batch_span(m: int, n: int, image: int) -> int:
    """Length of the flat span from image 0's first interior pixel to image ``n - 1``'s last.

    The images of a map are contiguous, so one span covers them all: the pixels between two
    images' interiors are border-frame pixels (overwritten, or zeroed, by the frame pass), and
    every shifted read stays inside the tap's own map.
    """
    return (n - 1) * image + m


def _add_rows(rows: torch.Tensor, dst: torch.Tensor, first: bool) -> None:
    """``dst (m,) (+)= rows.sum(0)`` for a ``(3, m)`` strided view: one ``(1, 3)`` matrix product in
    single and double precision; in half precision, where the library's product of that shape is
    3 to 4 times slower, two element-wise adds."""
    if rows.dtype in HALF:
        if first:
            torch.add(rows[0], rows[1], out=dst)
        else:
            dst.add_(rows[0]).add_(rows[1])
        dst.add_(rows[2])
    elif first:
        torch.mm(rows.new_ones(1, 3), rows, out=dst.view(1, -1))
    else:
        dst.view(1, -1).addmm_(rows.new_ones(1, 3), rows)


def _shift_sum_framed(products, dilation, spatial, out, frame) -> torch.Tensor:
    """:func:`shift_sum` without padding: shifted reads inside, reflected gathers on the border frame.

    Inside, the three taps of a group read the product maps at one stride (map stride plus
    the dilation), so each group is one ``(1, 3) @ (3, pixels)`` matrix product over a
    strided view of all images at once (:func:`_add_rows`): three passes over the output
    instead of nine.
    """
    taps, n = products.shape[:2]
    lo, m, groups = _interior_span(dilation, tuple(spatial))
    span = _batch_span(m, n, math.prod(spatial))
    dst = out.view(-1)[lo:lo + span]
    for g, (t, shift) in enumerate(groups):
        _add_rows(_span_rows(products, t, shift, lo, span, dilation), dst, first=g == 0)
    target, sources = frame
    flat = products.view(taps, n, -1)
    gathered = torch.gather(flat, 2, sources[:, None, :].expand(taps, n, sources.shape[1]))
    out.view(n, -1).index_copy_(1, target, gathered.sum(0))
    return out


def _shift_sum_adjoint_framed(grad, dilation, spatial, out, frame, work=None) -> torch.Tensor:
    """Adjoint of :func:`_shift_sum_framed`: the interior span copied to the three taps of a group
    at once (strided views), zeros around it, then the frame pixels scattered back.

    The span also holds frame pixels, whose gradient must not reach the plain shifts: they
    are set to zero in ``grad`` while the span is copied and written back afterwards (``grad``
    is left bitwise unchanged, with its version counter advanced).

    Half-precision ``out`` is assembled in the float32 ``work`` (a new one if None) and
    copied over once: the library's ``scatter_add_`` into half-precision maps converts the
    whole tensor to float32 and back, with a fresh allocation each call.
    """
    if out.dtype in HALF:
        work = out.new_empty(out.shape, dtype=torch.float32) if work is None else work
        return out.copy_(_shift_sum_adjoint_framed(grad, dilation, spatial, work, frame))
    taps, n = out.shape[:2]
    lo, m, groups = _interior_span(dilation, tuple(spatial))
    step, image, g = out.stride(0), math.prod(spatial), grad.reshape(n, -1)
    span = _batch_span(m, n, image)
    target, sources = frame
    g_frame = g.index_select(1, target)
    g.index_fill_(1, target, 0)
    src = g.view(-1)[lo:lo + span].expand(3, span)
    for t, shift in groups:
        base = out.storage_offset() + t * step
        head, tail = lo + shift + 2 * dilation, lo + shift + span  # before the last window, after the first
        out.as_strided((3, head), (step, 1), base).zero_()
        out.as_strided((3, n * image - tail), (step, 1), base + tail).zero_()
        _span_rows(out, t, shift, lo, span, dilation).copy_(src)
    g.index_copy_(1, target, g_frame)
    out.view(taps, n, -1).scatter_add_(2, sources[:, None, :].expand(taps, n, sources.shape[1]),
                                       g_frame.to(out.dtype)[None].expand(taps, n, sources.shape[1]))
    return out


def _axis_pieces(offset: int, dilation: int, size: int):
    """How one axis of a tap's shifted map is read: ``[(out slice, source slice, flipped)]``.

    Output pixel ``p`` reads source ``reflect(p + (offset - 1) * dilation)``: a plain
    shift for most pixels and, on the ``dilation``-wide side the shift leaves, a flipped
    slice (reflection without repeating the edge).
    """
    d = dilation
    if offset == 1:
        return [(slice(0, size), slice(0, size), False)]
    if offset == 2:
        return [(slice(0, size - d), slice(d, size), False),
                (slice(size - d, size), slice(size - 1 - d, size - 1), True)]
    return [(slice(0, d), slice(1, d + 1), True), (slice(d, size), slice(0, size - d), False)]


def _tap_boxes(offset, dilation: int, spatial):
    """Boxes partitioning the output of one tap: ``[(out index, source index, flipped axes)]``
    for tensors ``(N, *spatial)``."""
    boxes = []
    for pieces in itertools.product(*[_axis_pieces(o, dilation, s) for o, s in zip(offset, spatial)]):
        out = (slice(None),) + tuple(p[0] for p in pieces)
        src = (slice(None),) + tuple(p[1] for p in pieces)
        boxes.append((out, src, [a + 1 for a, p in enumerate(pieces) if p[2]]))
    return boxes


def _shift_sum_boxes(products, dilation, offsets, spatial, out) -> torch.Tensor:
    """:func:`shift_sum` by boxes: shifted slices, and flipped slabs ``dilation`` thick at the borders."""
    for t, offset in enumerate(offsets):
        for o, src, flip in _tap_boxes(offset, dilation, spatial):
            piece = products[t][src]
            piece = piece.flip(flip) if flip else piece
            if t == 0:
                out[o].copy_(piece)
            else:
                out[o].add_(piece)
    return out


def _shift_sum_adjoint_boxes(grad, dilation, offsets, spatial, out) -> torch.Tensor:
    """Adjoint of :func:`_shift_sum_boxes`: every box of the gradient added back to its source."""
    out.zero_()
    for t, offset in enumerate(offsets):
        for o, src, flip in _tap_boxes(offset, dilation, spatial):
            piece = grad[o]
            out[t][src].add_(piece.flip(flip) if flip else piece)
    return out


def shift_sum_adjoint(grad: torch.Tensor, dilation: int, offsets, spatial, *, out=None, padded=None, work=None):
    """Exact adjoint of :func:`shift_sum`: ``(N, *spatial) -> (taps, N, *spatial)``.

    ``grad`` is read; on the unpadded path with index tables its border-frame pixels are
    zeroed during the call and written back (same values, version counter advanced).
    ``work``, a float32 ``(taps, N, *spatial)`` scratch, is used there for half-precision
    maps (see :func:`_shift_sum_adjoint_framed`); one is made when it is not given.
    """
    taps = len(offsets)
    frame = _frame_indices(dilation, tuple(spatial), taps, str(grad.device))
    tracked = torch.is_grad_enabled() and grad.requires_grad
    if not tracked and grad.is_contiguous() and (out is None or out.is_contiguous()):
        out = grad.new_empty((taps, *grad.shape)) if out is None else out
        if frame is not None:
            return _shift_sum_adjoint_framed(grad, dilation, spatial, out, frame, work)
        return _shift_sum_adjoint_boxes(grad, dilation, offsets, spatial, out)
    padded = _padded_scratch(padded, grad.expand(taps, *grad.shape), dilation, spatial)
    padded.zero_()
    for t, offset in enumerate(offsets):
        padded[(t, slice(None)) + _window(offset, dilation, spatial)] = grad
    centre = reflect_pad_adjoint_(padded, dilation)
    if out is None:
        return centre.clone()
    return out.copy_(centre)
