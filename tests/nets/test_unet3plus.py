"""UNet 3+: full-scale skips wired as in the paper, every parameter trained, any size, model file."""

import re

import pytest
import torch
import torch.nn.functional as F

from mixscale import api
from mixscale.model import ModelInfo, load_model, save_model
from mixscale.nets import UNet3Plus, create_net

ODD = {2: (13, 11), 3: (9, 7, 11)}
TINY = dict(depth=3, base_channels=3, growth_rate=1.5, hidden_rate=0.75, carry_channels=2)


@pytest.mark.parametrize("spatial_dims, deep_supervision, norm", [
    (2, False, "batch"), (2, True, "batch"), (3, True, "batch"), (3, False, None), (2, True, None)])
def test_odd_sizes_and_every_parameter_gets_a_gradient(spatial_dims, deep_supervision, norm):
    torch.manual_seed(0)
    net = create_net("unet3plus", spatial_dims=spatial_dims, in_channels=2, out_channels=3,
                     deep_supervision=deep_supervision, norm=norm, **TINY).double()
    x = torch.randn(2, 2, *ODD[spatial_dims], dtype=torch.float64)
    y = net(x)
    assert y.shape == (2, 3, *ODD[spatial_dims])
    if deep_supervision:
        outs = net.deep_outputs(x)
        assert len(outs) == 3 and all(o.shape == y.shape for o in outs)
        torch.testing.assert_close(outs[0], y)  # level 0 is the ordinary output
        loss = sum((o**2).mean() for o in outs)
    else:
        assert not any("deep" in name for name, _ in net.named_parameters())  # heads not even built
        loss = (y**2).mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.count_nonzero(p.grad) > 0, name
        # a real gradient, not float64 rounding noise; the exception is UNet's ConvBlock, whose conv
        # biases sit before batch norm, which cancels them (their gradient is pure rounding noise)
        if not (norm == "batch" and re.fullmatch(r"encoders\.\d+\.[03]\.bias", name)):
            assert p.grad.abs().max() > 1e-10, name


