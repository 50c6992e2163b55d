"""Small Qt parts of the widgets: the class table, a close watcher, spin boxes, device names, durations."""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import QEvent, QObject, Qt
from qtpy.QtGui import QColor
from qtpy.QtWidgets import QSpinBox, QTableWidget, QTableWidgetItem

from .session import class_counts


class ClassTable(QTableWidget):
    """One row per class 1..K: its colour in the scribbles layer, an editable name, its painted pixels."""

    def __init__(self) -> None:
        super().__init__(0, 3)
        self.setHorizontalHeaderLabels(["class", "name", "pixels"])
        self.setMaximumHeight(120)

    def refresh(self, layer, *, rows: int | None = None) -> None:
        """Counts and colours from the scribbles ``layer`` (or none); at least ``rows`` rows (and two)."""
        counts = class_counts(layer.data) if layer is not None else np.zeros(1, np.int64)
        rows = max(rows or 0, len(counts) - 1, self.rowCount(), 2)
        self.setRowCount(rows)
        for k in range(1, rows + 1):
            item = _fixed(str(k))
            if layer is not None:
                item.setBackground(QColor.fromRgbF(*[float(c) for c in layer.get_color(k)]))
            self.setItem(k - 1, 0, item)
            if self.item(k - 1, 1) is None:
                self.setItem(k - 1, 1, QTableWidgetItem(f"class {k}"))
            self.setItem(k - 1, 2, _fixed(str(int(counts[k]) if k < len(counts) else 0)))

    def names(self) -> list[str]:
        """The names, in class order (``class k`` where a name is empty)."""
        out = []
        for r in range(self.rowCount()):
            item = self.item(r, 1)
            out.append(item.text() if item is not None and item.text() else f"class {r + 1}")
        return out

    def set_names(self, names, layer) -> None:
        """Rows for ``names`` (a model file's classes), named so."""
        self.refresh(layer, rows=len(names))
        for r, name in enumerate(names):
            self.setItem(r, 1, QTableWidgetItem(str(name)))


def _fixed(text: str) -> QTableWidgetItem:
    item = QTableWidgetItem(text)
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    return item


class CloseWatcher(QObject):
    """Calls ``on_close`` when the window it watches is closed."""

    def __init__(self, on_close) -> None:
        super().__init__()
        self.on_close, self.watching = on_close, False

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt's name)
        if event.type() == QEvent.Type.Close:
            self.on_close()
        return False


def spin(low: int, high: int, value: int) -> QSpinBox:
    box = QSpinBox()
    box.setRange(low, high)
    box.setValue(value)
    return box


def devices() -> list[str]:
    """``cpu`` and each CUDA device."""
    import torch

    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]


def duration(seconds: float) -> str:
    """``"42 s"`` or ``"3 min 05 s"``."""
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"
