"""MS-D and U-Net specifics: parameter counts, initialisation, reference convolutions, errors.

What every registered network must do (build, gradients, config round trip, halo) is in
test_registry.py.
"""

import math

import pytest
import torch

from mixscale.nets import MSDNet, UNet, create_net, msd_parameter_count
from mixscale.nets.msd import layer_dilations
from mixscale.nets.unet import level_channels


def test_msd_parameter_count_matches_paper_and_formula():
    assert sum(p.numel() for p in MSDNet(depth=100).parameters()) == 45652  # Pelt & Sethian
    for dims, cin, cout, depth, width in [(2, 3, 2, 7, 2), (3, 1, 4, 5, 3)]:
        net = MSDNet(spatial_dims=dims, in_channels=cin, out_channels=cout, depth=depth, width=width)
        naive = sum((3**dims) * (cin + i * width) * width + width for i in range(depth))
        naive += (cin + depth * width) * cout + cout
        assert sum(p.numel() for p in net.parameters()) == naive == msd_parameter_count(cin, cout, depth, width, dims)


def test_msd_initialisation_follows_paper():
    torch.manual_seed(1)
    net = MSDNet(depth=60, width=2, in_channels=1, out_channels=1)
    n_c = 9 * (1 + 2 * 59) + 1
    hidden = torch.cat([w.flatten() for w in net.weights])
    assert hidden.std().item() == pytest.approx(math.sqrt(2 / n_c), rel=0.05)
    assert abs(hidden.mean().item()) < 0.01
    assert torch.count_nonzero(net.final_weight) == 0 and torch.count_nonzero(net.final_bias) == 0
    assert all(torch.count_nonzero(b) == 0 for b in net.biases)
    n_c3 = 27 * (1 + 2 * 59) + 1
    hidden3 = torch.cat([w.flatten() for w in MSDNet(spatial_dims=3, depth=60, width=2).weights])
    assert hidden3.std().item() == pytest.approx(math.sqrt(2 / n_c3), rel=0.05)


def test_msd_dilations_cycle_and_explicit():
    assert layer_dilations(3, 2, range(1, 11)) == [[1, 2], [3, 4], [5, 6]]
    assert layer_dilations(3, 1, [4, 1, 2]) == [[4], [1], [2]]
    assert MSDNet(depth=100).receptive_field == 1101  # 1 + 2 * 10 * (1 + ... + 10)
    assert MSDNet(depth=3, dilations=[2, 5, 1]).receptive_field == 1 + 2 * 8


def _naive_reflect_conv(x, w, b, d):
    """Independent 2D reference: loop over taps on a numpy-style reflect-padded array."""
    n, c, h, wd = x.shape
    xp = torch.nn.functional.pad(x, (d, d, d, d), mode="reflect")
    out = torch.zeros(n, w.shape[0], h, wd, dtype=x.dtype) + b.view(1, -1, 1, 1)
    for o in range(w.shape[0]):
        for ky in range(3):
            for kx in range(3):
                patch = xp[:, :, ky * d : ky * d + h, kx * d : kx * d + wd]
                out[:, o] += (patch * w[o, :, ky, kx].view(1, -1, 1, 1)).sum(1)
    return out


def test_msd_matches_tap_loop_reference_and_keeps_negative_inputs():
    torch.manual_seed(2)
    net = MSDNet(depth=3, width=1, dilations=[1, 2, 3], in_channels=1, out_channels=2).double()
    torch.nn.init.normal_(net.final_weight)
    x = torch.randn(1, 1, 12, 10, dtype=torch.float64)
    maps = [x]
    for i, d in enumerate([1, 2, 3]):
        maps.append(torch.relu(_naive_reflect_conv(torch.cat(maps, 1), net.weights[i], net.biases[i], d)))
    ref = torch.einsum("oc,nchw->nohw", net.final_weight[:, :, 0, 0], torch.cat(maps, 1))
    ref = ref + net.final_bias.view(1, -1, 1, 1)
    torch.testing.assert_close(net(x), ref)
    # DLSIA passes the input through ReLU, so negative intensities vanish; here they must matter
    assert not torch.allclose(net(x), net(torch.relu(x)))


def test_msd_batch_norm_variant_trains():
    net = MSDNet(depth=3, norm="batch", dilations=[1, 2])
    torch.nn.init.normal_(net.final_weight)
    net(torch.randn(2, 1, 12, 12)).sum().backward()
    assert net.norms[0].weight.grad is not None


