"""The plain-torch architecture file of zoo packages (mixscale/model/export/architectures.py): each class takes
its net's ``config()``, loads its state dict strictly and reproduces its eval-mode output (float64, 1e-10) on
odd 2D and 3D sizes; the file imports only torch and the standard library."""

import ast
import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

from mixscale.nets import create_net

FILE = Path(__file__).parents[2] / "src" / "mixscale" / "model" / "export" / "architectures.py"
SHAPES = {2: (37, 21), 3: (13, 11, 9)}
CLASSES = {"msd": "MSD", "unet": "UNet", "unet3plus": "UNet3Plus", "smsnet": "SMSNet", "random_unet": "RandomUNet"}
SMALL_SPEC = {"num_scales": [2, 3], "base_channels": [2, 4], "convs_per_block": [1, 2], "kernel_size": [3],
              "dilation": [1, 2]}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def plain():
    """The file loaded from its path, as the zoo loads it (not through the mixscale package)."""
    spec = importlib.util.spec_from_file_location("_plain_architectures", FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _randomise(net):
    """Every parameter and floating buffer away from its initial value (batch-norm statistics included)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in list(net.named_parameters()) + list(net.named_buffers()):
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g, dtype=t.dtype))
            else:
                t.add_(0.3 * torch.randn(t.shape, generator=g, dtype=t.dtype))


def _check(plain, name, dims, in_channels=2, out_channels=3, shape=None, **kw):
    torch.manual_seed(0)
    net = create_net(name, spatial_dims=dims, in_channels=in_channels, out_channels=out_channels, **kw)
    _randomise(net)
    net = net.double().eval()
    kwargs = json.loads(json.dumps(net.config()))  # what the package's rdf.yaml holds
    copy = getattr(plain, CLASSES[name])(**kwargs).double().eval()
    copy.load_state_dict(net.state_dict(), strict=True)
    shape = shape or SHAPES[dims]
    x = torch.randn(2, in_channels, *shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        want, got = net(x), copy(x)
    assert got.shape == want.shape == (2, out_channels, *shape)
    diff = float((got - want).abs().max())
    assert diff <= 1e-10, (name, dims, kw, diff)
    assert float(want.abs().max()) > 1e-3  # a non-trivial output
    return net


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("norm", [None, "batch"])
def test_msd(plain, dims, norm):
    _check(plain, "msd", dims, depth=4, width=2, dilations=[1, 2, 3], norm=norm)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("norm, growth, activation", [("batch", 2.0, "relu"), ("instance", 1.5, "prelu"),
                                                      ("group", 1.7, "gelu"), (None, 1.5, "leaky_relu")])
def test_unet(plain, dims, norm, growth, activation):
    _check(plain, "unet", dims, depth=3, base_channels=3, growth_rate=growth, hidden_rate=0.7, norm=norm,
           activation=activation)


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("deep_supervision, norm", [(False, "batch"), (True, "group")])
def test_unet3plus(plain, dims, deep_supervision, norm):
    net = _check(plain, "unet3plus", dims, depth=3, base_channels=2, growth_rate=1.5, carry_channels=2, norm=norm,
                 activation="elu", deep_supervision=deep_supervision)
    assert any(k.startswith("deep_heads.") for k in net.state_dict()) == deep_supervision


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("padding_mode, norm", [("replicate", "instance"), ("zeros", "batch"), ("reflect", None)])
def test_smsnet(plain, dims, padding_mode, norm):
    _check(plain, "smsnet", dims, hidden_nodes=5, dilations=[1, 2, 4], channels=[2, 3], padding_mode=padding_mode,
           norm=norm, activation="silu", seed=dims)


@pytest.mark.parametrize("name, kw", [("unet", {"depth": 4, "base_channels": 2}),
                                      ("unet3plus", {"depth": 4, "base_channels": 2, "carry_channels": 2}),
                                      ("random_unet", {"seed": 3, "ranges": {**SMALL_SPEC, "num_scales": [4, 4]}})])
def test_inputs_smaller_than_the_pad_are_replicated_as_in_mixscale(plain, name, kw):
    _check(plain, name, 2, shape=(5, 3), **kw)  # padded to 8 x 8: a pad of 5 > 3 replicates
    _check(plain, name, 3, shape=(9, 3, 6), **kw)


def _random_unet_cases():
    """Seeds covering every pooling kind and both merges (found by sampling, checked here)."""
    from mixscale.nets import sample_unet_spec

    cases, seen = [], set()
    for seed in range(200):
        spec = sample_unet_spec(seed, SMALL_SPEC)
        kind = (spec["pooling"], spec["merge"])
        if kind not in seen:
            seen.add(kind)
            cases.append((seed, kind))
    assert len(seen) == 6
    return cases


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("seed, kind", _random_unet_cases())
def test_random_unet(plain, dims, seed, kind):
    net = _check(plain, "random_unet", dims, seed=seed, ranges=SMALL_SPEC)
    assert (net.spec["pooling"], net.spec["merge"]) == kind


def test_the_file_imports_only_torch_and_the_standard_library():
    tree = ast.parse(FILE.read_text())
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, "no relative imports"
            modules.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            raise AssertionError("no dynamic imports")
    top = {m.split(".")[0] for m in modules}
    assert "torch" in top and top <= {"torch"} | set(sys.stdlib_module_names), modules
    assert not any("mixscale" in m for m in modules)
