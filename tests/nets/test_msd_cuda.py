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


def test_lean_under_autocast_trains_in_float32():
    net = MSDNet(depth=8).cuda()
    x = torch.randn(2, 1, 64, 64, device="cuda")
    with torch.autocast("cuda", dtype=torch.float16):
        y = net(x)
    y.float().sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())
