"""The points CSV: object coordinates (and classes) per image, read and written in one place.

Format: a header row naming the coordinate columns ``y,x`` (2D) or ``z,y,x`` (3D),
in pixels, and optionally ``class``: an integer, ``1..K`` for object classes and
``0`` for annotated background (hard negatives); without it every point is class
1. Other columns (such as ``score``, which :func:`write_points_csv` adds) are
ignored on reading, so detections can be corrected and fed back as annotations.
A file with only the header holds no objects.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from ._write import atomic_path

COORDINATES = {2: ("y", "x"), 3: ("z", "y", "x")}
CLASS_COLUMN = "class"


def _number(text: str, path, line: int, column: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"points file {path}, line {line}: column {column!r} holds {text!r}, not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"points file {path}, line {line}: column {column!r} holds {text!r}, not a finite number")
    return value


def read_points_csv(path, *, spatial_dims: int) -> tuple[np.ndarray, np.ndarray]:
    """Read a points CSV: ``(M, spatial_dims)`` float coordinates and ``(M,)`` int64 classes.

    Parameters
    ----------
    path : str or Path
        CSV with a header holding ``y,x`` (2D) or ``z,y,x`` (3D) and optionally ``class``.
    spatial_dims : {2, 3}

    Examples
    --------
    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "p.csv")
    >>> _ = Path(f).write_text("y,x,class\\n3,4,1\\n10.4,2,0\\n")
    >>> pts, cls = read_points_csv(f, spatial_dims=2)
    >>> pts.tolist(), cls.tolist()
    ([[3.0, 4.0], [10.4, 2.0]], [1, 0])
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"points file not found: {path}")
    wanted = COORDINATES[spatial_dims]
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    header = [h.strip().lower() for h in rows[0]] if rows else []
    missing = [c for c in wanted if c not in header]
    if missing:
        raise ValueError(f"points file {path} has columns {header} but lacks {missing}: a {spatial_dims}D points "
                         f"file needs a header with {','.join(wanted)} and optionally {CLASS_COLUMN!r} "
                         "(0 = background, 1..K = object classes)")
    where = [header.index(c) for c in wanted]
    cls_at = header.index(CLASS_COLUMN) if CLASS_COLUMN in header else None
    coords, classes = [], []
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"points file {path}, line {line}: {len(row)} fields but the header has {len(header)}")
        coords.append([_number(row[i], path, line, c) for i, c in zip(where, wanted)])
        if cls_at is not None:
            value = _number(row[cls_at], path, line, CLASS_COLUMN)
            if value != int(value) or value < 0:
                raise ValueError(f"points file {path}, line {line}: class {row[cls_at]!r} is not allowed; "
                                 "expected an integer >= 0 (0 = background, 1..K = object classes)")
            classes.append(int(value))
        else:
            classes.append(1)
    return np.asarray(coords, np.float64).reshape(-1, spatial_dims), np.asarray(classes, np.int64)


def write_points_csv(path, points: np.ndarray, classes: np.ndarray, scores: np.ndarray) -> Path:
    """Write detections as CSV (``y,x`` or ``z,y,x``, ``class``, ``score``), atomically.

    Parameters
    ----------
    path : str or Path
    points : (M, 2) or (M, 3) int ndarray
    classes : (M,) int ndarray
    scores : (M,) float ndarray

    Examples
    --------
    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "d.csv")
    >>> _ = write_points_csv(f, np.array([[3, 4]]), np.array([1]), np.array([0.5]))
    >>> read_points_csv(f, spatial_dims=2)[0].tolist()
    [[3.0, 4.0]]
    """
    path = Path(path)
    axes = COORDINATES[points.shape[1]]
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([*axes, CLASS_COLUMN, "score"])
            for p, c, s in zip(points.tolist(), classes.tolist(), scores.tolist()):
                w.writerow([*p, c, f"{s:.6g}"])
    return path
