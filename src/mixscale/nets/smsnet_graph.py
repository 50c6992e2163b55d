"""Random directed acyclic graphs for sparse mixed-scale networks (pure NumPy).

Nodes are numbered in topological order: ``0`` is the input, ``1..n`` the hidden
nodes, ``n + 1`` the output. Every edge goes from a lower to a higher number and
carries a dilation and a channel count. :func:`sample_graph` draws such a graph
from a seed; the same arguments always give the same graph.

The sampler, step by step (the order of the random draws is part of the definition):

1. Hidden-to-hidden edges. For each hidden node ``i = 1..n`` in turn: draw an
   out-degree ``K`` from ``P(k) ∝ k ** -degree_exponent`` on ``[kmin, kmax]``.
   Node ``i`` has ``m = n - i`` possible hidden targets; when ``K > m`` the degree is
   *clipped* to ``m`` (every available target is taken) and the clip is recorded in
   :attr:`GraphSample.requested_degrees` / :attr:`GraphSample.clipped`. Then ``k``
   distinct skip lengths ``d`` in ``1..m`` are drawn one after another, each with
   probability ``∝ exp(-skip_decay * d)`` among those not yet taken (successive
   sampling without replacement); the targets are ``i + d``.
2. Input edges: ``round(input_fraction * n)`` hidden nodes drawn uniformly without
   replacement get an edge from the input.
3. Output edges: ``round(output_fraction * n)`` hidden nodes, drawn the same way,
   get an edge to the output.
4. ``input_to_output``: an input -> output edge.
5. Completion (so that every node computes something used by the output): a hidden
   node without incoming edge gets one from the input, a hidden node without
   outgoing edge gets one to the output. These edges are listed in
   :attr:`GraphSample.added`; the realised input/output fractions can therefore
   exceed the requested ones.
6. For each edge in canonical order (sorted by source, then target) a dilation
   and then a channel count are drawn uniformly from the given lists.

Rounding is half-up. No sampled edge is ever dropped afterwards.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from .._checks import check_bool, check_float, check_int, not_allowed

logger = logging.getLogger(__name__)

__all__ = ["Edge", "GraphSample", "check_int_list", "degree_bounds", "degree_probabilities", "parse_edges",
           "sample_graph", "skip_probabilities"]


class Edge(NamedTuple):
    """One edge of the graph: a dilated convolution ``source -> target`` with ``channels`` outputs."""

    source: int
    target: int
    dilation: int
    channels: int


@dataclass
class GraphSample:
    """A sampled graph plus what the sampler did to get it.

    Attributes
    ----------
    hidden_nodes : int
    edges : list of Edge
        All edges, sorted by ``(source, target)``.
    requested_degrees, degrees : list of int
        Hidden-to-hidden out-degree of hidden node ``i`` at index ``i - 1``, as drawn
        and as realised after clipping to the available targets.
    added : list of Edge
        Edges added by the completion rule (also contained in ``edges``).
    """

    hidden_nodes: int
    edges: list[Edge]
    requested_degrees: list[int]
    degrees: list[int]
    added: list[Edge] = field(default_factory=list)

    @property
    def clipped(self) -> list[int]:
        """Hidden nodes whose drawn out-degree exceeded their available targets."""
        return [i + 1 for i, (r, k) in enumerate(zip(self.requested_degrees, self.degrees)) if r != k]


def _round_half_up(x: float) -> int:
    return int(math.floor(x + 0.5))


def _resolve_degree(name: str, value: Any, hidden_nodes: int) -> int:
    """An int is absolute; a float in (0, 1] is a fraction of the ``hidden_nodes - 1`` possible targets."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise not_allowed(name, value, "an integer >= 1 or a float in (0, 1]", TypeError)
    if isinstance(value, int):
        return check_int(name, value, minimum=1)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name}={value!r} is not allowed; a fractional degree must be in (0, 1]")
    return max(1, _round_half_up(value * (hidden_nodes - 1)))


