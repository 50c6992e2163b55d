"""Read and write images addressed by one string.

Addresses
---------
``"image.tif"``, ``"image.png"``, ``"image.npy"``
    One file (a TIFF may hold a multi-page stack).
``"file.h5:/entry/data"``
    A dataset inside an HDF5 file (``.h5``, ``.hdf5``, ``.hdf``, ``.nxs``).
``"volume.zarr"`` or ``"volume.zarr/labels/0"``
    The array at the root of a zarr store, or at a path inside it.
``"slices/"`` or ``"slices/*.tif"``
    A folder of 2D slice files read as one (Z, Y, X) stack, sorted naturally
    (``z2`` before ``z10``).

Examples
--------
>>> import numpy as np, tempfile, os
>>> d = tempfile.mkdtemp()
>>> write_image(os.path.join(d, "v.h5:/entry/data"), np.zeros((4, 8, 8), np.uint8))
>>> image_info(os.path.join(d, "v.h5:/entry/data"))["shape"]
(4, 8, 8)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import numpy as np
import tifffile

from . import _write
from ._address import Address, list_stack_files, parse_address
from .._checks import check_voxel_size
from ._mrc import mrc_metadata, open_mrc
from .geometry import hdf5_geometry, in_angstrom, tiff_geometry
from .ome import level_geometry, read_multiscales
from ._readers import HDF5Array, SliceStack, hdf5_datasets, open_tiff, read_png

logger = logging.getLogger(__name__)

__all__ = ["check_has_pixels", "open_image", "read_image", "write_image", "image_info"]


def _require(path: Path, addr: Address) -> None:
    if not path.exists():
        raise FileNotFoundError(f"address {addr.text!r}: {str(path)!r} does not exist")


def _hdf5_dataset_path(addr: Address) -> str:
    with h5py.File(addr.path, "r") as f:
        available = hdf5_datasets(f)
        if addr.internal is None:
            if len(available) == 1:
                return available[0]
            raise ValueError(
                f"address {addr.text!r} names no dataset and the file holds "
                f"{len(available)}; add one, e.g. '{addr.path}:{available[0] if available else '/data'}'; "
                f"available datasets: {available}"
            )
        name = "/" + addr.internal.strip("/")
        if not isinstance(f.get(name), h5py.Dataset):
            what = "a group" if isinstance(f.get(name), h5py.Group) else "not found"
            raise ValueError(
                f"address {addr.text!r}: {name!r} is {what} in {str(addr.path)!r}; "
                f"available datasets: {available}"
            )
        return name


def _zarr_arrays(root: Path, limit: int = 50) -> list[str]:
    """Paths of arrays inside a zarr store, found on disk (works for formats 2 and 3)."""
    found = []
    for dirpath, dirnames, _ in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if _write._is_zarr_array(Path(dirpath)):
            found.append(Path(dirpath).relative_to(root).as_posix())
            dirnames[:] = []
        if len(found) >= limit:
            break
    return found


def _open_zarr(addr: Address):
    import zarr

    _require(addr.path, addr)
    sub = _ome_level(addr)
    node = addr.path.joinpath(*sub.split("/")) if sub else addr.path
    if not _write._is_zarr_array(node):
        available = _zarr_arrays(addr.path)
        state = "not found" if not node.exists() else "not an array"
        raise ValueError(
            f"address {addr.text!r}: {(sub or '(root)')!r} is {state} in store "
            f"{str(addr.path)!r}; available arrays: {available}"
        )
    return zarr.open_array(store=str(addr.path), path=sub or None, mode="r")


def _ome_level(addr: Address) -> str:
    """The array path of a zarr address: as given, or the finest level of an OME-Zarr image group
    (``image.ome.zarr`` opens level 0; ``image.ome.zarr/2`` a coarser one)."""
    sub = (addr.internal or "").strip("/")
    node = addr.path.joinpath(*sub.split("/")) if sub else addr.path
    if _write._is_zarr_array(node):
        return sub
    meta = read_multiscales(node)
    if meta is None or not meta["paths"]:
        return sub
    return "/".join(p for p in (sub, meta["paths"][0]) if p)


def _ome_geometry(addr: Address) -> dict:
    """Voxel size and unit of an OME-Zarr level (from its group's multiscales), else nothing."""
    level = _ome_level(addr)
    parent, _, name = level.rpartition("/")
    return level_geometry(addr.path.joinpath(*parent.split("/")) if parent else addr.path, name)


def _open(addr: Address):
    if addr.kind == "stack":
        return SliceStack(list_stack_files(addr))
    if addr.kind == "zarr":
        return _open_zarr(addr)
    _require(addr.path, addr)
    if addr.kind == "hdf5":
        return HDF5Array(addr.path, _hdf5_dataset_path(addr))
    if addr.kind == "tiff":
        return open_tiff(addr.path)
    if addr.kind == "npy":
        return np.load(addr.path, mmap_mode="r", allow_pickle=False)
    if addr.kind == "mrc":
        return open_mrc(addr.path)
    return read_png(addr.path)


def check_has_pixels(array, address) -> None:
    """Refuse an image without pixels: a scalar (0-d, e.g. an HDF5 scalar dataset) or a zero-size array.

    Examples
    --------
    >>> check_has_pixels(np.zeros((0, 4)), "empty.npy")
    Traceback (most recent call last):
    ...
    ValueError: address 'empty.npy' holds an empty array of shape (0, 4); an image needs >= 1 axis, each of size >= 1
    """
    shape = tuple(int(n) for n in array.shape)
    allowed = "an image needs >= 1 axis, each of size >= 1"
    if not shape:
        raise ValueError(f"address {str(address)!r} holds a scalar (a 0-d dataset), not an image; {allowed}")
    if 0 in shape:
        raise ValueError(f"address {str(address)!r} holds an empty array of shape {shape}; {allowed}")


def open_image(address):
    """Open an image lazily: nothing is read until it is sliced.

    Parameters
    ----------
    address : str or os.PathLike
        See the module docstring.

    Returns
    -------
    array-like
        An object with ``shape``, ``dtype`` and numpy slicing: a zarr array, an
        :class:`HDF5Array` (reopens itself in worker processes), a numpy memmap
        (uncompressed TIFF, NPY), a zarr view of a compressed TIFF, a
        :class:`SliceStack` for folders and globs, or an ndarray for PNG.

    Raises
    ------
    FileNotFoundError
        If the file, folder or glob matches nothing.
    ValueError
        If the extension is unsupported or the internal path is wrong (the
        message lists the datasets/arrays available), or the array has no
        pixels (see :func:`check_has_pixels`).
    """
    addr = parse_address(address)
    arr = _open(addr)
    try:
        check_has_pixels(arr, addr.text)
    except ValueError:
        if isinstance(arr, HDF5Array):
            arr.close()
        raise
    return arr


def read_image(address) -> np.ndarray:
    """Read a whole image into memory.

    Parameters
    ----------
    address : str or os.PathLike
        See the module docstring.

    Returns
    -------
    ndarray
        The image, with the dtype stored in the file.

    Raises
    ------
    ValueError
        As :func:`open_image`; also for a scalar or an empty array (:func:`check_has_pixels`).
    """
    addr = parse_address(address)
    if addr.kind == "tiff":
        _require(addr.path, addr)
        data = tifffile.imread(addr.path)
        check_has_pixels(data, addr.text)
        return data
    arr = _open(addr)
    try:
        check_has_pixels(arr, addr.text)
        return np.array(arr[...])
    finally:
        if isinstance(arr, HDF5Array):
            arr.close()


def write_image(address, array, *, chunks=None, compression=None, overwrite: bool = False,
                bigtiff: bool | None = None, voxel_size=None, origin=None) -> None:
    """Write an array atomically (temporary name in the same folder, then rename).

    Parameters
    ----------
    address : str or os.PathLike
        Target; see the module docstring. An HDF5 address without internal path
        writes ``/data``. A stack address is a folder (a path without
        extension; slices are named ``slice_00000.tif``, ...) or a pattern with
        one ``*`` such as ``"out/z*.png"``; the array's first axis is the slice
        axis. Lazy inputs are read fully first.
    array : array_like
        The data; written with its own dtype.
    chunks : tuple of int, optional
        Chunk shape for HDF5 and zarr (None: automatic for zarr, contiguous for
        HDF5); for TIFF the last two entries set the tile shape (multiples of 16).
    compression : str, optional
        TIFF: 'zlib', 'lzma' (others need imagecodecs); HDF5: 'gzip', 'lzf';
        zarr: 'zstd', 'gzip', 'blosc', 'none' (None keeps zarr's default codec).
    overwrite : bool
        Replace an existing output; otherwise FileExistsError.
    bigtiff : bool, optional
        TIFF only: force BigTIFF (True), forbid it (False), or use it when the
        data exceed 2 GiB (None).
    voxel_size, origin : float or sequence of 3 floats, optional
        MRC only: ``(z, y, x)`` in Angstrom, written into the header.

    Raises
    ------
    FileExistsError
        If the output exists and ``overwrite`` is False.
    """
    addr = parse_address(address, for_writing=True)
    array = _as_writable(array)
    if bigtiff is not None and addr.kind != "tiff":
        raise ValueError(f"bigtiff={bigtiff!r} applies to TIFF outputs only, not {addr.text!r}")
    geometry = {"voxel_size": check_voxel_size("voxel_size", voxel_size),
                "origin": check_voxel_size("origin", origin, positive=False)}
    if any(v is not None for v in geometry.values()) and addr.kind != "mrc":
        raise ValueError(f"voxel_size and origin are written into MRC outputs, not into {addr.text!r}")
    _check_compression(addr, compression)
    if addr.kind in ("tiff", "png", "npy", "mrc"):
        _write.save_file(addr, array, chunks=chunks, compression=compression,
                         bigtiff=bigtiff, overwrite=overwrite, **geometry)
    elif addr.kind == "hdf5":
        _write.save_hdf5(addr, array, chunks=chunks, compression=compression, overwrite=overwrite)
    elif addr.kind == "zarr":
        _write.save_zarr(addr, array, chunks=chunks, compression=compression, overwrite=overwrite)
    else:
        _write.save_stack(addr, array, compression=compression, overwrite=overwrite)
    logger.info("wrote %s %s array to %s", array.shape, array.dtype, addr.text)


def _as_writable(array) -> np.ndarray:
    arr = np.asarray(array)
    if arr.dtype == object or arr.dtype.kind in "OUSV":
        raise TypeError(f"array must hold numbers or booleans, got dtype {arr.dtype}")
    if arr.ndim == 0:
        raise ValueError("array must have at least one axis, got a 0-d array")
    return arr


def _check_compression(addr: Address, compression) -> None:
    allowed = {"tiff": _write.TIFF_COMPRESSION, "hdf5": _write.HDF5_COMPRESSION,
               "zarr": _write.ZARR_COMPRESSION, "stack": _write.TIFF_COMPRESSION}.get(addr.kind, ())
    if compression is not None and compression not in allowed:
        raise ValueError(
            f"compression={compression!r} is not available for {addr.text!r}; "
            f"allowed: {list(allowed) or 'none (this format is not compressed)'} or None"
        )


def _disk_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _tiff_chunks(path: Path):
    with tifffile.TiffFile(path) as tif:
        series = tif.series[0]
        page = series.pages[0] if series.pages else tif.pages[0]
        if page.is_tiled:
            return (1,) * (len(series.shape) - 2) + (page.tilelength, page.tilewidth)
        if len(series.pages) > 1 and len(series.shape) >= 3:
            return (1,) * (len(series.shape) - len(page.shape)) + tuple(page.shape)
    return None


def image_info(address) -> dict:
    """Describe an image without reading its data.

    Returns
    -------
    dict
        ``address``, ``format`` ('tiff', 'png', 'npy', 'mrc', 'hdf5', 'zarr' or 'stack'),
        ``shape`` (tuple), ``dtype`` (str), ``chunks`` (tuple or None when not
        chunked), ``nbytes`` (uncompressed size of the data) and ``disk_bytes``
        (bytes used on disk by the file, dataset, store array or slices); for MRC
        also ``voxel_size`` and ``origin`` ``(z, y, x)`` and ``unit`` ('angstrom'); for a level of an
        OME-Zarr image (0.4 or 0.5) ``voxel_size`` of the space axes, ``unit``, ``ome_version``, ``ome_levels``;
        for TIFF (OME-XML, ImageJ, resolution tags) and HDF5 (``element_size_um`` ...) ``voxel_size``
        and ``unit`` where the file records them (:mod:`mixscale.data.geometry`).
    """
    addr = parse_address(address)
    arr = _open(addr)
    chunks = getattr(arr, "chunks", None)
    if addr.kind == "tiff":
        chunks = _tiff_chunks(addr.path)
    geometry = {}
    if addr.kind == "hdf5":
        with h5py.File(arr.filename, "r") as f:
            disk = int(f[arr.dataset].id.get_storage_size())
            geometry = hdf5_geometry(f[arr.dataset])
        arr.close()
    elif addr.kind == "stack":
        disk = sum(p.stat().st_size for p in arr.files)
    elif addr.kind == "zarr":
        sub = (addr.internal or "").strip("/")
        disk = _disk_bytes(addr.path.joinpath(*sub.split("/")) if sub else addr.path)
    else:
        disk = _disk_bytes(addr.path)
    dtype = np.dtype(arr.dtype)
    if addr.kind == "mrc":
        geometry = mrc_metadata(addr.path)
    elif addr.kind == "zarr":
        geometry = _ome_geometry(addr)
    elif addr.kind == "tiff":
        geometry = tiff_geometry(addr.path, min(3, len(arr.shape)))
    return {
        "address": addr.text,
        "format": addr.kind,
        "shape": tuple(int(s) for s in arr.shape),
        "dtype": str(dtype),
        "chunks": tuple(int(c) for c in chunks) if chunks else None,
        "nbytes": int(np.prod(arr.shape, dtype=np.int64)) * dtype.itemsize,
        "disk_bytes": int(disk),
        **geometry,
    }


def recorded_geometry(address, space: int = 3) -> dict:
    """What an input records of its geometry, from :func:`image_info`: ``voxel_size`` as ``(z, y, x)``
    (a 2D image's ``(y, x)`` with z = 1), ``unit``, and ``origin`` where there is one; nothing for an
    in-memory array, an unreadable address, or a voxel size of other than ``space`` axes."""
    if not isinstance(address, (str, os.PathLike)):
        return {}
    try:
        found = image_info(address)
    except (OSError, ValueError):  # e.g. an input moved since a prediction was made from it
        return {}
    size = found.get("voxel_size")
    if size is None or len(size) != space:
        return {}
    out = {"voxel_size": tuple(size) if space == 3 else (1.0, *size), "unit": found.get("unit")}
    return out | ({"origin": found["origin"]} if "origin" in found else {})


def carried_geometry(source, output) -> dict:
    """The voxel size and origin, in Angstrom, an MRC ``output`` takes from ``source``: any input that
    records them in a known unit (MRC, OME-Zarr, TIFF, HDF5; micrometer, nanometer ... converted), else
    nothing."""
    if parse_address(output, for_writing=True).kind != "mrc":
        return {}
    found = recorded_geometry(source)
    carried = {key: in_angstrom(found[key], found.get("unit")) for key in ("voxel_size", "origin") if key in found}
    return {key: value for key, value in carried.items() if value is not None}


def output_exists(address) -> bool:
    """Whether writing to ``address`` would replace something (a file, an HDF5 dataset, a zarr array).

    Lets a caller refuse before doing expensive work; :func:`write_image` checks again.
    """
    addr = parse_address(address, for_writing=True)
    if addr.kind == "hdf5":
        if not addr.path.is_file():
            return False
        with h5py.File(addr.path, "r") as f:
            return "/" + (addr.internal or "").strip("/") in f
    if addr.kind == "zarr" and addr.internal:
        return (addr.path / addr.internal.strip("/")).exists()
    if addr.kind == "stack":
        return addr.path.is_dir() and any(addr.path.glob(addr.pattern or "*"))
    return addr.path.exists()