def test_unet_parameter_count_matches_formula():
    dims, cin, cout, depth, base, growth, hidden = 2, 2, 3, 3, 6, 1.5, 0.5
    net = UNet(spatial_dims=dims, in_channels=cin, out_channels=cout, depth=depth, base_channels=base,
               growth_rate=growth, hidden_rate=hidden, norm="batch")
    k = 3**dims
    chans = [round(base * growth**i) for i in range(depth)]
    assert chans == level_channels(depth, base, growth)

    def block(ci, co):
        h = max(1, round(co * hidden))
        return k * ci * h + h + 2 * h + k * h * co + co + 2 * co  # conv + bias + BN affine, twice

    expected = sum(block(cin if i == 0 else chans[i - 1], chans[i]) for i in range(depth))
    expected += sum(chans[i + 1] * chans[i] * 2**dims + chans[i] for i in range(depth - 1))  # transposed convs
    expected += sum(block(2 * chans[i], chans[i]) for i in range(depth - 1))
    expected += chans[0] * cout + cout
    assert sum(p.numel() for p in net.parameters()) == expected


@pytest.mark.parametrize("norm", ["batch", "instance", "group", None])
@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "gelu"])
def test_unet_norm_and_activation_choices(norm, activation):
    net = UNet(depth=2, base_channels=4, norm=norm, activation=activation)
    assert net(torch.randn(2, 1, 7, 9)).shape == (2, 1, 7, 9)


def test_unet_tiny_inputs_smaller_than_padding():
    net = UNet(depth=4, base_channels=2)
    assert net(torch.randn(2, 1, 3, 5)).shape == (2, 1, 3, 5)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="nope"), "unknown network name='nope'; known networks: .*msd, .*unet"),
        (dict(name="msd", depht=3), r"unknown argument\(s\) \['depht'\]"),
        (dict(name="msd", depth=0), "depth=0 is not allowed"),
        (dict(name="msd", spatial_dims=4), "spatial_dims=4"),
        (dict(name="msd", dilations=[0, 1]), "dilations"),
        (dict(name="unet", growth_rate=-1), "growth_rate=-1"),
        (dict(name="unet", norm="layer"), "norm='layer'"),
        (dict(name="unet", activation="tanhh"), "activation='tanhh'"),
    ],
)
def test_bad_arguments_name_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_net(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(name="msd", depth=2.0), "depth=2.0 is not allowed; expected an integer >= 1"),
        (dict(name="msd", dilations=[1, 2.0]), r"dilations=\[1, 2.0\] is not allowed; expected a non-empty list"),
        (dict(name="msd", dilations=3), "dilations=3 is not allowed"),
        (dict(name="unet", in_channels=True), "in_channels=True is not allowed"),
        (dict(name="unet", hidden_rate="1"), "hidden_rate='1' is not allowed; expected a finite number > 0"),
    ],
)
def test_wrong_types_are_type_errors(kwargs, match):
    with pytest.raises(TypeError, match=match):
        create_net(**kwargs)


def test_wrong_input_shape_is_a_clear_error():
    net = MSDNet(depth=2, dilations=[1])
    with pytest.raises(ValueError, match=r"does not fit a 2D network with in_channels=1"):
        net(torch.zeros(1, 1, 8, 8, 8))
    with pytest.raises(ValueError, match="too small for reflect padding"):
        MSDNet(depth=2, dilations=[5])(torch.zeros(1, 1, 4, 20))


@pytest.mark.parametrize("spatial_dims, shape", [(2, (2, 2, 23, 19)), (3, (2, 2, 11, 12, 13))])
def test_msd_tap_reformulation_equals_direct_convolution(spatial_dims, shape):
    """Forward and gradients of the fast path against library convolutions, float64."""
    torch.manual_seed(3)
    net = MSDNet(spatial_dims=spatial_dims, in_channels=2, out_channels=3, depth=5, width=2,
                 dilations=[1, 4, 2, 3]).double()
    torch.nn.init.normal_(net.final_weight)
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    fast, slow = net(x), net(x, impl='direct')
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(fast)
    grads_fast = torch.autograd.grad(fast, [x, *net.parameters()], g)
    grads_slow = torch.autograd.grad(slow, [x, *net.parameters()], g)
    for a, b in zip(grads_fast, grads_slow):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_msd_gradcheck_float64():
    torch.manual_seed(4)
    net = MSDNet(depth=3, width=2, in_channels=1, out_channels=2, dilations=[1, 2, 3]).double()
    torch.nn.init.normal_(net.final_weight)
    x = torch.randn(1, 1, 7, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: net(inp), (x,))
