"""The plugin's GUI tests: a real napari viewer, PyQt6 and pytest-qt, on an X server (Xvfb when there is no display).

They skip, with the reason, where napari, a Qt binding or pytest-qt is missing, or no X server can be
started (install the ``test-gui`` extra and ``apt-get install xvfb libxcb-icccm4 libxcb-keysyms1``).
The display is set up at import, before any QApplication exists (and before the environment is
snapshotted per test by the top-level conftest).
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import shutil
import subprocess
import time

import types

import numpy as np
import pytest
from scipy import ndimage

_MISSING = [name for name in ("napari", "PyQt6", "pytestqt") if importlib.util.find_spec(name) is None]


def _start_xvfb() -> str | None:
    """DISPLAY of a new Xvfb server (stopped at exit), or None when there is no Xvfb."""
    if shutil.which("Xvfb") is None:
        return None
    for number in range(90, 110):
        if os.path.exists(f"/tmp/.X11-unix/X{number}") or os.path.exists(f"/tmp/.X{number}-lock"):
            continue
        proc = subprocess.Popen(["Xvfb", f":{number}", "-screen", "0", "1600x1200x24", "-nolisten", "tcp"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(50):
            if os.path.exists(f"/tmp/.X11-unix/X{number}"):
                atexit.register(proc.terminate)
                return f":{number}"
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        proc.terminate()
    return None


if not _MISSING and not os.environ.get("DISPLAY"):
    _display = _start_xvfb()
    if _display:
        os.environ["DISPLAY"] = _display
os.environ.setdefault("QT_API", "pyqt6")

SKIP_REASON = (f"needs {', '.join(_MISSING)} (pip install 'mixscale[test-gui]')" if _MISSING
               else None if os.environ.get("DISPLAY") else
               "no X display and no Xvfb (apt-get install xvfb libxcb-icccm4 libxcb-keysyms1)")


def pytest_collection_modifyitems(config, items):
    if SKIP_REASON is None:
        return
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here) and "gui" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=SKIP_REASON))


# -- real input: mouse strokes on the vispy canvas, a responsiveness probe ------------------------------


def canvas_widget(viewer):
    """The Qt widget of napari's vispy canvas (what receives the mouse)."""
    return viewer.window._qt_viewer.canvas.native


def data_to_canvas(viewer, y: float, x: float):
    """Canvas pixel of the data point ``(y, x)`` of a 2D view (layers at unit scale, no translation)."""
    from qtpy.QtCore import QPointF

    widget = canvas_widget(viewer)
    camera = viewer.scene.camera if hasattr(viewer, "scene") else viewer.camera  # napari 0.9 moved it
    cy, cx = camera.center[-2:]
    zoom = camera.zoom
    return QPointF((x - cx) * zoom + widget.width() / 2, (y - cy) * zoom + widget.height() / 2)


def _send(widget, kind, pos, buttons):
    from qtpy.QtCore import QEvent, Qt
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication

    button = Qt.MouseButton.NoButton if kind == QEvent.Type.MouseMove else Qt.MouseButton.LeftButton
    event = QMouseEvent(kind, pos, widget.mapToGlobal(pos), button, buttons, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, event)


def stroke(viewer, points, qtbot) -> None:
    """Press at the first data point, move through the others, release at the last (a painted stroke)."""
    from qtpy.QtCore import QEvent, Qt

    widget = canvas_widget(viewer)
    held, free = Qt.MouseButton.LeftButton, Qt.MouseButton.NoButton
    pos = [data_to_canvas(viewer, y, x) for y, x in points]
    _send(widget, QEvent.Type.MouseMove, pos[0], free)
    _send(widget, QEvent.Type.MouseButtonPress, pos[0], held)
    for p in pos[1:]:
        _send(widget, QEvent.Type.MouseMove, p, held)
    _send(widget, QEvent.Type.MouseButtonRelease, pos[-1], free)
    qtbot.wait(10)


def stroke_paths(truth: np.ndarray, value: int, *, margin: int, rows, min_length: int = 12):
    """Horizontal runs (as lists of points every 2 pixels) lying ``margin`` pixels inside class ``value``."""
    safe = ndimage.binary_erosion(truth == value, iterations=margin)
    paths = []
    for r in rows:
        line = safe[r]
        edges = np.flatnonzero(np.diff(np.concatenate([[0], line.astype(np.int8), [0]])))
        for start, stop in zip(edges[::2], edges[1::2]):
            if stop - start >= min_length:
                paths.append([(float(r), float(x)) for x in range(start + 1, stop - 1, 2)])
    return paths


class Responsiveness:
    """A 20 ms timer on the GUI thread; ``worst`` is the longest wait between two of its ticks."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.timer, self.last, self.worst, self.ticks = QTimer(), None, 0.0, 0
        self.timer.setInterval(20)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.worst = max(self.worst, now - self.last)
        self.last, self.ticks = now, self.ticks + 1

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.stop()


@pytest.fixture
def gui():
    """The helpers above, for the test modules (which cannot import this file)."""
    return types.SimpleNamespace(stroke=stroke, stroke_paths=stroke_paths, Responsiveness=Responsiveness,
                                 data_to_canvas=data_to_canvas, canvas_widget=canvas_widget)
