"""MRC files (cryo-electron tomography): lazy reading, slab-by-slab writing, voxel size and origin.

Needs the extra ``mixscale[em]`` (mrcfile), which reads the header. The data are read on
demand (:class:`MrcArray`): an index reads the bytes of the slices it selects into the
result, so a block of a volume larger than memory costs that block (a memory map would add
the mapped pages of the block to the copy: two blocks at the peak). Writing
goes slab by slab into mrcfile's memory-mapped new file. MRC orders axes x, y, z;
mixscale reports them as arrays do, ``(z, y, x)``, in Angstrom as the header holds them.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from .._extras import require_extra
from ._readers import SliceStack

logger = logging.getLogger(__name__)

#: dtypes an MRC file holds (modes 0, 1, 2, 6, 12)
MRC_DTYPES = ("int8", "int16", "uint16", "float16", "float32")
#: slices written at a time
WRITE_SLAB_BYTES = 64 * 2**20


def _header(path: Path):
    require_extra("mrcfile", extra="em")
    import mrcfile

    with mrcfile.open(str(path), mode="r", header_only=True, permissive=False) as mrc:
        return mrc.header.copy(), mrc.voxel_size.copy()


class MrcArray(SliceStack):
    """The data of an MRC file, ``(z, y, x)`` (or ``(y, x)``), read on demand slice by slice.

    The indexing of :class:`~mixscale.data._readers.SliceStack` (integers, slices, Ellipsis, and
    integer or boolean arrays on the first axis), each selected slice read from its bytes in the file
    straight into the result: a block costs its own size. ``np.asarray`` reads everything.
    """

    def __init__(self, path: Path) -> None:
        from mrcfile.utils import data_dtype_from_header, data_shape_from_header

        header, _ = _header(path)
        self.path = Path(path)
        self.offset = 1024 + int(header.nsymbt)  # the main header, then the extended one
        self.dtype = np.dtype(data_dtype_from_header(header))
        self.shape = tuple(int(s) for s in data_shape_from_header(header))
        self._slice_shape = self.shape[1:]
        self.chunks = (1, *self._slice_shape)

    def __repr__(self) -> str:
        return f"MrcArray(shape={self.shape}, dtype={self.dtype}, path={str(self.path)!r})"

    def read_slice(self, index: int) -> np.ndarray:
        """Slice ``index`` (a row of a 2D image), read from its bytes in the file."""
        count = int(np.prod(self._slice_shape))
        with open(self.path, "rb") as f:
            f.seek(self.offset + index * count * self.dtype.itemsize)
            return np.fromfile(f, dtype=self.dtype, count=count).reshape(self._slice_shape)


def open_mrc(path: Path) -> MrcArray:
    """The data of an MRC file, read on demand (:class:`MrcArray`)."""
    return MrcArray(path)


def mrc_metadata(path: Path) -> dict:
    """``voxel_size`` and ``origin`` of an MRC file, ``(z, y, x)`` in Angstrom."""
    header, voxel = _header(path)
    origin = header.origin
    return {"voxel_size": (float(voxel.z), float(voxel.y), float(voxel.x)),
            "origin": (float(origin.z), float(origin.y), float(origin.x)), "unit": "angstrom"}


def mrc_dtype(array: np.ndarray) -> np.dtype:
    """The dtype ``array`` is written with: its own if MRC holds it; uint8 and bool as int8 (values up
    to 127) or uint16 (mrcfile would store uint8 as uint16 without saying so); anything else, or an
    array that is not 2D or 3D, is an error naming what MRC holds."""
    if array.ndim not in (2, 3):
        raise ValueError(f"an MRC file holds a 2D image or a 3D volume, not an array of shape {array.shape}: "
                         "write one channel at a time, or another format")
    dtype = np.dtype(array.dtype)
    if dtype.name in MRC_DTYPES:
        return dtype
    if dtype.kind == "b" or (dtype == np.uint8 and (array.size == 0 or int(array.max()) <= 127)):
        return np.dtype(np.int8)
    if dtype == np.uint8:
        return np.dtype(np.uint16)
    raise ValueError(f"an MRC file cannot hold dtype {dtype}; it holds {', '.join(MRC_DTYPES)}: convert the "
                     "array (float64 -> float32, integers -> int16 or uint16) or write another format")


def write_mrc(path: Path, array, *, voxel_size=None, origin=None) -> None:
    """Write ``array`` ``(z, y, x)`` or ``(y, x)`` to a new MRC file, slab by slab into its memmap.

    ``voxel_size`` and ``origin``: ``(z, y, x)`` in Angstrom (a number: the same on every axis).
    """
    require_extra("mrcfile", extra="em")
    import mrcfile

    dtype = mrc_dtype(array)
    with mrcfile.new_mmap(str(path), shape=array.shape, mrc_mode=int(mrcfile.utils.mode_from_dtype(dtype)),
                          overwrite=True) as mrc:
        rows = max(1, WRITE_SLAB_BYTES // max(1, array[0].nbytes)) if array.ndim == 3 else None
        if rows is None:
            mrc.data[...] = np.asarray(array, dtype=dtype)
        else:
            for z0 in range(0, array.shape[0], rows):
                mrc.data[z0:z0 + rows] = np.asarray(array[z0:z0 + rows], dtype=dtype)
        if voxel_size is not None:
            z, y, x = np.broadcast_to(np.asarray(voxel_size, dtype=float), (3,))
            mrc.voxel_size = (x, y, z)
        if origin is not None:
            z, y, x = np.broadcast_to(np.asarray(origin, dtype=float), (3,))
            mrc.header.origin = (x, y, z)
        mrc.update_header_stats()
    logger.debug("wrote MRC %s %s to %s", array.shape, dtype, path)
