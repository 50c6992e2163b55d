"""Autoencoder: shapes, bottleneck, gradients, fixed image size, model file, errors."""

import math

import numpy as np
import pytest
import torch

from mixscale.model import ModelInfo, load_model, save_model
from mixscale.nets import Autoencoder, create_net
from mixscale.nets.unet import level_channels

SMALL = dict(depth=2, base_channels=3, growth_rate=1.5, latent_dim=5)
ODD = {2: (13, 11), 3: (7, 5, 9)}


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_shapes_odd_sizes_and_every_parameter_gets_gradient(spatial_dims):
    torch.manual_seed(0)
    shape = ODD[spatial_dims]
    net = create_net("autoencoder", spatial_dims=spatial_dims, in_channels=2, out_channels=3, image_shape=shape,
                     **SMALL)
    x = torch.randn(2, 2, *shape)
    z = net.encode(x)
    assert z.shape == (2, 5)
    y = net(x)
    assert y.shape == (2, 3, *shape) and net.decode(z).shape == y.shape
    (y**2).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.count_nonzero(p.grad) > 0, name


def test_forward_is_decode_of_encode_and_out_channels_default():
    torch.manual_seed(1)
    net = Autoencoder(in_channels=2, image_shape=(12, 10), **SMALL).eval()
    assert net.out_channels == 2 and net.config()["out_channels"] == 2
    x = torch.randn(3, 2, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(net(x), net.decode(net.encode(x)), rtol=0, atol=0)
        # the output depends on the input only through the latent vectors
        z = net.encode(x)
        assert torch.equal(net.decode(z[[2, 0, 1]]), net(x[[2, 0, 1]]))


def test_parameter_count_matches_hand_formula():
    dims, cin, cout, depth, base, growth, latent, shape = 2, 2, 3, 2, 4, 1.5, 7, (9, 16)
    net = Autoencoder(spatial_dims=dims, in_channels=cin, out_channels=cout, image_shape=shape, depth=depth,
                      base_channels=base, growth_rate=growth, latent_dim=latent, norm="batch")
    chans = [round(base * growth**i) for i in range(depth)]
    assert chans == level_channels(depth, base, growth) == [4, 6]
    k = 3**dims

    def block(ci, co):  # two 3x3 convs with bias, each followed by batch norm (2 affine parameters)
        return k * ci * co + co + 2 * co + k * co * co + co + 2 * co

    enc = block(cin, 4) + block(4, 6)
    bottom = math.ceil(9 / 4) * math.ceil(16 / 4)  # padded to multiples of 2**depth, then halved twice
    flat = 6 * bottom
    dense = (flat * latent + latent) + (latent * flat + flat)
    ups = (6 * 4 * 2**dims + 4) + (4 * 4 * 2**dims + 4)  # level 1: 6 -> 4 channels, level 0: 4 -> 4
    dec = block(4, 4) + block(4, 4)
    head = 4 * cout + cout
    assert sum(p.numel() for p in net.parameters()) == enc + dense + ups + dec + head


def test_every_output_pixel_sees_the_whole_image():
    torch.manual_seed(2)
    net = Autoencoder(image_shape=(16, 16), norm=None, activation="elu", **SMALL).eval()
    x = torch.randn(1, 1, 16, 16, requires_grad=True)
    (grad,) = torch.autograd.grad(net(x)[0, 0, 15, 15], x)
    assert grad[0, 0, :4, :4].abs().sum() > 0  # the far corner of the input reaches this output pixel
    assert net.receptive_field == 31 and net.halo == 15
    assert Autoencoder(spatial_dims=3, image_shape=(4, 9, 6), **SMALL).receptive_field == 17


def test_other_image_sizes_are_refused():
    net = Autoencoder(image_shape=(16, 12), **SMALL)
    with pytest.raises(ValueError, match=r"input spatial shape \(12, 16\) differs from image_shape=\(16, 12\)"):
        net(torch.zeros(1, 1, 12, 16))
    with pytest.raises(ValueError, match=r"does not fit a 2D network with in_channels=1"):
        net(torch.zeros(1, 2, 16, 12))
    with pytest.raises(ValueError, match=r"latent input \(2, 4\) is not \(N, latent_dim=5\)"):
        net.decode(torch.zeros(2, 4))


def test_config_rebuilds_same_architecture_and_seed_gives_same_net():
    torch.manual_seed(3)
    a = create_net("autoencoder", spatial_dims=3, image_shape=[6, 5, 4], norm="group", activation="gelu", **SMALL)
    torch.manual_seed(3)
    b = create_net("autoencoder", **a.config())
    assert a.config() == b.config() and a.config()["image_shape"] == [6, 5, 4]
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_model_file_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(4)
    net = Autoencoder(image_shape=(11, 14), in_channels=2, **SMALL)
    with torch.no_grad():
        net(torch.randn(4, 2, 11, 14))  # moves the batch-norm running statistics away from their start
    net.eval()
    info = ModelInfo(net_name="autoencoder", net_config=net.config(), task="regression",
                     normalization={"mean": [0.0, 0.0], "std": [1.0, 1.0]})
    loaded, info2 = load_model(save_model(tmp_path / "ae.safetensors", net, info))
    x = torch.randn(3, 2, 11, 14)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x)) and torch.equal(net.encode(x), loaded.encode(x))
    assert info2.net_config == net.config()


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_shape=(64, 64), spatial_dims=3), r"image_shape=\(64, 64\) is not allowed; expected 3 integers"),
    (dict(image_shape=(8, 0)), r"image_shape=\(8, 0\) is not allowed"),
    (dict(latent_dim=0), r"latent_dim=0 is not allowed; expected an integer >= 1"),
    (dict(depth=0), r"depth=0 is not allowed"),
    (dict(out_channels=0), r"out_channels=0 is not allowed"),
    (dict(growth_rate=0), r"growth_rate=0 is not allowed"),
    (dict(norm="layer"), r"norm='layer' is not allowed"),
    (dict(activation="tanhh"), r"activation='tanhh' is not allowed"),
])
def test_bad_arguments_name_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_net("autoencoder", **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(image_shape=8), r"image_shape=8 is not allowed; expected 2 integers >= 1"),
    (dict(latent_dim=2.5), r"latent_dim=2.5 is not allowed; expected an integer >= 1"),
    (dict(growth_rate="2"), r"growth_rate='2' is not allowed; expected a finite number > 0"),
])
def test_wrong_types_are_type_errors(kwargs, match):
    with pytest.raises(TypeError, match=match):
        create_net("autoencoder", **kwargs)


