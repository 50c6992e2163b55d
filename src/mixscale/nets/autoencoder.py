"""Convolutional autoencoder with a vector bottleneck, 2D and 3D (latent-space views).

The encoder halves the resolution ``depth`` times, flattens the smallest map and
projects it to ``latent_dim`` numbers per image; the decoder projects them back to
the smallest map and doubles the resolution ``depth`` times. Because the dense
bottleneck sees every pixel, the network works on images of one fixed size,
``image_shape``: other sizes are refused (resize or crop them first).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_float, check_int, check_shape, not_allowed
from ._common import (
    NORMS,
    check_input,
    check_spatial_dims,
    crop_center,
    make_activation,
    pad_to_multiple,
)
from .registry import NetBase, register_net
from .unet import ConvBlock, level_channels


def check_image_shape(image_shape, spatial_dims: int) -> tuple[int, ...]:
    """``image_shape`` as a tuple of ``spatial_dims`` ints >= 1, one per axis (a single int is refused)."""
    what = f"(one per spatial axis of a {spatial_dims}D network)"
    try:
        iter(image_shape)
    except TypeError:
        raise not_allowed("image_shape", image_shape, f"{spatial_dims} integers >= 1 {what}", TypeError) from None
    return check_shape("image_shape", image_shape, ndim=spatial_dims, what=what)


@register_net("autoencoder")
class Autoencoder(NetBase):
    """Convolutional autoencoder whose bottleneck is one vector per image.

    Parameters
    ----------
    spatial_dims : {2, 3}
    in_channels : int
    out_channels : int or None
        Channels of the reconstruction; ``None`` means ``in_channels``.
    image_shape : tuple of int
        The one spatial size the network accepts, one entry per axis. Sides that
        are not multiples of ``2 ** depth`` are padded inside (reflection) and
        the output is cropped back.
    depth : int
        Number of down-sampling levels (2x max pooling each; up-sampling by
        2x transposed convolutions in the decoder).
    base_channels : int
        Channels at full resolution.
    growth_rate : float
        Channels grow by this factor per level (rounded).
    latent_dim : int
        Length of the latent vector of each image.
    norm : {"batch", "instance", "group", None}
    activation : {"relu", "leaky_relu", "elu", "gelu", "silu", "prelu"}

    Shapes
    ------
    ``forward``: ``(N, in_channels, *image_shape) -> (N, out_channels, *image_shape)``;
    ``encode``: ``(N, in_channels, *image_shape) -> (N, latent_dim)``;
    ``decode``: ``(N, latent_dim) -> (N, out_channels, *image_shape)``.

    Notes
    -----
    Every output pixel depends on every input pixel (through the dense
    bottleneck): :attr:`receptive_field` is ``2 * max(image_shape) - 1``, the
    width of a window that covers the whole image from any pixel. Tiled
    prediction of larger images is therefore not meaningful for this network.

    Examples
    --------
    >>> net = Autoencoder(image_shape=(28, 28), depth=2, base_channels=4, latent_dim=8)
    >>> x = torch.zeros(3, 1, 28, 28)
    >>> net.encode(x).shape, net(x).shape
    (torch.Size([3, 8]), torch.Size([3, 1, 28, 28]))
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int | None = None,
        image_shape: tuple[int, ...] = (64, 64),
        depth: int = 3,
        base_channels: int = 16,
        growth_rate: float = 2.0,
        latent_dim: int = 32,
        norm: str | None = "batch",
        activation: str = "relu",
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = in_channels if out_channels is None else check_int("out_channels", out_channels,
                                                                                minimum=1)
        self.image_shape = check_image_shape(image_shape, self.spatial_dims)
        self.depth = check_int("depth", depth, minimum=1)
        self.base_channels = check_int("base_channels", base_channels, minimum=1)
        self.growth_rate = check_float("growth_rate", growth_rate, minimum=0, open_minimum=True)
        self.latent_dim = check_int("latent_dim", latent_dim, minimum=1)
        self.norm = check_choice("norm", norm, NORMS)
        self.activation = activation
        make_activation(activation)  # validates the name early
        multiple = 2**self.depth
        self._padded = tuple(math.ceil(s / multiple) * multiple for s in self.image_shape)
        self._bottom = tuple(p // multiple for p in self._padded)
        chans = level_channels(self.depth, self.base_channels, self.growth_rate)
        block = lambda cin, cout: ConvBlock(spatial_dims, cin, cout, 1.0, norm, activation)  # noqa: E731
        self.encoders = nn.ModuleList(block(in_channels if i == 0 else chans[i - 1], chans[i]) for i in range(depth))
        flat = chans[-1] * math.prod(self._bottom)
        self.to_latent = nn.Linear(flat, self.latent_dim)
        self.from_latent = nn.Linear(self.latent_dim, flat)
        self.latent_activation = make_activation(activation)
        up = nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d
        below = [chans[max(i - 1, 0)] for i in range(depth)]  # channels after up-sampling level i
        self.ups = nn.ModuleList(up(chans[i], below[i], 2, stride=2) for i in range(depth))
        self.decoders = nn.ModuleList(block(below[i], below[i]) for i in range(depth))
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.head = conv(chans[0], self.out_channels, 1)

    def _config_overrides(self) -> dict:
        """``out_channels`` resolved (``None`` means ``in_channels``)."""
        return {"out_channels": self.out_channels}

    @property
    def receptive_field(self) -> int:
        """``2 * max(image_shape) - 1``: every output pixel sees the whole image (see Notes)."""
        return 2 * max(self.image_shape) - 1

    @property
    def fixed_input_shape(self) -> tuple[int, ...]:
        return tuple(self.image_shape)

    def _check_image(self, x: torch.Tensor) -> None:
        check_input(x, spatial_dims=self.spatial_dims, in_channels=self.in_channels, net="autoencoder")
        if tuple(x.shape[2:]) != self.image_shape:
            raise ValueError(
                f"autoencoder: input spatial shape {tuple(x.shape[2:])} differs from image_shape="
                f"{self.image_shape}; its dense bottleneck accepts only that size (resize or crop the input, "
                "or build the network with another image_shape)"
            )

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent vectors: ``(N, in_channels, *image_shape) -> (N, latent_dim)``."""
        self._check_image(x)
        x, _ = pad_to_multiple(x, 2 ** self.depth)
        pool = F.max_pool2d if self.spatial_dims == 2 else F.max_pool3d
        h = x
        for enc in self.encoders:
            h = pool(enc(h), 2)
        return self.to_latent(h.flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images from latent vectors: ``(N, latent_dim) -> (N, out_channels, *image_shape)``."""
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.latent_dim:
            shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"autoencoder: latent input {shape} is not (N, latent_dim={self.latent_dim})")
        h = self.latent_activation(self.from_latent(z))
        h = h.view(z.shape[0], -1, *self._bottom)
        for level in reversed(range(self.depth)):
            h = self.decoders[level](self.ups[level](h))
        out = self.head(h)
        return crop_center(out, self.image_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``decode(encode(x))``: ``(N, in_channels, *image_shape) -> (N, out_channels, *image_shape)``."""
        return self.decode(self.encode(x))
