"""mixscale's networks that take any input size, in plain torch, for model packages.

Why this file exists: it is copied as it is into BioImage Model Zoo packages, as the architecture of
their ``pytorch_state_dict`` weights. It imports torch and the standard library only, never mixscale,
so that a package keeps working whatever becomes of mixscale (CAREamics#614 broke zoo models whose
architecture imported its own library).

Every class rebuilds one mixscale network from the keyword arguments of that network's ``config()``
(the package's ``kwargs``): its parameters and buffers have the names of mixscale's, so the state dict
loads strictly as it is, and ``forward`` computes what mixscale's does in eval mode, any-size padding
included.

========== ======================= ====================================================
class      mixscale net            what
========== ======================= ====================================================
MSD        ``msd`` (MSDNet)        mixed-scale dense network (Pelt & Sethian, PNAS 2018)
UNet       ``unet`` (UNet)         U-Net with tunable depth, growth and hidden width
UNet3Plus  ``unet3plus``           UNet 3+ with full-scale skips (forward only)
SMSNet     ``smsnet`` (SMSNet)     sparse mixed-scale network on a stored graph
RandomUNet ``random_unet``         encoder-decoder built from a stored spec
========== ======================= ====================================================
"""

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["MSD", "UNet", "UNet3Plus", "SMSNet", "RandomUNet"]

ACTIVATIONS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU,
               "prelu": nn.PReLU}


# -- shared pieces ------------------------------------------------------------------------------------

def _conv(spatial_dims):
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


