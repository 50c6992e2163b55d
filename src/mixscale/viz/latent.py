"""Latent-space views: a 2D embedding of latent vectors, a class scatter and an image map.

The image map draws, at each occupied cell of a grid laid over the 2D
embedding, the mean of the images that fall in the cell (or the one image
nearest to the cell's centre), so one sees what each region of latent space
looks like.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._checks import check_choice, check_int, check_shape
from ._common import check_dpi, check_out_path, new_figure, save_figure
from .panels import class_colors

__all__ = ["LatentGrid", "embed_2d", "latent_image_grid", "plot_latent_image_map", "plot_latent_scatter"]

logger = logging.getLogger(__name__)

METHODS = ("auto", "pca", "umap")
MODES = ("mean", "nearest")


def _as_array(value, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a numeric array, got {type(value).__name__}") from None


def _check_points(value, name: str, *, dims: int | None = None) -> np.ndarray:
    array = _as_array(value, name)
    if array.ndim != 2 or array.shape[0] < 2 or (dims is not None and array.shape[1] != dims):
        want = f"(N, {dims})" if dims is not None else "(N, D)"
        raise ValueError(f"{name} must be a {want} array with N >= 2 points, got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return array


def _umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def _pca_2d(points: np.ndarray) -> np.ndarray:
    """Projection on the two leading principal axes; each axis' largest loading is made positive."""
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    axes = vt[:2]
    signs = np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])
    return centred @ (axes * signs[:, None]).T


def embed_2d(latents, *, method: str = "auto", seed: int = 0) -> tuple[np.ndarray, str]:
    """Map latent vectors to 2D points for plotting.

    Parameters
    ----------
    latents : (N, D) array_like
        One latent vector per image, ``D >= 2``.
    method : {"auto", "pca", "umap"}
        ``"pca"``: projection on the two leading principal axes (exact,
        deterministic; the sign of each axis is fixed by making its largest
        loading positive). ``"umap"``: UMAP (needs the ``umap-learn`` package).
        ``"auto"``: UMAP when ``umap`` can be imported, PCA otherwise.
    seed : int
        Random state of UMAP (PCA needs none).

    Returns
    -------
    embedding : (N, 2) ndarray of float64
    method : str
        The method used, ``"pca"`` or ``"umap"``.

    Examples
    --------
    >>> z = np.random.default_rng(0).normal(size=(50, 8))
    >>> emb, used = embed_2d(z, method="pca")
    >>> emb.shape, used
    ((50, 2), 'pca')
    """
    points = _check_points(latents, "latents")
    if points.shape[1] < 2:
        raise ValueError(f"latents must have at least 2 dimensions to embed in 2D, got shape {points.shape}")
    check_choice("method", method, METHODS)
    seed = check_int("seed", seed, minimum=0)
    if method == "umap" and not _umap_available():
        raise ImportError("method='umap' needs the umap-learn package (pip install umap-learn); "
                          "use method='pca' or 'auto'")
    used = "umap" if method == "umap" or (method == "auto" and _umap_available()) else "pca"
    if used == "pca":
        embedding = _pca_2d(points)
    else:
        import umap

        neighbours = min(15, points.shape[0] - 1)
        embedding = umap.UMAP(n_components=2, n_neighbors=neighbours, random_state=int(seed)).fit_transform(points)
    logger.info("embed_2d: %d latent vectors of dimension %d embedded with %s", *points.shape, used)
    return np.asarray(embedding, dtype=np.float64), used


@dataclass
class LatentGrid:
    """Images gathered on a grid over a 2D embedding (see :func:`latent_image_grid`).

    Attributes
    ----------
    tiles : (By, Bx, H, W) ndarray of float64
        ``tiles[iy, ix]`` is the image of the cell with y-bin ``iy`` and x-bin
        ``ix`` (bins ascending); NaN where the cell is empty.
    counts : (By, Bx) ndarray of int64
        Points in each cell.
    x_edges : (Bx + 1,) ndarray
    y_edges : (By + 1,) ndarray
    """

    tiles: np.ndarray
    counts: np.ndarray
    x_edges: np.ndarray
    y_edges: np.ndarray


