"""Tunable U-Net for 2D and 3D images (DLSIA's TUNet knobs, any input size)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_float, check_int
from ._common import (
    NORMS,
    check_input,
    check_spatial_dims,
    conv_nd,
    crop_center,
    make_activation,
    make_norm,
    pad_to_multiple,
)
from .registry import NetBase, register_net


def level_channels(depth: int, base_channels: int, growth_rate: float) -> list[int]:
    """Channels at each resolution level: ``round(base_channels * growth_rate ** level)``."""
    return [max(1, int(round(base_channels * growth_rate**level))) for level in range(depth)]


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions (in -> hidden -> out), each followed by norm and activation.

    ``hidden = round(out_channels * hidden_rate)``.
    """

    def __init__(self, spatial_dims, in_channels, out_channels, hidden_rate, norm, activation):
        hidden = max(1, int(round(out_channels * hidden_rate)))
        conv = conv_nd(spatial_dims)
        super().__init__(
            conv(in_channels, hidden, 3, padding=1),
            make_norm(norm, spatial_dims, hidden),
            make_activation(activation),
            conv(hidden, out_channels, 3, padding=1),
            make_norm(norm, spatial_dims, out_channels),
            make_activation(activation),
        )


@register_net("unet")
class UNet(NetBase):
    """U-Net with tunable depth, width growth and hidden width.

    Parameters
    ----------
    spatial_dims : {2, 3}
    in_channels, out_channels : int
    depth : int
        Number of resolution levels (``depth - 1`` poolings by 2).
    base_channels : int
        Channels at full resolution.
    growth_rate : float
        Channels grow by this factor per level (non-integer allowed; rounded).
    hidden_rate : float
        Width of the first conv of each block relative to the block's output.
    norm : {"batch", "instance", "group", None}
    activation : {"relu", "leaky_relu", "elu", "gelu", "silu", "prelu"}

    Shapes
    ------
    ``(N, in_channels, *spatial) -> (N, out_channels, *spatial)`` for any spatial
    size: the input is padded inside to a multiple of ``2 ** (depth - 1)`` and the
    output cropped back.

    Examples
    --------
    >>> net = UNet(depth=3, base_channels=8)
    >>> net(torch.zeros(1, 1, 37, 21)).shape
    torch.Size([1, 1, 37, 21])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 4,
        base_channels: int = 16,
        growth_rate: float = 2.0,
        hidden_rate: float = 1.0,
        norm: str | None = "batch",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        self.depth = check_int("depth", depth, minimum=1)
        self.base_channels = check_int("base_channels", base_channels, minimum=1)
        self.growth_rate = check_float("growth_rate", growth_rate, minimum=0, open_minimum=True)
        self.hidden_rate = check_float("hidden_rate", hidden_rate, minimum=0, open_minimum=True)
        self.norm = check_choice("norm", norm, NORMS)
        self.activation = activation
        make_activation(activation)  # validates the name early
        chans = level_channels(depth, base_channels, self.growth_rate)
        block = lambda cin, cout: ConvBlock(spatial_dims, cin, cout, self.hidden_rate, norm, activation)  # noqa: E731
        self.encoders = nn.ModuleList(block(in_channels if i == 0 else chans[i - 1], chans[i]) for i in range(depth))
        up = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
        self.ups = nn.ModuleList(up(chans[i + 1], chans[i], 2, stride=2) for i in range(depth - 1))
        self.decoders = nn.ModuleList(block(2 * chans[i], chans[i]) for i in range(depth - 1))
        self.head = conv_nd(spatial_dims)(chans[0], out_channels, 1)

    @property
    def receptive_field(self) -> int:
        """Conservative width in pixels of the region one output pixel depends on."""
        rf, step = 1, 1
        for level in range(self.depth):
            rf += 4 * step  # two 3x3 convs at this level's pixel spacing
            if level < self.depth - 1:
                rf += step  # 2x2 pooling
                step *= 2
        for _ in range(self.depth - 1):
            step //= 2
            rf += step + 4 * step  # transposed conv, then two 3x3 convs
        return rf

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, *spatial) -> (N, out_channels, *spatial)``."""
        check_input(x, spatial_dims=self.spatial_dims, in_channels=self.in_channels, net="unet")
        padded, spatial = pad_to_multiple(x, 2 ** (self.depth - 1))
        pool = F.max_pool2d if self.spatial_dims == 2 else F.max_pool3d
        skips, h = [], padded
        for level, enc in enumerate(self.encoders):
            h = enc(h)
            if level < self.depth - 1:
                skips.append(h)
                h = pool(h, 2)
        for level in reversed(range(self.depth - 1)):
            h = self.decoders[level](torch.cat([skips[level], self.ups[level](h)], dim=1))
        out = self.head(h)
        return crop_center(out, spatial)
