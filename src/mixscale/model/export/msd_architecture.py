"""A mixed-scale dense network (Pelt & Sethian, PNAS 2018) in plain torch, for model packages.

This file is copied as it is into BioImage Model Zoo packages, as the architecture of their
``pytorch_state_dict`` weights: it imports torch only, never mixscale, so that a package keeps
working whatever becomes of mixscale. Its parameters have the names of mixscale's ``MSDNet``
(``weights.i``, ``biases.i``, ``final_weight``, ``final_bias``), so the state dict loads as it is.

Layer ``i`` convolves all earlier maps (the input's channels included) with 3x3 (3x3x3) kernels,
channel ``j`` at dilation ``channel_dilations[i][j]`` after reflect padding by that dilation, adds its
bias and applies a ReLU; a 1x1 convolution of all maps gives the output.
"""

import torch
import torch.nn.functional as F
from torch import nn


class MSD(nn.Module):
    """``(N, in_channels, *spatial) -> (N, out_channels, *spatial)``, spatial sizes above the largest
    dilation."""

    def __init__(self, spatial_dims=2, in_channels=1, out_channels=1, channel_dilations=((1,),)):
        super().__init__()
        self.spatial_dims = int(spatial_dims)
        self.channel_dilations = [list(row) for row in channel_dilations]
        kernel = (3,) * self.spatial_dims
        width = len(self.channel_dilations[0])
        depth = len(self.channel_dilations)
        self.weights = nn.ParameterList(
            nn.Parameter(torch.zeros(width, in_channels + i * width, *kernel)) for i in range(depth))
        self.biases = nn.ParameterList(nn.Parameter(torch.zeros(width)) for _ in range(depth))
        self.final_weight = nn.Parameter(torch.zeros(out_channels, in_channels + depth * width,
                                                     *(1,) * self.spatial_dims))
        self.final_bias = nn.Parameter(torch.zeros(out_channels))

    def forward(self, x):
        conv = F.conv2d if self.spatial_dims == 2 else F.conv3d
        maps = x
        for i, row in enumerate(self.channel_dilations):
            outs = []
            for j, d in enumerate(row):
                padded = F.pad(maps, (d,) * (2 * self.spatial_dims), mode="reflect")
                outs.append(conv(padded, self.weights[i][j:j + 1], self.biases[i][j:j + 1], dilation=d))
            maps = torch.cat([maps, F.relu(torch.cat(outs, dim=1))], dim=1)
        return conv(maps, self.final_weight, self.final_bias)
