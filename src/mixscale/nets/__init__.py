"""Network architectures; build them by name with :func:`create_net`."""

from ._common import release_scratch
from .autoencoder import Autoencoder
from .classifier import PatchClassifier
from .msd import MSDNet, msd_parameter_count
from .random_unet import RandomUNet, sample_unet_spec
from .registry import NetBase, create_net, list_nets, net_class, net_defaults, register_net
from .smsnet import SMSNet
from .unet import UNet
from .unet3plus import UNet3Plus

__all__ = ["Autoencoder", "NetBase", "PatchClassifier", "MSDNet", "RandomUNet", "SMSNet", "UNet", "UNet3Plus",
           "create_net", "list_nets", "msd_parameter_count", "net_class", "net_defaults", "register_net",
           "release_scratch", "sample_unet_spec"]
