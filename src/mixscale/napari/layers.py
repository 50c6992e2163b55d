"""The plugin's layers: fixed names, created once, updated in place on the GUI thread.

``scribbles`` (Labels, 0 = unlabelled, 1..K), ``prediction`` (Labels in the same numbering and
colours), ``uncertainty`` (Image, 1 - max probability, or an ensemble's spread when the model
gives one) and ``probabilities`` (Image, ``(C, *spatial)``). Calling these helpers again updates
the existing layer instead of adding another.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .session import LARGE_BYTES


FILE_SUFFIXES = (".zarr", ".tif", ".tiff", ".h5", ".hdf5", ".nxs", ".mrc", ".rec", ".map", ".npy")


def file_address(layer) -> str | None:
    """The file an Image layer shows, as a mixscale address (read lazily by training and Apply), or None
    for an image held only in memory."""
    address = layer.metadata.get("mixscale_address")  # set by mixscale's reader and `mixscale gui`
    if address:
        return str(address)
    source = getattr(layer.source, "path", None)
    if source and Path(source).suffix.lower() in FILE_SUFFIXES:
        return str(source)
    return None


def image_names(viewer) -> list[str]:
    """Names of the Image layers a model can run on (not the plugin's own outputs)."""
    from napari.layers import Image

    return [ly.name for ly in viewer.layers if isinstance(ly, Image) and ly.name not in ("uncertainty",
                                                                                         "probabilities")]


def image_shape(layer) -> tuple[int, ...]:
    """The spatial shape of an Image layer (an RGB image has no single intensity: refused)."""
    if getattr(layer, "rgb", False):
        raise ValueError(f"layer {layer.name!r} is an RGB image; mixscale's plugin trains on one intensity "
                         "channel: convert it to grayscale first")
    return tuple(int(n) for n in layer.data.shape)


def new_scribbles(viewer, image_layer, work: Path):
    """A ``scribbles`` Labels layer of the image's shape (replacing an existing one).

    In memory for ordinary images; for an image above :data:`~mixscale.napari.session.LARGE_BYTES`
    a zarr store in ``work`` chunked by plane, so painting writes only the chunks it touches.
    """
    shape = image_shape(image_layer)
    nbytes = int(np.prod(shape)) * np.dtype(image_layer.data.dtype).itemsize
    if nbytes > LARGE_BYTES:
        import zarr

        chunks = (1,) * (len(shape) - 2) + tuple(min(n, 512) for n in shape[-2:])
        data = zarr.open_array(str(work / "scribbles.zarr"), mode="w", shape=shape, dtype="uint8", chunks=chunks,
                               fill_value=0)
    else:
        data = np.zeros(shape, np.uint8)
    if "scribbles" in viewer.layers:
        viewer.layers.remove("scribbles")
    layer = viewer.add_labels(data, name="scribbles", scale=image_layer.scale, translate=image_layer.translate)
    layer.mode = "paint"
    layer.brush_size = 5
    layer.selected_label = 1
    return layer


def _labels_layer(viewer, name: str, shape, like):
    if name in viewer.layers and viewer.layers[name].data.shape == tuple(shape):
        return viewer.layers[name]
    if name in viewer.layers:
        viewer.layers.remove(name)
    layer = viewer.add_labels(np.zeros(shape, np.uint8), name=name, opacity=0.5)
    _same_colours(layer, like)
    return layer


def _image_layer(viewer, name: str, shape, contrast):
    if name in viewer.layers and viewer.layers[name].data.shape == tuple(shape):
        return viewer.layers[name]
    if name in viewer.layers:
        viewer.layers.remove(name)
    return viewer.add_image(np.zeros(shape, np.float32), name=name, colormap="magma", blending="additive",
                            contrast_limits=contrast, opacity=0.6)


def _same_colours(layer, like) -> None:
    """Give ``layer`` the colours of the ``like`` Labels layer, so class k looks the same in both."""
    if like is not None:
        layer.colormap = like.colormap


def show_preview(viewer, shape, index, probabilities: np.ndarray, uncertainty: np.ndarray, *, like=None) -> None:
    """Write a prediction into ``prediction`` and ``uncertainty`` (whole image, or plane ``index`` of a volume).

    Parameters
    ----------
    shape : tuple of int
        The image's shape; both layers get it.
    index : int or None
        The plane along axis 0 the prediction is of; None: the whole image.
    probabilities : (C, *plane) ndarray
    uncertainty : (*plane) ndarray
    like : Labels layer, optional
        Colours for ``prediction`` (the scribbles).
    """
    classes = probabilities.shape[0]
    labels = (np.argmax(probabilities, axis=0) + 1).astype(np.uint8)  # scribble numbering: class k is k + 1
    pred = _labels_layer(viewer, "prediction", shape, like)
    unc = _image_layer(viewer, "uncertainty", shape, (0.0, max(1.0 - 1.0 / classes, 1e-3)))
    where = slice(None) if index is None else index
    pred.data[where] = labels
    unc.data[where] = uncertainty
    pred.refresh()
    unc.refresh()


def show_store(viewer, store: Path, *, like=None):
    """Show a block-wise prediction store lazily as ``prediction`` (classes numbered from 1, blocks not yet
    written transparent); ``layer.refresh()`` re-reads the blocks written since."""
    from .. import api

    labels = api.open_blocks(store, "labels", offset=1, missing=0)
    if "prediction" in viewer.layers:
        viewer.layers.remove("prediction")
    layer = viewer.add_labels(labels, name="prediction", opacity=0.5)
    _same_colours(layer, like)
    return layer
