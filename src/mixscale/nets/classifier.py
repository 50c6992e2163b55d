"""A small LeNet-style patch classifier (particle picking), with an exact dense evaluation.

The classifier answers "what is at the centre of this patch?": a fixed-size patch
goes through ``depth`` stages of (unpadded convolution, norm, activation, 2x max
pooling), then a head (flatten or global pooling, a small MLP) gives one logit per
class. Sliding it over an image gives a per-pixel class-score map;
:meth:`PatchClassifier.dense_logits` computes exactly that map in one fully
convolutional pass by turning every stride-2 pooling into a stride-1 pooling and
dilating everything after it ("filter rarefaction"), so no patch is ever cut out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_float, check_fraction, check_int, check_shape
from ._common import NORMS, check_spatial_dims, conv_nd, make_activation, make_norm
from .registry import NetBase, register_net

POOLINGS = ("flatten", "mean", "max")


def feature_shape(patch_shape, depth: int, kernel_size: int) -> tuple[int, ...]:
    """Spatial shape after ``depth`` stages of (valid ``kernel_size`` conv, 2x max pooling)."""
    shape = tuple(patch_shape)
    for _ in range(depth):
        shape = tuple((s - kernel_size + 1) // 2 for s in shape)
    return shape


@register_net("classifier")
class PatchClassifier(NetBase):
    """LeNet-style classifier of fixed-size patches: ``(N, C, *patch_shape) -> (N, out_channels)``.

    Parameters
    ----------
    spatial_dims : {2, 3}
    in_channels : int
    out_channels : int
        Number of classes (logits per patch); class 0 is conventionally background.
    patch_shape : int or sequence of int
        Patch size per axis (an int means the same on every axis). The class
        refers to the patch's centre pixel ``patch_shape // 2``.
    depth : int
        Number of (conv, norm, activation, max-pool by 2) stages.
    base_channels : int
        Channels of the first stage.
    growth_rate : float
        Channels grow by this factor per stage (rounded).
    kernel_size : int
        Convolution kernel size (unpadded: every pixel of a feature map depends on the patch only).
    norm : {"batch", "instance", "group", None}
        ``dense_logits`` needs a per-pixel norm: ``"batch"`` (in eval mode) or ``None``.
    activation : {"relu", "leaky_relu", "elu", "gelu", "silu", "prelu"}
    pooling : {"flatten", "mean", "max"}
        How the last feature map becomes a vector: flattened (position-aware, LeNet),
        or averaged / maximised over space.
    hidden_channels : int
        Width of the hidden layer of the MLP head (0: a single linear layer).
    dropout : float in [0, 1)
        Dropout before each linear layer of the head (training only).

    Shapes
    ------
    ``forward``: ``(N, in_channels, *patch_shape) -> (N, out_channels)`` logits.
    ``dense_logits``: ``(N, in_channels, *spatial) -> (N, out_channels, *spatial)``, the
    logits of the patch centred on every pixel (reflect padding at the border).
    Unlike the segmentation networks, ``forward`` does not keep the spatial size:
    whole-image prediction goes through ``dense_logits`` (tile it for large volumes with
    ``mixscale.infer.predict_tiled(net.dense_logits, ..., halo=net.halo)``, which is exact).

    Examples
    --------
    >>> net = PatchClassifier(patch_shape=15, depth=2, base_channels=4).eval()
    >>> net(torch.zeros(3, 1, 15, 15)).shape
    torch.Size([3, 2])
    >>> net.dense_logits(torch.zeros(1, 1, 40, 33)).shape
    torch.Size([1, 2, 40, 33])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        patch_shape: int | tuple[int, ...] = 15,
        depth: int = 2,
        base_channels: int = 16,
        growth_rate: float = 2.0,
        kernel_size: int = 3,
        norm: str | None = "batch",
        activation: str = "relu",
        pooling: str = "flatten",
        hidden_channels: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        self.patch_shape = check_shape("patch_shape", patch_shape, ndim=self.spatial_dims, what="(or one for every axis)")
        self.depth = check_int("depth", depth, minimum=1)
        self.base_channels = check_int("base_channels", base_channels, minimum=1)
        self.growth_rate = check_float("growth_rate", growth_rate, minimum=0, open_minimum=True)
        self.kernel_size = check_int("kernel_size", kernel_size, minimum=1)
        self.norm = check_choice("norm", norm, NORMS)
        make_activation(activation)  # validates the name early
        self.activation = activation
        self.pooling = check_choice("pooling", pooling, POOLINGS)
        self.hidden_channels = check_int("hidden_channels", hidden_channels, minimum=0)
        self.dropout = check_fraction("dropout", dropout)
        final = feature_shape(self.patch_shape, self.depth, self.kernel_size)
        if min(final) < 1:
            raise ValueError(f"patch_shape={list(self.patch_shape)} is too small for depth={depth} and "
                             f"kernel_size={kernel_size}: the last feature map would be {list(final)}; use a "
                             "larger patch, a smaller depth or a smaller kernel")
        self.final_shape = final
        chans = [max(1, round(base_channels * self.growth_rate**i)) for i in range(self.depth)]
        conv = conv_nd(self.spatial_dims)
        self.stages = nn.ModuleList(
            nn.Sequential(conv(cin, cout, kernel_size), make_norm(norm, self.spatial_dims, cout),
                          make_activation(activation))
            for cin, cout in zip([in_channels] + chans[:-1], chans)
        )
        features = chans[-1] * (math.prod(final) if pooling == "flatten" else 1)
        layers: list[nn.Module] = []
        if self.hidden_channels:
            layers += [nn.Dropout(self.dropout), nn.Linear(features, self.hidden_channels),
                       make_activation(activation)]
            features = self.hidden_channels
        layers += [nn.Dropout(self.dropout), nn.Linear(features, self.out_channels)]
        self.head = nn.Sequential(*layers)

    @property
    def num_classes(self) -> int:
        """Same as ``out_channels``."""
        return self.out_channels

    def _config_overrides(self) -> dict:
        """``patch_shape`` with one entry per axis (an int given means the same on every axis)."""
        return {"patch_shape": list(self.patch_shape)}

    @property
    def receptive_field(self) -> int:
        """The patch size (largest axis; an even size ``P`` counts as ``P + 1``, since the patch
        reaches ``P // 2`` pixels before its centre): a score depends on its patch and nothing else."""
        return max(2 * (p // 2) + 1 for p in self.patch_shape)

    @property
    def fixed_input_shape(self) -> tuple[int, ...]:
        """``forward`` scores patches of ``patch_shape`` (``dense_logits`` takes any size)."""
        return tuple(self.patch_shape)

    def _check(self, x, *, dense: bool) -> None:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"classifier: input must be a torch.Tensor, got {type(x).__name__}")
        ok = x.ndim == self.spatial_dims + 2 and x.shape[1] == self.in_channels
        if not ok or (not dense and tuple(x.shape[2:]) != self.patch_shape):
            want = ", ".join(["*"] * self.spatial_dims) if dense else ", ".join(map(str, self.patch_shape))
            hint = "" if dense else "; use dense_logits() for a score map over a whole image"
            raise ValueError(f"classifier: input of shape {tuple(x.shape)} is not allowed; expected "
                             f"(N, {self.in_channels}, {want}){hint}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, *patch_shape) -> (N, out_channels)`` logits."""
        self._check(x, dense=False)
        pool = F.max_pool2d if self.spatial_dims == 2 else F.max_pool3d
        h = x
        for stage in self.stages:
            h = pool(stage(h), 2)
        if self.pooling == "flatten":
            h = h.flatten(1)
        elif self.pooling == "mean":
            h = h.flatten(2).mean(2)
        else:
            h = h.flatten(2).amax(2)
        return self.head(h)

    def dense_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of the patch centred on every pixel, in one fully convolutional pass.

        Equal (to float rounding) to cutting the reflect-padded patch around every
        pixel and calling :meth:`forward` on it, at a fraction of the cost. Needs
        ``norm`` None or ``"batch"`` (used with its running statistics: call
        ``eval()`` first); instance/group norm depend on the whole patch.

        Parameters
        ----------
        x : (N, in_channels, *spatial) Tensor
            Any spatial size; reflect padding where possible, edge replication for
            images smaller than half a patch.

        Returns
        -------
        (N, out_channels, *spatial) Tensor
        """
        self._check(x, dense=True)
        if self.norm not in (None, "batch") or (self.norm == "batch" and self.training):
            raise ValueError(f"dense_logits needs norm None or 'batch' in eval mode (got norm={self.norm!r}, "
                             f"training={self.training}); slide the classifier over patches instead "
                             "(mixscale.infer.detection_map)")
        spatial = tuple(x.shape[2:])
        h = pad_for_patches(x, self.patch_shape)
        dilation = 1
        for stage in self.stages:
            conv, rest = stage[0], stage[1:]
            h = rest(_conv(h, conv.weight, conv.bias, dilation))
            h = _max_pool(h, 2, dilation)
            dilation *= 2
        h = self._dense_head(h, dilation)
        return h[(slice(None), slice(None)) + tuple(slice(0, s) for s in spatial)]

    def _dense_head(self, h: torch.Tensor, dilation: int) -> torch.Tensor:
        """The head as convolutions: flatten -> a dilated conv over the last map, Linear -> 1x1 conv."""
        linears = [m for m in self.head if isinstance(m, nn.Linear)]
        first = linears[0]
        channels = h.shape[1]
        if self.pooling == "flatten":
            weight = first.weight.view(first.out_features, channels, *self.final_shape)
            h = _conv(h, weight, first.bias, dilation)
        else:
            if self.pooling == "mean":
                ones = h.new_full((channels, 1, *self.final_shape), 1.0 / math.prod(self.final_shape))
                h = _conv(h, ones, None, dilation, groups=channels)
            else:
                h = _max_pool(h, self.final_shape, dilation)
            h = _conv(h, _pointwise(first.weight, self.spatial_dims), first.bias, 1)
        after = list(self.head)[list(self.head).index(first) + 1:]
        for layer in after:
            if isinstance(layer, nn.Linear):
                h = _conv(h, _pointwise(layer.weight, self.spatial_dims), layer.bias, 1)
            elif not isinstance(layer, nn.Dropout):
                h = layer(h)
        return h


def has_score_map(net: nn.Module) -> bool:
    """Whether ``net`` is a patch classifier that scores every pixel's patch in one pass
    (:meth:`PatchClassifier.dense_logits`: norm None or batch)."""
    return hasattr(net, "dense_logits") and getattr(net, "norm", None) in (None, "batch")


def _pointwise(weight: torch.Tensor, spatial_dims: int) -> torch.Tensor:
    return weight.view(*weight.shape, *(1,) * spatial_dims)


def _conv(h, weight, bias, dilation, groups=1):
    fn = F.conv2d if h.ndim == 4 else F.conv3d
    return fn(h, weight, bias, dilation=dilation, groups=groups)


def _max_pool(h, kernel, dilation):
    fn = F.max_pool2d if h.ndim == 4 else F.max_pool3d
    return fn(h, kernel, stride=1, dilation=dilation)


def pad_for_patches(x: torch.Tensor, patch_shape) -> torch.Tensor:
    """Pad ``(N, C, *spatial)`` so that every pixel has a whole patch around it.

    The patch centred on pixel ``p`` covers ``p - P // 2 .. p - P // 2 + P - 1`` per
    axis; reflect padding (``"replicate"`` where an axis is too short to reflect, except
    while a graph is exported: then always reflect).
    """
    pads: list[int] = []
    for p in reversed(tuple(patch_shape)):  # F.pad lists the last axis first
        pads += [p // 2, p - 1 - p // 2]
    if not any(pads):
        return x
    if torch.compiler.is_exporting() or torch.jit.is_tracing():
        return F.pad(x, pads, mode="reflect")  # symbolic sizes: one graph for every size that can reflect
    fits = all(max(p // 2, p - 1 - p // 2) < s for p, s in zip(patch_shape, x.shape[2:]))
    return F.pad(x, pads, mode="reflect" if fits else "replicate")
