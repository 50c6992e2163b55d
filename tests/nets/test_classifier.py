"""Patch classifier: shapes, gradients, dense map == patch by patch, config, model file, errors."""

import itertools

import numpy as np
import pytest
import torch

from mixscale.model import ModelInfo, load_model, save_model
from mixscale.nets import PatchClassifier, create_net
from mixscale.nets.classifier import feature_shape, pad_for_patches

SMALL = dict(base_channels=3, growth_rate=1.5, hidden_channels=5)


def _randomise_norms(net):
    """Non-trivial running statistics, so eval-mode batch norm is not the identity."""
    for m in net.modules():
        if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return net


@pytest.mark.parametrize("spatial_dims, patch, pooling, activation", [
    (2, (15, 12), "flatten", "prelu"), (2, (11, 13), "mean", "elu"), (3, (10, 12, 11), "max", "leaky_relu"),
    (3, (12, 14, 10), "flatten", "gelu"),
])
def test_forward_shape_and_every_parameter_gets_gradient(spatial_dims, patch, pooling, activation):
    torch.manual_seed(0)
    net = PatchClassifier(spatial_dims=spatial_dims, in_channels=2, out_channels=3, patch_shape=patch,
                          pooling=pooling, activation=activation, dropout=0.2, **SMALL)
    x = torch.randn(4, 2, *patch)
    y = net(x)
    assert y.shape == (4, 3)
    torch.nn.functional.cross_entropy(y, torch.tensor([0, 1, 2, 1])).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name


def _patchwise(net, x, patch):
    """Reference: cut the (independently) reflect-padded patch around every pixel and classify them all."""
    lo = [p // 2 for p in patch]
    width = [(0, 0), (0, 0)] + [(a, p - 1 - a) for a, p in zip(lo, patch)]
    xp = torch.from_numpy(np.pad(x.numpy(), width, mode="reflect"))
    spatial = tuple(x.shape[2:])
    patches = [xp[(slice(None), slice(None)) + tuple(slice(i, i + p) for i, p in zip(idx, patch))]
               for idx in itertools.product(*[range(s) for s in spatial])]
    out = net(torch.cat(patches))  # (pixels * N, K), pixel-major
    return out.view(-1, x.shape[0], net.out_channels).permute(1, 2, 0).reshape(x.shape[0], -1, *spatial)


@pytest.mark.parametrize("spatial_dims, patch, pooling, kernel, norm, shape", [
    (2, (15, 12), "flatten", 3, "batch", (13, 11)),
    (2, (10, 11), "mean", 3, None, (9, 12)),
    (2, (17, 16), "flatten", 5, "batch", (12, 10)),
    (3, (8, 9, 7), "max", 2, "batch", (7, 9, 8)),
])
def test_dense_logits_equal_patch_by_patch(spatial_dims, patch, pooling, kernel, norm, shape):
    torch.manual_seed(1)
    net = PatchClassifier(spatial_dims=spatial_dims, in_channels=2, out_channels=3, patch_shape=patch,
                          pooling=pooling, kernel_size=kernel, norm=norm, **SMALL).double()
    net = _randomise_norms(net).eval()
    x = torch.randn(2, 2, *shape, dtype=torch.float64)
    with torch.no_grad():
        dense = net.dense_logits(x)
        ref = _patchwise(net, x, patch)
    assert dense.shape == (2, 3, *shape)
    torch.testing.assert_close(dense, ref, rtol=1e-12, atol=1e-12)


def test_dense_logits_on_images_smaller_than_half_a_patch_replicate_the_edge():
    torch.manual_seed(2)
    net = PatchClassifier(patch_shape=15, **SMALL).double().eval()
    x = torch.randn(1, 1, 5, 6, dtype=torch.float64)
    padded = pad_for_patches(x, (15, 15))
    assert torch.equal(padded[0, 0, :7, 7:13], x[0, 0, :1].expand(7, 6))  # edge replicated above the image
    with torch.no_grad():
        dense = net.dense_logits(x)
        ref = net(padded[:, :, 0:15, 0:15])
    torch.testing.assert_close(dense[:, :, 0, 0], ref)


def test_config_round_trip_same_seed_same_net_and_defaults():
    net = PatchClassifier(spatial_dims=3, patch_shape=(9, 10, 11), depth=1, norm="group", pooling="mean",
                          hidden_channels=0, dropout=0.5)
    cfg = net.config()
    assert cfg["patch_shape"] == [9, 10, 11] and cfg["hidden_channels"] == 0
    torch.manual_seed(3)
    a = create_net("classifier", **cfg)
    torch.manual_seed(3)
    b = create_net("classifier", **cfg)
    assert a.config() == cfg
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    default = PatchClassifier()
    assert default.patch_shape == (15, 15) and default.receptive_field == 15 and default.halo == 7
    assert PatchClassifier(patch_shape=(11, 21)).receptive_field == 21
    assert PatchClassifier(patch_shape=(16, 12)).halo == 8  # 8 pixels before the centre of a 16-pixel patch
    assert feature_shape((15, 12), 2, 3) == (2, 1)  # 15 -> 13 -> 6 -> 4 -> 2 ; 12 -> 10 -> 5 -> 3 -> 1


def test_model_file_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(4)
    net = _randomise_norms(PatchClassifier(patch_shape=(13, 11), out_channels=3, **SMALL)).eval()
    info = ModelInfo(net_name="classifier", net_config=net.config(), task="segmentation",
                     class_names=["background", "particle", "junk"])
    loaded, info2 = load_model(save_model(tmp_path / "m.safetensors", net, info))
    x = torch.randn(3, 1, 13, 11)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))
        big = torch.randn(1, 1, 20, 17)
        assert torch.equal(net.dense_logits(big), loaded.dense_logits(big))
    assert info2 == info


