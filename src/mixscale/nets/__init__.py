"""Network architectures; build them by name with :func:`create_net`."""

from .msd import MSDNet, msd_parameter_count
from .registry import create_net, list_nets, net_class, net_defaults, register_net
from .unet import UNet

__all__ = ["MSDNet", "UNet", "create_net", "list_nets", "msd_parameter_count", "net_class", "net_defaults",
           "register_net"]
