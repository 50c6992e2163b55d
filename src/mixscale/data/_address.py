"""Parsing of image addresses such as ``file.h5:/entry/data`` or ``"slices/*.tif"``.

One string names one array. The rules are, in order:

1. ``*.h5``, ``*.hdf5``, ``*.hdf``, ``*.nxs`` optionally followed by ``:/internal/path``;
2. a path with a component ending in ``.zarr``; what follows it is the path of an
   array inside that store (``volume.zarr/labels/0``);
3. a path with glob characters (``*``, ``?``, ``[``): a stack of 2D slice files;
4. ``*.tif``, ``*.tiff``, ``*.png``, ``*.npy``, ``*.mrc`` (also ``.rec``, ``.map``, ``.mrcs``): one file;
5. an existing directory: a stack made of every slice file inside it.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Address", "parse_address", "natural_sort_key", "list_stack_files"]

HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs")
FILE_SUFFIXES = {".tif": "tiff", ".tiff": "tiff", ".png": "png", ".npy": "npy", ".mrc": "mrc", ".rec": "mrc",
                 ".map": "mrc", ".mrcs": "mrc"}
SLICE_SUFFIXES = (".tif", ".tiff", ".png", ".npy")
SUPPORTED = (
    "'file.tif' / 'file.tiff', 'file.png', 'file.npy', 'file.mrc' (also .rec, .map, .mrcs), "
    "'file.h5:/internal/path' "
    "(also .hdf5, .hdf, .nxs), 'store.zarr' or 'store.zarr/sub/path', "
    "a folder of slices, or a glob such as 'slices/*.tif'"
)

_HDF5_RE = re.compile(r"^(.*\.(?:h5|hdf5|hdf|nxs))(?::(.*))?$", re.IGNORECASE)
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Address:
    """A parsed image address.

    Attributes
    ----------
    kind : str
        One of ``"tiff"``, ``"png"``, ``"npy"``, ``"mrc"``, ``"hdf5"``, ``"zarr"``, ``"stack"``.
    path : Path
        The file, the zarr store root, or the folder of a stack.
    internal : str or None
        Dataset path inside an HDF5 file or array path inside a zarr store.
    pattern : str or None
        File-name glob of a stack (``"*.tif"``); None for a whole folder.
    text : str
        The address as given, for error messages.
    """

    kind: str
    path: Path
    internal: str | None = None
    pattern: str | None = None
    text: str = ""


def _as_text(address) -> str:
    if isinstance(address, (str, os.PathLike)):
        text = os.fspath(address)
        if isinstance(text, str) and text.strip():
            return text
    raise TypeError(
        f"address must be a non-empty string or path, got {address!r} "
        f"({type(address).__name__}); supported: {SUPPORTED}"
    )


def _split_zarr(text: str) -> tuple[str, str] | None:
    parts = re.split(r"[/\\]", text)
    for i, part in enumerate(parts):
        if part.lower().endswith(".zarr"):
            root = "/".join(parts[: i + 1])
            sub = "/".join(p for p in parts[i + 1:] if p)
            return root, sub
    return None


def parse_address(address, *, for_writing: bool = False) -> Address:
    """Parse an address into an :class:`Address`; nothing is opened.

    Parameters
    ----------
    address : str or os.PathLike
        See the module docstring for the accepted forms.
    for_writing : bool
        When True, a path without extension (or ending with a separator) names a
        (possibly new) folder stack; otherwise a folder must exist to be recognised.

    Raises
    ------
    TypeError
        If ``address`` is not a string or path.
    ValueError
        If the extension is not supported.
    """
    text = _as_text(address)
    match = _HDF5_RE.match(text)
    if match:
        internal = match.group(2) or None
        return Address("hdf5", Path(match.group(1)), internal, None, text)
    zarr_parts = _split_zarr(text)
    if zarr_parts is not None:
        root, sub = zarr_parts
        return Address("zarr", Path(root), sub or None, None, text)
    path = Path(text)
    if _GLOB_CHARS.search(path.name):
        if _GLOB_CHARS.search(str(path.parent)):
            raise ValueError(
                f"address {text!r}: glob characters are only allowed in the file name, "
                "not in folder names"
            )
        return Address("stack", path.parent, None, path.name, text)
    suffix = path.suffix.lower()
    if suffix in FILE_SUFFIXES:
        return Address(FILE_SUFFIXES[suffix], path, None, None, text)
    if path.is_dir() or (for_writing and (not suffix or text.endswith(("/", os.sep)))):
        return Address("stack", path, None, None, text)
    if not suffix and not path.exists():
        raise FileNotFoundError(f"address {text!r}: no such file or folder")
    raise ValueError(
        f"address {text!r}: unsupported extension {suffix or '(none)'!r}; "
        f"supported: {SUPPORTED}"
    )


def natural_sort_key(name: str) -> tuple:
    """Sort key that orders embedded numbers by value: ``slice2`` before ``slice10``.

    Examples
    --------
    >>> sorted(["s10.tif", "s2.tif", "s1.tif"], key=natural_sort_key)
    ['s1.tif', 's2.tif', 's10.tif']
    """
    # re.split with a capturing group alternates text (even) and digits (odd), so
    # strings and ints never meet at the same position of two keys.
    pieces = re.split(r"(\d+)", name)
    key = tuple(int(p) if i % 2 else p.lower() for i, p in enumerate(pieces))
    return key + (name,)


def list_stack_files(addr: Address) -> list[Path]:
    """Slice files of a stack address, sorted naturally.

    Raises
    ------
    FileNotFoundError
        If the folder does not exist or the glob matches no file.
    ValueError
        If a folder mixes several slice formats.
    """
    folder = addr.path
    if not folder.is_dir():
        raise FileNotFoundError(f"address {addr.text!r}: folder {str(folder)!r} does not exist")
    if addr.pattern is not None:
        names = [Path(p).name for p in glob.glob(os.path.join(glob.escape(str(folder)), addr.pattern))]
        files = [folder / n for n in names if (folder / n).is_file() and not n.startswith(".")]
        if not files:
            raise FileNotFoundError(f"address {addr.text!r}: the glob matches no file")
        bad = sorted({f.suffix for f in files if f.suffix.lower() not in SLICE_SUFFIXES})
        if bad:
            raise ValueError(
                f"address {addr.text!r}: the glob matches files with unsupported "
                f"extensions {bad}; slices may be {list(SLICE_SUFFIXES)}"
            )
    else:
        files = [
            p for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in SLICE_SUFFIXES
        ]
        if not files:
            raise FileNotFoundError(
                f"address {addr.text!r}: folder holds no slice files ({list(SLICE_SUFFIXES)})"
            )
    kinds = sorted({FILE_SUFFIXES[f.suffix.lower()] for f in files})
    if len(kinds) > 1:
        raise ValueError(
            f"address {addr.text!r}: the slices mix formats {kinds}; "
            "select one with a glob such as 'folder/*.tif'"
        )
    return sorted(files, key=lambda p: natural_sort_key(p.name))
