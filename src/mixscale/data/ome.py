"""OME-Zarr (NGFF 0.5, zarr v3) images with a 2x pyramid and a ``labels/`` group, written block by block.

Level ``k`` of an image is the mean of the ``2^k`` windows of level 0 along every space axis
(sizes floored, so each level is an exact reduction of level 0: the mean of means of equal windows);
level ``k`` of a label map samples every ``2^k``-th pixel (a stride: labels are never averaged). The
transformations say so: a level's scale is ``2^k`` voxels, and a mean level is translated by
``(2^k - 1) / 2`` voxels (its pixel centre), a stride level not at all. Chunks are the prediction's
blocks (one channel per chunk), clipped to each level. napari-ome-zarr uses the first scale of a level
and drops translations.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from .._checks import check_voxel_size, not_allowed
from .._files import atomic_path

logger = logging.getLogger(__name__)

#: a level is added while its smallest space axis keeps at least this many pixels
MIN_LEVEL_SIZE = 16
MAX_LEVELS = 8
#: label colours (RGBA), cycled: class 0 transparent
PALETTE = [(0, 0, 0, 0), (230, 25, 75, 255), (60, 180, 75, 255), (255, 225, 25, 255), (0, 130, 200, 255),
           (245, 130, 48, 255), (145, 30, 180, 255), (70, 240, 240, 255), (240, 50, 230, 255)]


def level_shapes(shape: tuple[int, ...], space: int, levels: int | None = None) -> list[tuple[int, ...]]:
    """Shapes of the pyramid's levels: the last ``space`` axes halved (floored) per level.

    Examples
    --------
    >>> level_shapes((3, 70, 40), 2)
    [(3, 70, 40), (3, 35, 20)]
    """
    lead, spatial = tuple(shape[:-space]), list(shape[-space:])
    out = [tuple(shape)]
    while len(out) < (levels or MAX_LEVELS):
        spatial = [s // 2 for s in spatial]
        if min(spatial) < (1 if levels else MIN_LEVEL_SIZE):
            break
        out.append(lead + tuple(spatial))
    return out


def _reduce(block: np.ndarray, space: int, mode: str) -> np.ndarray:
    """One level down: the mean of 2-windows (floored) or every second pixel, on the last ``space`` axes."""
    if mode == "stride":
        return block[(Ellipsis,) + (slice(None, None, 2),) * space]
    cut = block[(Ellipsis,) + tuple(slice(0, (s // 2) * 2) for s in block.shape[-space:])]
    lead = cut.shape[:-space]
    pairs = [d for s in cut.shape[-space:] for d in (s // 2, 2)]
    shaped = cut.reshape(*lead, *pairs).astype(np.float64)
    axes = tuple(len(lead) + 2 * i + 1 for i in range(space))
    return shaped.mean(axis=axes).astype(block.dtype)


def _write_levels(group, name_prefix: str, source, *, axes: str, mode: str, chunks: tuple[int, ...],
                  levels: int | None) -> list[tuple[int, ...]]:
    """Level 0 copied from ``source`` chunk by chunk, then each level from the one above it."""
    space = sum(a in "zyx" for a in axes)
    shapes = level_shapes(tuple(source.shape), space, levels)
    factor = [1] * (len(shapes[0]) - space) + [2] * space  # what one level halves
    previous = source
    for k, shape in enumerate(shapes):
        clipped = tuple(min(c, s) for c, s in zip(chunks, shape))
        arr = group.create_array(name=f"{name_prefix}{k}", shape=shape, dtype=source.dtype, chunks=clipped,
                                 dimension_names=list(axes))
        for index in np.ndindex(*[-(-s // c) for s, c in zip(shape, clipped)]):
            region = tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, clipped, shape))
            if k == 0:
                arr[region] = np.asarray(previous[region])
                continue
            above = tuple(slice(r.start * f, r.stop * f) for r, f in zip(region, factor))
            arr[region] = _reduce(np.asarray(previous[above]), space, mode)
        previous = arr
    return shapes


def _block_max(arr) -> int:
    """The largest value of a zarr array, read chunk by chunk."""
    top = 0
    for index in np.ndindex(*[-(-s // c) for s, c in zip(arr.shape, arr.chunks)]):
        region = tuple(slice(i * c, (i + 1) * c) for i, c in zip(index, arr.chunks))
        top = max(top, int(np.asarray(arr[region]).max()))
    return top


def _axes(names: str, unit: str | None) -> list[dict]:
    kinds = {"c": "channel", "t": "time"}
    return [{"name": n, "type": kinds.get(n, "space"), **({"unit": unit} if unit and n in "zyx" else {})}
            for n in names]


def _datasets(prefix: str, count: int, names: str, voxel: tuple[float, ...], mode: str) -> list[dict]:
    out = []
    for k in range(count):
        f = 2 ** k
        scale = [1.0 if n == "c" else v * f for n, v in zip(names, voxel)]
        shift = [0.0 if n == "c" or mode == "stride" else v * (f - 1) / 2 for n, v in zip(names, voxel)]
        transforms = [{"type": "scale", "scale": scale}]
        if any(shift):
            transforms.append({"type": "translation", "translation": shift})
        out.append({"path": f"{prefix}{k}", "coordinateTransformations": transforms})
    return out


def write_ome_zarr(output, image, *, axes: str, labels=None, voxel_size=None, unit: str | None = None,
                   chunks: tuple[int, ...] | None = None, levels: int | None = None, name: str = "image",
                   label_name: str = "segmentation", class_names: list[str] | None = None) -> Path:
    """Write ``image`` (and ``labels``) as an NGFF 0.5 OME-Zarr at ``output``, block by block.

    Parameters
    ----------
    output : str or Path
        A new ``*.zarr`` folder.
    image : array_like (lazy: zarr, HDF5, MRC ...)
        ``(C, *spatial)`` or ``(*spatial)``, matching ``axes``.
    axes : str
        Axis names, e.g. ``"czyx"``, ``"cyx"``, ``"zyx"``.
    labels : array_like of int, optional
        ``(*spatial)``: written as ``labels/<label_name>`` with colours.
    voxel_size : float or sequence of 3, optional
        ``(z, y, x)`` (the last ones used for 2D) in ``unit``.
    unit : str, optional
        An NGFF space unit (``"micrometer"``, ``"nanometer"``, ``"angstrom"`` ...).
    chunks : tuple of int, optional
        The chunk shape of level 0 per axis (default: the image's own chunks, or whole).
    levels : int, optional
        Number of levels (default: halve while the smallest space axis keeps 16 pixels, at most 8).

    Returns
    -------
    Path
    """
    output = Path(output)
    if output.exists():
        raise FileExistsError(f"output {output} exists; choose another output or remove it")
    axes = str(axes)
    if len(axes) != image.ndim or not set(axes) <= set("czyx") or len(set(axes)) != len(axes):
        raise not_allowed("axes", axes, f"{image.ndim} distinct names from c, z, y, x for an image of shape "
                                        f"{tuple(image.shape)}")
    if labels is not None and tuple(labels.shape) != tuple(s for a, s in zip(axes, image.shape) if a != "c"):
        raise ValueError(f"labels of shape {tuple(labels.shape)} do not match the image's space axes "
                         f"{tuple(image.shape)}")
    voxel = check_voxel_size("voxel_size", voxel_size) or (1.0, 1.0, 1.0)
    per_axis = tuple(1.0 if a == "c" else voxel["zyx".index(a)] for a in axes)
    chunks = tuple(chunks or getattr(image, "chunks", None) or image.shape)
    with atomic_path(output) as tmp:
        shapes = _write(tmp, image, labels, axes=axes, per_axis=per_axis, unit=unit, chunks=chunks, levels=levels,
                        name=name, label_name=label_name, class_names=class_names)
    logger.info("wrote OME-Zarr %s: %d levels of %s", output, len(shapes), json.dumps([list(s) for s in shapes]))
    return output


def _write(path: Path, image, labels, *, axes, per_axis, unit, chunks, levels, name, label_name,
           class_names) -> list[tuple[int, ...]]:
    import zarr

    root = zarr.open_group(str(path), mode="w-", zarr_format=3)
    shapes = _write_levels(root, "", image, axes=axes, mode="mean", chunks=chunks, levels=levels)
    root.attrs["ome"] = {"version": "0.5", "multiscales": [
        {"name": name, "axes": _axes(axes, unit), "datasets": _datasets("", len(shapes), axes, per_axis, "mean")}]}
    if labels is not None:
        label_axes = "".join(a for a in axes if a != "c")
        group = root.create_group("labels")
        group.attrs["ome"] = {"version": "0.5", "labels": [label_name]}
        sub = group.create_group(label_name)
        label_chunks = tuple(c for a, c in zip(axes, chunks) if a != "c")
        count = len(_write_levels(sub, "", labels, axes=label_axes, mode="stride", chunks=label_chunks,
                                  levels=len(shapes)))
        top = len(class_names) - 1 if class_names else _block_max(sub["0"])
        colors = [{"label-value": i, "rgba": list(PALETTE[i % len(PALETTE)])} for i in range(top + 1)]
        sub.attrs["ome"] = {"version": "0.5", "multiscales": [
            {"name": label_name, "axes": _axes(label_axes, unit),
             "datasets": _datasets("", count, label_axes, tuple(v for a, v in zip(axes, per_axis) if a != "c"),
                                   "stride")}],
            "image-label": {"version": "0.5", "colors": colors, "source": {"image": "../../"}}}
    return shapes


def read_multiscales(group_path) -> dict | None:
    """The first multiscales entry of an OME-Zarr image group (NGFF 0.4 in ``.zattrs``, zarr v2; 0.5 under
    ``ome`` in ``zarr.json``, zarr v3), or None when the folder holds none.

    Returns
    -------
    dict or None
        ``version``, ``axes`` (names), ``units`` (per axis, None where absent), ``paths`` (levels, finest
        first) and ``scales`` (per level, one number per axis).
    """
    folder = Path(group_path)
    attrs = None
    if (folder / "zarr.json").is_file():
        meta = json.loads((folder / "zarr.json").read_text())
        attrs = meta.get("attributes", {}).get("ome") if meta.get("node_type") == "group" else None
    elif (folder / ".zattrs").is_file():
        attrs = json.loads((folder / ".zattrs").read_text())
    if not isinstance(attrs, dict) or not attrs.get("multiscales"):
        return None
    entry = attrs["multiscales"][0]
    axes = entry.get("axes") or []
    names = [a["name"] if isinstance(a, dict) else str(a) for a in axes]
    units = [a.get("unit") if isinstance(a, dict) else None for a in axes]
    scales = []
    for dataset in entry.get("datasets", []):
        scale = next((t["scale"] for t in dataset.get("coordinateTransformations", []) if t.get("type") == "scale"),
                     [1.0] * len(names))
        scales.append([float(v) for v in scale])
    return {"version": str(attrs.get("version", entry.get("version", ""))), "axes": names, "units": units,
            "paths": [d["path"] for d in entry.get("datasets", [])], "scales": scales}


def level_geometry(group_path, level_path: str) -> dict:
    """``voxel_size`` ``(z, y, x)`` (the space axes there are), ``unit`` and ``ome_version`` of one level of
    an OME-Zarr image; empty when ``level_path`` is not one of its levels."""
    meta = read_multiscales(group_path)
    if meta is None or level_path not in meta["paths"]:
        return {}
    scale = meta["scales"][meta["paths"].index(level_path)]
    space = [i for i, a in enumerate(meta["axes"]) if a in ("z", "y", "x")]
    units = {meta["units"][i] for i in space} - {None}
    return {"voxel_size": tuple(scale[i] for i in space), "unit": units.pop() if len(units) == 1 else None,
            "ome_version": meta["version"], "ome_levels": meta["paths"]}