def degree_bounds(hidden_nodes: int, min_degree: int | float, max_degree: int | float) -> tuple[int, int]:
    """``(kmin, kmax)`` as integers; fractions are of the ``hidden_nodes - 1`` possible targets.

    Examples
    --------
    >>> degree_bounds(11, 1, 0.5)
    (1, 5)
    """
    kmin = _resolve_degree("min_degree", min_degree, hidden_nodes)
    kmax = _resolve_degree("max_degree", max_degree, hidden_nodes)
    if kmin > kmax:
        raise ValueError(f"min_degree={min_degree!r} gives {kmin} > max_degree={max_degree!r} which gives {kmax}; "
                         "expected min_degree <= max_degree")
    return kmin, kmax


def degree_probabilities(kmin: int, kmax: int, exponent: float) -> np.ndarray:
    """``P(k) ∝ k ** -exponent`` for ``k = kmin..kmax`` (index 0 is ``kmin``)."""
    k = np.arange(kmin, kmax + 1, dtype=np.float64)
    p = k**-exponent
    return p / p.sum()


def skip_probabilities(m: int, decay: float) -> np.ndarray:
    """``P(d) ∝ exp(-decay * d)`` for ``d = 1..m`` (index 0 is ``d = 1``)."""
    w = np.exp(-decay * np.arange(m, dtype=np.float64))  # exp(-decay) factored out: same ratios
    return w / w.sum()


def _draw(rng: np.random.Generator, weights: np.ndarray) -> int:
    """One index drawn with probability ∝ ``weights`` (inverse CDF of one uniform number)."""
    cdf = np.cumsum(weights)
    j = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right"))
    return min(j, int(np.flatnonzero(weights)[-1]))  # guards the rounding case u * total == total


def _successive_sample(rng: np.random.Generator, weights: np.ndarray, k: int) -> list[int]:
    """``k`` distinct indices, each drawn with probability ∝ weight among those not yet drawn."""
    w = weights.copy()
    picked = []
    for _ in range(k):
        j = _draw(rng, w)
        picked.append(j)
        w[j] = 0.0
    return picked


def check_int_list(name: str, values: Any) -> list[int]:
    """A non-empty list of integers >= 1: TypeError for a wrong type, ValueError for a wrong value, naming ``name``."""
    expected = "a non-empty list of integers >= 1"
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise not_allowed(name, values, expected, TypeError)
    out = list(values)
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in out):
        raise not_allowed(name, values, expected, TypeError)
    if not out or min(out) < 1:
        raise not_allowed(name, values, expected)
    return [int(v) for v in out]


def _hidden_edges(rng, n, kmin, kmax, exponent, decay):
    """Step 1 of the sampler: ``(pairs, requested, realised)``."""
    p_deg = degree_probabilities(kmin, kmax, exponent)
    pairs, requested, realised = [], [], []
    for i in range(1, n + 1):
        want = kmin + _draw(rng, p_deg)
        m = n - i
        k = min(want, m)
        requested.append(want)
        realised.append(k)
        if k:
            pairs += [(i, i + 1 + d) for d in _successive_sample(rng, skip_probabilities(m, decay), k)]
    return pairs, requested, realised