def _norm(norm, spatial_dims, channels):
    """``None``: identity; ``"batch"``, ``"instance"`` (affine) or ``"group"`` (largest g <= 8 dividing)."""
    if norm is None:
        return nn.Identity()
    if norm == "batch":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels)
    if norm == "instance":
        return (nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if norm == "group":
        return nn.GroupNorm(max(g for g in range(1, 9) if channels % g == 0), channels)
    raise ValueError(f"unknown norm {norm!r}; expected 'batch', 'instance', 'group' or None")


def _activation(name):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


def _conv_norm_act(spatial_dims, in_channels, out_channels, norm, activation, kernel_size=3, dilation=1,
                   padding_mode="zeros"):
    """A "same" convolution (no bias before a norm), norm, activation."""
    return nn.Sequential(
        _conv(spatial_dims)(in_channels, out_channels, kernel_size, padding=dilation * (kernel_size - 1) // 2,
                            dilation=dilation, bias=norm is None, padding_mode=padding_mode),
        _norm(norm, spatial_dims, out_channels),
        _activation(activation),
    )


def _conv_block(spatial_dims, in_channels, out_channels, hidden_rate, norm, activation):
    """Two 3x3 convolutions with bias (in -> round(out * hidden_rate) -> out), each + norm + activation."""
    hidden = max(1, int(round(out_channels * hidden_rate)))
    conv = _conv(spatial_dims)
    return nn.Sequential(
        conv(in_channels, hidden, 3, padding=1), _norm(norm, spatial_dims, hidden), _activation(activation),
        conv(hidden, out_channels, 3, padding=1), _norm(norm, spatial_dims, out_channels), _activation(activation),
    )


def _level_channels(depth, base_channels, growth_rate):
    """``round(base_channels * growth_rate ** level)`` (at least 1) for every level."""
    return [max(1, int(round(base_channels * float(growth_rate) ** level))) for level in range(depth)]


def _up(spatial_dims):
    return nn.ConvTranspose2d if spatial_dims == 2 else nn.ConvTranspose3d


def _pool(kind, x):
    """Max or average pooling by 2 of a 2D ``(N, C, H, W)`` or 3D ``(N, C, D, H, W)`` tensor."""
    if kind == "max":
        return (F.max_pool2d if x.ndim == 4 else F.max_pool3d)(x, 2)
    return (F.avg_pool2d if x.ndim == 4 else F.avg_pool3d)(x, 2)


def _exporting():
    """Whether a graph is being traced or exported (the sizes are then symbolic)."""
    compiler = getattr(torch, "compiler", None)
    is_exporting = getattr(compiler, "is_exporting", None)
    return bool(is_exporting is not None and is_exporting()) or torch.jit.is_tracing()


def _pad_to_multiple(x, multiple):
    """Pad the spatial axes (centred) to a multiple: reflect, or replicate where a pad exceeds the size.

    While a graph is traced the pad is always there and reflects, so one graph serves every size.
    Returns the padded tensor and the original spatial shape.
    """
    spatial = tuple(x.shape[2:])
    extra = [(-s) % multiple for s in spatial]
    exporting = _exporting()
    if not exporting and not any(extra):
        return x, spatial
    pads = []
    for e in reversed(extra):  # F.pad lists the last axis first
        pads += [e // 2, e - e // 2]
    mode = "reflect" if exporting or all(e < s for e, s in zip(extra, spatial)) else "replicate"
    return F.pad(x, pads, mode=mode), spatial


def _crop_center(y, spatial):
    """The centred ``spatial`` window of ``y`` (undoes :func:`_pad_to_multiple`)."""
    starts = [(p - s) // 2 for p, s in zip(y.shape[2:], spatial)]
    return y[(slice(None), slice(None)) + tuple(slice(a, a + s) for a, s in zip(starts, spatial))]


# -- the networks -------------------------------------------------------------------------------------

class MSD(nn.Module):
    """Mixed-scale dense network (mixscale's ``msd``).

    Layer ``i`` convolves all earlier maps (the input's channels included) with 3x3 (3x3x3) kernels,
    channel ``j`` at dilation ``channel_dilations[i][j]`` after reflect padding by that dilation, adds
    its bias, applies the optional batch norm and a ReLU; a 1x1 convolution of all maps gives the output.

    Parameters
    ----------
    spatial_dims : {2, 3}
    in_channels, out_channels : int
    depth, width : int
        Hidden layers and channels per layer.
    dilations : sequence of int
        Used cyclically over the hidden channels: channel ``j`` of layer ``i`` has
        ``dilations[(i * width + j) % len(dilations)]``.
    norm : {None, "batch"}
        Batch norm on each layer's new maps, before the ReLU.
    channel_dilations : list of lists of int, optional
        Every channel's dilation explicitly (then ``depth``, ``width`` and ``dilations`` are unused).

    Shapes
    ------
    ``(N, in_channels, *spatial) -> (N, out_channels, *spatial)``, every spatial size above the largest
    dilation.
    """

    def __init__(self, spatial_dims=2, in_channels=1, out_channels=1, depth=100, width=1,
                 dilations=tuple(range(1, 11)), norm=None, channel_dilations=None):
        super().__init__()
        self.spatial_dims = int(spatial_dims)
        if channel_dilations is None:
            dil = [int(d) for d in dilations]
            channel_dilations = [[dil[(i * width + j) % len(dil)] for j in range(width)] for i in range(depth)]
        self.channel_dilations = [[int(d) for d in row] for row in channel_dilations]
        kernel = (3,) * self.spatial_dims
        width = len(self.channel_dilations[0])
        depth = len(self.channel_dilations)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.zeros(width, in_channels + i * width, *kernel)) for i in range(depth))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(width)) for _ in range(depth))
        self.norms = (nn.ModuleList(_norm(norm, self.spatial_dims, width) for _ in range(depth))
                      if norm is not None else None)
        self.final_weight = nn.Parameter(torch.zeros(out_channels, in_channels + depth * width,
                                                     *(1,) * self.spatial_dims))
        self.final_bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x):
        """``(N, in_channels, *spatial) -> (N, out_channels, *spatial)``."""
        conv = F.conv2d if self.spatial_dims == 2 else F.conv3d
        maps = x
        for i, row in enumerate(self.channel_dilations):
            outs = []
            for j, d in enumerate(row):
                padded = F.pad(maps, (d,) * (2 * self.spatial_dims), mode="reflect")
                outs.append(conv(padded, self.weights[i][j:j + 1], self.biases[i][j:j + 1], dilation=d))
            y = torch.cat(outs, dim=1)
            if self.norms is not None:
                y = self.norms[i](y)
            maps = torch.cat([maps, F.relu(y)], dim=1)
        return conv(maps, self.final_weight, self.final_bias)


