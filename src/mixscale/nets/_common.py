"""Small shared pieces of the architectures: argument checks, layer factories."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._checks import check_choice

NORMS = ("batch", "instance", "group", None)
ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "prelu": nn.PReLU,
}


def check_spatial_dims(value: Any) -> int:
    """Only 2D and 3D networks exist."""
    return int(check_choice("spatial_dims", value, (2, 3)))


def conv_nd(spatial_dims: int) -> type[nn.Module]:
    """``nn.Conv2d`` or ``nn.Conv3d``."""
    return nn.Conv2d if spatial_dims == 2 else nn.Conv3d


def make_norm(norm: str | None, spatial_dims: int, channels: int) -> nn.Module:
    """A normalisation layer by name (``None`` gives identity)."""
    if norm is None:
        return nn.Identity()
    if norm == "batch":
        return (nn.BatchNorm2d if spatial_dims == 2 else nn.BatchNorm3d)(channels)
    if norm == "instance":
        return (nn.InstanceNorm2d if spatial_dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    # group norm: the largest group count <= 8 that divides the channels
    groups = max(g for g in range(1, 9) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


def make_activation(name: str) -> nn.Module:
    """An activation layer by name, one of :data:`ACTIVATIONS`."""
    check_choice("activation", name, tuple(ACTIVATIONS))
    return ACTIVATIONS[name]()


def check_input(x: torch.Tensor, *, spatial_dims: int, in_channels: int, net: str) -> None:
    """Raise a clear error when ``x`` is not ``(N, in_channels, *spatial)``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{net}: input must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != spatial_dims + 2 or x.shape[1] != in_channels:
        raise ValueError(
            f"{net}: input of shape {tuple(x.shape)} does not fit a {spatial_dims}D network with "
            f"in_channels={in_channels}; expected (N, {in_channels}, {', '.join(['*'] * spatial_dims)})"
        )


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Pad the spatial axes of ``x`` (centred; reflect, or replicate when too small) to a multiple.

    Returns the padded tensor and the original spatial shape (for :func:`crop_center`).
    While a graph is exported (ONNX, TorchScript) the sizes are symbolic: the pad is then
    always there (zero where nothing is missing) and reflects, so one graph serves every
    size of at least ``multiple``.
    """
    spatial = tuple(x.shape[2:])
    extra = [(-s) % multiple for s in spatial]
    exporting = torch.compiler.is_exporting() or torch.jit.is_tracing()
    if not exporting and not any(extra):
        return x, spatial
    pads = []
    for e in reversed(extra):  # F.pad lists the last axis first
        pads += [e // 2, e - e // 2]
    mode = "reflect" if exporting or all(e < s for e, s in zip(extra, spatial)) else "replicate"
    return F.pad(x, pads, mode=mode), spatial


def crop_center(y: torch.Tensor, spatial: tuple[int, ...]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`: the centred ``spatial`` window of ``y``."""
    starts = [(p - s) // 2 for p, s in zip(y.shape[2:], spatial)]
    return y[(slice(None), slice(None)) + tuple(slice(a, a + s) for a, s in zip(starts, spatial))]


def release_scratch(net: nn.Module) -> None:
    """Let go of the map buffers networks keep between calls (the lean MS-D's scratch pool)."""
    for module in net.modules():
        if hasattr(module, "release_scratch"):
            module.release_scratch()
