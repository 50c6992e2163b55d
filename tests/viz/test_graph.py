"""Network graph drawings: real PNGs of the expected size, depth layering, clear refusals."""

import numpy as np
import pytest
from PIL import Image

from mixscale.nets.smsnet import SMSNet
from mixscale.viz import plot_adjacency, plot_graph
from mixscale.viz.graph import graph_depths

EDGES = [(0, 1, 1, 2), (1, 2, 4, 2), (0, 2, 2, 1), (2, 3, 1, 3), (0, 3, 8, 1)]


def _png(path):
    with Image.open(path) as img:
        assert img.format == "PNG"
        pixels = np.asarray(img.convert("RGB"))
    packed = pixels.astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.int32)
    assert len(np.unique(packed)) > 10, "blank figure"
    return pixels


def _count_color(pixels, rgb, tol=20):
    return int((np.abs(pixels.astype(int) - np.array(rgb)).max(-1) <= tol).sum())


def test_depth_is_the_longest_path_from_the_input():
    edges = np.array(EDGES)
    assert graph_depths(edges, 4).tolist() == [0, 1, 2, 3]  # 3 is reached by 0 -> 1 -> 2 -> 3, not 0 -> 3
    assert graph_depths(np.array([[0, 2], [0, 1], [1, 3], [2, 3]]), 4).tolist() == [0, 1, 1, 2]


@pytest.mark.parametrize("plot", [plot_graph, plot_adjacency])
def test_figures_are_pngs_of_the_requested_size(tmp_path, plot):
    out = plot(EDGES, tmp_path / "sub" / "fig.png", size=(6, 4), dpi=50)
    assert out == tmp_path / "sub" / "fig.png"
    assert _png(out).shape == (200, 300, 3)
    assert sorted(p.name for p in out.parent.iterdir()) == ["fig.png"]  # no temporary file left


def test_graph_edges_are_coloured_by_dilation_with_a_legend(tmp_path):
    tab10 = {1: (31, 119, 180), 2: (255, 127, 14), 4: (44, 160, 44), 8: (214, 39, 40)}  # sorted dilations
    pixels = _png(plot_graph(EDGES, tmp_path / "g.png", dpi=100))
    for rgb in tab10.values():
        assert _count_color(pixels, rgb) > 15  # at least the legend line
    only_ones = _png(plot_graph([(0, 1, 1, 1), (1, 2, 1, 1)], tmp_path / "g1.png", dpi=100))
    assert _count_color(only_ones, tab10[1]) > 20 and _count_color(only_ones, tab10[8]) == 0


def test_net_and_its_edge_list_give_the_same_drawing_and_size_grows_with_depth(tmp_path):
    net = SMSNet(hidden_nodes=12, seed=1)
    a = _png(plot_graph(net, tmp_path / "net.png", dpi=40))
    b = _png(plot_graph(net.config()["edges"], tmp_path / "edges.png", dpi=40))
    assert np.array_equal(a, b)
    chain = [(i, i + 1, 1, 1) for i in range(15)]
    assert _png(plot_graph(chain, tmp_path / "chain.png", dpi=40)).shape[1] > _png(
        plot_graph(EDGES, tmp_path / "short.png", dpi=40)).shape[1]
    adj = _png(plot_adjacency(net, tmp_path / "adj.png", dpi=40))
    assert adj.shape[1] > 2 * adj.shape[0]  # three panels side by side


@pytest.mark.parametrize("plot", [plot_graph, plot_adjacency])
@pytest.mark.parametrize("args, kwargs, error, match", [
    ((EDGES, "fig.jpg"), {}, ValueError, r"out_path='.*fig\.jpg' is not allowed; expected a path ending in one of"),
    ((EDGES, 3), {}, TypeError, "out_path=3 is not allowed; expected a str or os.PathLike"),
    ((42, "fig.png"), {}, TypeError, "net_or_edges must be an SMSNet or a list of edges, got int"),
    (([], "fig.png"), {}, ValueError, "no edges"),
    (([(1, 0, 1, 1)], "fig.png"), {}, ValueError, "source < target"),
    (([(0, 1, 0, 1)], "fig.png"), {}, ValueError, "dilation, channels >= 1"),
    (([(0, 1, 1)], "fig.png"), {}, ValueError, "four integers"),
    (([(0, 1, 1.5, 1)], "fig.png"), {}, ValueError, "four integers"),
    (([(0, 1, 1, 1), (0, 1, 2, 1)], "fig.png"), {}, ValueError, "duplicate"),
    (([{"source": 0, "target": 1}], "fig.png"), {}, ValueError, "four integers"),
    ((EDGES, "fig.png"), {"dpi": 5}, ValueError, r"dpi=5 is not allowed; expected an integer in \[10, 1200\]"),
    ((EDGES, "fig.png"), {"size": (0, 3)}, ValueError, r"size=\(0, 3\) is not allowed; expected \(width, height\)"),
    ((EDGES, "fig.png"), {"size": "big"}, TypeError, r"size='big' is not allowed; expected \(width, height\)"),
])
def test_bad_arguments_raise_and_write_nothing(tmp_path, plot, args, kwargs, error, match):
    target = args[1] if not isinstance(args[1], str) else tmp_path / args[1]
    with pytest.raises(error, match=match):
        plot(args[0], target, **kwargs)
    assert not list(tmp_path.iterdir())