def _edges(values: np.ndarray, bins: int) -> np.ndarray:
    lo, hi = float(values.min()), float(values.max())
    if hi == lo:  # all points on one line: a unit-wide range around it
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def _bin_of(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index of each value; the top edge belongs to the last bin."""
    bins = len(edges) - 1
    scaled = (values - edges[0]) / (edges[-1] - edges[0]) * bins
    return np.clip(np.floor(scaled).astype(np.int64), 0, bins - 1)


def _check_bins(bins) -> tuple[int, int]:
    return check_shape("bins", bins, ndim=2, what="(x_bins, y_bins), or one integer for both")


def _check_images(images, n: int) -> np.ndarray:
    array = _as_array(images, "images")
    if array.ndim == 4 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 3 or array.shape[0] != n:
        raise ValueError(f"images must be (N, H, W) or (N, 1, H, W) with N={n} (one per point), "
                         f"got shape {np.shape(images)}")
    return array


def latent_image_grid(embedding, images, *, bins=8, mode: str = "mean") -> LatentGrid:
    """Gather images on a regular grid laid over their 2D embedding.

    The grid spans the embedding's range in ``bins`` equal cells per axis.
    Each occupied cell gets the mean of its images (``mode="mean"``) or the
    image whose point lies nearest to the cell's centre (``mode="nearest"``;
    distances measured in cell widths per axis, ties to the lower index).

    Parameters
    ----------
    embedding : (N, 2) array_like
    images : (N, H, W) or (N, 1, H, W) array_like
        The image of each point.
    bins : int or (int, int)
        Cells per axis, or ``(x_bins, y_bins)``.
    mode : {"mean", "nearest"}

    Returns
    -------
    LatentGrid

    Examples
    --------
    >>> emb = np.array([[0.0, 0.0], [0.1, 0.0], [1.0, 1.0]])
    >>> grid = latent_image_grid(emb, np.arange(3.0)[:, None, None] * np.ones((3, 2, 2)), bins=2)
    >>> grid.counts.tolist(), float(grid.tiles[0, 0, 0, 0])
    ([[2, 0], [0, 1]], 0.5)
    """
    points = _check_points(embedding, "embedding", dims=2)
    stack = _check_images(images, points.shape[0])
    check_choice("mode", mode, MODES)
    bx, by = _check_bins(bins)
    x_edges, y_edges = _edges(points[:, 0], bx), _edges(points[:, 1], by)
    ix, iy = _bin_of(points[:, 0], x_edges), _bin_of(points[:, 1], y_edges)
    cell = iy * bx + ix
    counts = np.bincount(cell, minlength=bx * by)
    tiles = np.full((bx * by, *stack.shape[1:]), np.nan)
    occupied = np.flatnonzero(counts)
    if mode == "mean":
        sums = np.zeros((bx * by, *stack.shape[1:]))
        np.add.at(sums, cell, stack)
        tiles[occupied] = sums[occupied] / counts[occupied, None, None]
    else:
        cx = (x_edges[ix] + x_edges[ix + 1]) / 2
        cy = (y_edges[iy] + y_edges[iy + 1]) / 2
        dist = ((points[:, 0] - cx) / np.diff(x_edges)[0]) ** 2 + ((points[:, 1] - cy) / np.diff(y_edges)[0]) ** 2
        order = np.lexsort((np.arange(len(cell)), dist, cell))  # by cell, then distance, then index
        first = order[np.unique(cell[order], return_index=True)[1]]
        tiles[cell[first]] = stack[first]
    shape = (by, bx)
    return LatentGrid(tiles.reshape(*shape, *stack.shape[1:]), counts.reshape(shape), x_edges, y_edges)


def plot_latent_scatter(embedding, labels, out_path, *, class_names=None, method: str | None = None,
                        title: str | None = None, dpi: int = 100) -> Path:
    """Scatter plot of a 2D embedding, one colour per class.

    Parameters
    ----------
    embedding : (N, 2) array_like
    labels : (N,) array_like of int, or None
        Class index of each point (``>= 0``); ``None`` draws every point in one colour.
    out_path : str or os.PathLike
        ``.png``, ``.pdf`` or ``.svg``, written atomically.
    class_names : sequence of str, optional
        Legend name of class ``k`` is ``class_names[k]``.
    method : str, optional
        Embedding method, for the axis labels (e.g. the second value of :func:`embed_2d`).
    title : str, optional
    dpi : int

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "scatter.png"
    >>> plot_latent_scatter([[0, 0], [1, 1], [2, 0]], [1, 2, 1], out).exists()
    True
    """
    check_out_path(out_path)
    dpi = check_dpi(dpi)
    points = _check_points(embedding, "embedding", dims=2)
    n = points.shape[0]
    codes = np.zeros(n, dtype=np.int64) if labels is None else np.asarray(labels)
    if codes.shape != (n,) or not np.issubdtype(codes.dtype, np.integer) or (codes < 0).any():
        raise ValueError(f"labels must be None or ({n},) integers >= 0, got {np.asarray(labels).dtype} "
                         f"array of shape {np.asarray(labels).shape}")
    present = np.unique(codes)
    if class_names is not None and len(class_names) <= present.max():
        raise ValueError(f"class_names has {len(class_names)} entries but labels go up to {present.max()}")
    colors = class_colors(int(present.max()) + 1)
    fig = new_figure(5.5, 4.5)
    ax = fig.add_subplot()
    for k in present:
        name = str(class_names[k]) if class_names is not None else f"class {k}"
        sel = codes == k
        ax.scatter(points[sel, 0], points[sel, 1], s=8, color=colors[k], alpha=0.75, linewidths=0,
                   label=None if labels is None else f"{name} ({int(sel.sum())})")
    prefix = method.upper() if method else "embedding"
    ax.set_xlabel(f"{prefix} 1")
    ax.set_ylabel(f"{prefix} 2")
    if labels is not None:
        ax.legend(fontsize="small", markerscale=2, loc="best")
    ax.set_title(title or f"Latent space ({n} images)")
    return save_figure(fig, out_path, dpi=dpi)


def plot_latent_image_map(embedding, images, out_path, *, bins=10, mode: str = "mean", cmap: str = "gray",
                          title: str | None = None, dpi: int = 100) -> Path:
    """Draw images where they lie in a 2D embedding (DLSIA-style latent image map).

    At each occupied cell of a ``bins`` grid over the embedding, the cell's
    image from :func:`latent_image_grid` (mean or nearest exemplar) is drawn
    in the cell's rectangle; all tiles share one grey scale (1st to 99th
    percentile of the tiles).

    Parameters
    ----------
    embedding : (N, 2) array_like
    images : (N, H, W) or (N, 1, H, W) array_like
    out_path : str or os.PathLike
        ``.png``, ``.pdf`` or ``.svg``, written atomically.
    bins : int or (int, int)
    mode : {"mean", "nearest"}
    cmap : str
        Matplotlib colour map of the tiles.
    title : str, optional
    dpi : int

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "map.png"
    >>> rng = np.random.default_rng(0)
    >>> plot_latent_image_map(rng.normal(size=(30, 2)), rng.normal(size=(30, 8, 8)), out, bins=4).exists()
    True
    """
    check_out_path(out_path)
    dpi = check_dpi(dpi)
    grid = latent_image_grid(embedding, images, bins=bins, mode=mode)
    filled = grid.tiles[grid.counts > 0]
    vmin, vmax = np.percentile(filled, [1, 99])
    if vmax <= vmin:
        vmin, vmax = vmin - 0.5, vmax + 0.5
    fig = new_figure(6.0, 6.0)
    ax = fig.add_subplot()
    for iy, ix in zip(*np.nonzero(grid.counts)):
        extent = (grid.x_edges[ix], grid.x_edges[ix + 1], grid.y_edges[iy], grid.y_edges[iy + 1])
        ax.imshow(grid.tiles[iy, ix], extent=extent, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    ax.set_xlim(grid.x_edges[0], grid.x_edges[-1])
    ax.set_ylim(grid.y_edges[0], grid.y_edges[-1])
    ax.set_aspect("auto")
    ax.set_xlabel("embedding 1")
    ax.set_ylabel("embedding 2")
    ax.set_title(title or f"Latent image map ({mode}, {len(filled)} of {grid.counts.size} cells occupied)")
    return save_figure(fig, out_path, dpi=dpi)