def test_decoder_matches_functional_reference_float64():
    """Depth 3, no norm: the paper's wiring written out by hand with F.conv2d, pooling and interpolation."""
    torch.manual_seed(1)
    net = UNet3Plus(in_channels=1, out_channels=2, norm=None, deep_supervision=True, **TINY).double()
    x = torch.randn(2, 1, 16, 12, dtype=torch.float64)
    conv = lambda seq, t: F.conv2d(t, seq[0].weight, seq[0].bias, padding=1)  # noqa: E731
    cna = lambda seq, t: torch.relu(conv(seq, t))  # noqa: E731
    block = lambda b, t: torch.relu(F.conv2d(cna(b, t), b[3].weight, b[3].bias, padding=1))  # noqa: E731
    up = lambda t, f: F.interpolate(t, scale_factor=f, mode="bilinear", align_corners=False)  # noqa: E731
    e0 = block(net.encoders[0], x)
    e1 = block(net.encoders[1], F.max_pool2d(e0, 2))
    e2 = block(net.encoders[2], F.max_pool2d(e1, 2))
    c1, c0 = net.carries[1], net.carries[0]
    d1 = cna(net.fuses[1], torch.cat([cna(c1[0], F.max_pool2d(e0, 2)), cna(c1[1], e1), cna(c1[2], up(e2, 2))], 1))
    d0 = cna(net.fuses[0], torch.cat([cna(c0[0], e0), cna(c0[1], up(d1, 2)), cna(c0[2], up(e2, 4))], 1))
    head = lambda c, t: F.conv2d(t, c.weight, c.bias, padding=1)  # noqa: E731
    expected = [head(net.head, d0), up(head(net.deep_heads[0], d1), 2), up(head(net.deep_heads[1], e2), 4)]
    torch.testing.assert_close(net(x), expected[0], rtol=1e-12, atol=1e-12)
    for got, want in zip(net.deep_outputs(x), expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def _expected_parameter_count(dims, cin, cout, depth, base, growth, hidden, carry, norm, deep):
    """Closed form, derived from the paper's description (not from the module's code)."""
    k = 3**dims
    ch = [round(base * growth**i) for i in range(depth)]
    nrm = (lambda n: 0) if norm is None else (lambda n: 2 * n)  # affine weight and bias
    bias = (lambda n: n) if norm is None else (lambda n: 0)  # a norm's mean subtraction would cancel it

    def unet_block(ci, co):
        h = max(1, round(co * hidden))
        return k * ci * h + h + nrm(h) + k * h * co + co + nrm(co)

    total = sum(unet_block(cin if i == 0 else ch[i - 1], ch[i]) for i in range(depth))
    fused, n_dec = depth * carry, depth - 1
    # decoder i reads encoder j <= i (j <= depth-2 appears depth-1-j times), the bottleneck (once per decoder)
    # and the decoder levels between (depth-2-i of them: (depth-1)(depth-2)/2 in all)
    sources = sum((depth - 1 - j) * ch[j] for j in range(depth - 1)) + n_dec * ch[-1]
    sources += (depth - 1) * (depth - 2) // 2 * fused
    total += k * carry * sources + n_dec * depth * (bias(carry) + nrm(carry))
    total += n_dec * (k * fused * fused + bias(fused) + nrm(fused))
    total += k * (fused if depth > 1 else ch[0]) * cout + cout
    if deep and depth > 1:
        total += (depth - 2) * (k * fused * cout + cout) + k * ch[-1] * cout + cout
    return total


@pytest.mark.parametrize("dims, cin, cout, depth, base, growth, hidden, carry, norm, deep", [
    (2, 2, 3, 3, 6, 1.5, 0.5, 4, "batch", False),
    (2, 1, 2, 4, 4, 2.0, 1.0, 3, "batch", True),
    (3, 1, 1, 2, 3, 1.7, 1.3, 2, None, True),
    (2, 3, 2, 5, 2, 1.3, 1.0, 2, "group", True),
    (3, 2, 2, 3, 4, 1.0, 1.0, 5, "instance", False),
    (2, 1, 1, 1, 4, 2.0, 1.0, 3, "batch", True),
])
def test_parameter_count_matches_closed_form(dims, cin, cout, depth, base, growth, hidden, carry, norm, deep):
    net = UNet3Plus(spatial_dims=dims, in_channels=cin, out_channels=cout, depth=depth, base_channels=base,
                    growth_rate=growth, hidden_rate=hidden, carry_channels=carry, norm=norm,
                    deep_supervision=deep)
    expected = _expected_parameter_count(dims, cin, cout, depth, base, growth, hidden, carry, norm, deep)
    assert sum(p.numel() for p in net.parameters()) == expected


def test_paper_configuration_parameter_count():
    # Huang et al.: 5 levels of 64..1024 channels, 64 carry-over channels, 320 decoder channels
    net = UNet3Plus(in_channels=3, depth=5, base_channels=64, carry_channels=64)
    assert net.fuses[0][0].out_channels == 320
    count = sum(p.numel() for p in net.parameters())
    assert count == _expected_parameter_count(2, 3, 1, 5, 64, 2.0, 1.0, 64, "batch", False)
    assert round(count / 1e6, 2) == 26.97  # the paper's Table 1 (VGG-16 backbone): 26.97 M


@pytest.mark.parametrize("spatial_dims, shape", [(2, (1, 1, 96, 96)), (3, (1, 1, 32, 32, 32))])
def test_receptive_field_bounds_the_gradient_support(spatial_dims, shape):
    torch.manual_seed(2)
    depth = 3 if spatial_dims == 2 else 2
    net = UNet3Plus(spatial_dims=spatial_dims, depth=depth, base_channels=2, carry_channels=2,
                    activation="gelu").double().eval()
    x = torch.randn(*shape, dtype=torch.float64, requires_grad=True)
    centre = tuple(s // 2 for s in shape[2:])
    net(x)[(0, 0) + centre].backward()
    support = torch.nonzero(x.grad[0, 0]).double()
    reach = (support - torch.tensor(centre, dtype=torch.float64)).abs().max().item()
    assert reach <= net.halo < min(shape[2:]) // 2  # the estimate holds and was tested away from borders
    assert reach >= 0.75 * net.halo  # and is close (measured: 26 of 30 in 2D, 11 of 12 in 3D)


def test_deep_outputs_need_deep_supervision_and_arguments_are_checked():
    net = UNet3Plus(depth=2, base_channels=2, carry_channels=2)
    with pytest.raises(ValueError, match="deep_outputs needs a network built with deep_supervision=True"):
        net.deep_outputs(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="does not fit a 2D network with in_channels=1"):
        net(torch.zeros(1, 2, 8, 8))
    for kwargs, match in [(dict(carry_channels=0), "carry_channels=0 is not allowed"),
                          (dict(depth=0), "depth=0"), (dict(norm="layer"), "norm='layer'"),
                          (dict(growth_rate=0), "growth_rate=0")]:
        with pytest.raises(ValueError, match=match):
            create_net("unet3plus", **kwargs)
    with pytest.raises(TypeError, match="deep_supervision='yes' is not allowed; expected True or False"):
        create_net("unet3plus", deep_supervision="yes")
    with pytest.raises(TypeError, match="growth_rate='2' is not allowed; expected a finite number > 0"):
        create_net("unet3plus", growth_rate="2")


def test_same_seed_same_net_and_model_file_round_trip(tmp_path):
    torch.manual_seed(3)
    net = UNet3Plus(spatial_dims=3, out_channels=2, deep_supervision=True, **TINY)
    torch.manual_seed(3)
    twin = UNet3Plus(spatial_dims=3, out_channels=2, deep_supervision=True, **TINY)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), twin.state_dict().values()))
    net(torch.randn(2, 1, 8, 8, 8))  # training mode: updates the batch-norm running statistics
    net.eval()
    info = ModelInfo(net_name="unet3plus", net_config=net.config(), task="segmentation", class_names=["a", "b"],
                     normalization={"mean": [0.0], "std": [1.0]}, train_config={})
    loaded, _ = load_model(save_model(tmp_path / "m.safetensors", net, info))
    x = torch.randn(1, 1, 9, 7, 11)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
        assert all(torch.equal(a, b) for a, b in zip(net.deep_outputs(x), loaded.deep_outputs(x)))
    assert loaded.config() == net.config()


def test_trains_through_the_config_path(tiny_config):
    tiny_config["net"] = {"name": "unet3plus", "depth": 2, "base_channels": 4, "carry_channels": 2}
    tiny_config["trainer"]["max_epochs"] = 1
    result = api.train(tiny_config)
    net, info = load_model(result.model_path)
    assert isinstance(net, UNet3Plus) and info.net_config["carry_channels"] == 2
