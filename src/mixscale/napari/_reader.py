"""Reader: mixscale's block-wise prediction stores (``*.zarr`` with its completion markers) and model files.

A store opens lazily as a ``prediction`` Labels layer (classes numbered from 1, as painted) and, when
written, ``probabilities``; a model file (``*.safetensors``) is loaded into the "Train & predict"
widget (no layer; nothing in the file is executed).
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
    return None


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
