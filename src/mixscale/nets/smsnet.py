"""Sparse mixed-scale network (SMSNet): a random DAG of dilated convolutions.

The graph comes from :func:`~mixscale.nets.smsnet_graph.sample_graph` (input node
``0``, hidden nodes ``1..n``, output node ``n + 1``). Every edge ``s -> t`` is a
3x3 (3x3x3) convolution with the edge's dilation and output channels, followed by
a norm and an activation, applied to the features of node ``s``. A node
*concatenates* the outputs of its incoming edges (so edges may differ in
channels); the output node then applies a 1x1 convolution. The sampler's
completion rule guarantees every hidden node an incoming and an outgoing edge,
so every edge lies on a path from input to output and every parameter is used.

The model file stores the graph itself (``edges`` in :meth:`SMSNet.config`), so a
saved network reloads exactly, whatever version of the sampler is installed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._checks import check_choice, check_int
from ._common import (
    NORMS,
    check_input,
    check_spatial_dims,
    conv_nd,
    make_activation,
    make_norm,
)
from .registry import NetBase, register_net
from .smsnet_graph import Edge, check_int_list, parse_edges, sample_graph

logger = logging.getLogger(__name__)

__all__ = ["SMSNet"]

PADDING_MODES = ("zeros", "replicate", "reflect")


class EdgeConv(nn.Sequential):
    """Dilated 3x3 convolution, norm, activation; the bias is left out when a norm follows."""

    def __init__(self, spatial_dims, in_channels, edge: Edge, norm, activation, padding_mode):
        super().__init__(
            conv_nd(spatial_dims)(in_channels, edge.channels, 3, dilation=edge.dilation, padding=edge.dilation,
                                  padding_mode=padding_mode, bias=norm is None),
            make_norm(norm, spatial_dims, edge.channels),
            make_activation(activation),
        )


@register_net("smsnet")
class SMSNet(NetBase):
    """Sparse mixed-scale network on a random directed acyclic graph, 2D or 3D.

    Parameters
    ----------
    spatial_dims : {2, 3}
    in_channels, out_channels : int
    hidden_nodes : int
        Number of hidden nodes ``n``.
    min_degree, max_degree : int or float
        Bounds of each hidden node's out-degree to later hidden nodes: an int is
        absolute, a float in (0, 1] a fraction of the ``n - 1`` possible targets.
        A drawn degree larger than a node's available targets is clipped to them.
    degree_exponent : float
        ``gamma`` in ``P(k) ∝ k ** -gamma``.
    skip_decay : float
        ``alpha`` in ``P(d) ∝ exp(-alpha * d)`` for an edge ``i -> i + d``.
    input_fraction, output_fraction : float in [0, 1]
        Fraction of hidden nodes wired from the input (IL) and to the output (LO).
    input_to_output : bool
        Whether the input is also wired straight to the output (IO).
    dilations, channels : sequence of int
        Choices drawn uniformly for each edge's dilation and output channels.
    norm : {"instance", "group", "batch", None}
        Norm after each edge convolution. The default, instance norm, makes each
        image's output independent of the rest of the batch in training and in
        evaluation. ``"batch"`` is batch-independent in eval mode only (running
        statistics). Instance and group norm use whole-image statistics, so tiled
        prediction matches whole-image prediction exactly only with ``None`` or
        ``"batch"`` (eval).
    activation : str
        One of ``mixscale.nets._common.ACTIVATIONS``.
    padding_mode : {"replicate", "zeros", "reflect"}
        Border handling of the convolutions; ``"reflect"`` needs every spatial size
        to exceed the largest dilation.
    seed : int
        Seed of the graph sampler (weights use torch's global generator).
    edges : list or None
        An explicit graph: dicts with keys ``source, target, dilation, channels``
        (what :meth:`config` stores). When given, nothing is sampled and the
        sampling arguments are only kept as a record.

    Attributes
    ----------
    edges : list of Edge
        The graph, sorted by ``(source, target)``; ``edge_convs[j]`` realises ``edges[j]``.
    graph : GraphSample or None
        What the sampler did (requested vs realised degrees, clipped nodes, added
        edges); None when the net was built from an explicit ``edges`` list.
    node_channels : list of int
        Channels of each node (the input's, else the sum over its incoming edges).

    Shapes
    ------
    ``(N, in_channels, *spatial) -> (N, out_channels, *spatial)`` for any spatial
    size (no down-sampling; padding ``dilation`` per convolution).

    Examples
    --------
    >>> net = SMSNet(hidden_nodes=6, seed=3)
    >>> net(torch.zeros(2, 1, 17, 9)).shape
    torch.Size([2, 1, 17, 9])
    >>> rebuilt = SMSNet(**net.config())  # same graph, no re-sampling
    >>> rebuilt.edges == net.edges
    True
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 1,
        hidden_nodes: int = 16,
        min_degree: int | float = 1,
        max_degree: int | float = 0.5,
        degree_exponent: float = 1.0,
        skip_decay: float = 0.5,
        input_fraction: float = 0.5,
        output_fraction: float = 0.5,
        input_to_output: bool = True,
        dilations: Sequence[int] = (1, 2, 4, 8),
        channels: Sequence[int] = (4,),
        norm: str | None = "instance",
        activation: str = "relu",
        padding_mode: str = "replicate",
        seed: int = 0,
        edges: list[Any] | None = None,
    ) -> None:
        super().__init__()
        self.spatial_dims = check_spatial_dims(spatial_dims)
        self.in_channels = check_int("in_channels", in_channels, minimum=1)
        self.out_channels = check_int("out_channels", out_channels, minimum=1)
        self.norm = check_choice("norm", norm, NORMS)
        make_activation(activation)  # validates the name early
        self.activation = activation
        self.padding_mode = check_choice("padding_mode", padding_mode, PADDING_MODES)
        self.graph_args = dict(
            min_degree=min_degree, max_degree=max_degree, degree_exponent=degree_exponent, skip_decay=skip_decay,
            input_fraction=input_fraction, output_fraction=output_fraction, input_to_output=input_to_output,
            dilations=check_int_list("dilations", dilations), channels=check_int_list("channels", channels),
            seed=seed,
        )
        # sampling is cheap and validates every sampling argument the same way in both branches
        sample = sample_graph(hidden_nodes, **self.graph_args)
        self.hidden_nodes = hidden_nodes
        self.graph = sample if edges is None else None  # the sampler's record (clipping, added edges)
        self.edges: list[Edge] = sample.edges if edges is None else parse_edges(edges, hidden_nodes)
        self.node_channels = self._node_channels()
        self._incoming: list[list[int]] = [[] for _ in range(hidden_nodes + 2)]
        for j, e in enumerate(self.edges):
            self._incoming[e.target].append(j)
        last_consumer = {e.source: e.target for e in self.edges}  # sorted by (source, target): the last wins
        self._freed_at = [[s for s, t_last in last_consumer.items() if t_last == t] for t in range(hidden_nodes + 2)]
        self.edge_convs = nn.ModuleList(
            EdgeConv(spatial_dims, self.node_channels[e.source], e, norm, activation, padding_mode) for e in self.edges
        )
        self.head = conv_nd(spatial_dims)(self.node_channels[hidden_nodes + 1], out_channels, 1)
        logger.debug("smsnet: %d hidden nodes, %d edges, receptive field %d", hidden_nodes, len(self.edges),
                     self.receptive_field)

    def _node_channels(self) -> list[int]:
        """Channels of every node: ``in_channels`` for the input, else the sum over incoming edges."""
        chans = [self.in_channels] + [0] * (self.hidden_nodes + 1)
        for e in self.edges:
            chans[e.target] += e.channels
        return chans

    def _config_overrides(self) -> dict:
        """The graph as an edge list (no re-sampling on load) and the checked choice lists."""
        return {"dilations": self.graph_args["dilations"], "channels": self.graph_args["channels"],
                "edges": [e._asdict() for e in self.edges]}

    @property
    def receptive_field(self) -> int:
        """``1 + 2 * (largest sum of dilations along a path from input to output)``, in pixels.

        Exact for a network without norm (or batch norm in eval mode) away from
        the borders; instance and group norm add a whole-image dependence.
        """
        reach = [0] + [-1] * (self.hidden_nodes + 1)
        for e in sorted(self.edges, key=lambda e: e.target):  # sources are finished before targets
            reach[e.target] = max(reach[e.target], reach[e.source] + e.dilation)
        return 1 + 2 * reach[-1]

    def _check_size(self, x: torch.Tensor) -> None:
        if self.padding_mode != "reflect":
            return
        dmax = max(e.dilation for e in self.edges)
        if min(x.shape[2:]) <= dmax:
            raise ValueError(f"smsnet: input of spatial shape {tuple(x.shape[2:])} is too small for "
                             f"padding_mode='reflect' with dilation {dmax}; every spatial size must be > {dmax} "
                             "(or use padding_mode='replicate')")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, *spatial) -> (N, out_channels, *spatial)``."""
        check_input(x, spatial_dims=self.spatial_dims, in_channels=self.in_channels, net="smsnet")
        self._check_size(x)
        feats: dict[int, torch.Tensor] = {0: x}
        for t in range(1, self.hidden_nodes + 2):
            parts = [self.edge_convs[j](feats[self.edges[j].source]) for j in self._incoming[t]]
            feats[t] = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
            for s in self._freed_at[t]:
                del feats[s]  # a node's features are dropped after its last consumer: memory ~ live nodes
        return self.head(feats[self.hidden_nodes + 1])
