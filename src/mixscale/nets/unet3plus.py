"""UNet 3+ (Huang et al., ICASSP 2020): full-scale skip connections, 2D and 3D, any input size.

Every decoder level aggregates *all* encoder levels and all coarser decoder levels.
At decoder level ``i`` (0 = full resolution), source level ``j`` is

* an encoder map max-pooled by ``2 ** (i - j)`` when ``j < i`` (finer),
* the encoder map of level ``i`` itself when ``j == i``,
* a decoder map upsampled (linear interpolation) by ``2 ** (j - i)`` when ``j > i``
  (the deepest "decoder" map is the bottleneck encoder map),

each sent through a 3x3 convolution to ``carry_channels`` maps + norm + activation;
the ``depth`` results are concatenated and fused by a 3x3 convolution to
``depth * carry_channels`` maps + norm + activation. Unlike DLSIA's TUNet3+, every
block that is built is used, so every parameter receives a gradient.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_bool, check_choice, check_float, check_int
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
from .unet import ConvBlock, level_channels


def conv_norm_act(spatial_dims: int, in_channels: int, out_channels: int, norm, activation, kernel_size: int = 3,
                  dilation: int = 1) -> nn.Sequential:
    """A "same" convolution + norm + activation.

    The bias is left out before any norm: batch and instance norm (and group norm
    with one channel per group) subtract each channel's mean and would cancel it
    exactly, leaving a parameter whose gradient is zero.
    """
    bias = norm is None
    return nn.Sequential(
        conv_nd(spatial_dims)(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size - 1) // 2,
                              dilation=dilation, bias=bias),
        make_norm(norm, spatial_dims, out_channels),
        make_activation(activation),
    )


def _resize(x: torch.Tensor, size: tuple[int, ...], steps: int) -> torch.Tensor:
    """Move ``x`` ``steps`` levels down (max-pool, ``steps > 0``) or up (linear interpolation, ``< 0``)."""
    if steps > 0:
        pool = F.max_pool2d if x.ndim == 4 else F.max_pool3d
        return pool(x, 2**steps)
    if steps < 0:
        mode = "bilinear" if x.ndim == 4 else "trilinear"
        return F.interpolate(x, size=size, mode=mode, align_corners=False)
    return x


@register_net("unet3plus")
class UNet3Plus(NetBase):
    """UNet 3+ with full-scale skip connections and optional deep supervision.

    Parameters
    ----------
    spatial_dims : {2, 3}
    in_channels, out_channels : int
    depth : int
        Number of resolution levels (``depth - 1`` poolings by 2).
    base_channels, growth_rate, hidden_rate : int, float, float
        Encoder widths and blocks exactly as in :class:`~mixscale.nets.unet.UNet`.
    norm : {"batch", "instance", "group", None}
    activation : {"relu", "leaky_relu", "elu", "gelu", "silu", "prelu"}
    carry_channels : int
        Maps each source level contributes to a decoder level (64 in the paper);
        decoder levels have ``depth * carry_channels`` maps.
    deep_supervision : bool
        Build one extra 3x3 output head per coarser level, used by :meth:`deep_outputs`.
        ``False`` builds no such heads at all.

    Shapes
    ------
    ``forward``: ``(N, in_channels, *spatial) -> (N, out_channels, *spatial)`` for any
    spatial size (padded inside to a multiple of ``2 ** (depth - 1)``, cropped back).
    ``forward`` always returns only the full-resolution output, also with deep
    supervision; train the extra heads through :meth:`deep_outputs`.

    Examples
    --------
    >>> net = UNet3Plus(depth=3, base_channels=4, carry_channels=4, deep_supervision=True)
    >>> net(torch.zeros(1, 1, 37, 21)).shape
    torch.Size([1, 1, 37, 21])
    >>> [o.shape[-2:] for o in net.deep_outputs(torch.zeros(1, 1, 37, 21))]
    [torch.Size([37, 21]), torch.Size([37, 21]), torch.Size([37, 21])]
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
        carry_channels: int = 16,
        deep_supervision: bool = False,
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
        make_activation(activation)  # validates the name early
        self.activation = activation
        self.carry_channels = check_int("carry_channels", carry_channels, minimum=1)
        check_bool("deep_supervision", deep_supervision)
        self.deep_supervision = deep_supervision
        chans = level_channels(depth, base_channels, self.growth_rate)
        self.encoders = nn.ModuleList(
            ConvBlock(spatial_dims, in_channels if i == 0 else chans[i - 1], chans[i], self.hidden_rate, norm,
                      activation)
            for i in range(depth)
        )
        fused = depth * carry_channels
        # source j of decoder i: encoder map (j <= i), bottleneck (j = depth - 1) or decoder map (fused)
        source = lambda i, j: chans[j] if j <= i or j == depth - 1 else fused  # noqa: E731
        cna = lambda cin, cout: conv_norm_act(spatial_dims, cin, cout, norm, activation)  # noqa: E731
        self.carries = nn.ModuleList(
            nn.ModuleList(cna(source(i, j), carry_channels) for j in range(depth)) for i in range(depth - 1)
        )
        self.fuses = nn.ModuleList(cna(fused, fused) for _ in range(depth - 1))
        conv = conv_nd(spatial_dims)
        level_out = [fused] * (depth - 1) + [chans[-1]]  # maps of the decoder output at every level
        self.head = conv(level_out[0], out_channels, 3, padding=1)
        if deep_supervision:
            self.deep_heads = nn.ModuleList(conv(c, out_channels, 3, padding=1) for c in level_out[1:])

    def _level_radii(self) -> list[int]:
        """Conservative half-width, in input pixels, of every decoder level's dependence on the input.

        A 3x3 conv at spacing ``s`` adds ``s``; pooling from spacing ``a`` to ``b`` adds
        ``b - a`` (twice the exact offset bound); linear upsampling from spacing ``a``
        adds ``a`` (the two nearest coarse pixels lie within ``a``).
        """
        enc, step = [], 1
        for level in range(self.depth):
            enc.append((enc[-1] + step // 2 if level else 0) + 2 * step)  # pool, then two 3x3 convs
            step *= 2
        dec = [0] * (self.depth - 1) + [enc[-1]]
        for i in reversed(range(self.depth - 1)):
            parts = [enc[j] + 2**i - 2**j + 2**i for j in range(i + 1)]
            parts += [dec[j] + 2**j + 2**i for j in range(i + 1, self.depth)]
            dec[i] = max(parts) + 2**i  # the fusing 3x3 conv
        return dec

    @property
    def receptive_field(self) -> int:
        """Conservative width in pixels of the region one output pixel depends on.

        Normalisation statistics (instance/group norm, batch norm in training) are
        ignored: they couple the whole image by design.
        """
        return 2 * (self._level_radii()[0] + 1) + 1  # + 1 for the 3x3 head

    def _decode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Decoder maps of every level (last: the bottleneck) for an already padded input."""
        enc, h = [], x
        pool = F.max_pool2d if self.spatial_dims == 2 else F.max_pool3d
        for level, block in enumerate(self.encoders):
            h = block(pool(h, 2) if level else h)
            enc.append(h)
        dec = [None] * (self.depth - 1) + [enc[-1]]
        for i in reversed(range(self.depth - 1)):
            size = tuple(enc[i].shape[2:])
            parts = [carry(_resize(enc[j] if j <= i else dec[j], size, i - j)) for j, carry in
                     enumerate(self.carries[i])]
            dec[i] = self.fuses[i](torch.cat(parts, dim=1))
        return dec

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, *spatial) -> (N, out_channels, *spatial)``."""
        check_input(x, spatial_dims=self.spatial_dims, in_channels=self.in_channels, net="unet3plus")
        padded, spatial = pad_to_multiple(x, 2 ** (self.depth - 1))
        return crop_center(self.head(self._decode(padded)[0]), spatial)

    def deep_outputs(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Outputs of every level, upsampled to full size (deep supervision).

        Parameters
        ----------
        x : (N, in_channels, *spatial) Tensor

        Returns
        -------
        list of ``depth`` (N, out_channels, *spatial) Tensors
            Level 0 first; it equals ``forward(x)``. The coarser ones come from their
            own heads, upsampled by linear interpolation (they are logits).

        Examples
        --------
        Deep supervision averages the loss over all levels; predict with ``net(x)``:

        >>> net = UNet3Plus(depth=3, base_channels=4, carry_channels=4, deep_supervision=True)
        >>> x, target = torch.randn(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
        >>> outs = net.deep_outputs(x)
        >>> loss = sum(F.mse_loss(o, target) for o in outs) / len(outs)
        >>> loss.backward()
        """
        if not self.deep_supervision:
            raise ValueError("deep_outputs needs a network built with deep_supervision=True "
                             "(with deep_supervision=False no extra heads exist)")
        check_input(x, spatial_dims=self.spatial_dims, in_channels=self.in_channels, net="unet3plus")
        padded, spatial = pad_to_multiple(x, 2 ** (self.depth - 1))
        dec = self._decode(padded)
        size = tuple(padded.shape[2:])
        outs = [self.head(dec[0])]
        outs += [_resize(head(d), size, -1) for head, d in zip(self.deep_heads, dec[1:])]
        return [crop_center(o, spatial) for o in outs]
