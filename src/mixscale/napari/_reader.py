"""Reader: images opened lazily, mixscale's block-wise prediction stores, and model files.

- An image (zarr array, HDF5 dataset, MRC) opens lazily through mixscale's readers, as a dask array
  read plane by plane, so a volume larger than memory can be viewed and scribbled; training and
  Apply then read it from its file. (TIFFs are left to napari's own reader; ``mixscale gui big.tif``
  opens them lazily.)
- A prediction store (``*.zarr`` with its completion markers) opens as a ``prediction`` Labels layer
  (classes numbered from 1, as painted; blocks not yet written transparent) and the probability or
  uncertainty arrays it holds.
- A model file (``*.safetensors``) is loaded into the "Train & predict" widget (no layer; nothing in
  the file is executed).
"""

from __future__ import annotations

from pathlib import Path


def get_reader(path):
    """The reader for ``path``, or None when it is not a mixscale store or model file."""
    if isinstance(path, list):
        return None
    p = Path(path)
    if p.suffix == ".safetensors" and p.is_file():
        return read_model
    if p.suffix == ".zarr" and (p / ".mixscale" / "done").is_dir():
        return read_store
    if p.suffix.lower() in IMAGE_SUFFIXES and p.exists():
        return read_image
    return None


IMAGE_SUFFIXES = (".zarr", ".h5", ".hdf5", ".nxs", ".mrc", ".rec", ".map", ".tif", ".tiff")


def image_layer_data(address: str) -> tuple:
    """``(dask array, layer keywords, "image")`` of an image file opened lazily, chunked by plane.

    The keywords carry the address in ``metadata["mixscale_address"]``, so the widgets train on and
    predict the file itself."""
    from .. import api

    data = api.open_image(address, dask=True)
    return data, {"name": api.image_name(address), "metadata": {"mixscale_address": str(address)}}, "image"


def read_image(path) -> list:
    """One lazily read Image layer."""
    return [image_layer_data(str(path))]


def read_store(path) -> list:
    """Layers of a prediction store: ``prediction`` (labels + 1, blocks not yet written transparent)."""
    import zarr

    from .. import api

    group = zarr.open_group(str(path), mode="r")
    out = []
    if "labels" in group:
        out.append((api.open_blocks(path, "labels", offset=1, missing=0), {"name": "prediction", "opacity": 0.5},
                    "labels"))
    for name in ("probabilities", "prob_std", "entropy", "prediction"):
        if name in group:
            out.append((group[name], {"name": name, "visible": False}, "image"))
    return out


def read_model(path) -> list:
    """Load a model file into the current viewer's "Train & predict" widget; no layers."""
    import napari

    viewer = napari.current_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("mixscale", "Train & predict")
    widget.load_model(path)
    return [(None,)]
