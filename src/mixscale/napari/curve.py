"""A live loss curve (train and validation loss per epoch) drawn with matplotlib's Qt canvas."""

from __future__ import annotations

from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
from matplotlib.figure import Figure


class LossCurve(FigureCanvasQTAgg):
    """Train and validation loss against the epoch; ``add`` a point, ``clear`` for a new run.

    Attributes
    ----------
    train, val : list of (epoch, loss)
        The points drawn (the test reads them).
    """

    def __init__(self) -> None:
        figure = Figure(figsize=(3.2, 2.0), dpi=100, layout="constrained")
        super().__init__(figure)
        self.axes = figure.add_subplot()
        self.train: list[tuple[int, float]] = []
        self.val: list[tuple[int, float]] = []
        self.setMinimumHeight(160)
        self._draw()

    def clear(self) -> None:
        self.train, self.val = [], []
        self._draw()

    def add(self, epoch: int, train: float | None, val: float | None) -> None:
        """One epoch's losses (either may be missing)."""
        if train is not None:
            self.train.append((epoch, train))
        if val is not None:
            self.val.append((epoch, val))
        self._draw()

    def _draw(self) -> None:
        ax = self.axes
        ax.clear()
        for points, label in ((self.train, "train"), (self.val, "validation")):
            if points:
                ax.plot(*zip(*points), marker=".", label=label)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("loss", fontsize=8)
        ax.tick_params(labelsize=7)
        if self.train or self.val:
            ax.legend(fontsize=7)
        self.draw_idle()
