"""bfloat16 MS-D maps on CPU: gradients against float32 within a stated tolerance, and when autocast uses them."""

import pytest
import torch

import mixscale.nets.msd_lean as msd_lean
from mixscale.nets import create_net

pytestmark = pytest.mark.usefixtures("one_thread")

# bfloat16 keeps 8 significant bits (relative rounding 2^-9): over 30 layers of sums the whole gradient
# stays within 5 % (relative L2) of float32's; measured on the development machine: 2.3 %, cosine 0.9997
GRAD_TOLERANCE = 0.05


def _bf16_computes() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _net():
    torch.manual_seed(0)
    net = create_net("msd", depth=30, in_channels=1, out_channels=3)
    with torch.no_grad():  # the published init zeroes the final layer, which would leave most gradients zero
        net.final_weight.normal_(0, 0.1)
    return net


def _step(net, x, y, autocast: bool):
    net.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        out = net(x)
    loss = torch.nn.functional.cross_entropy(out.float(), y)
    loss.backward()
    return out, loss.item(), torch.cat([p.grad.flatten() for p in net.parameters()])


@pytest.mark.skipif(not _bf16_computes(), reason="torch's oneDNN computes no bfloat16 on this CPU")
def test_bf16_gradients_match_float32_within_tolerance(monkeypatch):
    """The bfloat16 path that CPU autocast takes on a CPU with native bfloat16 (AVX-512 BF16 or AMX). Where the
    CPU lacks those flags (as here) the path is forced, so the arithmetic is checked anyway: oneDNN then
    emulates bfloat16 with the same rounding, only slower."""
    if not msd_lean.cpu_has_bf16():
        monkeypatch.setattr(msd_lean, "cpu_has_bf16", lambda: True)
    net = _net()
    x = torch.randn(2, 1, 48, 56)
    y = torch.randint(0, 3, (2, 48, 56))
    out32, loss32, g32 = _step(net, x, y, autocast=False)
    out16, loss16, g16 = _step(net, x, y, autocast=True)
    assert out32.dtype == torch.float32 and out16.dtype == torch.bfloat16, "autocast gives bfloat16 maps"
    assert abs(loss16 - loss32) <= 1e-2 * abs(loss32)
    rel = ((g16 - g32).norm() / g32.norm()).item()
    assert rel < GRAD_TOLERANCE, rel
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.999
    assert all(p.grad.dtype == torch.float32 for p in net.parameters()), "gradients in the parameters' dtype"


def test_autocast_uses_bf16_maps_only_with_native_bf16(monkeypatch):
    net = _net()
    x = torch.randn(1, 1, 20, 24)
    for native, expected in ((False, torch.float32), (True, torch.bfloat16)):
        monkeypatch.setattr(msd_lean, "cpu_has_bf16", lambda native=native: native)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            assert net(x).dtype == expected
    with torch.no_grad():
        assert net(x).dtype == torch.float32, "no autocast: the parameters' dtype"
