"""Optional packages (extras): a clear message naming the extra to install when one is missing."""

from __future__ import annotations

import importlib


class MissingExtraError(ImportError):
    """An optional package a command needs cannot be imported; the message names the extra."""


def require_extra(*modules: str, extra: str) -> None:
    """Import every module in ``modules``, or raise :class:`MissingExtraError` naming ``extra``.

    Examples
    --------
    >>> require_extra("json", extra="none")
    >>> require_extra("no_such_module_here", extra="onnx")
    Traceback (most recent call last):
    ...
    mixscale._extras.MissingExtraError: this needs no_such_module_here, which cannot be imported here: pip install 'mixscale[onnx]'
    """
    missing = []
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise MissingExtraError(f"this needs {', '.join(missing)}, which cannot be imported here: pip install "
                                f"'mixscale[{extra}]'")