@pytest.mark.parametrize("kwargs, match", [
    (dict(spatial_dims=4), "spatial_dims=4"),
    (dict(patch_shape=(15,)), r"patch_shape=\(15,\) is not allowed"),
    (dict(patch_shape=0), "patch_shape=0"),
    (dict(patch_shape=(8, 8)), r"too small for depth=2"),
    (dict(depth=0), "depth=0"),
    (dict(growth_rate=0), "growth_rate=0"),
    (dict(kernel_size=0), "kernel_size=0"),
    (dict(norm="layer"), "norm='layer'"),
    (dict(activation="tanh"), "activation='tanh'"),
    (dict(pooling="avg"), "pooling='avg'"),
    (dict(hidden_channels=-1), "hidden_channels=-1"),
    (dict(dropout=1.0), r"dropout=1.0 is not allowed; expected a fraction in \[0, 1\)"),
    (dict(out_channels=0), "out_channels=0"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PatchClassifier(**kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(patch_shape=15.0), "patch_shape=15.0 is not allowed; expected 2 integers >= 1"),
    (dict(depth=2.0), "depth=2.0 is not allowed; expected an integer >= 1"),
    (dict(dropout="0.5"), r"dropout='0.5' is not allowed; expected a fraction in \[0, 1\)"),
    (dict(growth_rate=True), "growth_rate=True is not allowed"),
])
def test_wrong_types_are_type_errors(kwargs, match):
    with pytest.raises(TypeError, match=match):
        PatchClassifier(**kwargs)


def test_bad_inputs_are_refused():
    net = PatchClassifier(patch_shape=11, norm="instance", **SMALL)
    with pytest.raises(ValueError, match=r"expected \(N, 1, 11, 11\); use dense_logits"):
        net(torch.zeros(1, 1, 12, 11))
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        net(np.zeros((1, 1, 11, 11)))
    with pytest.raises(ValueError, match="dense_logits needs norm None or 'batch'"):
        net.eval().dense_logits(torch.zeros(1, 1, 20, 20))
    with pytest.raises(ValueError, match="training=True"):
        PatchClassifier(patch_shape=11).dense_logits(torch.zeros(1, 1, 20, 20))
    with pytest.raises(ValueError, match=r"expected \(N, 1, \*, \*\)"):
        PatchClassifier(patch_shape=11).eval().dense_logits(torch.zeros(1, 2, 20, 20))


@pytest.mark.parametrize("patch", [(15, 15), (16, 13)])
def test_tiled_dense_logits_with_the_halo_equal_whole_image(patch):
    from mixscale.infer import predict_tiled

    torch.manual_seed(5)
    net = _randomise_norms(PatchClassifier(patch_shape=patch, **SMALL)).eval()
    image = torch.randn(1, 45, 38)
    with torch.no_grad():
        whole = net.dense_logits(image[None])[0]
        tiled = predict_tiled(net.dense_logits, image, tile_shape=16, overlap=0.25, halo=net.halo, blend="constant")
    torch.testing.assert_close(tiled, whole, rtol=1e-4, atol=1e-5)
