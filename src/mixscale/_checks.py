"""One vocabulary for checking arguments at the public boundary.

Every check returns the value in a normal form (``int``, ``float``, a tuple) or
raises an error that names the parameter, the value received and what is allowed:
``TypeError`` when the value has the wrong type, ``ValueError`` when it has the
right type but is out of range. Messages read the same everywhere::

    depth=0 is not allowed; expected an integer >= 1

Only the standard library is imported at module level, so every floor may use it.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Sequence


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and type(value).__name__ != "bool_"


def _bounds(minimum, maximum) -> str:
    if minimum is not None and maximum is not None:
        return f" in [{minimum}, {maximum}]"
    if minimum is not None:
        return f" >= {minimum}"
    return f" <= {maximum}" if maximum is not None else ""


def not_allowed(name: str, value: Any, expected: str, kind: type[Exception] = ValueError) -> Exception:
    """The house error: ``kind(f"{name}={value!r} is not allowed; expected {expected}")``.

    Examples
    --------
    >>> str(not_allowed("blend", "box", "one of ['constant', 'gaussian']"))
    "blend='box' is not allowed; expected one of ['constant', 'gaussian']"
    """
    return kind(f"{name}={value!r} is not allowed; expected {expected}")


def check_int(name: str, value: Any, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as ``int`` if it is an integer (not a bool) within the bounds.

    Examples
    --------
    >>> check_int("depth", 3, minimum=1)
    3
    >>> check_int("depth", 0, minimum=1)
    Traceback (most recent call last):
    ...
    ValueError: depth=0 is not allowed; expected an integer >= 1
    """
    expected = "an integer" + _bounds(minimum, maximum)
    if not _is_int(value):
        raise not_allowed(name, value, expected, TypeError)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise not_allowed(name, value, expected)
    return int(value)


def check_float(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                open_minimum: bool = False, open_maximum: bool = False) -> float:
    """``value`` as a finite ``float`` within the bounds (``open_minimum``: strictly above ``minimum``,
    ``open_maximum``: strictly below ``maximum``).

    Examples
    --------
    >>> check_float("lr", 1e-3, minimum=0, open_minimum=True)
    0.001
    >>> check_float("val_fraction", 1, minimum=0, maximum=1, open_minimum=True, open_maximum=True)
    Traceback (most recent call last):
    ...
    ValueError: val_fraction=1 is not allowed; expected a finite number > 0 and < 1
    """
    low = "" if minimum is None else (f" > {minimum}" if open_minimum else f" >= {minimum}")
    high = "" if maximum is None else (f" < {maximum}" if open_maximum else f" <= {maximum}")
    expected = "a finite number" + (low + (" and" if low and high else "") + high)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise not_allowed(name, value, expected, TypeError)
    v = float(value)
    if (not math.isfinite(v) or (minimum is not None and (v <= minimum if open_minimum else v < minimum))
            or (maximum is not None and (v >= maximum if open_maximum else v > maximum))):
        raise not_allowed(name, value, expected)
    return v


def check_fraction(name: str, value: Any) -> float:
    """A fraction in ``[0, 1)`` (an overlap, a held-out share).

    Examples
    --------
    >>> check_fraction("overlap", 0.25)
    0.25
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise not_allowed(name, value, "a fraction in [0, 1)", TypeError)
    if not 0 <= float(value) < 1:
        raise not_allowed(name, value, "a fraction in [0, 1)")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` as ``bool`` if it is ``True`` or ``False`` (NumPy's too): a string ``"False"`` would read as true.

    Examples
    --------
    >>> check_bool("tta", False)
    False
    >>> check_bool("tta", "no")
    Traceback (most recent call last):
    ...
    TypeError: tta='no' is not allowed; expected True or False
    """
    if not (isinstance(value, bool) or _is_numpy_bool(value)):
        raise not_allowed(name, value, "True or False", TypeError)
    return bool(value)


def _is_numpy_bool(value: Any) -> bool:
    # NumPy is not imported here; its bool type is ``numpy.bool`` (``numpy.bool_`` before 2.0)
    return type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_")


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_floats(name: str, value: Any, *, n: int, what: str = "") -> tuple[float, ...]:
    """``value`` as a tuple of ``n`` finite floats (a point, per-axis factors).

    Parameters
    ----------
    name : str
    value : sequence of float
    n : int
        How many numbers.
    what : str
        The expected value in words, e.g. ``"a (y, x) pair of finite numbers"``;
        ``"{n} finite numbers"`` by default.

    Examples
    --------
    >>> check_floats("centre", (4, 5.5), n=2)
    (4.0, 5.5)
    >>> check_floats("centre", (4,), n=2, what="a (y, x) pair of finite numbers")
    Traceback (most recent call last):
    ...
    ValueError: centre=(4,) is not allowed; expected a (y, x) pair of finite numbers
    """
    expected = what or f"{n} finite numbers"
    try:
        items = tuple(value)
    except TypeError:
        raise not_allowed(name, value, expected, TypeError) from None
    if not all(_is_real(v) for v in items):
        raise not_allowed(name, value, expected, TypeError)
    if len(items) != n or not all(math.isfinite(v) for v in items):
        raise not_allowed(name, value, expected)
    return tuple(float(v) for v in items)


