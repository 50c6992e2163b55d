"""UNet 3+ deep supervision in the LightningModule: the training loss is the mean over all outputs."""

import pytest
import torch
import torch.nn.functional as F

from mixscale import api
from mixscale.losses import create_loss
from mixscale.nets import create_net
from mixscale.train import MixscaleModule

OPTIM = {"name": "adam", "lr": 1e-3, "weight_decay": 0.0, "momentum": 0.9}
pytestmark = pytest.mark.filterwarnings("ignore:You are trying to `self.log")  # steps called without a Trainer
SCHEDULE = {"name": "none", "step_size": 1, "gamma": 0.1, "patience": 1, "min_lr": 0.0}


def _module(deep: bool, spatial_dims: int = 2) -> MixscaleModule:
    torch.manual_seed(0)
    net = create_net("unet3plus", spatial_dims=spatial_dims, out_channels=3, depth=3, base_channels=4,
                     carry_channels=4, deep_supervision=deep)
    return MixscaleModule(net, create_loss("ce"), task="segmentation", num_classes=3, optim=OPTIM,
                          schedule=SCHEDULE)


def _batch(spatial=(13, 18)):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, *spatial, generator=g)
    y = torch.randint(0, 3, (2, *spatial), generator=g)
    y[0, :4] = -1  # unlabelled pixels are skipped by every output's loss
    return x, y


def _reference(net, x, y):
    """Mean of torch's cross-entropy over the deep outputs, computed by hand."""
    outs = net.deep_outputs(x)
    assert len(outs) == 3
    return sum(F.cross_entropy(o, y, ignore_index=-1) for o in outs) / len(outs), outs


def test_training_step_loss_is_the_mean_over_deep_outputs_and_every_parameter_learns():
    module = _module(deep=True)
    x, y = _batch()
    loss = module.training_step((x, y), 0)
    ref, outs = _reference(module.net, x, y)
    torch.testing.assert_close(loss, ref)
    main_only = F.cross_entropy(outs[0], y, ignore_index=-1)
    assert abs(loss.item() - main_only.item()) > 1e-4  # the extra heads do count
    loss.backward()
    for name, p in module.net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert any(name.startswith("deep_heads") for name, _ in module.net.named_parameters())


def test_validation_uses_the_main_output_only_and_plain_nets_are_unchanged():
    module = _module(deep=True)
    x, y = _batch((16, 11))
    logged = {}
    module.log = lambda name, value, **kw: logged.__setitem__(name, value)
    module.on_validation_epoch_start()
    with torch.no_grad():
        module.validation_step((x, y), 0)
        torch.testing.assert_close(logged["val_loss"], F.cross_entropy(module.net(x), y, ignore_index=-1))
    plain = _module(deep=False)
    loss = plain.training_step((x, y), 0)
    torch.testing.assert_close(loss, F.cross_entropy(plain.net(x), y, ignore_index=-1))


def test_deep_supervision_3d_training_step():
    module = _module(deep=True, spatial_dims=3)
    x, y = _batch((5, 8, 7))
    loss = module.training_step((x, y), 0)
    torch.testing.assert_close(loss, _reference(module.net, x, y)[0])


def test_config_path_trains_unet3plus_with_deep_supervision(tiny_config):
    tiny_config["net"] = {"name": "unet3plus", "depth": 2, "base_channels": 4, "carry_channels": 4,
                          "deep_supervision": True}
    tiny_config["trainer"]["max_epochs"] = 1
    result = api.train(tiny_config)
    assert result.model_path.is_file() and result.best_val_loss is not None