class UNet(nn.Module):
    """U-Net (mixscale's ``unet``): ``depth`` levels of two-convolution blocks, max pooling by 2, 2x2
    transposed convolutions up, skips concatenated, a 1x1 head.

    Parameters
    ----------
    spatial_dims : {2, 3}
    in_channels, out_channels : int
    depth : int
        Resolution levels.
    base_channels : int
    growth_rate : float
        Level ``l`` has ``round(base_channels * growth_rate ** l)`` channels.
    hidden_rate : float
        Width of each block's first convolution relative to its output.
    norm : {"batch", "instance", "group", None}
    activation : {"relu", "leaky_relu", "elu", "gelu", "silu", "prelu"}

    Shapes
    ------
    ``(N, in_channels, *spatial) -> (N, out_channels, *spatial)`` for any spatial size: padded inside
    to a multiple of ``2 ** (depth - 1)``, cropped back.
    """

    def __init__(self, spatial_dims=2, in_channels=1, out_channels=1, depth=4, base_channels=16, growth_rate=2.0,
                 hidden_rate=1.0, norm="batch", activation="relu"):
        super().__init__()
        self.spatial_dims, self.depth = int(spatial_dims), int(depth)
        chans = _level_channels(depth, base_channels, growth_rate)
        block = lambda cin, cout: _conv_block(spatial_dims, cin, cout, hidden_rate, norm, activation)  # noqa: E731
        self.encoders = nn.ModuleList(block(in_channels if i == 0 else chans[i - 1], chans[i]) for i in range(depth))
        self.ups = nn.ModuleList(_up(spatial_dims)(chans[i + 1], chans[i], 2, stride=2) for i in range(depth - 1))
        self.decoders = nn.ModuleList(block(2 * chans[i], chans[i]) for i in range(depth - 1))
        self.head = _conv(spatial_dims)(chans[0], out_channels, 1)

    def forward(self, x):
        """``(N, in_channels, *spatial) -> (N, out_channels, *spatial)``."""
        padded, spatial = _pad_to_multiple(x, 2 ** (self.depth - 1))
        skips, h = [], padded
        for level, enc in enumerate(self.encoders):
            h = enc(h)
            if level < self.depth - 1:
                skips.append(h)
                h = _pool("max", h)
        for level in reversed(range(self.depth - 1)):
            h = self.decoders[level](torch.cat([skips[level], self.ups[level](h)], dim=1))
        return _crop_center(self.head(h), spatial)


class UNet3Plus(nn.Module):
    """UNet 3+ (mixscale's ``unet3plus``; Huang et al., ICASSP 2020), its full-resolution output.

    Decoder level ``i`` takes every level ``j``: encoder maps max-pooled by ``2 ** (i - j)`` (finer),
    the encoder map itself (``j == i``), coarser decoder maps (the deepest: the bottleneck) upsampled
    by linear interpolation; each through a 3x3 convolution to ``carry_channels`` maps + norm +
    activation, concatenated and fused by a 3x3 convolution + norm + activation. A 3x3 head gives the
    output.

    Parameters
    ----------
    spatial_dims : {2, 3}
    in_channels, out_channels : int
    depth, base_channels, growth_rate, hidden_rate, norm, activation
        As in :class:`UNet`.
    carry_channels : int
        Maps each level sends to a decoder level.
    deep_supervision : bool
        Builds the extra heads of the coarser levels (so that their weights load); ``forward`` does
        not use them.

    Shapes
    ------
    ``(N, in_channels, *spatial) -> (N, out_channels, *spatial)`` for any spatial size: padded inside
    to a multiple of ``2 ** (depth - 1)``, cropped back.
    """

    def __init__(self, spatial_dims=2, in_channels=1, out_channels=1, depth=4, base_channels=16, growth_rate=2.0,
                 hidden_rate=1.0, norm="batch", activation="relu", carry_channels=16, deep_supervision=False):
        super().__init__()
        self.spatial_dims, self.depth = int(spatial_dims), int(depth)
        chans = _level_channels(depth, base_channels, growth_rate)
        self.encoders = nn.ModuleList(
            _conv_block(spatial_dims, in_channels if i == 0 else chans[i - 1], chans[i], hidden_rate, norm, activation)
            for i in range(depth))
        fused = depth * carry_channels

        def source(i, j):  # maps of level j as decoder i sees them
            return chans[j] if j <= i or j == depth - 1 else fused

        cna = lambda cin, cout: _conv_norm_act(spatial_dims, cin, cout, norm, activation)  # noqa: E731
        self.carries = nn.ModuleList(
            nn.ModuleList(cna(source(i, j), carry_channels) for j in range(depth)) for i in range(depth - 1))
        self.fuses = nn.ModuleList(cna(fused, fused) for _ in range(depth - 1))
        level_out = [fused] * (depth - 1) + [chans[-1]]
        conv = _conv(spatial_dims)
        self.head = conv(level_out[0], out_channels, 3, padding=1)
        if deep_supervision:
            self.deep_heads = nn.ModuleList(conv(c, out_channels, 3, padding=1) for c in level_out[1:])

    @staticmethod
    def _resize(x, size, steps):
        if steps > 0:
            return (F.max_pool2d if x.ndim == 4 else F.max_pool3d)(x, 2 ** steps)
        if steps < 0:
            return F.interpolate(x, size=size, mode="bilinear" if x.ndim == 4 else "trilinear", align_corners=False)
        return x

    def forward(self, x):
        """``(N, in_channels, *spatial) -> (N, out_channels, *spatial)``."""
        padded, spatial = _pad_to_multiple(x, 2 ** (self.depth - 1))
        enc, h = [], padded
        for level, block in enumerate(self.encoders):
            h = block(_pool("max", h) if level else h)
            enc.append(h)
        dec = [None] * (self.depth - 1) + [enc[-1]]
        for i in reversed(range(self.depth - 1)):
            size = tuple(enc[i].shape[2:])
            parts = [carry(self._resize(enc[j] if j <= i else dec[j], size, i - j))
                     for j, carry in enumerate(self.carries[i])]
            dec[i] = self.fuses[i](torch.cat(parts, dim=1))
        return _crop_center(self.head(dec[0]), spatial)


