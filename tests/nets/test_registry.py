"""Every registered network, through the registry: build, gradients, config round trip, halo.

Parametrised over :func:`mixscale.nets.list_nets`, so a newly registered network is
covered automatically (with its constructor defaults unless :data:`SMALL` says
otherwise). Inputs are tiny and odd-sized; the whole file runs in seconds.
"""

import inspect
import json

import pytest
import torch

from mixscale.nets import NetBase, create_net, list_nets, net_class, register_net

# Small arguments keep every case fast; norms are per-pixel in eval mode (batch or
# none), so that the receptive-field check below is exact.
SMALL = {
    "autoencoder": dict(depth=2, base_channels=4, latent_dim=4),
    "classifier": dict(patch_shape=9, depth=1, base_channels=4, hidden_channels=8),
    "msd": dict(depth=3, width=2, dilations=[1, 2, 3]),
    "random_unet": dict(seed=5, ranges={"num_scales": [2, 2], "base_channels": [3, 3], "convs_per_block": [1, 2],
                                        "dilation": [1, 2], "norm": ["batch", None]}),
    "smsnet": dict(hidden_nodes=4, channels=[2], dilations=[1, 2], norm="batch"),
    "unet": dict(depth=2, base_channels=4, growth_rate=1.5, hidden_rate=0.75),
    "unet3plus": dict(depth=2, base_channels=4, carry_channels=3),
}
PER_DIMS = {"autoencoder": {2: dict(image_shape=[9, 7]), 3: dict(image_shape=[7, 5, 6])}}
ODD = {2: (13, 11), 3: (9, 7, 11)}
IN, OUT = 2, 3


pytestmark = pytest.mark.usefixtures("one_thread")


def _parameters(name):
    """Constructor parameter names of network ``name``, in order, without ``self``."""
    return list(inspect.signature(net_class(name).__init__).parameters)[1:]


def _dims(name):
    """2 and 3 for networks with a ``spatial_dims`` argument, else only the default (2D)."""
    return (2, 3) if "spatial_dims" in _parameters(name) else (2,)


CASES = [pytest.param(name, dims, id=f"{name}-{dims}d") for name in list_nets() for dims in _dims(name)]


def _kwargs(name, dims):
    """The small construction arguments of ``name`` in ``dims`` dimensions."""
    params = _parameters(name)
    kwargs = {k: v for k, v in (("spatial_dims", dims), ("in_channels", IN), ("out_channels", OUT)) if k in params}
    return {**kwargs, **SMALL.get(name, {}), **PER_DIMS.get(name, {}).get(dims, {})}


def _build(name, dims):
    """The small network, its parameters moved off their initial values (zero final layers hide gradients)."""
    torch.manual_seed(0)
    net = create_net(name, **_kwargs(name, dims))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


def _fixed_shape(net):
    """The one spatial shape a fixed-size network accepts, or None."""
    fixed = getattr(net, "image_shape", None) or getattr(net, "patch_shape", None)
    return None if fixed is None else tuple(fixed)


def _input_shape(net, dims):
    """The spatial shape ``forward`` accepts: the net's fixed one, else an odd-sized one."""
    return _fixed_shape(net) or ODD[dims]


def _image_map(net, dims):
    """``(function, fixed spatial shape or None)`` of the net's image-to-image map, or ``(None, None)``."""
    if hasattr(net, "dense_logits"):
        return net.dense_logits, None
    shape = _input_shape(net, dims)
    with torch.no_grad():
        y = net(torch.zeros(1, IN, *shape, dtype=torch.float64))
    return (net, _fixed_shape(net)) if tuple(y.shape[2:]) == shape else (None, None)


def test_registry_lists_every_architecture():
    assert {"autoencoder", "classifier", "msd", "random_unet", "smsnet", "unet", "unet3plus"} <= set(list_nets())
    assert all(issubclass(net_class(name), NetBase) for name in list_nets())


def test_register_net_refuses_a_class_without_the_shared_base():
    with pytest.raises(TypeError, match="must derive from mixscale.nets.registry.NetBase"):
        register_net("plain")(torch.nn.Conv2d)
    assert "plain" not in list_nets()


@pytest.mark.parametrize("name", list_nets())
def test_builds_from_constructor_defaults_and_config_rebuilds_it(name):
    net = create_net(name)
    cfg = json.loads(json.dumps(net.config()))
    assert list(cfg) == _parameters(name)
    assert create_net(name, **cfg).config() == net.config()


@pytest.mark.parametrize("name, dims", CASES)
def test_forward_backward_gives_every_parameter_a_finite_gradient(name, dims):
    net = _build(name, dims).train()
    shape = _input_shape(net, dims)
    y = net(torch.randn(2, IN, *shape))  # batch of 2: batch norm needs more than one value per channel
    assert y.shape[:2] == (2, OUT)
    if y.ndim == len(shape) + 2:
        assert tuple(y.shape[2:]) == shape
    (y**2).mean().backward()
    for pname, p in net.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
    assert any(torch.count_nonzero(p.grad) for p in net.parameters())


@pytest.mark.parametrize("name, dims", CASES)
def test_config_holds_exactly_the_constructor_arguments(name, dims):
    net = _build(name, dims)
    assert list(net.config()) == list(inspect.signature(type(net).__init__).parameters)[1:]
    assert net.config() is not net.config() and net.config() == net.config()  # a fresh copy every call


@pytest.mark.parametrize("name, dims", CASES)
def test_json_config_and_state_dict_rebuild_identical_outputs(name, dims):
    net = _build(name, dims).train()
    shape = _input_shape(net, dims)
    with torch.no_grad():
        net(torch.randn(2, IN, *shape))  # training mode: batch-norm running statistics move
    cfg = json.loads(json.dumps(net.config()))
    rebuilt = create_net(name, **cfg)
    rebuilt.load_state_dict(net.state_dict())
    assert rebuilt.config() == net.config()
    net.eval(), rebuilt.eval()
    x = torch.randn(2, IN, *shape)
    with torch.no_grad():
        assert torch.equal(net(x), rebuilt(x))


@pytest.mark.parametrize("name, dims", CASES)
def test_receptive_field_bounds_the_effect_of_one_pixel(name, dims):
    """One changed input pixel changes the image-to-image output only within ``halo`` of it."""
    net = _build(name, dims).double().eval()
    assert net.halo == (net.receptive_field - 1) // 2
    fn, shape = _image_map(net, dims)
    if fn is None:
        pytest.skip(f"{name} does not map images to images")
    margin = net.halo // 2 + 2  # a halo that is too small by up to this much shows outside the box
    shape = shape or tuple(2 * (net.halo + margin + i) + 1 for i in range(dims))
    torch.manual_seed(1)
    x = torch.randn(1, IN, *shape, dtype=torch.float64)
    centre = tuple(s // 2 for s in shape)
    bumped = x.clone()
    bumped[(0, slice(None)) + centre] += 1.0
    with torch.no_grad():
        diff = (fn(bumped) - fn(x)).abs().amax(dim=(0, 1))
    assert diff[centre] > 0
    diff[tuple(slice(max(c - net.halo, 0), c + net.halo + 1) for c in centre)] = 0
    assert torch.count_nonzero(diff) == 0
