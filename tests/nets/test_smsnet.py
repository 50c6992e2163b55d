"""SMSNet: graph sampling (distributions, clipping), every edge realised, batch independence, shapes, I/O."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.stats import chisquare

from mixscale.model import ModelInfo, load_model, save_model
from mixscale.nets import create_net, net_defaults
from mixscale.nets.smsnet import SMSNet
from mixscale.nets.smsnet_graph import sample_graph

@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: one intra-op thread avoids thread-pool contention on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = dict(hidden_nodes=5, channels=[2, 3], dilations=[1, 2, 3])
ODD = {2: (13, 11), 3: (9, 7, 11)}


def _hidden_out_degrees(edges, n):
    """Hidden -> hidden out-degree of nodes 1..n, counted from the edge list."""
    deg = [0] * (n + 1)
    for s, t, *_ in edges:
        if 1 <= s and t <= n:
            deg[s] += 1
    return deg[1:]


# ---------------------------------------------------------------- graph structure


@pytest.mark.parametrize("kw", [dict(hidden_nodes=1), dict(hidden_nodes=7, input_fraction=0, output_fraction=0,
                                                           input_to_output=False), dict(hidden_nodes=20, seed=5)])
def test_graph_is_topological_complete_and_recorded(kw):
    g = sample_graph(**kw)
    n = g.hidden_nodes
    pairs = [(e.source, e.target) for e in g.edges]
    assert pairs == sorted(set(pairs)) and all(0 <= s < t <= n + 1 for s, t in pairs)
    for node in range(1, n + 1):  # the completion rule: every hidden node is fed and used
        assert any(t == node for _, t in pairs) and any(s == node for s, _ in pairs)
    assert _hidden_out_degrees(g.edges, n) == g.degrees
    assert all(k == min(r, n - i) for i, (r, k) in enumerate(zip(g.requested_degrees, g.degrees), start=1))
    assert set(g.added) <= set(g.edges)
    if kw.get("input_fraction") == 0:  # nothing sampled from the input: node 1 (and maybe others) was added
        assert any(e[:2] == (0, 1) for e in g.added)
        assert (0, n + 1) not in pairs


def test_degree_larger_than_available_targets_is_clipped_and_recorded():
    g = sample_graph(5, min_degree=4, max_degree=4, input_fraction=0, output_fraction=0)
    assert g.requested_degrees == [4, 4, 4, 4, 4]
    assert g.degrees == [4, 3, 2, 1, 0] == _hidden_out_degrees(g.edges, 5)
    assert g.clipped == [2, 3, 4, 5]
    hidden = {(e.source, e.target) for e in g.edges if e.source >= 1 and e.target <= 5}
    assert hidden == {(s, t) for s in range(1, 6) for t in range(s + 1, 6)}  # all available targets taken


def test_default_graphs_have_a_real_spread_of_out_degrees():
    # DLSIA's default maximum degree gives every node out-degree exactly 1
    for seed in range(5):
        net = SMSNet(seed=seed)
        degrees = _hidden_out_degrees(net.edges, net.hidden_nodes)
        assert len(set(degrees)) >= 3, degrees
        assert max(degrees) >= 3


def test_fractional_degrees_and_fractions_resolve_as_documented():
    g = sample_graph(11, min_degree=0.2, max_degree=0.2, input_fraction=0.25, output_fraction=0,
                     input_to_output=False)
    assert set(g.requested_degrees) == {2}  # round(0.2 * 10) = 2 of the 10 possible targets
    from_input = [e for e in g.edges if e.source == 0 and e not in g.added]
    assert len(from_input) == 3  # round(0.25 * 11) = round(2.75)


def test_same_seed_same_graph_and_weights_other_seed_other_graph():
    a = sample_graph(12, seed=3)
    assert a == sample_graph(12, seed=3)
    assert a.edges != sample_graph(12, seed=4).edges
    torch.manual_seed(0)
    n1 = SMSNet(**TINY, seed=2)
    torch.manual_seed(0)
    n2 = SMSNet(**TINY, seed=2)
    assert n1.edges == n2.edges
    assert all(torch.equal(p, q) for p, q in zip(n1.state_dict().values(), n2.state_dict().values()))


def test_edge_attributes_come_from_the_lists():
    g = sample_graph(15, dilations=[3, 7], channels=[1, 5], seed=1)
    assert {e.dilation for e in g.edges} == {3, 7} and {e.channels for e in g.edges} == {1, 5}


# ---------------------------------------------------------------- distributions (chi-square)


def _degree_expected(n, kmin, kmax, gamma, truncate=True):
    """Expected histogram over realised degrees 0..kmax per graph, nodes whose degree is random only."""
    p = np.arange(kmin, kmax + 1, dtype=float) ** -gamma
    p /= p.sum()
    hist, nodes = np.zeros(kmax + 1), []
    for i in range(1, n + 1):
        m = n - i
        if m <= kmin:
            continue  # min(K, m) = m for sure: no information
        nodes.append(i)
        for k, pk in zip(range(kmin, kmax + 1), p):
            hist[min(k, m) if truncate else k] += pk
    return hist, nodes


def _inclusion(m, alpha):
    """pi[k, d-1]: probability that skip d is among k successive draws without replacement, weights e^-ad."""
    w = np.exp(-alpha * np.arange(1, m + 1))
    prob = np.zeros(1 << m)
    prob[0] = 1.0
    pi = np.zeros((m + 1, m))
    bits = np.array([[(mask >> j) & 1 for j in range(m)] for mask in range(1 << m)], dtype=float)
    for mask in range(1 << m):  # adding a bit increases the mask: increasing order is topological
        if prob[mask] == 0:
            continue
        pi[int(bits[mask].sum())] += prob[mask] * bits[mask]
        free = 1.0 - bits[mask]
        total = (w * free).sum()
        for j in np.flatnonzero(free):
            prob[mask | (1 << j)] += prob[mask] * w[j] / total
    return pi


def _pooled_chisquare(observed, expected, minimum=5.0):
    """Chi-square p-value after merging adjacent bins until every expected count is >= minimum."""
    obs, exp, acc_o, acc_e = [], [], 0.0, 0.0
    for o, e in zip(observed, expected):
        acc_o, acc_e = acc_o + o, acc_e + e
        if acc_e >= minimum:
            obs.append(acc_o), exp.append(acc_e)
            acc_o = acc_e = 0.0
    obs[-1] += acc_o
    exp[-1] += acc_e
    assert len(obs) >= 3
    return chisquare(obs, exp).pvalue


SETTINGS = [
    dict(hidden_nodes=10, min_degree=1, max_degree=0.5, degree_exponent=1.0, skip_decay=0.5),
    dict(hidden_nodes=12, min_degree=2, max_degree=1.0, degree_exponent=0.5, skip_decay=0.2),
]


@pytest.fixture(scope="module", params=range(len(SETTINGS)))
def sampled(request):
    kw = SETTINGS[request.param]
    return kw, [sample_graph(**kw, seed=s) for s in range(300)]


def _degree_check(kw, graphs, gamma, truncate=True):
    n = kw["hidden_nodes"]
    kmin = kw["min_degree"]
    kmax = max(1, math.floor(kw["max_degree"] * (n - 1) + 0.5)) if isinstance(kw["max_degree"], float) \
        else kw["max_degree"]
    hist, nodes = _degree_expected(n, kmin, kmax, gamma, truncate)
    observed = np.zeros(kmax + 1)
    for g in graphs:
        for i in nodes:
            observed[_hidden_out_degrees(g.edges, n)[i - 1]] += 1
    return _pooled_chisquare(observed, hist * len(graphs))


def _skip_check(kw, graphs, alpha, exact=True):
    """Expected skip-length counts given each node's realised degree (so both sum to the same total).

    A node that takes all its available targets (degree clipped or equal to them) carries no
    information on P(d) and is left out of both histograms. Skips of one node are drawn without
    replacement, so they are less dispersed than multinomial counts: the test is conservative
    (p-values of the right distribution run high), yet it rejects a wrong decay by far.
    """
    n = kw["hidden_nodes"]
    pis = {m: _inclusion(m, alpha) for m in range(1, n)}
    observed, expected = np.zeros(n), np.zeros(n)
    for g in graphs:
        skips = {i: [] for i in range(1, n + 1)}
        for s, t, *_ in g.edges:
            if s >= 1 and t <= n:
                skips[s].append(t - s)
        for i, ds in skips.items():
            m = n - i
            if 0 < len(ds) < m:
                np.add.at(observed, ds, 1)
                w = np.exp(-alpha * np.arange(1, m + 1))  # the naive model: k independent draws of P(d)
                expected[1 : m + 1] += pis[m][len(ds)] if exact else len(ds) * w / w.sum()
    return _pooled_chisquare(observed[1:], expected[1:])


def test_out_degree_histogram_matches_requested_distribution(sampled):
    kw, graphs = sampled
    assert _degree_check(kw, graphs, kw["degree_exponent"]) > 1e-3
    # the same check rejects a wrong exponent, so it can fail
    assert _degree_check(kw, graphs, kw["degree_exponent"] + 1.0) < 1e-6
    # and ignoring the clipping at the end of the graph is rejected too: truncation matters
    assert _degree_check(kw, graphs, kw["degree_exponent"], truncate=False) < 1e-6


def test_skip_length_histogram_matches_requested_distribution(sampled):
    kw, graphs = sampled
    assert _skip_check(kw, graphs, kw["skip_decay"]) > 1e-3
    assert _skip_check(kw, graphs, kw["skip_decay"] + 0.5) < 1e-6
    assert _skip_check(kw, graphs, kw["skip_decay"], exact=False) < 1e-6  # distinct targets matter


# ---------------------------------------------------------------- the network


def _perturbable(net):
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return net


def test_every_sampled_edge_is_realised_in_the_net():
    torch.manual_seed(0)
    net = SMSNet(hidden_nodes=8, dilations=[1, 2, 3], channels=[1, 2], seed=7).eval()
    assert len(net.edge_convs) == len(net.edges) == len(net.config()["edges"])
    x = torch.randn(1, 1, 15, 14)
    with torch.no_grad():
        ref = net(x)
        for edge, block in zip(net.edges, net.edge_convs):
            conv = block[0]
            assert conv.dilation == (edge.dilation,) * 2 and conv.out_channels == edge.channels
            assert conv.in_channels == net.node_channels[edge.source]
            saved = conv.weight.clone()
            conv.weight.add_(torch.randn_like(saved))
            assert not torch.allclose(net(x), ref), f"edge {edge} does not reach the output"
            conv.weight.copy_(saved)
        assert torch.equal(net(x), ref)
    # node channels: the concatenation of the incoming edges
    for t in range(1, net.hidden_nodes + 2):
        assert net.node_channels[t] == sum(e.channels for e in net.edges if e.target == t)


def _reference_forward(x, edges, convs, head, n):
    """Independent 2D reference: plain F.conv2d per edge with zero padding, ReLU, concatenation by source."""
    feats = {0: x}
    for t in range(1, n + 2):
        parts = []
        for e, block in sorted(zip(edges, convs), key=lambda p: p[0].source):
            if e.target == t:
                conv = block[0]
                parts.append(torch.relu(F.conv2d(feats[e.source], conv.weight, conv.bias,
                                                 padding=e.dilation, dilation=e.dilation)))
        feats[t] = torch.cat(parts, 1)
    return F.conv2d(feats[n + 1], head.weight, head.bias)


def test_explicit_graph_matches_hand_written_reference():
    edges = [dict(source=0, target=1, dilation=1, channels=2), dict(source=0, target=2, dilation=2, channels=1),
             dict(source=1, target=2, dilation=3, channels=1), dict(source=2, target=3, dilation=1, channels=2),
             dict(source=0, target=3, dilation=2, channels=1)]
    torch.manual_seed(1)
    net = SMSNet(hidden_nodes=2, in_channels=2, out_channels=3, norm=None, padding_mode="zeros",
                 edges=edges).double()
    assert net.graph is None and [e._asdict() for e in net.edges] == sorted(edges, key=lambda e: (
        e["source"], e["target"]))
    assert net.receptive_field == 1 + 2 * (1 + 3 + 1)  # longest dilation path 0 -> 1 -> 2 -> 3
    x = torch.randn(2, 2, 11, 9, dtype=torch.float64)
    torch.testing.assert_close(net(x), _reference_forward(x, net.edges, net.edge_convs, net.head, 2))


def test_receptive_field_is_the_exact_support_of_the_output():
    torch.manual_seed(0)
    net = SMSNet(hidden_nodes=5, dilations=[1, 2, 3], channels=[2], norm=None, activation="leaky_relu",
                 padding_mode="zeros", seed=3).double()
    rf = net.receptive_field
    size = rf + 8
    x = torch.randn(1, 1, size, size, dtype=torch.float64, requires_grad=True)
    c = size // 2
    net(x)[0, 0, c, c].backward()
    rows = torch.nonzero(x.grad[0, 0].abs().sum(1)).flatten()
    cols = torch.nonzero(x.grad[0, 0].abs().sum(0)).flatten()
    assert rows.max() - rows.min() + 1 == rf == cols.max() - cols.min() + 1
    assert net.halo == (rf - 1) // 2 and rows.min() == c - net.halo


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_forward_backward_odd_sizes_every_parameter_gets_gradient(spatial_dims):
    torch.manual_seed(0)
    net = create_net("smsnet", spatial_dims=spatial_dims, in_channels=2, out_channels=3, **TINY)
    x = torch.randn(2, 2, *ODD[spatial_dims])
    y = net(x)
    assert y.shape == (2, 3, *ODD[spatial_dims])
    (y**2).mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.count_nonzero(p.grad) > 0, name
    assert not any(name.endswith("0.bias") for name, _ in net.named_parameters())  # no bias before a norm


@pytest.mark.parametrize("padding_mode", ["replicate", "zeros"])
def test_tiny_inputs_work(padding_mode):
    net = SMSNet(**TINY, norm=None, padding_mode=padding_mode)
    assert net(torch.randn(1, 1, 2, 3)).shape == (1, 1, 2, 3)


@pytest.mark.parametrize("norm, modes", [("instance", ["train", "eval"]), ("group", ["train", "eval"]),
                                         ("batch", ["eval"]), (None, ["train", "eval"])])
def test_output_of_an_image_does_not_depend_on_the_rest_of_the_batch(norm, modes):
    torch.manual_seed(0)
    net = SMSNet(**TINY, norm=norm)
    x = torch.randn(4, 1, 12, 10)
    x[1:] *= 5  # very different companions
    for mode in modes:
        net.train(mode == "train")
        with torch.no_grad():
            together = net(x)
            for i in range(4):
                torch.testing.assert_close(net(x[i : i + 1]), together[i : i + 1], rtol=1e-5, atol=1e-6)


def test_batch_norm_in_training_mode_does_depend_on_the_batch():
    # documented: "batch" is batch-independent in eval mode only; the default ("instance") is in both
    assert net_defaults("smsnet")["norm"] == "instance" and SMSNet().norm == "instance"
    net = SMSNet(**TINY, norm="batch").train()
    x = torch.randn(3, 1, 12, 10)
    with torch.no_grad():
        assert not torch.allclose(net(x)[:1], net(x[:1]), atol=1e-4)


@pytest.mark.parametrize("spatial_dims, shape", [(2, (1, 2, 17, 15)), (3, (2, 2, 9, 8, 7))])
def test_save_load_round_trip_gives_identical_outputs(tmp_path, spatial_dims, shape):
    net = _perturbable(SMSNet(spatial_dims=spatial_dims, in_channels=2, out_channels=2, seed=11, **TINY)).eval()
    cfg = json.loads(json.dumps(net.config()))  # JSON-safe
    assert cfg["edges"] == [e._asdict() for e in net.edges]
    info = ModelInfo(net_name="smsnet", net_config=cfg, task="segmentation")
    loaded, info2 = load_model(save_model(tmp_path / "m.safetensors", net, info))
    assert loaded.edges == net.edges and info2.net_config == cfg
    x = torch.randn(*shape)
    with torch.no_grad():
        assert torch.equal(net(x), loaded(x))


def test_config_rebuilds_from_the_edge_list_without_resampling():
    net = SMSNet(**TINY, seed=4)
    cfg = net.config()
    cfg["seed"] = 5  # a different seed would sample another graph; the stored edges win
    assert sample_graph(5, dilations=[1, 2, 3], channels=[2, 3], seed=5).edges != net.edges
    assert create_net("smsnet", **cfg).edges == net.edges


BAD = [
    (dict(hidden_nodes=0), "hidden_nodes=0"),
    (dict(min_degree=4, max_degree=2), "min_degree=4 gives 4 > max_degree=2"),
    (dict(max_degree=1.5), r"max_degree=1.5 is not allowed; a fractional degree must be in \(0, 1\]"),
    (dict(max_degree=0), "max_degree=0 is not allowed"),
    (dict(degree_exponent=-1), "degree_exponent=-1"),
    (dict(skip_decay=float("nan")), "skip_decay=nan"),
    (dict(input_fraction=1.5), "input_fraction=1.5"),
    (dict(dilations=[0, 1]), r"dilations=\[0, 1\]"),
    (dict(channels=[]), r"channels=\[\]"),
    (dict(seed=-1), "seed=-1"),
    (dict(norm="layer"), "norm='layer'"),
    (dict(padding_mode="circular"), "padding_mode='circular'"),
    (dict(activation="tanhh"), "activation='tanhh'"),
    (dict(hidden_nodes=1, edges=[(1, 0, 1, 1)]), "topological order"),
    (dict(hidden_nodes=1, edges=[(0, 1, 1, 1), (0, 1, 2, 1), (1, 2, 1, 1)]), "duplicate"),
    (dict(hidden_nodes=2, edges=[(0, 1, 1, 1), (1, 3, 1, 1), (0, 3, 1, 1)]), "hidden node 2"),
    (dict(hidden_nodes=1, edges=[(0, 1, 1, 1)]), "hidden node 1"),
    (dict(hidden_nodes=1, edges=[dict(source=0, target=1)]), "expected keys"),
    (dict(hidden_nodes=1, edges=[(0, 1, 1.5, 1), (1, 2, 1, 1)]), "four integers"),
    (dict(edges="0-1"), "edges must be a list"),
]


@pytest.mark.parametrize("kwargs, match", BAD)
def test_bad_arguments_name_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_net("smsnet", **kwargs)


@pytest.mark.parametrize("kwargs, match", [
    (dict(min_degree=True), "min_degree=True is not allowed"),
    (dict(input_to_output="yes"), "input_to_output='yes' is not allowed; expected True or False"),
    (dict(hidden_nodes=2.0), "hidden_nodes=2.0 is not allowed; expected an integer >= 1"),
    (dict(skip_decay="1"), "skip_decay='1' is not allowed; expected a finite number >= 0"),
    (dict(dilations=[1, 1.5]), r"dilations=\[1, 1.5\] is not allowed; expected a non-empty list of integers"),
    (dict(seed="0"), "seed='0' is not allowed; expected an integer >= 0"),
])
def test_wrong_types_are_type_errors(kwargs, match):
    with pytest.raises(TypeError, match=match):
        create_net("smsnet", **kwargs)


def test_reflect_padding_refuses_too_small_inputs():
    net = SMSNet(**TINY, padding_mode="reflect")
    with pytest.raises(ValueError, match="too small for padding_mode='reflect'"):
        net(torch.randn(1, 1, 3, 20))
    with pytest.raises(ValueError, match="does not fit a 2D network"):
        net(torch.randn(1, 2, 8, 8))


def test_trains_through_the_config_path(tiny_config):
    from mixscale import api

    tiny_config["net"] = {"name": "smsnet", "hidden_nodes": 4, "channels": [2], "dilations": [1, 2]}
    tiny_config["trainer"]["max_epochs"] = 1
    tiny_config["data"].update(samples_per_epoch=4, val_samples=2)
    result = api.train(tiny_config)
    net, info = load_model(result.model_path)
    assert info.net_name == "smsnet" and isinstance(net, SMSNet)
    assert net.config()["edges"] == info.net_config["edges"]