class SMSNet(nn.Module):
    """Sparse mixed-scale network (mixscale's ``smsnet``) on the graph stored in ``edges``.

    Nodes: ``0`` the input, ``1..hidden_nodes`` hidden, ``hidden_nodes + 1`` the output. Every edge
    ``source -> target`` is a dilated 3x3 (3x3x3) convolution to ``channels`` maps (no bias before a
    norm) + norm + activation of the source's maps; a node concatenates its incoming edges' outputs in
    the edges' order (sorted by source, then target); a 1x1 convolution of the output node gives the
    output.

    Parameters
    ----------
    spatial_dims : {2, 3}
    in_channels, out_channels : int
    hidden_nodes : int
    edges : list of dict
        ``{"source", "target", "dilation", "channels"}`` each (or four-item sequences).
    norm : {"instance", "group", "batch", None}
    activation : {"relu", "leaky_relu", "elu", "gelu", "silu", "prelu"}
    padding_mode : {"replicate", "zeros", "reflect"}
    min_degree, max_degree, degree_exponent, skip_decay, input_fraction, output_fraction, \
input_to_output, dilations, channels, seed
        mixscale's sampling arguments; unused (the graph is ``edges``).

    Shapes
    ------
    ``(N, in_channels, *spatial) -> (N, out_channels, *spatial)`` for any spatial size (above the
    largest dilation for ``"reflect"``).
    """

    def __init__(self, spatial_dims=2, in_channels=1, out_channels=1, hidden_nodes=16, min_degree=1, max_degree=0.5,
                 degree_exponent=1.0, skip_decay=0.5, input_fraction=0.5, output_fraction=0.5, input_to_output=True,
                 dilations=(1, 2, 4, 8), channels=(4,), norm="instance", activation="relu", padding_mode="replicate",
                 seed=0, edges=None):
        super().__init__()
        if edges is None:
            raise ValueError("SMSNet needs its graph: edges (what mixscale's SMSNet.config() stores)")
        keys = ("source", "target", "dilation", "channels")
        self.edges = sorted(tuple(int(e[k]) for k in keys) if isinstance(e, dict) else tuple(int(v) for v in e)
                            for e in edges)
        self.hidden_nodes = int(hidden_nodes)
        node_channels = [in_channels] + [0] * (self.hidden_nodes + 1)
        for _, target, _, c in self.edges:
            node_channels[target] += c
        self.edge_convs = nn.ModuleList(
            _conv_norm_act(spatial_dims, node_channels[s], c, norm, activation, dilation=d, padding_mode=padding_mode)
            for s, _, d, c in self.edges)
        self.head = _conv(spatial_dims)(node_channels[-1], out_channels, 1)

    def forward(self, x):
        """``(N, in_channels, *spatial) -> (N, out_channels, *spatial)``."""
        feats = {0: x}
        for t in range(1, self.hidden_nodes + 2):
            parts = [conv(feats[s]) for (s, target, _, _), conv in zip(self.edges, self.edge_convs) if target == t]
            feats[t] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        return self.head(feats[self.hidden_nodes + 1])


