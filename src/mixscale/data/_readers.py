"""Low-level readers and the lazy array objects returned by :func:`open_image`."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import h5py
import numpy as np
import tifffile
from PIL import Image

logger = logging.getLogger(__name__)

__all__ = ["SliceStack", "HDF5Array", "read_png", "read_slice", "open_tiff", "hdf5_datasets"]

_PNG_MODES = {"L": np.uint8, "P": np.uint8, "1": np.bool_, "I;16": np.uint16, "I": np.uint16,
              "RGB": np.uint8, "RGBA": np.uint8, "LA": np.uint8}


def read_png(path: Path) -> np.ndarray:
    """Read a PNG as uint8 or uint16 (Y, X) or uint8 (Y, X, 3|4)."""
    with Image.open(path) as img:
        mode = img.mode
        data = np.asarray(img)
    if mode not in _PNG_MODES:
        raise ValueError(f"PNG {str(path)!r} has unsupported mode {mode!r}")
    # Pillow reports 16-bit greyscale PNGs as mode "I" (int32) in some versions;
    # PNG holds at most 16 bits per sample, so the cast is lossless.
    return data.astype(_PNG_MODES[mode], copy=False)


def read_slice(path: Path) -> np.ndarray:
    """Read one slice file of a stack (TIFF, PNG or NPY) fully."""
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return tifffile.imread(path)
    if suffix == ".png":
        return read_png(path)
    return np.load(path, allow_pickle=False)


def _expand_key(key, ndim: int) -> tuple:
    key = key if isinstance(key, tuple) else (key,)
    if any(k is None for k in key):
        raise TypeError("indexing with None/np.newaxis is not supported by lazy stacks")
    n_ellipsis = sum(k is Ellipsis for k in key)
    if n_ellipsis > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if n_ellipsis:
        i = next(j for j, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (ndim - len(key) + 1) + key[i + 1:]
    if len(key) > ndim:
        raise IndexError(f"too many indices: array is {ndim}-dimensional, {len(key)} were given")
    return key + (slice(None),) * (ndim - len(key))


def _is_fancy(k) -> bool:
    return not isinstance(k, (slice, int, np.integer))


class SliceStack:
    """A (Z, *slice_shape) array backed by one file per slice, read on demand.

    Indexing reads only the slices selected along the first axis. Supported keys:
    integers, slices, Ellipsis, and on the first axis also integer or boolean
    arrays (not combined with arrays on other axes).

    Parameters
    ----------
    files : list of Path
        Slice files in stack order (see :func:`natural_sort_key`).
    """

    def __init__(self, files: list[Path]):
        if not files:
            raise ValueError("files must hold at least one slice file, got an empty list")
        self.files = [Path(f) for f in files]
        first = read_slice(self.files[0])
        self._slice_shape = first.shape
        self.dtype = first.dtype
        self.shape = (len(self.files), *first.shape)
        self.chunks = (1, *first.shape)

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: int(np.prod(self.shape)))
    nbytes = property(lambda self: self.size * self.dtype.itemsize)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"SliceStack(shape={self.shape}, dtype={self.dtype}, first={str(self.files[0])!r})"

    def read_slice(self, index: int) -> np.ndarray:
        """Read slice ``index`` (0 <= index < len(self)) and check its shape and dtype."""
        data = read_slice(self.files[index])
        if data.shape != self._slice_shape or data.dtype != self.dtype:
            raise ValueError(
                f"slice file {str(self.files[index])!r} has shape {data.shape} and dtype "
                f"{data.dtype}, but the stack's first slice has shape {self._slice_shape} "
                f"and dtype {self.dtype}"
            )
        return data

    def _indices(self, first) -> np.ndarray:
        n = len(self)
        if isinstance(first, slice):
            return np.arange(n)[first]
        idx = np.asarray(first)
        if idx.dtype == bool:
            if idx.shape != (n,):
                raise IndexError(f"boolean index of shape {idx.shape} does not match axis 0 of size {n}")
            return np.flatnonzero(idx)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"unsupported index on axis 0 of a lazy stack: {first!r}")
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise IndexError(f"index out of range for axis 0 of size {n}")
        return np.where(idx < 0, idx + n, idx)

    def __getitem__(self, key):
        key = _expand_key(key, self.ndim)
        first, rest = key[0], key[1:]
        if isinstance(first, (int, np.integer)):
            n = len(self)
            if not -n <= first < n:
                raise IndexError(f"index {first} is out of range for axis 0 of size {n}")
            return self.read_slice(int(first) % n)[rest]
        fancy = [i for i, k in enumerate(rest) if _is_fancy(k)]
        if (_is_fancy(first) and fancy) or (fancy and fancy[-1] - fancy[0] != len(fancy) - 1):
            # numpy would move the broadcast axes to the front; per-slice reads cannot
            raise TypeError("lazy stacks support array indices on axis 0 only, or on adjacent other axes")
        indices = self._indices(first)
        template = np.empty(self._slice_shape, dtype=self.dtype)[rest]
        out = np.empty((len(indices), *template.shape), dtype=self.dtype)
        for i, z in enumerate(indices):
            out[i] = self.read_slice(int(z))[rest]
        return out

    def __array__(self, dtype=None, copy=None):
        data = self[...]
        return data if dtype is None else data.astype(dtype, copy=False)


def hdf5_datasets(group: h5py.Group, limit: int = 50) -> list[str]:
    """Paths of (at most ``limit``) datasets below an HDF5 group."""
    found: list[str] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset):
            found.append("/" + name.lstrip("/") if group.name == "/" else f"{group.name}/{name}")
        return True if len(found) >= limit else None

    group.visititems(visit)
    return found


class HDF5Array:
    """An HDF5 dataset that stays open and survives pickling and forking.

    Behaves like the h5py dataset (``shape``, ``dtype``, ``chunks``, numpy
    slicing). After a fork or an unpickle (PyTorch data-loader workers) the file
    is reopened in the new process, because an HDF5 handle must not be shared
    between processes.

    Parameters
    ----------
    filename : str or Path
        The HDF5 file.
    dataset : str
        Path of the dataset inside the file, e.g. ``"/entry/data"``.
    """

    def __init__(self, filename, dataset: str):
        self.filename = str(filename)
        self.dataset = dataset
        self._file = None
        self._pid = None
        ds = self._handle()
        self.shape, self.dtype, self.chunks = ds.shape, ds.dtype, ds.chunks

    def _handle(self) -> h5py.Dataset:
        if self._file is None or self._pid != os.getpid():
            self._file = h5py.File(self.filename, "r")
            self._pid = os.getpid()
        return self._file[self.dataset]

    ndim = property(lambda self: len(self.shape))
    size = property(lambda self: int(np.prod(self.shape)))
    nbytes = property(lambda self: self.size * self.dtype.itemsize)
    attrs = property(lambda self: self._handle().attrs)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key):
        return self._handle()[key]

    def __array__(self, dtype=None, copy=None):
        data = np.asarray(self._handle()[()])  # a scalar dataset reads as a NumPy scalar
        return data if dtype is None else data.astype(dtype, copy=False)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"], state["_pid"] = None, None
        return state

    def __repr__(self) -> str:
        return f"HDF5Array({self.filename!r}, {self.dataset!r}, shape={self.shape}, dtype={self.dtype})"

    def close(self) -> None:
        """Close the file; a later access reopens it."""
        if self._file is not None and self._pid == os.getpid():
            self._file.close()
        self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class WholeFileReadWarning(UserWarning):
    """A file could not be opened lazily and was read into memory as a whole."""


class WholeFileArray(np.ndarray):
    """An array read from a file as a whole (no lazy view was possible); ``whole_file`` says so."""

    whole_file = True


def open_tiff(path: Path):
    """Open a TIFF lazily: a memory map when the data are contiguous and
    uncompressed, else a zarr view on the TIFF's pages or tiles, else a full read
    (with a :class:`WholeFileReadWarning`; the result's ``whole_file`` is True)."""
    try:
        return tifffile.memmap(path, mode="r")
    except (ValueError, TypeError) as exc:
        logger.debug("TIFF %s is not memory-mappable (%s); trying a zarr view", path, exc)
    try:
        import zarr

        store = tifffile.imread(path, aszarr=True, series=0, level=0)
        arr = zarr.open(store=store, mode="r")
        if hasattr(arr, "shape"):
            return arr
    except Exception as exc:  # noqa: BLE001 - any failure here falls back to reading
        logger.debug("zarr view of TIFF %s failed (%s); reading it fully", path, exc)
    warnings.warn(f"TIFF {path} can be neither memory-mapped nor viewed lazily (compressed in a layout "
                  "tifffile cannot index): it is read into memory as a whole", WholeFileReadWarning, stacklevel=2)
    return tifffile.imread(path).view(WholeFileArray)
