"""Mixed-scale dense network (MS-D; Pelt & Sethian, PNAS 2018).

Every hidden layer is a 3x3 (3x3x3) dilated convolution over *all* earlier maps,
the input included, plus bias and ReLU; the output is a 1x1 convolution over all
maps. There is no down- or up-scaling: scale comes from the dilations.

This is the straightforward implementation (concatenate, convolve, repeat). It is
exact and simple, and serves as the test oracle for faster variants.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_int, not_allowed
from ._common import check_input, check_spatial_dims, make_norm
from .msd_lean import ScratchPool, flat_weight, lean_msd
from .msd_shift import shift_sum, tap_offsets
from .registry import NetBase, register_net

DEFAULT_DILATIONS = tuple(range(1, 11))


def layer_dilations(depth: int, width: int, dilations: Sequence[int]) -> list[list[int]]:
    """Dilation of every hidden channel: ``dilations[(i * width + j) % len(dilations)]``.

    Parameters
    ----------
    depth, width : int
        Number of hidden layers and channels per layer.
    dilations : sequence of int
        Used cyclically over the hidden channels in order (msdnet's convention);
        a list of length ``depth * width`` sets every channel explicitly.

    Returns
    -------
    list of ``depth`` lists of ``width`` ints
    """
    expected = "a non-empty list of integers >= 1"
    try:
        dil = list(dilations)
    except TypeError:
        raise not_allowed("dilations", dilations, expected, TypeError) from None
    if any(isinstance(d, bool) or not isinstance(d, int) for d in dil):
        raise not_allowed("dilations", dilations, expected, TypeError)
    if not dil or min(dil) < 1:
        raise not_allowed("dilations", dilations, expected)
    return [[dil[(i * width + j) % len(dil)] for j in range(width)] for i in range(depth)]


def msd_parameter_count(in_channels: int, out_channels: int, depth: int, width: int, spatial_dims: int = 2) -> int:
    """Number of weights and biases of an MS-D without normalisation (closed form).

    Layer ``i`` sees ``in_channels + i * width`` maps: sum of ``k * (in + i w) w + w``
    over the layers, with ``k = 3 ** spatial_dims``, plus the final 1x1 layer.
    """
    k = 3**spatial_dims
    hidden = k * width * (depth * in_channels + width * depth * (depth - 1) // 2) + depth * width
    final = (in_channels + depth * width) * out_channels + out_channels
    return hidden + final


@register_net("msd")
class MSDNet(NetBase):
    """Mixed-scale dense network for 2D or 3D images.

    Parameters
    ----------
    spatial_dims : {2, 3}
    in_channels, out_channels : int
    depth : int
        Number of hidden layers (100 in the paper).
    width : int
        Channels per hidden layer (1 in the paper).
    dilations : sequence of int
        Dilations used cyclically over hidden channels; see :func:`layer_dilations`.
    norm : {None, "batch"}
        Optional batch norm on each layer's new maps, before the ReLU (the paper has none).

    Shapes
    ------
    ``(N, in_channels, *spatial) -> (N, out_channels, *spatial)``; every spatial
    size must exceed the largest dilation (reflect padding).

    Examples
    --------
    >>> net = MSDNet(depth=100)
    >>> sum(p.numel() for p in net.parameters())
    45652
    >>> net.receptive_field
    1101
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 100,
        width: int = 1,
        dilations: Sequence[int] = DEFAULT_DILATIONS,
        norm: str | None = None,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        self.depth = check_int("depth", depth, minimum=1)
        self.width = check_int("width", width, minimum=1)
        self.norm = check_choice("norm", norm, ("batch", None))
        try:
            self.dilations = list(dilations)
        except TypeError:
            raise not_allowed("dilations", dilations, "a non-empty list of integers >= 1", TypeError) from None
        self.channel_dilations = layer_dilations(depth, width, self.dilations)
        k = (3,) * spatial_dims
        self.weights = nn.ParameterList(
            nn.Parameter(torch.empty(width, in_channels + i * width, *k)) for i in range(depth)
        )
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(width)) for _ in range(depth))
        self.norms = nn.ModuleList(make_norm(norm, spatial_dims, width) for _ in range(depth)) if norm else None
        n_maps = in_channels + depth * width
        self.final_weight = nn.Parameter(torch.zeros(out_channels, n_maps, *(1,) * spatial_dims))
        self.final_bias = nn.Parameter(torch.zeros(out_channels))
        self._offsets = tap_offsets(spatial_dims)
        self._scratch = ScratchPool()
        self.reset_parameters()

    def release_scratch(self) -> int:
        """Free the map buffers kept from earlier calls (CPU); returns the bytes let go.

        The lean block keeps its last buffers (the maps and their gradients, about
        ``(in_channels + depth * width)`` images each) so that the next call does not
        pay to have fresh memory zeroed; call this when the network will sit idle.
        """
        held = self._scratch.idle_bytes
        self._scratch.clear()
        return held

    def reset_parameters(self) -> None:
        """The paper's initialisation: N(0, 2 / n_c) hidden weights, zero biases and final layer."""
        taps = 3**self.spatial_dims
        n_c = taps * (self.in_channels + self.width * (self.depth - 1)) + self.out_channels
        std = math.sqrt(2.0 / n_c)
        with torch.no_grad():
            for w, b in zip(self.weights, self.biases):
                w.normal_(0.0, std)
                b.zero_()
            self.final_weight.zero_()
            self.final_bias.zero_()

    @property
    def receptive_field(self) -> int:
        """Width in pixels of the region one output pixel depends on (same along every axis)."""
        return 1 + 2 * sum(max(row) for row in self.channel_dilations)

    def _check_size(self, x: torch.Tensor) -> None:
        dmax = max(max(row) for row in self.channel_dilations)
        small = [s for s in x.shape[2:] if s <= dmax]
        if small:
            raise ValueError(
                f"msd: input of spatial shape {tuple(x.shape[2:])} is too small for reflect padding with "
                f"dilation {dmax}; every spatial size must be > {dmax}"
            )

    def _conv_direct(self, i: int, maps: torch.Tensor) -> torch.Tensor:
        """Layer ``i``'s dilated convolution as written: reflect-pad all maps, convolve."""
        conv = F.conv2d if self.spatial_dims == 2 else F.conv3d
        outs = []
        for j, d in enumerate(self.channel_dilations[i]):
            padded = F.pad(maps, (d,) * (2 * self.spatial_dims), mode="reflect")
            outs.append(conv(padded, self.weights[i][j : j + 1], self.biases[i][j : j + 1], dilation=d))
        return torch.cat(outs, dim=1)

    def _conv_taps(self, i: int, maps: torch.Tensor) -> torch.Tensor:
        """The same convolution, reformulated: one matrix product, then shifted adds.

        Reflect padding maps pixel indices the same way for every input map, so
        ``conv(X, W, d) = sum_t shift_t(sum_c W[c, t] X_c)``: the ``k`` maps are
        multiplied into one map per tap, and only those few maps are padded and added.
        """
        taps = 3**self.spatial_dims
        prod = torch.matmul(flat_weight(self.weights[i]), maps.flatten(2)).view(maps.shape[0], -1, *maps.shape[2:])
        prod = prod.transpose(0, 1)  # (width * taps, N, *spatial), the layout of shift_sum
        spatial = tuple(maps.shape[2:])
        outs = [shift_sum(prod[j * taps : (j + 1) * taps], d, self._offsets, spatial) + self.biases[i][j]
                for j, d in enumerate(self.channel_dilations[i])]
        return torch.stack(outs, dim=1)

    def _layer(self, i: int, maps: torch.Tensor, impl: str) -> torch.Tensor:
        y = self._conv_direct(i, maps) if impl == "direct" else self._conv_taps(i, maps)
        if self.norms is not None:
            y = self.norms[i](y)
        return F.relu(y)

    def forward(self, x: torch.Tensor, *, impl: str | None = None) -> torch.Tensor:
        """``(N, in_channels, *spatial) -> (N, out_channels, *spatial)``.

        Parameters
        ----------
        impl : {None, "lean", "taps", "direct"}
            While a graph is exported (ONNX, TorchScript tracing) the default is
            ``"direct"``. Otherwise ``"lean"`` (the default without normalisation): the memory-lean block of
            :mod:`mixscale.nets.msd_lean`, two buffers of maps whatever the depth.
            ``"taps"`` (the default with batch norm): the same arithmetic through
            autograd, concatenating maps (memory grows with depth squared).
            ``"direct"``: library convolutions on reflect-padded maps; slow, the
            test oracle.
        """
        check_input(x, spatial_dims=self.spatial_dims, in_channels=self.in_channels, net="msd")
        self._check_size(x)
        if impl is None and (torch.compiler.is_exporting() or torch.jit.is_tracing()):
            impl = "direct"  # the lean Function keeps buffers between calls, which no graph can hold
        impl = impl or ("lean" if self.norms is None else "taps")
        check_choice("impl", impl, ("lean", "taps", "direct"))
        if impl == "lean":
            if self.norms is not None:
                raise ValueError("impl='lean' does not support norm='batch'; use impl='taps'")
            return lean_msd(x, list(self.weights), list(self.biases), self.final_weight, self.final_bias,
                            self.channel_dilations, pool=self._scratch)
        maps = x  # the input itself is a map of every layer; it is never passed through the ReLU
        for i in range(self.depth):
            maps = torch.cat([maps, self._layer(i, maps, impl)], dim=1)
        conv = F.conv2d if self.spatial_dims == 2 else F.conv3d
        return conv(maps, self.final_weight, self.final_bias)
