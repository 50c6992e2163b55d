"""Degraded tomographic data: photon noise, subsets of angles, limited angular ranges.

They act on sinograms such as those of :func:`~mixscale.synthetic.foam_sinograms`
(line integrals in pixel units) and on angle lists in degrees.
"""

from __future__ import annotations

import numpy as np

from .._checks import check_float, check_int
from ._common import make_rng

__all__ = ["angle_subsets", "poisson_noise"]

#: the default attenuation gives the thickest chord an optical depth of 1.5 (transmission exp(-1.5) = 22 %)
_DEFAULT_DEPTH = 1.5


def poisson_noise(sinograms, photons: float, *, seed: int, attenuation: float | None = None) -> np.ndarray:
    """Sinograms as measured with ``photons`` incoming photons per detector bin.

    The counts are ``I = Poisson(photons * exp(-mu * p))`` for line integrals ``p`` (in pixels)
    and attenuation ``mu`` (per pixel), and the result is the log-transformed measurement
    ``-log(max(I, 1) / photons) / mu``, back in the units of ``p``. A bin that counts no
    photon at all is clamped to one count (the log of zero is undefined), which caps the value
    at ``log(photons) / mu``; with thousands of photons behind every chord this never happens.
    For large counts the result is unbiased to first order (the bias of ``-log`` is about
    ``1 / (2 mu photons exp(-mu p))``) with variance ``1 / (mu**2 photons exp(-mu p))``.

    Parameters
    ----------
    sinograms : ndarray of float
        Line integrals ``p``, any shape (e.g. ``(Z, A, n_det)``), finite.
    photons : float
        Incoming photons per bin (flat field), finite and ``> 0``.
    seed : int
        Seed for ``numpy.random.default_rng``; equal seeds give equal noise.
    attenuation : float or None
        ``mu``, the optical depth of one pixel of material, ``> 0``. By default ``1.5 / max(p)``,
        so that the thickest chord transmits ``exp(-1.5)``, about 22 % (1 if ``max(p) <= 0``).

    Returns
    -------
    noisy : ndarray
        Same shape; float32 for float32 input, float64 otherwise.

    Examples
    --------
    >>> p = np.full((2, 3), 10.0)
    >>> noisy = poisson_noise(p, 1e6, seed=0)
    >>> bool(np.abs(noisy - p).max() < 0.1)
    True
    """
    p = np.asarray(sinograms)
    if not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)):
        raise TypeError(f"sinograms of dtype {p.dtype} is not allowed; expected an array of real numbers")
    if not np.isfinite(p).all():
        raise ValueError(f"sinograms with {int((~np.isfinite(p)).sum())} non-finite values is not allowed; "
                         "expected finite line integrals")
    photons = check_float("photons", photons, minimum=0, open_minimum=True)
    if attenuation is None:
        top = float(p.max()) if p.size else 0.0
        mu = _DEFAULT_DEPTH / top if top > 0 else 1.0
    else:
        mu = check_float("attenuation", attenuation, minimum=0, open_minimum=True)
    rng = make_rng(seed)
    counts = rng.poisson(photons * np.exp(-mu * p.astype(np.float64)))
    noisy = -np.log(np.maximum(counts, 1) / photons) / mu
    return noisy.astype(np.float32 if p.dtype == np.float32 else np.float64)


def angle_subsets(n_angles: int, k: int) -> list[np.ndarray]:
    """Split ``n_angles`` angle indices into ``k`` interleaved subsets of equal size.

    Subset ``j`` holds the indices ``j, j + k, j + 2k, ...``, so every subset spans the whole
    angular range at ``k`` times the step (e.g. FBP-1024 target, FBP-1024/k inputs).

    Parameters
    ----------
    n_angles : int
        Number of angles, ``>= 2``.
    k : int
        Number of subsets, ``>= 2``, a divisor of ``n_angles``.

    Returns
    -------
    subsets : list of k (n_angles // k,) ndarray of int64
        A partition of ``range(n_angles)``.

    Examples
    --------
    >>> [s.tolist() for s in angle_subsets(6, 2)]
    [[0, 2, 4], [1, 3, 5]]
    """
    n_angles = check_int("n_angles", n_angles, minimum=2)
    k = check_int("k", k, minimum=2)
    if n_angles % k:
        divisors = [d for d in range(2, n_angles + 1) if n_angles % d == 0]
        raise ValueError(f"splits k={k} does not divide the {n_angles} angles; choose one of {divisors}")
    return [np.arange(j, n_angles, k, dtype=np.int64) for j in range(k)]
