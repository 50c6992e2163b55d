"""Private helpers for the plots: headless figures and atomic saving.

Figures are built with ``matplotlib.figure.Figure`` and an Agg canvas, never
through ``pyplot``: no global state, so plotting works without a display and
from several threads at once.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .._checks import check_int, not_allowed
from .._files import atomic_path

__all__: list[str] = []

logger = logging.getLogger(__name__)

_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}


def new_figure(width: float, height: float, *, layout: str | None = "constrained") -> Figure:
    """A figure of ``width`` x ``height`` inches drawn by Agg, outside pyplot."""
    fig = Figure(figsize=(width, height), layout=layout)
    FigureCanvasAgg(fig)
    return fig


def check_out_path(out_path) -> Path:
    """Return ``out_path`` as a Path with a supported suffix, else raise."""
    if not isinstance(out_path, (str, os.PathLike)):
        raise not_allowed("out_path", out_path, "a str or os.PathLike", TypeError)
    path = Path(out_path)
    if path.suffix.lower() not in _FORMATS:
        raise not_allowed("out_path", str(path), f"a path ending in one of {sorted(_FORMATS)}")
    return path


def check_dpi(dpi) -> int:
    return check_int("dpi", dpi, minimum=10, maximum=1200)


def save_figure(fig: Figure, out_path, *, dpi: int = 100) -> Path:
    """Write ``fig`` to ``out_path`` atomically and return the path.

    The figure goes to a temporary file in the same folder, renamed over
    ``out_path`` only when complete, so a reader never sees half a file. Missing
    parent folders are created.
    """
    path = check_out_path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=_FORMATS[path.suffix.lower()], dpi=dpi)
    logger.debug("wrote figure %s", path)
    return path
