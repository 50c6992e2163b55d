"""Private helpers for the plots: headless figures and atomic saving.

Figures are built with ``matplotlib.figure.Figure`` and an Agg canvas, never
through ``pyplot``: no global state, so plotting works without a display and
from several threads at once.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

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
        raise TypeError(f"out_path must be a str or os.PathLike, got {out_path!r} "
                        f"of type {type(out_path).__name__}")
    path = Path(out_path)
    if path.suffix.lower() not in _FORMATS:
        raise ValueError(f"out_path must end in one of {sorted(_FORMATS)}, got {str(path)!r}")
    return path


def check_dpi(dpi) -> int:
    if isinstance(dpi, bool) or not isinstance(dpi, int) or not 10 <= dpi <= 1200:
        raise ValueError(f"dpi must be an integer in [10, 1200], got {dpi!r}")
    return dpi


def save_figure(fig: Figure, out_path, *, dpi: int = 100) -> Path:
    """Write ``fig`` to ``out_path`` atomically and return the path.

    The figure goes to a temporary file in the same folder, renamed over
    ``out_path`` only when complete, so a reader never sees half a file. Missing
    parent folders are created.
    """
    path = check_out_path(out_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            fig.savefig(handle, format=_FORMATS[path.suffix.lower()], dpi=dpi)
        os.chmod(tmp, 0o644)  # mkstemp makes files private; a figure is not
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    logger.debug("wrote figure %s", path)
    return path
