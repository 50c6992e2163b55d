"""Tiled prediction: exact for point-wise predictors, seamless, equal to whole-image MS-D with a halo."""

import pytest
import torch

from mixscale.infer import blend_window, predict_tiled, tile_grid, tile_starts
from mixscale.nets import MSDNet


def _double(x):
    return 2 * x


@pytest.mark.parametrize("shape, tile", [((1, 13, 11), (4, 5)), ((2, 9, 7, 10), (3, 4, 5)), ((1, 5, 6), (8, 8))])
@pytest.mark.parametrize("overlap", [0.0, 0.3, 0.75])
@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize("halo", [0, 2])
def test_pointwise_predictor_is_reproduced_exactly(shape, tile, overlap, blend, halo):
    x = torch.randn(*shape)
    out = predict_tiled(_double, x, tile_shape=tile, overlap=overlap, blend=blend, halo=halo, batch_size=3)
    assert torch.equal(out, 2 * x)


def test_constant_image_gives_constant_prediction():
    x = torch.full((1, 37, 29), 0.7)
    out = predict_tiled(lambda t: t + 1, x, tile_shape=8, overlap=0.5)
    assert torch.equal(out, torch.full_like(x, 1.7))


@pytest.mark.parametrize("spatial_dims, shape, tile", [(2, (2, 61, 47), (20, 16)), (3, (1, 23, 21, 25), (9, 8, 10))])
def test_msd_tiles_with_receptive_field_halo_equal_whole_image(spatial_dims, shape, tile):
    torch.manual_seed(0)
    net = MSDNet(spatial_dims=spatial_dims, in_channels=shape[0], out_channels=2, depth=6,
                 dilations=[1, 2, 3]).eval()
    with torch.no_grad():
        net.final_weight.normal_()
    x = torch.randn(*shape)
    with torch.no_grad():
        whole = net(x[None])[0]
    tiled = predict_tiled(net, x, tile_shape=tile, overlap=0.25, halo=net.halo, batch_size=2)
    torch.testing.assert_close(tiled, whole, rtol=1e-5, atol=1e-5)
    short = predict_tiled(net, x, tile_shape=tile, overlap=0.25, halo=1)  # too little context: differs
    assert not torch.allclose(short, whole, atol=1e-4)


def test_grid_covers_and_respects_overlap():
    for size, tile, overlap in [(100, 32, 0.25), (7, 7, 0.5), (33, 10, 0.0), (5, 9, 0.3)]:
        starts = tile_starts(size, tile, overlap)
        t = min(tile, size)
        covered = set()
        for s in starts:
            covered.update(range(s, s + t))
        assert covered == set(range(size)) and starts[0] == 0 and starts[-1] + t == size
        assert all(b - a <= t - int(overlap * t) for a, b in zip(starts, starts[1:]))
    assert len(tile_grid((10, 20), (5, 5), 0.0)) == 2 * 4


def test_blend_window_is_positive_and_peaks_in_the_centre():
    w = blend_window((9, 12), blend="gaussian")
    assert w.min() > 0 and w.max() <= 1 and w[4, 5] == w.max()
    assert torch.equal(blend_window((3, 4), blend="constant"), torch.ones(3, 4))
    with pytest.raises(ValueError, match=r"blend='cosine' is not allowed; expected one of \['gaussian', 'constant'\]"):
        blend_window((3, 3), blend="cosine")


@pytest.mark.parametrize("kwargs, match", [
    (dict(tile_shape=(4,)), r"tile_shape=\(4,\) is not allowed; expected 2 integers >= 1"),
    (dict(tile_shape=0), "tile_shape=0 is not allowed; expected 2 integers >= 1"),
    (dict(tile_shape=4, overlap=1.0), r"overlap=1.0 is not allowed; expected a fraction in \[0, 1\)"),
    (dict(tile_shape=4, halo=-1), "halo=-1 is not allowed; expected 2 integers >= 0"),
    (dict(tile_shape=4, batch_size=0), "batch_size=0 is not allowed; expected an integer >= 1"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        predict_tiled(_double, torch.zeros(1, 8, 8), **kwargs)
