"""Latent-space views: PCA against an eigen-decomposition, image-map binning by hand, real PNGs."""

import sys

import numpy as np
import pytest
from PIL import Image

from mixscale.viz import embed_2d, latent_image_grid, plot_latent_image_map, plot_latent_scatter


def _assert_valid_png(path):
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 100 and img.size[1] > 100
        pixels = np.asarray(img.convert("RGB"))
    packed = pixels.astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.int32)
    assert len(np.unique(packed)) > 10, "blank figure"


def test_pca_matches_covariance_eigenvectors():
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(80, 6)) * np.array([5.0, 3.0, 1.0, 0.5, 0.2, 0.1]) + 7.0
    latents = latents @ np.linalg.qr(rng.normal(size=(6, 6)))[0]  # rotate: the axes are not the coordinates
    emb, used = embed_2d(latents, method="pca")
    assert used == "pca" and emb.shape == (80, 2)
    centred = latents - latents.mean(0)
    values, vectors = np.linalg.eigh(np.cov(centred, rowvar=False))  # ascending eigenvalues
    reference = centred @ vectors[:, [-1, -2]]
    for j in range(2):  # each axis is defined up to its sign
        sign = np.sign(reference[:, j] @ emb[:, j])
        np.testing.assert_allclose(emb[:, j], sign * reference[:, j], atol=1e-9)
    np.testing.assert_allclose(emb.var(0, ddof=1), values[[-1, -2]], rtol=1e-9)
    # the sign convention: the largest loading of each axis is positive, so a flipped copy embeds the same
    again, _ = embed_2d(latents[::-1], method="pca")
    np.testing.assert_allclose(again[::-1], emb, atol=1e-9)


def test_auto_falls_back_to_pca_without_umap(monkeypatch):
    monkeypatch.setitem(sys.modules, "umap", None)  # makes `import umap` fail
    latents = np.random.default_rng(1).normal(size=(20, 4))
    emb, used = embed_2d(latents, method="auto", seed=3)
    assert used == "pca"
    np.testing.assert_array_equal(emb, embed_2d(latents, method="pca")[0])
    with pytest.raises(ImportError, match="method='umap' needs the umap-learn package"):
        embed_2d(latents, method="umap")


@pytest.mark.parametrize("kwargs, match", [
    (dict(latents=np.zeros((5, 1))), "at least 2 dimensions"),
    (dict(latents=np.zeros((1, 3))), r"\(N, D\) array with N >= 2"),
    (dict(latents=np.zeros((5, 3)), method="tsne"), r"method='tsne' is not allowed; expected one of \['auto'"),
    (dict(latents=np.zeros((5, 3)), seed=-1), "seed=-1 is not allowed; expected an integer >= 0"),
])
def test_embed_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        embed_2d(kwargs.pop("latents"), **kwargs)


def _hand_example():
    # x in [0, 4], y in [0, 2]; bins=(2, 2): x cells [0, 2) [2, 4], y cells [0, 1) [1, 2]
    emb = np.array([[0.0, 0.0], [1.5, 0.5], [0.9, 0.6], [4.0, 2.0], [3.9, 1.1], [2.5, 0.2]])
    images = np.arange(6, dtype=float)[:, None, None] * np.ones((6, 2, 3))
    images[:, 0, 0] += 10  # a pixel that differs from the rest, to check tiles are not transposed
    return emb, images


def test_mean_image_map_by_hand():
    emb, images = _hand_example()
    grid = latent_image_grid(emb, images, bins=2, mode="mean")
    np.testing.assert_array_equal(grid.x_edges, [0, 2, 4])
    np.testing.assert_array_equal(grid.y_edges, [0, 1, 2])
    # cells [iy, ix]: (0,0) holds points 0, 1, 2; (0,1) point 5; (1,1) points 3 and 4; (1,0) empty
    np.testing.assert_array_equal(grid.counts, [[3, 1], [0, 2]])
    assert grid.tiles.shape == (2, 2, 2, 3)
    np.testing.assert_allclose(grid.tiles[0, 0], images[[0, 1, 2]].mean(0))
    assert grid.tiles[0, 0, 0, 0] == 11.0 and grid.tiles[0, 0, 1, 2] == 1.0
    np.testing.assert_allclose(grid.tiles[0, 1], images[5])
    np.testing.assert_allclose(grid.tiles[1, 1], np.full((2, 3), 3.5) + [[10, 0, 0], [0, 0, 0]])
    assert np.isnan(grid.tiles[1, 0]).all()