def check_range(name: str, value: Any, *, minimum: float | None = None, maximum: float | None = None,
                integer: bool = False) -> tuple:
    """A ``(low, high)`` pair with ``minimum <= low <= high <= maximum``, as ints or floats.

    Examples
    --------
    >>> check_range("size_range", (4, 12.5), minimum=2)
    (4.0, 12.5)
    >>> check_range("n_shapes", (3, 1), minimum=0, integer=True)
    Traceback (most recent call last):
    ...
    ValueError: n_shapes=(3, 1) is not allowed; expected a pair (low, high) of integers with 0 <= low <= high
    """
    kind = "integers" if integer else "finite numbers"
    low_text = "" if minimum is None else f"{minimum} <= "
    high_text = "" if maximum is None else f" <= {maximum}"
    expected = f"a pair (low, high) of {kind} with {low_text}low <= high{high_text}"
    try:
        items = tuple(value)
    except TypeError:
        raise not_allowed(name, value, expected, TypeError) from None
    if not all(_is_int(v) if integer else _is_real(v) for v in items):
        raise not_allowed(name, value, expected, TypeError)
    if len(items) != 2 or not all(math.isfinite(v) for v in items):
        raise not_allowed(name, value, expected)
    low, high = items
    if not low <= high or (minimum is not None and low < minimum) or (maximum is not None and high > maximum):
        raise not_allowed(name, value, expected)
    cast = int if integer else float
    return cast(low), cast(high)


def check_choice(name: str, value: Any, allowed: Iterable) -> Any:
    """``value`` if it is one of ``allowed``.

    Examples
    --------
    >>> check_choice("blend", "gaussian", ("constant", "gaussian"))
    'gaussian'
    """
    allowed = list(allowed)
    try:
        ok = value in allowed
    except TypeError:  # an unhashable value against a dict's keys
        ok = False
    if not ok:
        raise not_allowed(name, value, f"one of {allowed}")
    return value


def check_shape(name: str, value: Any, *, ndim: int, minimum: int = 1, what: str = "") -> tuple[int, ...]:
    """A per-axis size: one integer for every axis, or ``ndim`` integers, each ``>= minimum``.

    Parameters
    ----------
    name : str
    value : int or sequence of int
    ndim : int
        Number of axes.
    minimum : int
    what : str
        Extra words for the message, e.g. ``"(the model is 2D)"``.

    Examples
    --------
    >>> check_shape("tile_shape", 64, ndim=2)
    (64, 64)
    >>> check_shape("tile_shape", (64, 32, 8), ndim=2)
    Traceback (most recent call last):
    ...
    ValueError: tile_shape=(64, 32, 8) is not allowed; expected 2 integers >= 1
    """
    values: Sequence = (value,) * ndim if _is_int(value) else value
    expected = f"{ndim} integers >= {minimum}" + (f" {what}" if what else "")
    try:
        values = tuple(values)
    except TypeError:
        raise not_allowed(name, value, expected, TypeError) from None
    if len(values) != ndim or not all(_is_int(v) and v >= minimum for v in values):
        raise not_allowed(name, value, expected)
    return tuple(int(v) for v in values)


def check_voxel_size(name: str, value: Any, *, positive: bool = True) -> tuple[float, float, float] | None:
    """A voxel size (or, with ``positive=False``, an origin): None, one number for every axis, or
    ``(z, y, x)``; finite, and > 0 for a size. Returns None or the three numbers.

    Examples
    --------
    >>> check_voxel_size("voxel_size", 2)
    (2.0, 2.0, 2.0)
    >>> check_voxel_size("voxel_size", [1, 0.5])
    Traceback (most recent call last):
    ...
    ValueError: voxel_size=[1, 0.5] is not allowed; expected a finite number > 0, or 3 of them (z, y, x)
    """
    if value is None:
        return None
    values = [value] * 3 if _is_real(value) else list(value) if isinstance(value, (list, tuple)) else None
    expected = f"a finite number{' > 0' if positive else ''}, or 3 of them (z, y, x)"
    if values is None or len(values) != 3 or not all(_is_real(v) and math.isfinite(v) for v in values) or (
            positive and not all(v > 0 for v in values)):
        raise not_allowed(name, value, expected)
    return tuple(float(v) for v in values)


def check_device(device: Any) -> str:
    """``device`` if torch knows it and it is available here; a clear ``ValueError`` otherwise.

    Examples
    --------
    >>> check_device("cpu")
    'cpu'
    """
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise not_allowed("device", device, "cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} is not available: this torch build sees no CUDA GPU; use cpu")
    return str(dev)
