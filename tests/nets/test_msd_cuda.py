"""CUDA paths of the lean MS-D (skipped without a GPU)."""

import pytest
import torch

from mixscale.nets import MSDNet

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")


@pytest.mark.parametrize("spatial_dims, shape", [(2, (2, 1, 67, 53)), (3, (1, 2, 21, 19, 23))])
def test_lean_on_cuda_matches_cpu_oracle(spatial_dims, shape):
    torch.manual_seed(0)
    net = MSDNet(spatial_dims=spatial_dims, in_channels=shape[1], out_channels=3, depth=12, width=2).double()
    with torch.no_grad():
        net.final_weight.normal_()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    ref = net(x, impl="taps")
    ref_grads = torch.autograd.grad(ref.sum(), [x, *net.parameters()])
    gnet, gx = net.cuda(), x.detach().cuda().requires_grad_()
    out = gnet(gx)
    grads = torch.autograd.grad(out.sum(), [gx, *gnet.parameters()])
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("half", [torch.float16, torch.bfloat16])
def test_lean_under_autocast_stores_half_precision_maps_and_trains(half):
    if half == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        pytest.skip("no bfloat16 on this GPU")
    torch.manual_seed(0)
    net = MSDNet(depth=8, out_channels=2).cuda()
    with torch.no_grad():
        net.final_weight.normal_()
    x = torch.randn(2, 1, 64, 64, device="cuda")
    ref = net(x)
    with torch.autocast("cuda", dtype=half):
        y = net(x)
    assert y.dtype == half
    assert ((y.float() - ref).norm() / ref.norm()).item() < (1e-2 if half == torch.bfloat16 else 2e-3)
    y.float().sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()
               for p in net.parameters())


def test_half_precision_maps_halve_the_gpu_memory_of_inference():
    net = MSDNet(depth=50).cuda()
    x = torch.randn(1, 1, 1024, 1024, device="cuda")
    peaks = {}
    for half in (False, True):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=half):
            net(x)
        torch.cuda.synchronize()
        peaks[half] = torch.cuda.max_memory_allocated() - base
    assert peaks[True] < 0.6 * peaks[False]
