"""Randomly generated encoder-decoder networks (in the spirit of genenet, Guay et al.).

Hyperparameters are drawn hierarchically from a seed, each within a user-given range:

* network: number of scales, base channels and their growth per scale, pooling
  kind (max, avg or a strided 2x2 convolution), skip merge (concatenation or sum);
* path (encoder, decoder): activation and normalisation;
* block (one per scale and path): number of convolutions and kernel size;
* layer (one per convolution): dilation.

:func:`sample_unet_spec` is a pure function returning a plain JSON spec;
:class:`RandomUNet` builds a network from a spec (or samples one from a seed) and
stores the whole spec in its ``config()``, so a model file reloads the identical
architecture without sampling again.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice, check_float, check_int, not_allowed
from ._common import (
    ACTIVATIONS,
    NORMS,
    check_input,
    check_spatial_dims,
    conv_nd,
    crop_center,
    pad_to_multiple,
)
from .registry import NetBase, register_net
from .unet import level_channels
from .unet3plus import conv_norm_act

SPEC_VERSION = 1
POOLINGS = ("max", "avg", "conv")
MERGES = ("concat", "sum")
INT_RANGES = ("num_scales", "convs_per_block", "base_channels", "dilation")  # [low, high], integers >= 1
CHOICES = {"kernel_size": None, "activation": tuple(ACTIVATIONS), "norm": NORMS, "pooling": POOLINGS,
           "merge": MERGES}  # lists of allowed values (kernel sizes: odd integers >= 1)
DEFAULT_RANGES: dict[str, list] = {
    "num_scales": [2, 4],
    "convs_per_block": [1, 3],
    "base_channels": [4, 16],
    "channel_growth": [1.0, 2.0],
    "dilation": [1, 3],
    "kernel_size": [3, 5],
    "activation": ["relu", "leaky_relu", "elu", "gelu", "silu", "prelu"],
    "norm": ["batch", "instance", "group", None],
    "pooling": ["max", "avg", "conv"],
    "merge": ["concat", "sum"],
}


def _check_kernel_size(name: str, value: Any) -> int:
    value = check_int(name, value, minimum=1)
    if value % 2 == 0:
        raise not_allowed(name, value, "an odd integer >= 1")
    return value


def _check_growth(name: str, value: Any) -> float:
    return check_float(name, value, minimum=0, open_minimum=True)


def check_ranges(ranges: dict | None) -> dict[str, list]:
    """:data:`DEFAULT_RANGES` updated with ``ranges``, every entry validated.

    Integer and float entries are inclusive ``[low, high]`` pairs; the others are
    non-empty lists of allowed values. Raises ``TypeError`` (wrong type) or ``ValueError`` naming the bad entry.
    """
    if ranges is None:
        ranges = {}
    if not isinstance(ranges, dict):
        raise not_allowed("ranges", ranges, "a dict such as {'num_scales': [2, 3]}", TypeError)
    unknown = sorted(set(ranges) - set(DEFAULT_RANGES), key=str)
    if unknown:
        raise ValueError(f"unknown range(s) {unknown}; allowed: {', '.join(DEFAULT_RANGES)}")
    out = copy.deepcopy(DEFAULT_RANGES)
    for key, value in ranges.items():
        name = f"ranges[{key!r}]"
        if not isinstance(value, (list, tuple)):
            raise not_allowed(name, value, "a non-empty list", TypeError)
        if not value:
            raise not_allowed(name, value, "a non-empty list")
        if key == "kernel_size":
            for v in value:
                _check_kernel_size(name, v)
        elif key in CHOICES:
            for v in value:
                check_choice(name, v, CHOICES[key])
        else:
            if len(value) != 2:
                raise not_allowed(name, value, "a [low, high] pair")
            check = (lambda n, v: check_int(n, v, minimum=1)) if key in INT_RANGES else _check_growth
            low, high = (check(name, v) for v in value)
            if low > high:
                raise ValueError(f"{name}={value!r} is not allowed; low must not exceed high")
        out[key] = list(value)
    return out


def _sample_path(rng: random.Random, r: dict, num_blocks: int) -> dict:
    """Path level (activation, norm), then its blocks (convs, kernel size) and layers (dilation)."""
    path = {"activation": rng.choice(r["activation"]), "norm": rng.choice(r["norm"]), "blocks": []}
    for _ in range(num_blocks):
        kernel_size = rng.choice(r["kernel_size"])
        layers = [{"dilation": rng.randint(*r["dilation"])} for _ in range(rng.randint(*r["convs_per_block"]))]
        path["blocks"].append({"kernel_size": kernel_size, "layers": layers})
    return path


def sample_unet_spec(seed: int = 0, ranges: dict | None = None) -> dict:
    """Draw a random encoder-decoder architecture from ``seed`` (pure; stdlib ``random``).

    Parameters
    ----------
    seed : int
        Same seed and ranges, same spec, on every platform.
    ranges : dict, optional
        Overrides of :data:`DEFAULT_RANGES`, e.g. ``{"num_scales": [2, 3], "norm": [None]}``.

    Returns
    -------
    dict
        A JSON-safe spec: ``version``, ``seed``, ``num_scales``, ``base_channels``,
        ``channel_growth``, ``pooling``, ``merge``, and ``encoder`` / ``decoder`` paths
        (``activation``, ``norm``, ``blocks``: ``num_scales`` resp. ``num_scales - 1``
        blocks, finest first, each ``{"kernel_size": k, "layers": [{"dilation": d}, ...]}``).
        Scale ``l`` has ``round(base_channels * channel_growth ** l)`` channels.

    Examples
    --------
    >>> spec = sample_unet_spec(3, {"num_scales": [2, 2]})
    >>> spec["num_scales"], len(spec["encoder"]["blocks"]), len(spec["decoder"]["blocks"])
    (2, 2, 1)
    """
    r = check_ranges(ranges)
    seed = check_int("seed", seed, minimum=0)
    rng = random.Random(seed)
    low, high = r["channel_growth"]
    num_scales = rng.randint(*r["num_scales"])
    spec = {
        "version": SPEC_VERSION,
        "seed": seed,
        "num_scales": num_scales,
        "base_channels": rng.randint(*r["base_channels"]),
        "channel_growth": min(max(round(rng.uniform(low, high), 3), low), high),
        "pooling": rng.choice(r["pooling"]),
        "merge": rng.choice(r["merge"]),
    }
    spec["encoder"] = _sample_path(rng, r, num_scales)
    spec["decoder"] = _sample_path(rng, r, num_scales - 1)
    return spec


def _check_keys(name: str, value: Any, required: tuple, optional: tuple = ()) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a dict (JSON object), got {type(value).__name__}")
    missing = [k for k in required if k not in value]
    unknown = sorted(set(value) - set(required) - set(optional), key=str)
    if missing or unknown:
        raise ValueError(f"{name} has missing key(s) {missing} / unknown key(s) {unknown}; "
                         f"expected keys {list(required + optional)}")


def _check_path(name: str, path: Any, num_blocks: int) -> None:
    _check_keys(name, path, ("activation", "norm", "blocks"))
    check_choice(f"{name}['activation']", path["activation"], tuple(ACTIVATIONS))
    check_choice(f"{name}['norm']", path["norm"], NORMS)
    blocks = path["blocks"]
    if not isinstance(blocks, list) or len(blocks) != num_blocks:
        raise ValueError(f"{name}['blocks'] must be a list of {num_blocks} blocks, got {blocks!r}")
    for b, block in enumerate(blocks):
        bname = f"{name}['blocks'][{b}]"
        _check_keys(bname, block, ("kernel_size", "layers"))
        _check_kernel_size(f"{bname}['kernel_size']", block["kernel_size"])
        if not isinstance(block["layers"], list) or not block["layers"]:
            raise ValueError(f"{bname}['layers'] must be a non-empty list, got {block['layers']!r}")
        for i, layer in enumerate(block["layers"]):
            _check_keys(f"{bname}['layers'][{i}]", layer, ("dilation",))
            check_int(f"{bname}['layers'][{i}]['dilation']", layer["dilation"], minimum=1)


def check_unet_spec(spec: Any) -> dict:
    """Validate a spec (see :func:`sample_unet_spec`) and return a deep copy of it."""
    _check_keys("spec", spec, ("version", "num_scales", "base_channels", "channel_growth", "pooling", "merge",
                               "encoder", "decoder"), optional=("seed",))
    if spec["version"] != SPEC_VERSION:
        raise ValueError(f"spec['version']={spec['version']!r} is not supported; expected {SPEC_VERSION}")
    num_scales = check_int("spec['num_scales']", spec["num_scales"], minimum=1)
    check_int("spec['base_channels']", spec["base_channels"], minimum=1)
    _check_growth("spec['channel_growth']", spec["channel_growth"])
    check_choice("spec['pooling']", spec["pooling"], POOLINGS)
    check_choice("spec['merge']", spec["merge"], MERGES)
    _check_path("spec['encoder']", spec["encoder"], num_scales)
    _check_path("spec['decoder']", spec["decoder"], num_scales - 1)
    return copy.deepcopy(spec)


def spec_receptive_field(spec: dict) -> int:
    """Conservative receptive field (pixels) of the network a spec describes.

    A k-tap convolution with dilation d at pixel spacing s adds ``s * d * (k - 1) / 2``
    to the half-width; pooling from spacing ``s`` and the 2x2 transposed convolution
    to spacing ``s`` each add ``s`` (twice their exact offset bound, ``s / 2``). The
    decoder path always dominates the skip it is merged with.
    """
    radius, step = 0, 1
    for level, block in enumerate(spec["encoder"]["blocks"]):
        if level:
            radius += step // 2  # pooling from spacing step / 2
        radius += sum(step * layer["dilation"] * (block["kernel_size"] - 1) // 2 for layer in block["layers"])
        step *= 2
    for level in reversed(range(spec["num_scales"] - 1)):
        step = 2**level
        block = spec["decoder"]["blocks"][level]
        radius += step + sum(step * layer["dilation"] * (block["kernel_size"] - 1) // 2
                                  for layer in block["layers"])
    return 2 * radius + 1


def _block(spatial_dims: int, in_channels: int, channels: int, path: dict, block: dict) -> nn.Sequential:
    kernel_size = block["kernel_size"]
    return nn.Sequential(*(
        conv_norm_act(spatial_dims, in_channels if i == 0 else channels, channels, path["norm"],
                      path["activation"], kernel_size=kernel_size, dilation=layer["dilation"])
        for i, layer in enumerate(block["layers"])
    ))


@register_net("random_unet")
class RandomUNet(NetBase):
    """Encoder-decoder network built from a random (or hand-written) spec.

    Parameters
    ----------
    spatial_dims : {2, 3}
    in_channels, out_channels : int
    spec : dict, optional
        Architecture as returned by :func:`sample_unet_spec` (validated by
        :func:`check_unet_spec`). When given, ``ranges`` must be left out and ``seed``
        left at 0 or equal to ``spec["seed"]``.
    seed : int
        Seed for :func:`sample_unet_spec` when no spec is given.
    ranges : dict, optional
        Range overrides for :func:`sample_unet_spec` when no spec is given.

    Shapes
    ------
    ``(N, in_channels, *spatial) -> (N, out_channels, *spatial)`` for any spatial size:
    padded inside to a multiple of ``2 ** (num_scales - 1)`` and cropped back. Every
    convolution pads "same" (zeros); downsampling is pooling or a strided 2x2 conv,
    upsampling a 2x2 transposed conv; a 1x1 convolution gives the output.

    Examples
    --------
    >>> net = RandomUNet(seed=7, ranges={"num_scales": [3, 3], "base_channels": [4, 4]})
    >>> net(torch.zeros(1, 1, 37, 21)).shape
    torch.Size([1, 1, 37, 21])
    >>> rebuilt = RandomUNet(**net.config())  # same architecture, nothing re-sampled
    >>> rebuilt.config() == net.config()
    True
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        spec: dict | None = None,
        seed: int = 0,
        ranges: dict | None = None,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        check_int("seed", seed, minimum=0)
        if spec is None:
            spec = sample_unet_spec(seed, ranges)
        elif ranges is not None:
            raise ValueError("ranges cannot be combined with spec: give a spec, or a seed and ranges to sample one")
        self.spec = check_unet_spec(spec)
        if seed not in (0, self.spec.get("seed", 0)):
            raise ValueError(f"seed={seed!r} conflicts with spec['seed']={self.spec.get('seed')!r}; "
                             "give one or the other")
        self._build()

    def _build(self) -> None:
        spec, dims = self.spec, self.spatial_dims
        n = spec["num_scales"]
        chans = level_channels(n, spec["base_channels"], float(spec["channel_growth"]))
        enc, dec = spec["encoder"], spec["decoder"]
        self.encoders = nn.ModuleList(
            _block(dims, self.in_channels if i == 0 else chans[i - 1], chans[i], enc, enc["blocks"][i])
            for i in range(n)
        )
        if spec["pooling"] == "conv":
            self.downs = nn.ModuleList(conv_nd(dims)(chans[i], chans[i], 2, stride=2) for i in range(n - 1))
        up = nn.ConvTranspose2d if dims == 2 else nn.ConvTranspose3d
        self.ups = nn.ModuleList(up(chans[i + 1], chans[i], 2, stride=2) for i in range(n - 1))
        factor = 2 if spec["merge"] == "concat" else 1
        self.decoders = nn.ModuleList(
            _block(dims, factor * chans[i], chans[i], dec, dec["blocks"][i]) for i in range(n - 1)
        )
        self.head = conv_nd(dims)(chans[0], self.out_channels, 1)

    def _config_overrides(self) -> dict:
        """The full spec instead of ``seed`` and ``ranges`` (nothing is sampled again on load)."""
        return {"spec": copy.deepcopy(self.spec), "seed": self.spec.get("seed", 0), "ranges": None}

    @property
    def receptive_field(self) -> int:
        """Conservative width in pixels of the region one output pixel depends on.

        See :func:`spec_receptive_field`; normalisation statistics are ignored.
        """
        return spec_receptive_field(self.spec)

    def _down(self, level: int, h: torch.Tensor) -> torch.Tensor:
        kind = self.spec["pooling"]
        if kind == "conv":
            return self.downs[level](h)
        if kind == "max":
            return (F.max_pool2d if self.spatial_dims == 2 else F.max_pool3d)(h, 2)
        return (F.avg_pool2d if self.spatial_dims == 2 else F.avg_pool3d)(h, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, *spatial) -> (N, out_channels, *spatial)``."""
        check_input(x, spatial_dims=self.spatial_dims, in_channels=self.in_channels, net="random_unet")
        padded, spatial = pad_to_multiple(x, 2 ** (self.spec["num_scales"] - 1))
        skips, h = [], padded
        for level, block in enumerate(self.encoders):
            h = block(self._down(level - 1, h) if level else h)
            skips.append(h)
        concat = self.spec["merge"] == "concat"
        for level in reversed(range(len(self.decoders))):
            u = self.ups[level](h)
            h = self.decoders[level](torch.cat([skips[level], u], dim=1) if concat else skips[level] + u)
        return crop_center(self.head(h), spatial)
