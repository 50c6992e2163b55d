"""Voxel sizes recorded in image files: TIFF (OME-XML, ImageJ, resolution tags) and HDF5 attributes.

Each reader returns ``{"voxel_size": (z, y, x) or (y, x), "unit": str}`` or nothing. Units are
NGFF names (``micrometer``, ``nanometer``, ``angstrom``, ``centimeter``, ``inch``). MRC headers and
OME-Zarr levels are read by :mod:`mixscale.data._mrc` and :mod:`mixscale.data.ome`.
"""

from __future__ import annotations

import re
from pathlib import Path

UNITS = {"µm": "micrometer", "um": "micrometer", "micron": "micrometer", "micrometer": "micrometer",
         "nm": "nanometer", "nanometer": "nanometer", "å": "angstrom", "a": "angstrom", "angstrom": "angstrom",
         "mm": "millimeter", "millimeter": "millimeter", "cm": "centimeter", "inch": "inch"}
#: HDF5 attributes that hold a voxel size (z, y, x): ilastik/Fiji's, and the plain names
HDF5_KEYS = {"element_size_um": "micrometer", "voxel_size_um": "micrometer", "voxel_size": None,
             "pixel_size": None}

#: Angstrom per unit, for writing sizes recorded in other units into MRC headers (which hold Angstrom)
ANGSTROM_PER = {"angstrom": 1.0, "nanometer": 10.0, "micrometer": 1e4, "millimeter": 1e7, "centimeter": 1e8,
                "inch": 2.54e8}


def in_angstrom(values, unit: str | None) -> tuple[float, ...] | None:
    """``values`` (a voxel size or origin) converted from ``unit`` to Angstrom; None for an unknown unit.

    Examples
    --------
    >>> in_angstrom((0.5, 0.25, 0.25), "micrometer")
    (5000.0, 2500.0, 2500.0)
    """
    factor = ANGSTROM_PER.get(unit) if unit else None
    return None if factor is None else tuple(float(v) * factor for v in values)


def _unit(text) -> str | None:
    return UNITS.get(str(text).strip().lower().replace("\\u00b5", "µ"), None) if text else None


def _ome_tiff(tif, ndim: int) -> dict:
    pixels = re.search(r"<Pixels\b[^>]*>", tif.ome_metadata or "")
    if not pixels:
        return {}
    attrs = dict(re.findall(r'(\w+)="([^"]*)"', pixels.group(0)))
    sizes = [attrs.get(f"PhysicalSize{a}") for a in ("Z", "Y", "X")][3 - ndim:]
    if any(s is None for s in sizes[-2:]):
        return {}
    unit = _unit(attrs.get("PhysicalSizeXUnit", "µm"))  # OME's default unit is the micrometer
    sizes = [float(s) if s is not None else 1.0 for s in sizes]
    return {"voxel_size": tuple(sizes), "unit": unit}


def _resolution(page):
    tags = page.tags
    if "XResolution" not in tags or "YResolution" not in tags:
        return None
    (xn, xd), (yn, yd) = tags["XResolution"].value, tags["YResolution"].value
    if not (xn and yn):
        return None
    return yd / yn, xd / xn  # pixels per unit -> units per pixel


def tiff_geometry(path: Path, ndim: int) -> dict:
    """Voxel size of a TIFF of ``ndim`` space axes: OME-XML, else ImageJ (unit, spacing), else the
    resolution tags with their unit (inch or centimeter); nothing when the file records none (the
    default of 1 pixel per inch is no voxel size)."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        if tif.is_ome:
            return _ome_tiff(tif, ndim)
        res = _resolution(tif.pages[0])
        meta = tif.imagej_metadata or {}
        if res is not None and meta.get("unit"):
            z = float(meta.get("spacing", 1.0))
            return {"voxel_size": ((z,) if ndim == 3 else ()) + res, "unit": _unit(meta["unit"])}
        unit_tag = tif.pages[0].tags.get("ResolutionUnit")
        unit = {2: "inch", 3: "centimeter"}.get(int(unit_tag.value) if unit_tag else 2)
        if res is None or res == (1.0, 1.0) or unit is None:
            return {}
        return {"voxel_size": ((1.0,) if ndim == 3 else ()) + res, "unit": unit}


def hdf5_geometry(dataset) -> dict:
    """Voxel size from a dataset's attributes (``element_size_um`` and the like), or nothing."""
    for key, unit in HDF5_KEYS.items():
        if key in dataset.attrs:
            values = [float(v) for v in list(dataset.attrs[key])]
            if len(values) in (2, 3) and all(v > 0 for v in values):
                found_unit = unit or _unit(dataset.attrs.get("unit", dataset.attrs.get("units", "")))
                return {"voxel_size": tuple(values), "unit": found_unit}
    return {}
