"""Writers behind :func:`mixscale.data.write_image`; every one is atomic.

A file is written under a hidden temporary name in the target's folder and
renamed at the end; a directory (zarr store, folder of slices) likewise. On any
failure the temporary output is removed, so a target either holds the complete
new array, its previous content, or nothing.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from pathlib import Path

import h5py
import numpy as np
import tifffile
from PIL import Image

from ._address import FILE_SUFFIXES, Address

from .._files import _remove, _tmp_name, atomic_path  # noqa: F401  (atomic_path: re-exported)

logger = logging.getLogger(__name__)

BIGTIFF_THRESHOLD = 2**31 - 2**25  # leave room for the header and tags below 2 GiB
TIFF_COMPRESSION = ("zlib", "deflate", "lzma", "lzw", "zstd", "packbits", "none")
HDF5_COMPRESSION = ("gzip", "lzf", "none")
ZARR_COMPRESSION = ("zstd", "gzip", "blosc", "none")


def check_target(target: Path, overwrite: bool, text: str) -> None:
    """Raise FileExistsError if ``target`` exists and ``overwrite`` is False."""
    if target.exists() and not overwrite:
        raise FileExistsError(
            f"output {text!r} already exists; pass overwrite=True to replace it"
        )
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"output {text!r}: folder {str(target.parent)!r} does not exist"
        )


# -- single-format writers (module level so that tests can replace them) ----------

def _write_tiff(path: Path, array: np.ndarray, *, chunks, compression, bigtiff, **_) -> None:
    if bigtiff is None:
        bigtiff = array.nbytes > BIGTIFF_THRESHOLD
    tile = None
    if chunks is not None:
        tile = tuple(int(c) for c in chunks[-2:])
        if len(tile) != 2 or any(t <= 0 or t % 16 for t in tile):
            raise ValueError(
                f"chunks={chunks!r} for TIFF sets the tile shape from its last two entries, "
                "which must be positive multiples of 16"
            )
    comp = None if compression in (None, "none") else compression
    try:
        tifffile.imwrite(path, array, bigtiff=bool(bigtiff), photometric="minisblack",
                         compression=comp, tile=tile)
    except (KeyError, ImportError) as exc:
        raise ValueError(f"TIFF compression {compression!r} is not available here: {exc}") from exc


def _write_png(path: Path, array: np.ndarray, **_) -> None:
    ok = (array.ndim == 2 and array.dtype in (np.uint8, np.uint16)) or (
        array.ndim == 3 and array.shape[-1] in (3, 4) and array.dtype == np.uint8
    )
    if not ok:
        raise TypeError(
            f"PNG holds 2D uint8/uint16 images or (Y, X, 3|4) uint8 colour images; "
            f"got shape {array.shape} and dtype {array.dtype}"
        )
    Image.fromarray(np.ascontiguousarray(array)).save(path, format="PNG")


def _write_npy(path: Path, array: np.ndarray, **_) -> None:
    with open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def _write_hdf5_dataset(group: h5py.Group, name: str, array: np.ndarray, *, chunks, compression) -> None:
    comp = None if compression in (None, "none") else compression
    group.create_dataset(name, data=array, chunks=chunks, compression=comp)


def _zarr_compression_kwargs(compression, zarr_format: int) -> dict:
    if compression is None:
        return {}
    zarr3 = _zarr3()
    key = "compressors" if zarr3 else "compressor"
    if compression == "none":
        return {key: None}
    if zarr3 and zarr_format == 3:
        from zarr import codecs

        codec = {"zstd": codecs.ZstdCodec, "gzip": codecs.GzipCodec, "blosc": codecs.BloscCodec}
    else:
        import numcodecs

        codec = {"zstd": numcodecs.Zstd, "gzip": numcodecs.GZip, "blosc": numcodecs.Blosc}
    return {key: codec[compression]()}


def _write_zarr_array(path: Path, array: np.ndarray, *, chunks, compression, zarr_format) -> None:
    import zarr

    kwargs = _zarr_compression_kwargs(compression, zarr_format)
    chunk_arg = tuple(int(c) for c in chunks) if chunks is not None else None
    if _zarr3():
        out = zarr.create_array(store=str(path), shape=array.shape, dtype=array.dtype,
                                chunks=chunk_arg or "auto", zarr_format=zarr_format, **kwargs)
    else:
        out = zarr.open_array(str(path), mode="w", shape=array.shape, dtype=array.dtype,
                              chunks=chunk_arg, **kwargs)
    out[...] = array


# -- per-kind save functions ------------------------------------------------------

def _write_mrc(path: Path, array: np.ndarray, *, voxel_size=None, origin=None, **_) -> None:
    from ._mrc import write_mrc

    write_mrc(path, array, voxel_size=voxel_size, origin=origin)


def save_file(addr: Address, array, *, chunks, compression, bigtiff, overwrite, **geometry) -> None:
    """Write a TIFF, PNG, NPY or MRC file atomically (``geometry``: the MRC's voxel size and origin)."""
    check_target(addr.path, overwrite, addr.text)
    if addr.kind != "tiff" and (chunks is not None or compression is not None):
        raise ValueError(
            f"output {addr.text!r}: {addr.kind.upper()} files take no chunks or compression, "
            f"got chunks={chunks!r}, compression={compression!r}"
        )
    writer = {"tiff": _write_tiff, "png": _write_png, "npy": _write_npy, "mrc": _write_mrc}[addr.kind]
    if addr.kind == "mrc":
        from ._mrc import mrc_dtype

        mrc_dtype(array)  # refused before the temporary file exists
    with atomic_path(addr.path) as tmp:
        writer(tmp, array, chunks=chunks, compression=compression, bigtiff=bigtiff, **geometry)


def save_hdf5(addr: Address, array, *, chunks, compression, overwrite) -> None:
    """Write a dataset into an HDF5 file (new or existing) atomically.

    A new file is written under a temporary name and renamed; in an existing
    file the dataset is written under a temporary link name and moved into place.
    """
    name = "/" + (addr.internal or "/data").strip("/")
    if addr.path.exists():
        with h5py.File(addr.path, "a") as f:
            if name in f and not isinstance(f[name], h5py.Dataset):
                raise ValueError(f"output {addr.text!r}: {name!r} is a group, not a dataset; pick another path")
            if name in f and not overwrite:
                raise FileExistsError(
                    f"output {addr.text!r}: dataset {name!r} already exists; pass overwrite=True"
                )
            parent, leaf = name.rsplit("/", 1)
            group = f.require_group(parent or "/")
            tmp = f".{leaf}.{uuid.uuid4().hex[:8]}.tmp"
            try:
                _write_hdf5_dataset(group, tmp, array, chunks=chunks, compression=compression)
                if name in f:
                    del f[name]
                group.move(tmp, leaf)
            except BaseException:
                if tmp in group:
                    del group[tmp]
                raise
        return
    check_target(addr.path, overwrite, addr.text)
    with atomic_path(addr.path) as tmp_file:
        with h5py.File(tmp_file, "w") as f:
            _write_hdf5_dataset(f, name, array, chunks=chunks, compression=compression)


def _zarr3() -> bool:
    import zarr

    return int(zarr.__version__.split(".")[0]) >= 3


def _zarr_format_of(node: Path) -> int | None:
    if (node / "zarr.json").exists():
        return 3
    if (node / ".zgroup").exists() or (node / ".zarray").exists():
        return 2
    return None


def _is_zarr_array(node: Path) -> bool:
    import json

    if (node / ".zarray").exists():
        return True
    meta = node / "zarr.json"
    return meta.exists() and json.loads(meta.read_text()).get("node_type") == "array"


def _ensure_zarr_groups(root: Path, parts: list[str]) -> int:
    """Create the store root and the groups along ``parts``; return the zarr format."""
    import zarr

    for i in range(len(parts) + 1):
        node = root.joinpath(*parts[:i])
        if _is_zarr_array(node):
            raise ValueError(f"cannot write below {str(node)!r}: it is a zarr array, not a group")
        fmt = _zarr_format_of(root)
        kwargs = {"zarr_format": fmt} if (fmt and _zarr3()) else {}
        zarr.open_group(store=str(root), path="/".join(parts[:i]) or None, mode="a", **kwargs)
    return _zarr_format_of(root) or 2


def save_zarr(addr: Address, array, *, chunks, compression, overwrite) -> None:
    """Write an array at the root of a zarr store or at a path inside it, atomically."""
    if compression is not None and compression not in ZARR_COMPRESSION:
        raise ValueError(f"compression={compression!r} for zarr; allowed: {ZARR_COMPRESSION} or None")
    if chunks is not None and len(chunks) != array.ndim:
        raise ValueError(f"chunks={chunks!r} must have one entry per axis of the array {array.shape}")
    parts = [p for p in (addr.internal or "").split("/") if p]
    root = addr.path
    if not parts:
        check_target(root, overwrite, addr.text)
        fmt, target = None, root
    else:
        if not root.parent.is_dir():
            raise FileNotFoundError(f"output {addr.text!r}: folder {str(root.parent)!r} does not exist")
        target = root.joinpath(*parts)
        if target.exists() and not overwrite:
            raise FileExistsError(f"output {addr.text!r} already exists; pass overwrite=True to replace it")
        fmt = _ensure_zarr_groups(root, parts[:-1])
    if fmt is None:
        fmt = 3 if _zarr3() else 2
    with atomic_path(target) as tmp:
        _write_zarr_array(tmp, array, chunks=chunks, compression=compression, zarr_format=fmt)


def save_stack(addr: Address, array, *, compression, overwrite) -> None:
    """Write a (Z, ...) array as one file per slice, named from a one-star pattern."""
    pattern = addr.pattern or "slice_*.tif"
    if pattern.count("*") != 1 or any(c in pattern for c in "?["):
        raise ValueError(
            f"output {addr.text!r}: a stack is written from a file pattern with exactly one '*' "
            "and no other glob characters, e.g. 'out/slice_*.tif'"
        )
    suffix = Path(pattern).suffix.lower()
    if suffix not in FILE_SUFFIXES:
        raise ValueError(f"output {addr.text!r}: slice extension {suffix!r}; allowed: {sorted(FILE_SUFFIXES)}")
    if array.ndim < 3:
        raise ValueError(f"output {addr.text!r}: a stack needs an array with 3 or more axes, got shape {array.shape}")
    kind = FILE_SUFFIXES[suffix]
    if kind != "tiff" and compression is not None:
        raise ValueError(f"output {addr.text!r}: {kind.upper()} slices take no compression, got {compression!r}")
    width = max(5, len(str(array.shape[0] - 1)))
    names = [pattern.replace("*", f"{z:0{width}d}") for z in range(array.shape[0])]
    writer = {"tiff": _write_tiff, "png": _write_png, "npy": _write_npy}[kind]
    folder = addr.path
    if folder.exists():
        _replace_slices_in_folder(folder, names, pattern, array, writer, compression, overwrite, addr.text)
        return
    check_target(folder, overwrite, addr.text)
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        for name, plane in zip(names, array):
            writer(tmp / name, plane, chunks=None, compression=compression, bigtiff=None)


def _replace_slices_in_folder(folder, names, pattern, array, writer, compression, overwrite, text):
    """Write slices into an existing folder: all are staged first, then moved in."""
    import glob

    old = [Path(p) for p in glob.glob(os.path.join(glob.escape(str(folder)), pattern))]
    if old and not overwrite:
        raise FileExistsError(
            f"output {text!r}: {len(old)} files matching {pattern!r} already exist in "
            f"{str(folder)!r}; pass overwrite=True to replace them"
        )
    staging = _tmp_name(folder / "stack")
    staging.mkdir()
    try:
        for name, plane in zip(names, array):
            writer(staging / name, plane, chunks=None, compression=compression, bigtiff=None)
        for path in old:
            path.unlink()
        for name in names:
            os.replace(staging / name, folder / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
