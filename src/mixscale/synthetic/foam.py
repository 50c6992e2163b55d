"""Foam phantoms: a cylinder of material minus non-overlapping spherical voids.

The tomography workflow of MS-D (Pelt, Batenburg & Sethian 2018) trains on such
foams (the idea of Pelt's ``foam_ct_phantom``). The phantom is kept as geometry
(sphere centres and radii), so slices are rasterised from exact disks and
sinograms are computed from chord lengths, never by projecting the pixel grid
that a reconstruction later recovers (the "inverse crime").

Geometry, in pixel units, for a volume of shape ``(Z, N, N)``:

- the rotation axis is the origin, at the centre of pixel ``(N//2, N//2)``: pixel ``(i, j)``
  of a slice has its centre at ``x = j - N//2``, ``y = N//2 - i`` (y points up), as in
  scikit-image's ``radon`` and ``iradon`` and in :mod:`mixscale.tomo` (for an odd ``N`` this is
  the slice's centre; for an even ``N`` half a pixel from it in x and y);
- slice ``z`` lies at height ``zc = z - (Z-1)/2`` (the volume spans ``[-Z/2, Z/2]``);
- the sinogram follows ``skimage.transform.radon(slice, theta, circle=True).T``:
  angle ``theta`` (degrees) integrates along the lines ``x cos(theta) + y sin(theta) = t``
  and bin ``k`` of ``n_det`` bins of width 1 is centred at ``t_k = k - n_det//2``.
"""

from __future__ import annotations

import logging
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .._checks import check_float, check_int, check_shape, not_allowed
from ._common import make_rng

__all__ = ["Foam", "foam_phantom", "foam_sinograms", "foam_slices"]

logger = logging.getLogger(__name__)

#: exponent of the truncated power law p(r) ~ r**-3 of void radii: many small, few big
_POWER = 3.0
#: candidate centres tried per void, drawn in batches; placement stops after this many voids in a row fail
_BATCH, _BATCHES, _GIVE_UP = 32, 8, 100
#: elements of one (angles, voids, bins, sub-positions) block of the sinogram computation
_BLOCK = 1 << 20


