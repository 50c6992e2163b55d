"""Random encoder-decoder nets: reproducible specs within their ranges, every parameter used, exact reload."""

import json

import pytest
import torch

from mixscale import api
from mixscale.model import ModelInfo, load_model, save_model
from mixscale.nets import RandomUNet, create_net, sample_unet_spec
from mixscale.nets.random_unet import DEFAULT_RANGES, check_unet_spec

TINY = {"num_scales": [1, 3], "base_channels": [2, 4], "convs_per_block": [1, 2], "dilation": [1, 2]}
ODD = {2: (13, 11), 3: (9, 7, 11)}


def _arch(net):
    return [(name, tuple(p.shape)) for name, p in net.named_parameters()], str(net)


def test_same_seed_same_spec_and_same_net():
    assert sample_unet_spec(5) == sample_unet_spec(5)
    torch.manual_seed(0)
    a = RandomUNet(seed=5)
    torch.manual_seed(0)
    b = create_net("random_unet", seed=5)
    assert _arch(a) == _arch(b)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_different_seeds_give_different_specs():
    specs = [json.dumps({k: v for k, v in sample_unet_spec(s).items() if k != "seed"}) for s in range(50)]
    assert len(set(specs)) == 50


def _observed(spec):
    """Every sampled value of a spec, by range name."""
    seen = {"num_scales": [spec["num_scales"]], "base_channels": [spec["base_channels"]],
            "channel_growth": [spec["channel_growth"]], "pooling": [spec["pooling"]], "merge": [spec["merge"]],
            "activation": [], "norm": [], "kernel_size": [], "convs_per_block": [], "dilation": []}
    for path in (spec["encoder"], spec["decoder"]):
        seen["activation"].append(path["activation"])
        seen["norm"].append(path["norm"])
        for block in path["blocks"]:
            seen["kernel_size"].append(block["kernel_size"])
            seen["convs_per_block"].append(len(block["layers"]))
            seen["dilation"] += [layer["dilation"] for layer in block["layers"]]
    return seen


@pytest.mark.parametrize("ranges", [None, {"num_scales": [1, 5], "channel_growth": [0.5, 0.75],
                                           "kernel_size": [1, 7], "norm": [None], "merge": ["sum"],
                                           "activation": ("gelu", "elu"), "dilation": [2, 4]}])
def test_sampled_values_lie_within_ranges_and_cover_them(ranges):
    r = {**DEFAULT_RANGES, **(ranges or {})}
    seen = {k: set() for k in r}
    for seed in range(200):
        spec = sample_unet_spec(seed, ranges)
        assert len(spec["encoder"]["blocks"]) == spec["num_scales"] == len(spec["decoder"]["blocks"]) + 1
        for key, values in _observed(spec).items():
            seen[key].update(values)
    for key, allowed in r.items():
        if key == "channel_growth":  # continuous: inside, and spread over most of the interval
            assert allowed[0] <= min(seen[key]) and max(seen[key]) <= allowed[1]
            assert max(seen[key]) - min(seen[key]) > 0.8 * (allowed[1] - allowed[0])
        elif key in ("num_scales", "base_channels", "convs_per_block", "dilation"):
            assert seen[key] == set(range(allowed[0], allowed[1] + 1)), key  # inside, every value drawn
        else:
            assert seen[key] == set(allowed), key


def test_spec_survives_json_round_trip_and_rebuilds_the_same_net():
    for seed in range(10):
        net = RandomUNet(seed=seed, ranges=TINY)
        text = json.dumps(net.config())
        again = json.loads(text)
        assert again == net.config() and again["spec"] == sample_unet_spec(seed, TINY)
        assert _arch(create_net("random_unet", **again)) == _arch(net)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_odd_sizes_and_every_parameter_gets_a_gradient_for_many_specs(spatial_dims):
    seeds = range(20) if spatial_dims == 2 else range(5)
    kinds = set()
    for seed in seeds:
        torch.manual_seed(seed)
        net = RandomUNet(spatial_dims=spatial_dims, in_channels=2, out_channels=3, seed=seed, ranges=TINY).double()
        kinds.add((net.spec["pooling"], net.spec["merge"]))
        x = torch.randn(2, 2, *ODD[spatial_dims], dtype=torch.float64)
        y = net(x)
        assert y.shape == (2, 3, *ODD[spatial_dims])
        (y**2).mean().backward()
        for name, p in net.named_parameters():
            assert p.grad is not None and torch.count_nonzero(p.grad) > 0, (seed, name)
            assert p.grad.abs().max() > 1e-10, (seed, name)  # not float64 rounding noise
    if spatial_dims == 2:
        assert len(kinds) == 6  # every pooling kind with both merges was exercised


def test_model_file_round_trip_is_identical_without_resampling(tmp_path):
    torch.manual_seed(1)
    net = RandomUNet(spatial_dims=3, out_channels=2, seed=11, ranges={**TINY, "norm": ["batch"]})
    net(torch.randn(2, 1, 8, 8, 8))  # training mode: running statistics move
    net.eval()
    info = ModelInfo(net_name="random_unet", net_config=net.config(), task="segmentation", class_names=["a", "b"],
                     normalization={"mean": [0.0], "std": [1.0]}, train_config={})
    loaded, info2 = load_model(save_model(tmp_path / "m.safetensors", net, info))
    assert info2.net_config["spec"] == net.spec and info2.net_config["ranges"] is None  # nothing re-sampled
    x = torch.randn(1, 1, 9, 7, 11)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))


