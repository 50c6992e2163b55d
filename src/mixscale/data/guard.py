"""An output must never replace its input: the check every writer of predictions makes first."""

from __future__ import annotations

import os
from pathlib import Path

from ._address import parse_address


def _same_file(a: Path, b: Path) -> bool:
    """Same resolved path, or the same file or folder reached another way (hard link, bind mount)."""
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(inner: Path, outer: Path) -> bool:
    """Whether ``inner`` lies inside the folder ``outer`` (by resolved path or by identity of a parent)."""
    return any(_same_file(parent, outer) for parent in inner.parents)


def _internal(addr) -> str:
    return "/" + (addr.internal or "").strip("/")


def check_not_input(image, output) -> None:
    """Refuse an ``output`` that is the input ``image``, holds it or lies inside it.

    Different datasets of one HDF5 file, or different arrays of one zarr store,
    are allowed (``vol.h5:/raw`` in, ``vol.h5:/labels`` out); replacing the
    input, or a store or folder that contains it, is not, with or without
    ``overwrite``.

    Parameters
    ----------
    image : str, Path or array
        The input address (arrays have no file: nothing to check).
    output : str or Path
        The output address.

    Raises
    ------
    ValueError
        Naming both addresses.
    """
    if not isinstance(image, (str, os.PathLike)) or output is None:
        return
    src, dst = parse_address(image), parse_address(output, for_writing=True)
    a, b = src.path.resolve(), dst.path.resolve()
    problem = None
    if _same_file(a, b):
        containers = src.kind == dst.kind and src.kind in ("hdf5", "zarr") and src.internal and dst.internal
        if not containers:
            problem = "is the input"
        else:
            inner, outer = _internal(src), _internal(dst)
            if inner == outer or inner.startswith(outer + "/") or outer.startswith(inner + "/"):
                problem = "is the input" if inner == outer else "overlaps the input"
    elif _inside(a, b):
        problem = "holds the input"
    elif _inside(b, a):
        problem = "lies inside the input"
    if problem:
        raise ValueError(f"output {str(output)!r} {problem} {str(image)!r}: mixscale never writes over its input, "
                         "with or without overwrite; choose another output")
