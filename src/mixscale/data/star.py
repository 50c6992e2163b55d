"""RELION STAR files of points: the detector's output for cryo-electron tomography pipelines.

A ``data_particles`` loop, one row per point, in one of two conventions:

``relion4``
    ``rlnCoordinateX/Y/Z`` in pixels: the voxel index (from 0) of the volume the detector ran
    on, times ``binning`` (RELION 4 takes tomogram coordinates in unbinned tilt-series pixels).
    A 3D file names the tomogram in ``rlnTomoName``, a 2D one the image in ``rlnMicrographName``.
``relion5``
    ``rlnCenteredCoordinateX/Y/ZAngst``: Angstrom from the tomogram's centre,
    ``(index - size / 2) * voxel_size`` per axis. RELION 5 turns them back into pixels as
    ``angst / pixel_size + size / 2`` (``ParticleSet::getParticleCoordDecenteredPixel``, with the
    centre ``size / 2.0`` of ``TomogramSet::loadTomogram``), so the round trip is exact. The values
    do not depend on binning: the voxel size is that of the volume the detector ran on.

Both carry ``rlnClassNumber`` (1..K) and the detection score as ``rlnAutopickFigureOfMerit``.
X is the last (fastest) array axis, Z the first. :func:`read_points_star` reads either back as
mixscale's ``(z, y, x)`` voxel indices.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np

from .._checks import check_choice, check_float, check_voxel_size, not_allowed
from ._write import atomic_path

CONVENTIONS = ("relion4", "relion5")
VERSIONS = {"relion4": "30001", "relion5": "50001"}  # the "# version" line RELION itself writes
AXES = ("X", "Y", "Z")


def _columns(convention: str, ndim: int) -> list[str]:
    if convention == "relion5":
        return [f"rlnCenteredCoordinate{a}Angst" for a in AXES[:ndim]]
    return [f"rlnCoordinate{a}" for a in AXES[:ndim]]


def star_coordinates(points: np.ndarray, *, convention: str, shape=None, voxel_size=None,
                     binning: float = 1.0) -> np.ndarray:
    """The ``(M, ndim)`` STAR coordinates (X first) of ``(M, ndim)`` voxel indices (``z, y, x``).

    Parameters
    ----------
    points : (M, 2) or (M, 3) ndarray
        Voxel indices, the last axis fastest (as :func:`mixscale.predict.detect_array` gives them).
    convention : {"relion4", "relion5"}
    shape : (z, y, x) tuple
        The volume's shape; needed by ``relion5`` (the centre is ``shape / 2``).
    voxel_size : float or (z, y, x)
        Angstrom per voxel; needed by ``relion5``.
    binning : float
        ``relion4`` only: pixels of the written coordinates per voxel of the volume.

    Examples
    --------
    >>> star_coordinates(np.array([[0, 1, 2]]), convention="relion5", shape=(4, 6, 8), voxel_size=10.0)
    array([[-20., -20., -20.]])
    """
    check_choice("convention", convention, CONVENTIONS)
    points = np.asarray(points, np.float64)
    if convention == "relion4":
        return points[:, ::-1] * check_float("binning", binning, minimum=0, open_minimum=True)
    if points.shape[1] != 3:
        raise ValueError("convention='relion5' holds tomogram coordinates (3D points); a 2D image's points are "
                         "written with convention='relion4'")
    size, centre = _geometry(shape, voxel_size)
    return ((points - centre) * size)[:, ::-1]


def _geometry(shape, voxel_size) -> tuple[np.ndarray, np.ndarray]:
    if voxel_size is None:
        raise ValueError("convention='relion5' needs the voxel size in Angstrom (voxel_size=..., CLI --voxel-size): "
                         "the coordinates are Angstrom from the tomogram's centre")
    if shape is None or len(shape) != 3:
        raise not_allowed("shape", shape, "the volume's (z, y, x) shape, for the centre of 'relion5' coordinates")
    return np.asarray(check_voxel_size("voxel_size", voxel_size)), np.asarray(shape, np.float64) / 2


def write_points_star(path, points: np.ndarray, classes: np.ndarray, scores: np.ndarray, *,
                      convention: str = "relion5", name: str = "tomogram", shape=None, voxel_size=None,
                      binning: float = 1.0) -> Path:
    """Write detections as a RELION STAR file, atomically.

    Parameters
    ----------
    path : str or Path
    points : (M, 2) or (M, 3) int ndarray
        Voxel indices ``(y, x)`` or ``(z, y, x)``.
    classes : (M,) int ndarray
    scores : (M,) float ndarray
    convention : {"relion5", "relion4"}
        See the module docstring; a 2D image's points need ``relion4``.
    name : str
        ``rlnTomoName`` (3D) or ``rlnMicrographName`` (2D) of every row.
    shape, voxel_size, binning
        See :func:`star_coordinates`.

    Examples
    --------
    >>> import tempfile, os
    >>> f = os.path.join(tempfile.mkdtemp(), "d.star")
    >>> _ = write_points_star(f, np.array([[3, 4, 5]]), np.array([1]), np.array([0.5]), name="TS_01",
    ...                       shape=(8, 8, 8), voxel_size=2.0)
    >>> read_points_star(f, shape=(8, 8, 8), voxel_size=2.0)[0].tolist()
    [[3.0, 4.0, 5.0]]
    """
    points = np.asarray(points)
    coords = star_coordinates(points, convention=convention, shape=shape, voxel_size=voxel_size, binning=binning)
    if any(c in name for c in " \t\n\"'") or not name:
        raise not_allowed("name", name, "a non-empty tomogram or micrograph name without spaces or quotes")
    labels = ["rlnTomoName" if points.shape[1] == 3 else "rlnMicrographName", *_columns(convention, points.shape[1]),
              "rlnClassNumber", "rlnAutopickFigureOfMerit"]
    lines = [f"# version {VERSIONS[convention]}", "", "data_particles", "", "loop_"]
    lines += [f"_{label} #{i}" for i, label in enumerate(labels, start=1)]
    for xyz, c, s in zip(coords.tolist(), np.asarray(classes).tolist(), np.asarray(scores).tolist()):
        lines.append(" ".join([name, *(f"{v:.6f}" for v in xyz), str(int(c)), f"{s:.6g}"]))
    path = Path(path)
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\n".join(lines) + "\n\n")
    return path


def read_star_loops(path) -> dict[str, dict[str, list[str]]]:
    """The loop blocks of a STAR file: ``{block name: {label: column of strings}}``.

    Labels lose their leading ``_`` and their ``#n``; single-value (non-loop) entries are skipped.
    """
    blocks: dict[str, dict[str, list[str]]] = {}
    block, labels, in_loop, rows = None, [], False, 0
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("data_"):
            block, labels, in_loop = line[5:], [], False
            blocks[block] = {}
        elif line == "loop_" and block is not None:
            labels, in_loop, rows = [], True, 0
            blocks[block] = {}  # RELION writes one loop per block
        elif line.startswith("_"):
            if in_loop and not rows:
                labels.append(line.split()[0][1:])
                blocks[block][labels[-1]] = []
            else:
                in_loop = False  # a single value: not a point table
        elif in_loop and block is not None:
            cells = shlex.split(line)
            if len(cells) != len(labels):
                raise ValueError(f"STAR file {path}, line {number}: {len(cells)} values but the loop has "
                                 f"{len(labels)} labels")
            for label, cell in zip(labels, cells):
                blocks[block][label].append(cell)
            rows += 1
    return blocks


def read_points_star(path, *, shape=None, voxel_size=None, binning: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Read points from a RELION STAR file (either convention) as ``(M, ndim)`` voxel indices and classes.

    The table is ``data_particles`` if there is one, else the only loop that holds coordinates.
    Without ``rlnClassNumber`` every point is class 1.

    Parameters
    ----------
    path : str or Path
    shape, voxel_size
        Needed for ``rlnCenteredCoordinate*Angst`` columns (RELION 5), as in :func:`star_coordinates`.
    binning : float
        For ``rlnCoordinate*`` columns (RELION 4): pixels of the file per voxel of the volume.

    Returns
    -------
    points : (M, ndim) float64 ndarray, ``(y, x)`` or ``(z, y, x)``
    classes : (M,) int64 ndarray
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"STAR file not found: {path}")
    loops = read_star_loops(path)
    tables = [t for n, t in loops.items() if n == "particles"] or [
        t for t in loops.values() if "rlnCoordinateX" in t or "rlnCenteredCoordinateXAngst" in t]
    if not tables:
        raise ValueError(f"STAR file {path} holds no point table (a loop with rlnCoordinateX/Y[/Z] or "
                         "rlnCenteredCoordinateX/Y/ZAngst)")
    table = tables[0]
    convention = "relion5" if "rlnCenteredCoordinateXAngst" in table else "relion4"
    wanted = [c for c in _columns(convention, 3) if c in table]
    if len(wanted) < (3 if convention == "relion5" else 2) or wanted != _columns(convention, len(wanted)):
        raise ValueError(f"STAR file {path}: the point table has labels {sorted(table)}, not X, Y (and Z) "
                         "coordinates of one convention")
    xyz = np.array([[float(v) for v in table[c]] for c in wanted], np.float64).T.reshape(-1, len(wanted))
    if convention == "relion5":
        size, centre = _geometry(shape, voxel_size)
        points = xyz[:, ::-1] / size + centre
    else:
        points = xyz[:, ::-1] / check_float("binning", binning, minimum=0, open_minimum=True)
    classes = table.get("rlnClassNumber")
    classes = np.array([int(float(c)) for c in classes], np.int64) if classes else np.ones(len(points), np.int64)
    return points, classes