class RandomUNet(nn.Module):
    """Encoder-decoder network (mixscale's ``random_unet``) built from the stored ``spec``.

    Scale ``l`` has ``round(base_channels * channel_growth ** l)`` channels; every block is a chain of
    "same" convolutions (zero padding, the block's kernel size, each layer's dilation; no bias before a
    norm) + norm + activation, the path's; down: max or average pooling by 2 or a strided 2x2
    convolution; up: a 2x2 transposed convolution; skips concatenated or summed; a 1x1 head.

    Parameters
    ----------
    spatial_dims : {2, 3}
    in_channels, out_channels : int
    spec : dict
        ``num_scales``, ``base_channels``, ``channel_growth``, ``pooling`` (``"max"``, ``"avg"``,
        ``"conv"``), ``merge`` (``"concat"``, ``"sum"``), ``encoder`` and ``decoder`` paths
        (``activation``, ``norm``, ``blocks``: ``{"kernel_size", "layers": [{"dilation"}, ...]}``).
    seed, ranges
        mixscale's sampling arguments; unused (the architecture is ``spec``).

    Shapes
    ------
    ``(N, in_channels, *spatial) -> (N, out_channels, *spatial)`` for any spatial size: padded inside
    to a multiple of ``2 ** (num_scales - 1)``, cropped back.
    """

    def __init__(self, spatial_dims=2, in_channels=1, out_channels=1, spec=None, seed=0, ranges=None):
        super().__init__()
        if spec is None:
            raise ValueError("RandomUNet needs its architecture: spec (what mixscale's RandomUNet.config() stores)")
        self.spatial_dims, self.num_scales = int(spatial_dims), int(spec["num_scales"])
        self.pooling, self.merge = spec["pooling"], spec["merge"]
        n = self.num_scales
        chans = _level_channels(n, spec["base_channels"], spec["channel_growth"])

        def block(cin, cout, path, b):
            return nn.Sequential(*(
                _conv_norm_act(spatial_dims, cin if i == 0 else cout, cout, path["norm"], path["activation"],
                               kernel_size=b["kernel_size"], dilation=layer["dilation"])
                for i, layer in enumerate(b["layers"])))

        enc, dec = spec["encoder"], spec["decoder"]
        self.encoders = nn.ModuleList(block(in_channels if i == 0 else chans[i - 1], chans[i], enc, enc["blocks"][i])
                                      for i in range(n))
        if self.pooling == "conv":
            self.downs = nn.ModuleList(_conv(spatial_dims)(chans[i], chans[i], 2, stride=2) for i in range(n - 1))
        self.ups = nn.ModuleList(_up(spatial_dims)(chans[i + 1], chans[i], 2, stride=2) for i in range(n - 1))
        factor = 2 if self.merge == "concat" else 1
        self.decoders = nn.ModuleList(block(factor * chans[i], chans[i], dec, dec["blocks"][i]) for i in range(n - 1))
        self.head = _conv(spatial_dims)(chans[0], out_channels, 1)

    def forward(self, x):
        """``(N, in_channels, *spatial) -> (N, out_channels, *spatial)``."""
        padded, spatial = _pad_to_multiple(x, 2 ** (self.num_scales - 1))
        skips, h = [], padded
        for level, block in enumerate(self.encoders):
            if level:
                h = self.downs[level - 1](h) if self.pooling == "conv" else _pool(self.pooling, h)
            h = block(h)
            skips.append(h)
        for level in reversed(range(len(self.decoders))):
            u = self.ups[level](h)
            merged = torch.cat([skips[level], u], dim=1) if self.merge == "concat" else skips[level] + u
            h = self.decoders[level](merged)
        return _crop_center(self.head(h), spatial)