def _reconstruction_config(tmp_path, **data):
    """A stack of 10 tiny 12x12 images (two kinds of blob) and a 1-epoch reconstruction config."""
    from mixscale.data import write_image

    rng = np.random.default_rng(0)
    stack = rng.normal(0, 0.1, size=(10, 12, 12)).astype(np.float32)
    stack[::2, 2:6, 2:6] += 1.0
    stack[1::2, 6:11, 5:10] += 2.0
    path = tmp_path / "stack.tif"
    write_image(str(path), stack)
    cfg = {"version": 1, "task": "reconstruction", "run_dir": str(tmp_path / "run"), "seed": 0,
           "data": {"train_images": str(path), "patch_shape": [12, 12], "samples_per_epoch": 8, "val_samples": 4,
                    "batch_size": 4, **data},
           "net": {"name": "autoencoder", "depth": 2, "base_channels": 3, "latent_dim": 4},
           "trainer": {"max_epochs": 1, "progress_bar": False, "accelerator": "cpu", "devices": 1}}
    return cfg, stack


def test_reconstruction_task_trains_through_the_config_and_saves_the_model(tmp_path):
    from mixscale import api

    cfg, stack = _reconstruction_config(tmp_path)
    result = api.train(cfg)
    net, info = load_model(result.model_path)
    assert isinstance(net, Autoencoder) and net.image_shape == (12, 12) and net.out_channels == 1
    assert info.train_config["task"] == "reconstruction" and info.train_config["loss"] is None
    assert info.task == "regression"  # image in, image out, de-normalised with the stored statistics
    assert info.target_normalization == info.normalization
    assert result.best_val_loss is not None and np.isfinite(result.best_val_loss)
    out = api.predict(result.model_path, stack[3])
    assert out.shape == (12, 12) and np.isfinite(out).all()
    with torch.no_grad():
        assert net.encode(torch.from_numpy(stack[:3, None])).shape == (3, 4)


def test_reconstruction_config_errors(tmp_path):
    from mixscale import api
    from mixscale.config import ConfigError

    cfg, _ = _reconstruction_config(tmp_path)
    with pytest.raises(ConfigError, match="uses the images as targets: remove data.train_labels"):
        api.train(cfg, overrides=["data.train_labels=x.tif"])
    with pytest.raises(ConfigError, match="data.train_labels is required for task 'regression'"):
        api.train(cfg, overrides=["task=regression"])
    with pytest.raises(ValueError, match=r"net.image_shape=\[8, 8\] must equal data.patch_shape=\[12, 12\]"):
        api.train(cfg, overrides=["net.image_shape=[8, 8]"])
    with pytest.raises(ValueError, match="cannot hold out pixels"):
        api.train(cfg, overrides=["data.split=pixels"])
    assert not (tmp_path / "run").exists()  # every error came before the run directory was written


def test_reconstruction_through_the_cli(tmp_path):
    import yaml

    from mixscale.cli.main import main

    cfg, _ = _reconstruction_config(tmp_path)
    path = tmp_path / "ae.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["train", str(path), "--set", "data.samples_per_epoch=4"]) == 0
    assert (tmp_path / "run" / "model.safetensors").is_file()


def test_reconstruction_data_targets_are_the_normalised_inputs(tmp_path):
    from mixscale.config import validate_config
    from mixscale.train.builder import build_data

    cfg, stack = _reconstruction_config(tmp_path)
    data = build_data(validate_config(cfg))
    assert len(data.train.sampler.images) == 8 and len(data.val.sampler.images) == 2  # a stack: one sample each
    assert data.in_channels == data.out_channels == 1
    mean, std = data.normalization["mean"][0], data.normalization["std"][0]  # training images only
    for ds in (data.train, data.val):
        for i in range(3):
            x, y = ds[i]
            assert x.shape == y.shape == (1, 12, 12)
            torch.testing.assert_close(x, y, rtol=0, atol=1e-6)  # dihedral moves both, intensity changes are off
            # a whole image of the stack, normalised (up to a flip/rotation)
            assert any(np.allclose(np.sort(((s - mean) / std).ravel()), np.sort(x.numpy().ravel()), atol=1e-3)
                       for s in stack)
