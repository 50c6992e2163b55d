"""Content hashes of arrays: the same image gives the same hash whatever file it came from."""

from __future__ import annotations

import hashlib

import numpy as np


def array_sha256(array) -> str:
    """Hex SHA-256 of an array's dtype, shape and C-order bytes (a lazy array is read slab by slab).

    Examples
    --------
    >>> a = np.arange(6, dtype=np.uint8).reshape(2, 3)
    >>> array_sha256(a) == array_sha256(np.asfortranarray(a)) != array_sha256(a.reshape(3, 2))
    True
    """
    if not isinstance(array, np.ndarray) and hasattr(array, "shape") and len(array.shape) > 1:
        return _streamed_sha256(array)  # a lazy array: slab by slab, the same bytes in the same order
    a = np.ascontiguousarray(np.asarray(array))
    h = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode())
    h.update(memoryview(a.reshape(-1).view(np.uint8)))
    return h.hexdigest()


def _streamed_sha256(array) -> str:
    from .sparse import slab_step

    dtype, shape = np.dtype(array.dtype), tuple(int(s) for s in array.shape)
    h = hashlib.sha256(f"{dtype.str}{shape}".encode())
    step = slab_step(array)
    for start in range(0, shape[0], step):
        slab = np.ascontiguousarray(np.asarray(array[start:start + step]), dtype=dtype)
        h.update(memoryview(slab.reshape(-1).view(np.uint8)))
    return h.hexdigest()
