"""Drawings of sparse mixed-scale network graphs (SMSNet): layered graph and adjacency matrices.

Both functions take an SMSNet (anything with an ``edges`` attribute) or the edge
list itself: items with ``source, target, dilation, channels`` as a mapping or a
sequence of four integers, nodes numbered in topological order (0 = input, the
largest index = output).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.lines import Line2D

from .._checks import check_floats, not_allowed
from ._common import check_dpi, check_out_path, new_figure, save_figure

__all__ = ["graph_depths", "plot_adjacency", "plot_graph"]

logger = logging.getLogger(__name__)

_FIELDS = ("source", "target", "dilation", "channels")


def _edges_of(net_or_edges) -> tuple[np.ndarray, int]:
    """``(E, 4)`` int array of edges and the number of nodes."""
    edges = getattr(net_or_edges, "edges", net_or_edges)
    if isinstance(edges, (str, bytes, Mapping)) or not hasattr(edges, "__iter__"):
        raise TypeError(f"net_or_edges must be an SMSNet or a list of edges, got {type(net_or_edges).__name__}")
    rows = []
    for item in edges:
        vals = [item.get(k) for k in _FIELDS] if isinstance(item, Mapping) else item
        try:
            vals = list(vals)
        except TypeError:
            vals = []
        if len(vals) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in vals):
            raise ValueError(f"edge {item!r} is not allowed; expected four integers {_FIELDS}")
        row = [int(v) for v in vals]
        if not 0 <= row[0] < row[1] or min(row[2:]) < 1:
            raise ValueError(f"edge {item!r} is not allowed; expected 0 <= source < target and "
                             "dilation, channels >= 1")
        rows.append(row)
    if len({tuple(r[:2]) for r in rows}) != len(rows):
        raise ValueError("net_or_edges has a duplicate (source, target) edge")
    if not rows:
        raise ValueError("net_or_edges has no edges; nothing to draw")
    array = np.asarray(rows, dtype=np.int64)
    return array, int(array[:, 1].max()) + 1


def graph_depths(edges: np.ndarray, n_nodes: int) -> np.ndarray:
    """Depth of every node: the number of edges on the longest path from a source node.

    Parameters
    ----------
    edges : (E, >=2) int array
        ``source, target`` in the first two columns, ``source < target``.
    n_nodes : int

    Examples
    --------
    >>> graph_depths(np.array([[0, 1], [1, 2], [0, 2]]), 3).tolist()
    [0, 1, 2]
    """
    depth = np.zeros(n_nodes, dtype=np.int64)
    for s, t in sorted(map(tuple, np.asarray(edges)[:, :2]), key=lambda e: e[1]):
        depth[t] = max(depth[t], depth[s] + 1)
    return depth


def _check_size(size) -> tuple[float, float] | None:
    if size is None:
        return None
    expected = "(width, height) in inches, each in (0, 100]"
    w, h = check_floats("size", size, n=2, what=expected)
    if not (0 < w <= 100 and 0 < h <= 100):
        raise not_allowed("size", size, expected)
    return w, h


def _dilation_colors(dilations) -> dict[int, tuple]:
    cmap = colormaps["tab10"]
    return {int(d): cmap(i % 10) for i, d in enumerate(sorted(set(int(d) for d in dilations)))}


def _node_positions(depth: np.ndarray) -> np.ndarray:
    """x = depth, y spread evenly and centred within each depth layer."""
    pos = np.zeros((len(depth), 2))
    for level in np.unique(depth):
        nodes = np.flatnonzero(depth == level)
        pos[nodes, 0] = level
        pos[nodes, 1] = np.arange(len(nodes)) - (len(nodes) - 1) / 2
    return pos


def _edge_curve(p0: np.ndarray, p1: np.ndarray, span: int, *, bend_up: bool) -> np.ndarray:
    """Points of a quadratic Bezier from ``p0`` to ``p1``, bent when it skips layers (so it misses nodes)."""
    height = 0.0 if span <= 1 else min(1.5, 0.2 + 0.12 * (span - 1))
    control = (p0 + p1) / 2 + np.array([0.0, height if bend_up else -height])
    u = np.linspace(0.0, 1.0, 24)[:, None]
    return (1 - u) ** 2 * p0 + 2 * u * (1 - u) * control + u**2 * p1


def plot_graph(net_or_edges, out_path, *, size=None, dpi: int = 100) -> Path:
    """Draw the network graph in layers of depth, edges coloured by dilation.

    Parameters
    ----------
    net_or_edges : SMSNet or list of edges
        See the module docstring.
    out_path : str or os.PathLike
        ``.png``, ``.pdf`` or ``.svg``, written atomically.
    size : (float, float), optional
        Figure size in inches; by default it grows with the depth and width of the graph.
    dpi : int

    Returns
    -------
    Path of the written figure. Node ``x`` is its depth (longest path from the
    input, in edges); line width grows with the edge's channels.

    Examples
    --------
    >>> import os, tempfile
    >>> out = os.path.join(tempfile.mkdtemp(), "graph.png")
    >>> plot_graph([(0, 1, 1, 2), (1, 2, 4, 2), (0, 2, 2, 1)], out).stat().st_size > 0
    True
    """
    check_out_path(out_path)
    dpi, size = check_dpi(dpi), _check_size(size)
    edges, n_nodes = _edges_of(net_or_edges)
    depth = graph_depths(edges, n_nodes)
    pos = _node_positions(depth)
    widest = int(np.bincount(depth).max())
    fig = new_figure(*(size or (min(30.0, max(5.0, 0.7 * depth.max() + 3.0)), max(3.5, 0.55 * widest + 1.5))))
    ax = fig.add_subplot()
    colors = _dilation_colors(edges[:, 2])
    ys = [pos[:, 1]]
    for s, t, d, c in edges:
        curve = _edge_curve(pos[s], pos[t], depth[t] - depth[s], bend_up=(s + t) % 2 == 0)
        ax.plot(curve[:, 0], curve[:, 1], color=colors[int(d)], lw=0.6 + 0.3 * min(int(c), 8), alpha=0.75,
                solid_capstyle="round")
        ys.append(curve[:, 1])
    kind = np.array(["hidden"] * n_nodes, dtype=object)
    kind[0], kind[-1] = "input", "output"
    ax.scatter(pos[:, 0], pos[:, 1], s=260, zorder=3, edgecolors="black",
               c=["#9ecae1" if k == "input" else "#fdae6b" if k == "output" else "white" for k in kind])
    for node, (x, y) in enumerate(pos):
        label = "in" if node == 0 else "out" if node == n_nodes - 1 else str(node)
        ax.text(x, y, label, ha="center", va="center", fontsize="x-small", zorder=4)
    handles = [Line2D([], [], color=col, lw=2, label=f"dilation {d}") for d, col in colors.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small", frameon=False)
    ax.set_xlim(-0.6, depth.max() + 0.6)
    ys = np.concatenate(ys)
    ax.set_ylim(ys.min() - 0.6, ys.max() + 0.6)
    ax.set_xlabel("depth (longest path from the input)")
    ax.set_yticks([])
    ax.set_title(f"{n_nodes - 2} hidden nodes, {len(edges)} edges, all running left to right "
                 "(line width ~ channels)", fontsize="small")
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    return save_figure(fig, out_path, dpi=dpi)


def _matrix_panel(fig, ax, values: np.ndarray, mask: np.ndarray, title: str, kind: str) -> None:
    """One adjacency panel; ``kind`` is "binary", "discrete" (one colour per value) or "continuous"."""
    if kind == "binary":
        ax.imshow(mask, cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    elif kind == "discrete":  # the colours of the graph drawing's dilation legend
        shown = np.ma.masked_where(~mask, values)
        levels = sorted(set(values[mask].tolist()))
        colors = _dilation_colors(levels)
        cmap = ListedColormap([colors[v] for v in levels])
        bounds = [levels[0] - 0.5] + [(a + b) / 2 for a, b in zip(levels, levels[1:])] + [levels[-1] + 0.5]
        image = ax.imshow(shown, cmap=cmap, norm=BoundaryNorm(bounds, cmap.N), interpolation="nearest")
        fig.colorbar(image, ax=ax, ticks=levels, shrink=0.8)
    else:
        image = ax.imshow(np.ma.masked_where(~mask, values), cmap="viridis", interpolation="nearest")
        fig.colorbar(image, ax=ax, shrink=0.8)
    n = values.shape[0]
    ticks = np.arange(n) if n <= 12 else np.linspace(0, n - 1, 6).round().astype(int)
    labels = ["in" if t == 0 else "out" if t == n - 1 else str(t) for t in ticks]
    ax.set_xticks(ticks, labels, fontsize="x-small")
    ax.set_yticks(ticks, labels, fontsize="x-small")
    ax.set_xlabel("target")
    ax.set_ylabel("source")
    ax.set_title(title, fontsize="small")


def plot_adjacency(net_or_edges, out_path, *, size=None, dpi: int = 100) -> Path:
    """Draw three adjacency matrices: connectivity, dilation and channels of each edge.

    Parameters
    ----------
    net_or_edges : SMSNet or list of edges
    out_path : str or os.PathLike
        ``.png``, ``.pdf`` or ``.svg``, written atomically.
    size : (float, float), optional
        Figure size in inches, ``(11, 3.8)`` by default.
    dpi : int

    Returns
    -------
    Path of the written figure. Row = source node, column = target node; only
    the upper triangle can be filled (topological order).
    """
    check_out_path(out_path)
    dpi, size = check_dpi(dpi), _check_size(size)
    edges, n_nodes = _edges_of(net_or_edges)
    mask = np.zeros((n_nodes, n_nodes), dtype=bool)
    dil = np.zeros((n_nodes, n_nodes), dtype=np.int64)
    chans = np.zeros((n_nodes, n_nodes), dtype=np.int64)
    mask[edges[:, 0], edges[:, 1]] = True
    dil[edges[:, 0], edges[:, 1]] = edges[:, 2]
    chans[edges[:, 0], edges[:, 1]] = edges[:, 3]
    fig = new_figure(*(size or (11.0, 3.8)))
    axes = fig.subplots(1, 3)
    _matrix_panel(fig, axes[0], mask.astype(np.int64), mask, f"connectivity ({len(edges)} edges)", "binary")
    _matrix_panel(fig, axes[1], dil, mask, "dilation", "discrete")
    _matrix_panel(fig, axes[2], chans, mask, "channels", "continuous")
    return save_figure(fig, out_path, dpi=dpi)