@dataclass(frozen=True, eq=False)
class Foam:
    """A foam phantom as geometry: a cylinder along z minus spherical voids.

    Parameters
    ----------
    shape : (3,) tuple of int
        ``(Z, N, N)`` of the volume it is rasterised to.
    radius : float
        Radius of the material cylinder, in pixels, centred on the axis.
    centres : (V, 3) ndarray of float64
        ``(z, y, x)`` of the void centres in the coordinates of the module docstring.
    radii : (V,) ndarray of float64
        Void radii in pixels.

    Examples
    --------
    >>> foam = Foam((4, 16, 16), 7.0, np.array([[0.0, 1.0, -2.0]]), np.array([3.0]))
    >>> Foam.from_dict(foam.to_dict()) == foam
    True
    """

    shape: tuple[int, int, int]
    radius: float
    centres: np.ndarray
    radii: np.ndarray

    def __post_init__(self) -> None:
        shape = _check_volume_shape(self.shape)
        radius = check_float("radius", self.radius, minimum=0, open_minimum=True)
        centres = np.array(self.centres, dtype=np.float64).reshape(-1, 3) if np.size(self.centres) == 0 \
            else np.array(self.centres, dtype=np.float64)
        radii = np.array(self.radii, dtype=np.float64).reshape(-1)
        if centres.ndim != 2 or centres.shape[1] != 3 or len(centres) != len(radii):
            raise ValueError(f"centres of shape {centres.shape} and radii of shape {radii.shape} are not allowed; "
                             "expected (V, 3) centres and (V,) radii")
        if not (np.isfinite(centres).all() and np.isfinite(radii).all() and (radii > 0).all()):
            raise ValueError("centres and radii must be finite and the radii > 0")
        centres.setflags(write=False)
        radii.setflags(write=False)
        for name, value in (("shape", shape), ("radius", radius), ("centres", centres), ("radii", radii)):
            object.__setattr__(self, name, value)

    def __eq__(self, other) -> bool:
        if not isinstance(other, Foam):
            return NotImplemented
        return (self.shape == other.shape and self.radius == other.radius
                and np.array_equal(self.centres, other.centres) and np.array_equal(self.radii, other.radii))

    __hash__ = None  # arrays are mutable in principle; equal foams need not hash alike

    @property
    def n_voids(self) -> int:
        """Number of voids ``V``."""
        return len(self.radii)

    def to_dict(self) -> dict:
        """Plain lists and numbers (JSON-serialisable, e.g. for zarr attributes); floats round-trip exactly."""
        return {"shape": list(self.shape), "radius": self.radius,
                "centres": self.centres.tolist(), "radii": self.radii.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> Foam:
        """The foam that :meth:`to_dict` wrote."""
        keys = {"shape", "radius", "centres", "radii"}
        if not isinstance(d, dict) or not keys <= set(d):
            raise not_allowed("d", d if not isinstance(d, dict) else sorted(d), f"a dict with keys {sorted(keys)}")
        return cls(tuple(d["shape"]), d["radius"], np.asarray(d["centres"], dtype=np.float64).reshape(-1, 3),
                   np.asarray(d["radii"], dtype=np.float64))


def _check_volume_shape(shape) -> tuple[int, int, int]:
    expected = "3 positive integers (Z, N, N) with Y == X"
    if isinstance(shape, (numbers.Number, str)):
        raise not_allowed("shape", shape, expected)
    z, y, x = check_shape("shape", shape, ndim=3, what="(Z, N, N) with Y == X")
    if y != x:
        raise not_allowed("shape", shape, expected)
    return z, y, x


def _radius_bounds(n: int, min_radius, max_radius) -> tuple[float, float]:
    """The radius range: the defaults ``max(1, N/128)`` and ``max(2 min_radius, N/10)`` where not given."""
    low = max(1.0, n / 128) if min_radius is None else check_float("min_radius", min_radius, minimum=0,
                                                                      open_minimum=True)
    high = max(2 * low, n / 10) if max_radius is None else check_float("max_radius", max_radius, minimum=0,
                                                                         open_minimum=True)
    if low > high and min_radius is not None:
        raise not_allowed("min_radius", min_radius, f"a number <= max_radius={high:g}")
    if low > high:
        raise not_allowed("max_radius", max_radius, f"a number >= min_radius={low:g} (the default)")
    return low, high


def _draw_radii(rng: np.random.Generator, n: int, low: float, high: float) -> np.ndarray:
    """``n`` radii from the power law ``p(r) ~ r**-_POWER`` on ``[low, high]`` by inverse transform, largest first."""
    u = rng.random(n)
    e = 1.0 - _POWER
    radii = (low**e + u * (high**e - low**e)) ** (1.0 / e) if high > low else np.full(n, low)
    return np.sort(radii)[::-1]


def _candidates(rng: np.random.Generator, count: int, depth: int, radius: float) -> np.ndarray:
    """``count`` uniform points ``(z, y, x)`` in the cylinder of ``radius`` and height ``depth``."""
    z = rng.uniform(-depth / 2, depth / 2, count)
    rho = radius * np.sqrt(rng.random(count))
    phi = rng.uniform(0, 2 * np.pi, count)
    return np.stack([z, rho * np.sin(phi), rho * np.cos(phi)], axis=1)


def _place(rng, radii, depth: int, radius: float, gap: float) -> tuple[np.ndarray, np.ndarray]:
    """Greedy placement, largest first: the first candidate that keeps ``gap`` from every placed void wins.

    A void that finds no room in ``_BATCH * _BATCHES`` candidates is dropped; after ``_GIVE_UP``
    drops in a row the foam is taken as full.
    """
    centres = np.empty((len(radii), 3))
    kept = np.empty(len(radii))
    count, misses = 0, 0
    slack = 1e-12 * (radius**2 + depth**2 / 4)  # above the rounding of d2 below, far below any real overlap
    for r in radii:
        centre = None
        for _ in range(_BATCHES):
            cand = _candidates(rng, _BATCH, depth, radius)
            if count == 0:
                centre = cand[0]
                break
            placed = centres[:count]
            # squared distances by |a|^2 + |b|^2 - 2 a.b: one matrix product instead of a (B, V, 3) temporary
            d2 = (cand**2).sum(1)[:, None] + (placed**2).sum(1)[None] - 2.0 * cand @ placed.T
            ok = np.all(d2 >= (kept[:count] + (r + gap)) ** 2 + slack, axis=1)
            if ok.any():
                centre = cand[int(np.argmax(ok))]
                break
        if centre is None:
            misses += 1
            if misses >= _GIVE_UP:
                break
            continue
        misses = 0
        centres[count], kept[count] = centre, r
        count += 1
    return centres[:count].copy(), kept[:count].copy()


def foam_phantom(shape, *, seed: int, n_voids: int = 500, min_radius: float | None = None,
                 max_radius: float | None = None, radius_fraction: float = 0.95, gap: float = 0.0) -> Foam:
    """A random foam: a cylinder of material minus non-overlapping spherical voids.

    Void radii follow a truncated power law ``p(r) ~ r**-3`` on ``[min_radius, max_radius]``
    (many small voids, few big ones). Voids are placed greedily from large to small at uniform
    random centres anywhere in the cylinder (so some are cut by its wall or by the top and
    bottom of the volume), each at least ``gap`` from the others; a void that finds no room
    after a bounded number of tries is dropped, and a warning is logged with how many fitted.

    Parameters
    ----------
    shape : (3,) tuple of int
        ``(Z, N, N)``.
    seed : int
        Seed for ``numpy.random.default_rng``; equal seeds give equal foams.
    n_voids : int
        Number of voids to place, ``>= 0``.
    min_radius, max_radius : float or None
        Range of void radii in pixels; by default ``max(1, N/128)`` and ``max(2 min_radius, N/10)``
        (the 500 default voids take 14 % of the cylinder in a ``(64, 256, 256)`` foam).
    radius_fraction : float
        Cylinder radius as a fraction of ``N/2``, in ``(0, 1]``.
    gap : float
        Smallest distance between two void surfaces, in pixels, ``>= 0``.

    Returns
    -------
    Foam

    Examples
    --------
    >>> foam = foam_phantom((8, 32, 32), seed=0, n_voids=20)
    >>> foam.n_voids, foam.radius
    (20, 15.2)
    """
    depth, n, _ = _check_volume_shape(shape)
    n_voids = check_int("n_voids", n_voids, minimum=0)
    low, high = _radius_bounds(n, min_radius, max_radius)
    fraction = check_float("radius_fraction", radius_fraction, minimum=0, maximum=1, open_minimum=True)
    gap = check_float("gap", gap, minimum=0)
    rng = make_rng(seed)
    radius = fraction * n / 2
    centres, radii = _place(rng, _draw_radii(rng, n_voids, low, high), depth, radius, gap)
    if len(radii) < n_voids:
        logger.warning("foam_phantom placed %d of %d voids in shape %s: no room for the others",
                       len(radii), n_voids, (depth, n, n))
    return Foam((depth, n, n), radius, centres, radii)


def _slice_indices(foam: Foam, z) -> np.ndarray:
    depth = foam.shape[0]
    if z is None:
        return np.arange(depth)
    if isinstance(z, slice):
        return np.arange(depth)[z]
    if isinstance(z, numbers.Integral) and not isinstance(z, bool):
        return np.array([check_int("z", z, minimum=0, maximum=depth - 1)])
    try:
        items = list(z)
    except TypeError:
        raise not_allowed("z", z, "None, an int, a slice or a sequence of ints", TypeError) from None
    return np.array([check_int("z", v, minimum=0, maximum=depth - 1) for v in items], dtype=np.int64)


def _disks(foam: Foam, z: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(cy, cx, r)`` of the void disks cut by the plane at the centre height of slice ``z``."""
    zc = z - (foam.shape[0] - 1) / 2
    h2 = foam.radii**2 - (zc - foam.centres[:, 0]) ** 2
    hit = h2 > 0
    return foam.centres[hit, 1], foam.centres[hit, 2], np.sqrt(h2[hit])


def _render_slice(foam: Foam, z: int, fine_x: np.ndarray, cylinder: np.ndarray, s: int) -> np.ndarray:
    """Material indicator at the ``(N s)^2`` sub-pixel centres of slice ``z``, averaged per pixel."""
    n = foam.shape[1]
    material = cylinder.copy()
    for cy, cx, r in zip(*_disks(foam, z)):
        c0, c1 = (np.array([cx - r, cx + r]) + 0.5 + n // 2) * s - 0.5  # fine column f: x = (f+.5)/s - .5 - N//2
        r0, r1 = (np.array([-cy - r, -cy + r]) + 0.5 + n // 2) * s - 0.5  # rows count downwards: y = -x(f)
        cols = slice(max(int(np.ceil(c0)), 0), max(min(int(np.floor(c1)) + 1, n * s), 0))
        rows = slice(max(int(np.ceil(r0)), 0), max(min(int(np.floor(r1)) + 1, n * s), 0))
        dx = fine_x[cols][None] - cx
        dy = -fine_x[rows][:, None] - cy
        material[rows, cols] &= dx * dx + dy * dy >= r * r
    return material.reshape(n, s, n, s).sum(axis=(1, 3), dtype=np.float32) / np.float32(s * s)


def foam_slices(foam: Foam, z: int | slice | Sequence[int] | None = None, *, supersample: int = 4) -> np.ndarray:
    """Slices of the foam: the fraction of material in each pixel.

    The cross-section of slice ``z`` at its centre height ``zc`` is the cylinder disk minus the
    void disks of radius ``sqrt(r**2 - (zc - cz)**2)``; each pixel holds the mean of the
    material indicator at ``supersample**2`` sub-pixel centres (the area fraction, to within
    the sampling). Voids are evaluated only in a window around them.

    Parameters
    ----------
    foam : Foam
    z : int, slice, sequence of int or None
        Slice indices in ``[0, Z)``; all slices if None.
    supersample : int
        Sub-samples per pixel along each axis, ``>= 1``.

    Returns
    -------
    slices : (len(z), N, N) ndarray of float32
        Values in ``[0, 1]``: 1 is material, 0 a void or outside the cylinder.

    Examples
    --------
    >>> foam = Foam((1, 16, 16), 7.0, np.zeros((0, 3)), np.zeros(0))
    >>> slices = foam_slices(foam)
    >>> slices.shape, bool(abs(slices.sum() - np.pi * 7**2) < 1)
    ((1, 16, 16), True)
    """
    if not isinstance(foam, Foam):
        raise not_allowed("foam", type(foam).__name__, "a Foam", TypeError)
    s = check_int("supersample", supersample, minimum=1)
    indices = _slice_indices(foam, z)
    n = foam.shape[1]
    fine_x = (np.arange(n * s) + 0.5) / s - 0.5 - n // 2  # x of fine columns; y of fine row f is -fine_x[f]
    cylinder = fine_x[None] ** 2 + fine_x[:, None] ** 2 < foam.radius**2
    out = np.empty((len(indices), n, n), dtype=np.float32)
    for k, zi in enumerate(indices):
        out[k] = _render_slice(foam, int(zi), fine_x, cylinder, s)
    return out


def _check_angles(angles) -> np.ndarray:
    expected = "a 1D array of finite angles in degrees within [-360, 360]"
    try:
        a = np.asarray(angles, dtype=np.float64)
    except (TypeError, ValueError):
        raise not_allowed("angles", angles, expected, TypeError) from None
    if a.ndim != 1 or a.size == 0 or not np.isfinite(a).all() or np.abs(a).max() > 360:
        shown = a.tolist() if a.size <= 8 else f"<array of shape {a.shape}, range [{np.nanmin(a)}, {np.nanmax(a)}]>"
        raise ValueError(f"angles={shown} is not allowed; expected {expected}")
    return a


def _void_projection(out, theta, cx, cy, r, radius: float, n_det: int, offsets, *, width: int, clip: bool) -> None:
    """Add the bin-averaged chords of the void disks ``(cx, cy, r)`` (∩ the cylinder if ``clip``) to ``out``.

    ``out`` is the flat ``(A * n_det,)`` accumulator; every disk touches at most ``width``
    consecutive bins. Blocks of angles and voids bound the memory.
    """
    n_angles, s, centre = len(theta), len(offsets), n_det // 2
    step_a = max(1, min(n_angles, _BLOCK // (width * s)))
    step_v = max(1, _BLOCK // (step_a * width * s))
    lanes = np.arange(width)
    for a0 in range(0, n_angles, step_a):
        cos, sin = np.cos(theta[a0:a0 + step_a])[:, None], np.sin(theta[a0:a0 + step_a])[:, None]
        rows = np.arange(a0, a0 + len(cos))[:, None, None] * n_det
        for v0 in range(0, len(r), step_v):
            vx, vy, vr = cx[v0:v0 + step_v], cy[v0:v0 + step_v], r[v0:v0 + step_v]
            w = vx * cos + vy * sin  # (a, v): detector position of the disk centre
            bins = np.floor(w + centre - vr).astype(np.int64)[..., None] + lanes  # (a, v, width)
            u = (bins - centre - w[..., None])[..., None] + offsets  # (a, v, width, s): t - w
            half = np.sqrt(np.maximum(vr[:, None, None] ** 2 - u * u, 0.0))
            if clip:  # the void's chord clipped to the cylinder's, along the ray
                t = u + w[..., None, None]
                cyl = np.sqrt(np.maximum(radius**2 - t * t, 0.0))
                m = (vy * cos - vx * sin)[..., None, None]  # position of the disk centre along the ray
                chord = np.maximum(np.minimum(cyl, m + half) - np.maximum(-cyl, m - half), 0.0)
            else:
                chord = 2.0 * half
            value = chord.mean(axis=-1)
            keep = (bins >= 0) & (bins < n_det) & (value > 0)
            out += np.bincount((rows + bins)[keep], weights=value[keep], minlength=out.size)


def _slice_voids(out, foam: Foam, z: int, theta, n_det: int, offsets) -> None:
    """The summed void chords of slice ``z`` into the flat accumulator ``out``, by groups of equal window width.

    Voids cut by the cylinder wall need their chords clipped to the cylinder's; the others do not.
    """
    cy, cx, r = _disks(foam, z)
    widths = np.ceil(2 * r + 1.5).astype(np.int64)  # bins a disk can touch, wherever its centre falls
    cut = np.hypot(cx, cy) + r > foam.radius
    for width in np.unique(widths):
        for clip in (False, True):
            pick = (widths == width) & (cut == clip)
            if pick.any():
                _void_projection(out, theta, cx[pick], cy[pick], r[pick], foam.radius, n_det, offsets,
                                 width=int(width), clip=clip)


def foam_sinograms(foam: Foam, angles, *, z=None, n_det: int | None = None, supersample: int = 4) -> np.ndarray:
    """Analytic parallel-beam sinograms of foam slices, from chord lengths.

    Each slice is a thin section at its centre height (the cross-section of :func:`foam_slices`),
    and a line integral is the chord of the cylinder disk minus the chords of the void disks
    (each clipped to the cylinder), in pixel units, since material has attenuation 1 per pixel.
    A detector bin integrates over its width 1: the value is the mean over ``supersample``
    sub-positions evenly spread across the bin. The convention is that of
    ``skimage.transform.radon(slice, theta=angles, circle=True).T``: angle ``theta`` integrates
    along ``x cos(theta) + y sin(theta) = t`` (y up), bin ``k`` is centred at ``t = k - n_det//2``,
    the rotation axis at the centre of pixel ``(N//2, N//2)`` (the module docstring).

    Parameters
    ----------
    foam : Foam
    angles : (A,) array_like of float
        Projection angles in degrees, within ``[-360, 360]``.
    z : int, slice, sequence of int or None
        Slice indices in ``[0, Z)``; all slices if None.
    n_det : int or None
        Number of detector bins; ``N`` if None.
    supersample : int
        Sub-positions averaged per bin, ``>= 1``.

    Returns
    -------
    sinograms : (len(z), A, n_det) ndarray of float32

    Examples
    --------
    >>> foam = Foam((1, 16, 16), 7.0, np.zeros((0, 3)), np.zeros(0))
    >>> sino = foam_sinograms(foam, [0.0, 90.0], supersample=1)
    >>> sino.shape, round(float(sino[0, 0, 8]), 3)  # bin 16 // 2 lies on the axis: the chord is 2 * 7
    ((1, 2, 16), 14.0)
    """
    if not isinstance(foam, Foam):
        raise not_allowed("foam", type(foam).__name__, "a Foam", TypeError)
    theta = np.deg2rad(_check_angles(angles))
    n_det = foam.shape[1] if n_det is None else check_int("n_det", n_det, minimum=1)
    s = check_int("supersample", supersample, minimum=1)
    indices = _slice_indices(foam, z)
    offsets = (np.arange(s) + 0.5) / s - 0.5
    t = (np.arange(n_det) - n_det // 2)[:, None] + offsets
    cylinder = 2.0 * np.sqrt(np.maximum(foam.radius**2 - t * t, 0.0)).mean(axis=1)
    out = np.empty((len(indices), len(theta), n_det), dtype=np.float32)
    voids = np.empty(len(theta) * n_det)
    for k, zi in enumerate(indices):
        voids[:] = 0.0
        _slice_voids(voids, foam, int(zi), theta, n_det, offsets)
        out[k] = cylinder[None] - voids.reshape(len(theta), n_det)
    return out
