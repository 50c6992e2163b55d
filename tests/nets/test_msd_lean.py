"""The memory-lean MS-D block against the autograd oracles."""

import pytest
import torch

import mixscale.nets.msd_lean as msd_lean
from mixscale.nets import MSDNet
from mixscale.nets.msd_shift import shift_sum, shift_sum_adjoint, tap_offsets


def _net(spatial_dims, cin, cout, depth, width, dilations, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    net = MSDNet(spatial_dims=spatial_dims, in_channels=cin, out_channels=cout, depth=depth, width=width,
                 dilations=dilations).to(dtype)
    with torch.no_grad():  # non-zero final layer and biases, so every gradient path is exercised
        net.final_weight.normal_()
        net.final_bias.normal_()
        for b in net.biases:
            b.normal_(0, 0.1)
    return net


CASES = [
    (2, (2, 2, 23, 19), 2, [1, 4, 2, 3]),
    (2, (3, 1, 17, 26), 1, [2, 1, 5]),
    (3, (2, 2, 11, 12, 13), 2, [1, 3, 2]),
    (3, (1, 1, 9, 8, 10), 1, [2, 1]),
]


@pytest.mark.parametrize("spatial_dims, shape, width, dilations", CASES)
@pytest.mark.parametrize("oracle", ["direct", "taps"])
def test_lean_matches_oracles_float64(spatial_dims, shape, width, dilations, oracle):
    net = _net(spatial_dims, shape[1], 3, 5, width, dilations)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    lean, ref = net(x, impl="lean"), net(x, impl=oracle)
    torch.testing.assert_close(lean, ref, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ref)
    params = [x, *net.parameters()]
    for a, b in zip(torch.autograd.grad(lean, params, g), torch.autograd.grad(ref, params, g)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("spatial_dims, shape", [(2, (2, 1, 7, 6)), (3, (1, 1, 5, 4, 6))])
def test_lean_gradcheck(spatial_dims, shape):
    net = _net(spatial_dims, 1, 2, 3, 2, [1, 2, 3])
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    params = list(net.parameters())

    def f(inp, *ps):
        return torch.func.functional_call(net, dict(zip([n for n, _ in net.named_parameters()], ps)), (inp,))

    assert torch.autograd.gradcheck(f, (x, *params), fast_mode=True)


def test_lean_float32_at_256_matches_float64_oracle():
    net = _net(2, 1, 2, 12, 1, list(range(1, 11)), dtype=torch.float32)
    x = torch.randn(1, 1, 256, 256)
    out = net(x.requires_grad_())
    ref = net.double()(x.double(), impl="taps")
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)


def test_reflect_shift_adjoint_is_exact():
    """<A y, g> == <y, A^T g> for the shifted reflect sums, 2D and 3D, dilation near the border."""
    torch.manual_seed(1)
    for spatial in [(9, 7), (6, 5, 7)]:
        offsets = tap_offsets(len(spatial))
        for d in (1, 2, 4):
            y = torch.randn(len(offsets), 2, *spatial, dtype=torch.float64)
            g = torch.randn(2, *spatial, dtype=torch.float64)
            lhs = (shift_sum(y, d, offsets, spatial) * g).sum()
            rhs = (y * shift_sum_adjoint(g, d, offsets, spatial)).sum()
            torch.testing.assert_close(lhs, rhs, rtol=1e-13, atol=1e-13)


def test_inference_builds_no_graph_and_matches():
    net = _net(2, 1, 2, 6, 1, [1, 2, 3], dtype=torch.float32)
    x = torch.randn(2, 1, 20, 20)
    with torch.no_grad():
        y = net(x)
    assert y.grad_fn is None
    torch.testing.assert_close(y, net(x, impl="taps").detach(), rtol=1e-5, atol=1e-5)


def test_batch_norm_variant_uses_taps_and_lean_refuses_it():
    net = MSDNet(depth=3, norm="batch", dilations=[1, 2])
    assert net(torch.randn(2, 1, 12, 12)).shape == (2, 1, 12, 12)
    with pytest.raises(ValueError, match="impl='lean' does not support norm='batch'"):
        net(torch.randn(2, 1, 12, 12), impl="lean")
    with pytest.raises(ValueError, match="impl='fast'"):
        MSDNet(depth=2, dilations=[1])(torch.randn(1, 1, 8, 8), impl="fast")


@pytest.mark.parametrize("block", [1, 2, 3, 7])
@pytest.mark.parametrize("spatial_dims, shape, width", [(2, (2, 2, 15, 13), 2), (3, (1, 1, 8, 9, 7), 1)])
def test_layer_blocks_of_any_size_are_exact(block, spatial_dims, shape, width):
    """Several blocks (and a last, shorter one) against the taps oracle, forward and backward."""
    from mixscale.nets.msd_lean import lean_backward, lean_forward

    net = _net(spatial_dims, shape[1], 2, 7, width, [1, 2, 3, 1, 4])
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ref = net(x, impl="taps")
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, [x, net.final_weight, net.final_bias, *net.weights, *net.biases], g)
    args = (list(net.weights), list(net.biases), net.final_weight, net.final_bias, net.channel_dilations)
    with torch.no_grad():
        out, buf = lean_forward(x, *args, keep_buffer=True, block=block)
        gx, gw, gb, gfw, gfb = lean_backward(g, buf, list(net.weights), net.final_weight, net.channel_dilations,
                                             shape[1], block=block)
    torch.testing.assert_close(out, ref.detach(), rtol=1e-12, atol=1e-12)
    for a, b in zip([gx, gfw, gfb, *gw, *gb], ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_cpu_autocast_runs_the_block_in_float32(monkeypatch):
    """Lightning's bf16-mixed on a CPU that would emulate bfloat16: the block keeps float32 and matches the run
    without autocast (a CPU with native bfloat16 keeps bfloat16 maps: tests/nets/test_msd_bf16.py)."""
    monkeypatch.setattr(msd_lean, "cpu_has_bf16", lambda: False)
    net = _net(2, 1, 2, 6, 1, [1, 2, 3], dtype=torch.float32)
    x = torch.randn(2, 1, 24, 24)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = net(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, net(x))
    y.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("spatial", [(13, 11), (40, 37), (9, 8, 7), (21, 22, 23)])
@pytest.mark.parametrize("dilation", [1, 2, 3, 5])
def test_framed_and_box_shift_sums_equal_the_padded_shift_sum(spatial, dilation, monkeypatch):
    """Both unpadded paths (reflected index tables on the frame; flipped border slabs) against padding."""
    from mixscale.nets import msd_shift as shift

    offsets = shift.tap_offsets(len(spatial))
    # rows of a larger buffer, as in the block (the interior is read through strided views of its storage);
    # three images: one span covers all their interiors, with border frames between them
    products = torch.randn(len(offsets) + 2, 3, *spatial, dtype=torch.float64)[1:-1]
    with torch.enable_grad():  # under autograd the padded path is taken
        padded = shift.shift_sum(products.clone().requires_grad_(), dilation, offsets, spatial).detach()
    shift._frame_indices.cache_clear()
    framed = shift.shift_sum(products, dilation, offsets, spatial)
    used = shift._frame_indices(dilation, spatial, len(offsets), "cpu") is not None
    assert used == all(s > 2 * dilation for s in spatial)
    monkeypatch.setattr(shift, "FRAME_INDEX_LIMIT", 0)  # no index tables: flipped slabs
    shift._frame_indices.cache_clear()
    boxes = shift.shift_sum(products, dilation, offsets, spatial)
    shift._frame_indices.cache_clear()
    torch.testing.assert_close(framed, padded, rtol=0, atol=1e-13)
    torch.testing.assert_close(boxes, padded, rtol=0, atol=1e-13)


@pytest.mark.parametrize("spatial", [(13, 11), (9, 8, 7), (5, 6, 7)])
@pytest.mark.parametrize("dilation", [1, 3, 4])
@pytest.mark.parametrize("tables", [True, False])
def test_unpadded_adjoints_are_the_adjoints_of_their_shift_sums(spatial, dilation, tables, monkeypatch):
    from mixscale.nets import msd_shift as shift

    if dilation >= min(spatial):
        pytest.skip("reflection needs dilation < size")
    if not tables:
        monkeypatch.setattr(shift, "FRAME_INDEX_LIMIT", 0)
    shift._frame_indices.cache_clear()
    offsets = shift.tap_offsets(len(spatial))
    y = torch.randn(len(offsets), 3, *spatial, dtype=torch.float64)
    g = torch.randn(3, *spatial, dtype=torch.float64)
    g0 = g.clone()
    lhs = (shift.shift_sum(y, dilation, offsets, spatial) * g).sum()
    rhs = (y * shift.shift_sum_adjoint(g, dilation, offsets, spatial)).sum()
    shift._frame_indices.cache_clear()
    assert abs(lhs - rhs) < 1e-12 * max(1.0, abs(lhs))
    assert torch.equal(g, g0)  # the frame pixels zeroed during the call are written back


def test_second_backward_with_retained_graph_gives_the_same_gradients():
    """The backward's scratch rows alias the saved buffer; a retained graph must still be usable."""
    net = _net(2, 1, 2, 5, 1, [1, 2, 3])
    x = torch.randn(2, 1, 14, 15, dtype=torch.float64)
    y = net(x)
    first = torch.autograd.grad(y.square().sum(), list(net.parameters()), retain_graph=True)
    second = torch.autograd.grad(y.square().sum(), list(net.parameters()))
    ref = torch.autograd.grad(net(x, impl="taps").square().sum(), list(net.parameters()))
    for a, b, r in zip(first, second, ref):
        torch.testing.assert_close(a, r, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(b, r, rtol=1e-10, atol=1e-10)


def test_scratch_pool_reuses_buffers_and_never_lends_one_still_needed():
    """Inference reuses the buffer; two graphs alive at once each keep their own (both backwards exact)."""
    net = _net(2, 1, 2, 4, 2, [1, 2])
    x1, x2 = torch.randn(1, 1, 16, 16, dtype=torch.float64), torch.randn(1, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        net(x1)
        held = net._scratch.idle_bytes
        assert held > 0
        lent = net._scratch.take((10,), x1)
        assert net._scratch.idle_bytes == 0  # served from the idle buffer
        del lent
        assert net._scratch.idle_bytes == held
    y1, y2 = net(x1), net(x2)  # the second forward must not get the first one's buffer
    assert net._scratch.idle_bytes == 0  # the idle buffer went to y1's graph, y2 has a new one
    g = torch.autograd.grad(y1.sum() + 2 * y2.sum(), list(net.parameters()))
    r = torch.autograd.grad(net(x1, impl="taps").sum() + 2 * net(x2, impl="taps").sum(), list(net.parameters()))
    for a, b in zip(g, r):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert net.release_scratch() > 0
    assert net._scratch.idle_bytes == 0


def test_scratch_pool_lends_the_same_memory_again_and_copies_start_empty():
    import copy

    from mixscale.nets.msd_lean import ScratchPool

    pool = ScratchPool(keep=2)
    like = torch.empty(0)
    a = pool.take((4, 8), like)
    ptr = a.untyped_storage().data_ptr()
    del a
    b = pool.take((3, 8), like)  # smaller: served from the idle buffer
    assert b.untyped_storage().data_ptr() == ptr and b.shape == (3, 8)
    c = pool.take((2, 8), like)  # the first is lent: a new one
    assert c.untyped_storage().data_ptr() != ptr
    del b, c
    assert pool.idle_bytes == (32 + 16) * 4
    for _ in range(3):
        pool._give_back(torch.empty(1))
    assert len(pool._idle) == 2 and pool.idle_bytes == (32 + 16) * 4  # the smallest go first
    assert copy.deepcopy(pool).idle_bytes == 0


def test_scratch_pool_keeps_one_buffer_for_growing_requests():
    """Tiles of growing size (corner, edge, interior) must not each leave a buffer resident."""
    from mixscale.nets.msd_lean import ScratchPool

    pool, like = ScratchPool(keep=4), torch.empty(0)
    for size in (100, 200, 300, 150):
        lent = pool.take((size,), like)
        del lent
        assert len(pool._idle) == 1
    assert pool.idle_bytes == 300 * 4


def test_scratch_pool_lets_go_of_buffers_not_lent_again():
    """A big buffer of an occasional call (validation on a whole image) does not stay resident."""
    from mixscale.nets.msd_lean import ScratchPool

    pool = ScratchPool(keep=4, max_idle=3)
    f32, f64 = torch.empty(0), torch.empty(0, dtype=torch.float64)
    big = pool.take((1000,), f32)  # request 1
    del big
    for _ in range(3):  # requests 2-4 in float64 never use the float32 buffer
        small = pool.take((10,), f64)
        del small
    assert any(t.numel() == 1000 for t, _ in pool._idle)  # idle for 3 requests: kept
    small = pool.take((10,), f64)  # request 5
    assert all(t.numel() != 1000 for t, _ in pool._idle)
    assert pool.idle_bytes == 0 and small.numel() == 10  # the one float64 buffer is lent out (held here)


def test_concurrent_inference_from_two_threads_is_exact():
    """Block-wise prediction runs tiles of one model in two threads; the pool is shared."""
    from concurrent.futures import ThreadPoolExecutor

    net = _net(2, 1, 2, 6, 1, [1, 2, 3], dtype=torch.float32)
    xs = [torch.randn(1, 1, 40, 40) for _ in range(8)]
    with torch.no_grad():
        ref = [net(x, impl="taps") for x in xs]
        with ThreadPoolExecutor(2) as ex:
            outs = list(ex.map(net, xs))
    for o, r in zip(outs, ref):
        torch.testing.assert_close(o, r, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_maps_are_as_accurate_as_plain_pytorch_in_that_precision(dtype):
    """The storage used under CUDA autocast, run on CPU: against float64, no worse than autograd in ``dtype``."""
    from mixscale.nets.msd_lean import lean_msd

    net = _net(2, 2, 3, 10, 2, [1, 2, 3, 4], dtype=torch.float64, seed=3)
    x = torch.randn(2, 2, 30, 27, dtype=torch.float64)
    ref = net(x, impl="taps")
    g = torch.randn_like(ref)
    ref_grads = torch.autograd.grad(ref, list(net.parameters()), g)
    plain = _net(2, 2, 3, 10, 2, [1, 2, 3, 4], dtype=torch.float64, seed=3).to(dtype)
    plain_out = plain(x.to(dtype), impl="taps")
    plain_grads = torch.autograd.grad(plain_out, list(plain.parameters()), g.to(dtype))
    net = net.float()
    out = lean_msd(x.float(), list(net.weights), list(net.biases), net.final_weight, net.final_bias,
                   net.channel_dilations, dtype=dtype)
    assert out.dtype == dtype
    grads = torch.autograd.grad(out, list(net.parameters()), g.to(dtype))
    assert all(a.dtype == torch.float32 for a in grads)  # the parameters' dtype

    def err(a, b):
        return ((a.double() - b).norm() / b.norm()).item()

    def cat(gs):
        return torch.cat([t.double().flatten() for t in gs])

    assert err(out, ref) <= 1.2 * err(plain_out, ref) + 1e-4
    assert err(out, ref) < (1e-2 if dtype == torch.bfloat16 else 1e-3)
    # single small gradients (bias sums) cancel and are noisy in both; all parameters together:
    assert err(cat(grads), cat(ref_grads)) <= 1.5 * err(cat(plain_grads), cat(ref_grads)) + 1e-3
    # (plain autograd itself lands at 2-7 % here: ReLU masks flip at half-precision rounding)
    assert err(cat(grads), cat(ref_grads)) < (0.15 if dtype == torch.bfloat16 else 0.08)


def test_half_precision_maps_take_half_the_buffer_memory():
    from mixscale.nets.msd_lean import lean_msd

    net = _net(2, 1, 2, 8, 1, [1, 2, 3], dtype=torch.float32)
    x = torch.randn(1, 1, 48, 48)
    held = {}
    for dtype in (torch.float32, torch.bfloat16):
        net.release_scratch()
        with torch.no_grad():
            lean_msd(x, list(net.weights), list(net.biases), net.final_weight, net.final_bias,
                     net.channel_dilations, pool=net._scratch, dtype=dtype)
        held[dtype] = net._scratch.idle_bytes
    assert held[torch.bfloat16] * 2 == held[torch.float32] > 0


def test_backward_called_under_cpu_autocast_is_unchanged(monkeypatch):
    monkeypatch.setattr(msd_lean, "cpu_has_bf16", lambda: False)  # float32 maps, as on a CPU that emulates bf16
    net = _net(2, 1, 2, 5, 1, [1, 2, 3], dtype=torch.float32)
    x = torch.randn(2, 1, 20, 20)
    ref = torch.autograd.grad(net(x).sum(), list(net.parameters()))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        grads = torch.autograd.grad(net(x).sum(), list(net.parameters()))
    for a, b in zip(grads, ref):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_shift_sums_match_float32(dtype):
    """Half-precision maps: the shifted sum adds three rows element-wise (within the half type's rounding of
    float32's result), and the adjoint, assembled in float32 and rounded once, equals float32's rounded."""
    from mixscale.nets import msd_shift as shift

    torch.manual_seed(3)
    spatial = (23, 19)
    offsets = shift.tap_offsets(2)
    for d in (1, 3):
        products = torch.randn(len(offsets), 3, *spatial).to(dtype)
        ref = shift.shift_sum(products.float(), d, offsets, spatial)
        got = shift.shift_sum(products, d, offsets, spatial)
        assert got.dtype == dtype
        # nine terms, each partial sum rounded once: |error| <= 9 u sum_t |term_t| (u: the unit roundoff)
        u = 2.0**-8 if dtype == torch.bfloat16 else 2.0**-11
        bound = 9 * u * shift.shift_sum(products.float().abs(), d, offsets, spatial)
        assert ((got.float() - ref).abs() <= bound).all()
        g = torch.randn(3, *spatial).to(dtype)
        adj = shift.shift_sum_adjoint(g, d, offsets, spatial)
        assert adj.dtype == dtype
        assert torch.equal(adj, shift.shift_sum_adjoint(g.float(), d, offsets, spatial).to(dtype))