def test_receptive_field_from_a_hand_written_spec():
    spec = {"version": 1, "num_scales": 2, "base_channels": 2, "channel_growth": 1.0, "pooling": "avg",
            "merge": "concat",
            "encoder": {"activation": "relu", "norm": None, "blocks": [
                {"kernel_size": 3, "layers": [{"dilation": 1}, {"dilation": 2}]},
                {"kernel_size": 5, "layers": [{"dilation": 1}]}]},
            "decoder": {"activation": "relu", "norm": None, "blocks": [
                {"kernel_size": 3, "layers": [{"dilation": 3}]}]}}
    # half-widths: 1 + 2 (level 0), pooling 1, 2 * 2 (5 taps at spacing 2), transposed conv 1, 3 (dilation 3)
    assert RandomUNet(spec=spec).receptive_field == 2 * (1 + 2 + 1 + 4 + 1 + 3) + 1
    assert RandomUNet(spec=spec).halo == 12


def test_receptive_field_bounds_the_gradient_support():
    reach_ratio = []
    for seed in range(6):
        torch.manual_seed(seed)
        net = RandomUNet(seed=seed, ranges={**TINY, "norm": [None, "batch"], "num_scales": [2, 3],
                                            "activation": ["gelu", "elu"]}).double().eval()
        size = 2 * net.halo + 12
        size += (-size) % 4  # no internal padding
        x = torch.randn(1, 1, size, size, dtype=torch.float64, requires_grad=True)
        net(x)[0, 0, size // 2, size // 2].backward()
        reach = (torch.nonzero(x.grad[0, 0]) - size // 2).abs().max().item()
        assert reach <= net.halo, seed
        reach_ratio.append(reach / net.halo)
    assert min(reach_ratio) > 0.6  # the estimate is close, not just safe


@pytest.mark.parametrize("ranges, match", [
    ({"depth": [1, 2]}, r"unknown range\(s\) \['depth'\]"),
    ({"num_scales": [3, 2]}, "low must not exceed high"),
    ({"num_scales": [0, 2]}, r"ranges\['num_scales'\]=0 is not allowed"),
    ({"num_scales": [2]}, r"expected a \[low, high\] pair"),
    ({"channel_growth": [0, 1]}, r"ranges\['channel_growth'\]=0"),
    ({"kernel_size": [3, 4]}, r"ranges\['kernel_size'\]=4 is not allowed; expected an odd integer"),
    ({"norm": []}, "expected a non-empty list"),
    ({"pooling": ["median"]}, r"ranges\['pooling'\]='median' is not allowed; expected one of"),
])
def test_bad_ranges_are_named(ranges, match):
    with pytest.raises(ValueError, match=match):
        sample_unet_spec(0, ranges)


@pytest.mark.parametrize("ranges, match", [
    ([("num_scales", [2, 3])], r"ranges=\[\('num_scales', \[2, 3\]\)\] is not allowed; expected a dict"),
    ({"norm": "batch"}, r"ranges\['norm'\]='batch' is not allowed; expected a non-empty list"),
    ({"num_scales": [2, 3.5]}, r"ranges\['num_scales'\]=3.5 is not allowed; expected an integer >= 1"),
    ({"kernel_size": [3.0]}, r"ranges\['kernel_size'\]=3.0 is not allowed; expected an integer >= 1"),
])
def test_wrong_range_types_are_type_errors(ranges, match):
    with pytest.raises(TypeError, match=match):
        sample_unet_spec(0, ranges)


def test_bad_specs_and_conflicting_arguments_are_named():
    spec = sample_unet_spec(2, TINY)
    with pytest.raises(ValueError, match="ranges cannot be combined with spec"):
        RandomUNet(spec=spec, ranges=TINY)
    with pytest.raises(ValueError, match=r"seed=3 conflicts with spec\['seed'\]=2"):
        RandomUNet(spec=spec, seed=3)
    assert RandomUNet(spec=spec, seed=2).spec == spec
    with pytest.raises(ValueError, match="seed=-1 is not allowed"):
        sample_unet_spec(-1)
    broken = json.loads(json.dumps(spec))
    broken["decoder"]["blocks"].append(broken["encoder"]["blocks"][0])
    with pytest.raises(ValueError, match=r"spec\['decoder'\]\['blocks'\] must be a list of"):
        check_unet_spec(broken)
    broken = json.loads(json.dumps(spec))
    broken["encoder"]["blocks"][0]["layers"][0]["dilation"] = 0
    with pytest.raises(ValueError, match=r"spec\['encoder'\]\['blocks'\]\[0\]\['layers'\]\[0\]\['dilation'\]=0"):
        check_unet_spec(broken)
    with pytest.raises(ValueError, match=r"spec has missing key\(s\) \['merge'\]"):
        check_unet_spec({k: v for k, v in spec.items() if k != "merge"})
    with pytest.raises(ValueError, match=r"spec\['version'\]=2 is not supported"):
        check_unet_spec({**spec, "version": 2})


def test_trains_through_the_config_path(tiny_config):
    ranges = {"num_scales": [2, 2], "base_channels": [2, 3], "convs_per_block": [1, 1]}
    tiny_config["net"] = {"name": "random_unet", "seed": 4, "ranges": ranges}
    tiny_config["trainer"]["max_epochs"] = 1
    result = api.train(tiny_config)
    net, info = load_model(result.model_path)
    assert isinstance(net, RandomUNet) and net.spec == sample_unet_spec(4, ranges)