def test_nearest_image_map_by_hand():
    emb, images = _hand_example()
    grid = latent_image_grid(emb, images[:, None], bins=(2, 2), mode="nearest")  # (N, 1, H, W) accepted
    # centre of cell (0, 0) is (1, 0.5): point 2 (0.9, 0.6) is nearest; cell (1, 1) centre (3, 1.5): point 4
    np.testing.assert_array_equal(grid.tiles[0, 0], images[2])
    np.testing.assert_array_equal(grid.tiles[1, 1], images[4])
    np.testing.assert_array_equal(grid.tiles[0, 1], images[5])
    assert np.isnan(grid.tiles[1, 0]).all()


def test_non_square_bins_and_a_flat_axis():
    emb = np.array([[0.0, 3.0], [1.0, 3.0], [2.0, 3.0], [3.0, 3.0]])  # all points at one y
    grid = latent_image_grid(emb, np.zeros((4, 2, 2)), bins=(4, 3))
    assert grid.tiles.shape == (3, 4, 2, 2) and grid.counts.shape == (3, 4)
    np.testing.assert_allclose(grid.y_edges, [2.5, 2.5 + 1 / 3, 2.5 + 2 / 3, 3.5])
    np.testing.assert_array_equal(grid.counts, [[0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 0, 0]])


@pytest.mark.parametrize("kwargs, match", [
    (dict(images=np.zeros((5, 4, 4))), r"images must be \(N, H, W\) or \(N, 1, H, W\) with N=6"),
    (dict(mode="median"), "mode='median' is not allowed"),
    (dict(bins=0), r"bins=0 is not allowed; expected 2 integers >= 1 \(x_bins, y_bins\)"),
    (dict(bins=(2, 2, 2)), r"bins=\(2, 2, 2\) is not allowed; expected 2 integers >= 1"),
])
def test_image_grid_errors(kwargs, match):
    emb, images = _hand_example()
    args = {"images": images, **kwargs}
    with pytest.raises(ValueError, match=match):
        latent_image_grid(emb, args.pop("images"), **args)


def test_plots_are_real_pngs(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.repeat([1, 2, 3, 4], 15)
    emb = rng.normal(size=(60, 2)) + 4 * np.stack([labels % 2, labels // 3], axis=1)
    yy, xx = np.mgrid[:16, :16]
    images = np.array([((yy - 8) ** 2 + (xx - 8) ** 2 < (3 + k) ** 2).astype(float) for k in labels])
    names = ["background", "rectangle", "circle", "triangle", "annulus"]
    scatter = plot_latent_scatter(emb, labels, tmp_path / "scatter.png", class_names=names, method="pca")
    _assert_valid_png(scatter)
    for mode in ("mean", "nearest"):
        _assert_valid_png(plot_latent_image_map(emb, images, tmp_path / f"map_{mode}.png", bins=6, mode=mode))
    _assert_valid_png(plot_latent_scatter(emb, None, tmp_path / "plain.png"))
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, nothing left behind


def test_plot_errors(tmp_path):
    emb = np.zeros((4, 2))
    with pytest.raises(ValueError, match=r"out_path='.*x\.jpg' is not allowed; expected a path ending in one of \['\.pdf', '\.png', '\.svg'\]"):
        plot_latent_scatter(emb, [0, 1, 0, 1], tmp_path / "x.jpg")
    with pytest.raises(ValueError, match=r"labels must be None or \(4,\) integers >= 0"):
        plot_latent_scatter(emb, [0, 1, 0], tmp_path / "x.png")
    with pytest.raises(ValueError, match="class_names has 2 entries but labels go up to 3"):
        plot_latent_scatter(emb, [0, 1, 3, 1], tmp_path / "x.png", class_names=["a", "b"])
    with pytest.raises(ValueError, match=r"embedding must be a \(N, 2\) array"):
        plot_latent_image_map(np.zeros((4, 3)), np.zeros((4, 2, 2)), tmp_path / "x.png")
    assert not list(tmp_path.iterdir())