def sample_graph(
    hidden_nodes: int,
    *,
    min_degree: int | float = 1,
    max_degree: int | float = 0.5,
    degree_exponent: float = 1.0,
    skip_decay: float = 0.5,
    input_fraction: float = 0.5,
    output_fraction: float = 0.5,
    input_to_output: bool = True,
    dilations: Sequence[int] = (1, 2, 4, 8),
    channels: Sequence[int] = (4,),
    seed: int = 0,
) -> GraphSample:
    """Draw a random DAG for a sparse mixed-scale network (see the module docstring).

    Parameters
    ----------
    hidden_nodes : int
        ``n >= 1`` hidden nodes, numbered ``1..n``; ``0`` is the input, ``n + 1`` the output.
    min_degree, max_degree : int or float
        Bounds of the hidden-to-hidden out-degree: an int is absolute, a float in
        (0, 1] a fraction of the ``n - 1`` possible targets (rounded half up, >= 1).
    degree_exponent : float
        ``gamma`` in ``P(k) ∝ k ** -gamma`` (0 gives uniform degrees).
    skip_decay : float
        ``alpha`` in ``P(d) ∝ exp(-alpha * d)`` for an edge ``i -> i + d``.
    input_fraction, output_fraction : float in [0, 1]
        Fraction of hidden nodes wired from the input / to the output.
    input_to_output : bool
        Add an input -> output edge.
    dilations, channels : sequence of int
        Choices for each edge's dilation and number of output channels.
    seed : int

    Returns
    -------
    GraphSample

    Examples
    --------
    >>> g = sample_graph(6, seed=1)
    >>> all(e.source < e.target for e in g.edges)
    True
    """
    n = check_int("hidden_nodes", hidden_nodes, minimum=1)
    kmin, kmax = degree_bounds(n, min_degree, max_degree)
    exponent = check_float("degree_exponent", degree_exponent, minimum=0)
    decay = check_float("skip_decay", skip_decay, minimum=0)
    f_in = check_float("input_fraction", input_fraction, minimum=0, maximum=1)
    f_out = check_float("output_fraction", output_fraction, minimum=0, maximum=1)
    input_to_output = check_bool("input_to_output", input_to_output)
    dil, chans = check_int_list("dilations", dilations), check_int_list("channels", channels)
    seed = check_int("seed", seed, minimum=0)

    rng = np.random.default_rng(seed)
    pairs, requested, realised = _hidden_edges(rng, n, kmin, kmax, exponent, decay)
    pairs += [(0, 1 + int(j)) for j in rng.choice(n, size=_round_half_up(f_in * n), replace=False)]
    pairs += [(1 + int(j), n + 1) for j in rng.choice(n, size=_round_half_up(f_out * n), replace=False)]
    if input_to_output:
        pairs.append((0, n + 1))
    has_in = {t for _, t in pairs}
    has_out = {s for s, _ in pairs}
    added_pairs = [(0, i) for i in range(1, n + 1) if i not in has_in]
    added_pairs += [(i, n + 1) for i in range(1, n + 1) if i not in has_out]
    edges = []
    for s, t in sorted(set(pairs) | set(added_pairs)):
        edges.append(Edge(s, t, dil[int(rng.integers(len(dil)))], chans[int(rng.integers(len(chans)))]))
    added = [e for e in edges if (e.source, e.target) in set(added_pairs)]
    graph = GraphSample(n, edges, requested, realised, added)
    if graph.clipped:
        logger.debug("smsnet graph (seed %d): out-degree clipped to the available targets at nodes %s",
                     seed, graph.clipped)
    return graph


def parse_edges(edges: Any, hidden_nodes: int) -> list[Edge]:
    """Check an explicit edge list and return it as sorted :class:`Edge` tuples.

    Each item is a mapping with keys ``source, target, dilation, channels`` or a
    sequence of those four integers. Rules: ``0 <= source < target <= n + 1``, no
    edge into the input or out of the output, no duplicate ``(source, target)``,
    every hidden node has at least one incoming and one outgoing edge (so every
    hidden node lies on a path from input to output), and the output has an
    incoming edge.
    """
    if isinstance(edges, (str, bytes, dict)) or not isinstance(edges, Iterable):
        raise ValueError(f"edges must be a list of edges, got {type(edges).__name__}")
    parsed, out = [], hidden_nodes + 1
    for item in edges:
        try:
            vals = [item[k] for k in Edge._fields] if isinstance(item, dict) else list(item)
        except (KeyError, TypeError) as exc:
            raise ValueError(f"edge {item!r} is not allowed; expected keys or values {Edge._fields}") from exc
        if len(vals) != 4 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in vals):
            raise ValueError(f"edge {item!r} is not allowed; expected four integers {Edge._fields}")
        e = Edge(*(int(v) for v in vals))
        if not 0 <= e.source < e.target <= out or e.dilation < 1 or e.channels < 1:
            raise ValueError(f"edge {item!r} is not allowed; expected 0 <= source < target <= {out} "
                             "(topological order) and dilation, channels >= 1")
        parsed.append(e)
    pairs = [(e.source, e.target) for e in parsed]
    if len(set(pairs)) != len(pairs):
        raise ValueError("edges contain a duplicate (source, target) pair")
    sources, targets = {s for s, _ in pairs}, {t for _, t in pairs}
    for node in range(1, hidden_nodes + 1):
        if node not in targets or node not in sources:
            raise ValueError(f"edges leave hidden node {node} without an incoming or outgoing edge; every "
                             f"hidden node 1..{hidden_nodes} needs both")
    if out not in targets:
        raise ValueError(f"edges have no edge into the output node {out}")
    return sorted(parsed)
