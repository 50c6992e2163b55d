import json
import logging

import numpy as np
import pytest
from scipy.spatial.distance import pdist, squareform
from skimage.transform import radon

from mixscale.synthetic import (Foam, angle_subsets, foam_phantom, foam_sinograms, foam_slices,
                                poisson_noise)


def _material(foam, z, x, y):
    """Exact material indicator of slice ``z`` at points ``(x, y)`` (independent of the library's windows)."""
    zc = z - (foam.shape[0] - 1) / 2
    inside = x**2 + y**2 < foam.radius**2
    for (cz, cy, cx), r in zip(foam.centres, foam.radii):
        h2 = r * r - (zc - cz) ** 2
        if h2 > 0:
            inside &= (x - cx) ** 2 + (y - cy) ** 2 >= h2
    return inside


def _numerical_sinogram(foam, z, angles, s=8):
    """``skimage.transform.radon`` of slice ``z`` rendered at ``s`` x resolution, binned back to N bins.

    The fine image has ``s N + 1 + 2 s`` pixels a side (odd), with pixel ``f`` centred at
    ``(f - c) / s`` for ``c = s N / 2 + s``: skimage rotates about fine pixel ``c``, which is then
    exactly the rotation axis (the origin), and fine detector bin ``m`` sits at ``t = (m - c) / s``.
    A fine bin sums fine pixels of length ``1 / s``, so a line integral is the fine value / s;
    coarse bin ``k`` covers ``t in [k - N//2 - 1/2, k - N//2 + 1/2]``, i.e. ``s + 1`` fine bins from
    ``s (k - N//2 - 1/2) + c``, averaged by the trapezoid rule (weights 1/2 at both ends, spacing
    ``1 / s``): another factor ``1 / s``.
    """
    n = foam.shape[1]
    c = s * n // 2 + s
    coords = (np.arange(s * n + 1 + 2 * s) - c) / s
    fine = _material(foam, z, coords[None, :], -coords[:, None]).astype(np.float64)
    fine_sino = radon(fine, theta=angles, circle=True).T  # (A, s N + 1 + 2 s)
    weights = np.ones(s + 1)
    weights[[0, -1]] = 0.5
    first = s * (np.arange(n) - n // 2) - s // 2 + c  # fine bin where coarse bin k begins
    windows = first[:, None] + np.arange(s + 1)  # (N, s + 1) fine bins of coarse bin k
    return (fine_sino[:, windows] * weights).sum(-1) / s**2


def _lens_area(big, small, d):
    """Area of the intersection of two disks of radii ``big`` and ``small`` at centre distance ``d``."""
    if d >= big + small:
        return 0.0
    if d <= abs(big - small):
        return np.pi * min(big, small) ** 2
    a = small**2 * np.arccos((d * d + small**2 - big**2) / (2 * d * small))
    b = big**2 * np.arccos((d * d + big**2 - small**2) / (2 * d * big))
    return a + b - 0.5 * np.sqrt((-d + small + big) * (d + small - big) * (d - small + big) * (d + small + big))


# -- geometry ---------------------------------------------------------------------

def test_reproducible_from_seed_and_voids_keep_apart():
    a = foam_phantom((16, 64, 64), seed=1, n_voids=200, gap=0.5)
    b = foam_phantom((16, 64, 64), seed=1, n_voids=200, gap=0.5)
    c = foam_phantom((16, 64, 64), seed=2, n_voids=200, gap=0.5)
    assert a == b and a != c
    np.testing.assert_array_equal(a.centres, b.centres)
    assert a.n_voids == 200 and a.centres.shape == (200, 3) and a.radius == pytest.approx(0.95 * 32)
    dist = squareform(pdist(a.centres))
    need = a.radii[:, None] + a.radii[None] + 0.5
    off_diagonal = ~np.eye(a.n_voids, dtype=bool)
    assert np.all(dist[off_diagonal] >= need[off_diagonal] - 1e-9)
    assert np.all(np.hypot(a.centres[:, 1], a.centres[:, 2]) <= a.radius)
    assert np.all(np.abs(a.centres[:, 0]) <= 8)


def test_radius_range_and_a_full_foam_warns(caplog):
    foam = foam_phantom((8, 48, 48), seed=0, n_voids=60, min_radius=2.0, max_radius=5.0)
    assert foam.n_voids == 60
    assert foam.radii.min() >= 2.0 and foam.radii.max() <= 5.0
    assert np.sum(foam.radii < 3) > np.sum(foam.radii > 4)  # many small, few big
    with caplog.at_level(logging.WARNING, logger="mixscale.synthetic.foam"):
        full = foam_phantom((4, 32, 32), seed=0, n_voids=1000, min_radius=3.0, max_radius=3.0)
    assert 0 < full.n_voids < 1000
    assert f"placed {full.n_voids} of 1000 voids" in caplog.text
    assert foam_phantom((4, 32, 32), seed=0, n_voids=0).n_voids == 0


@pytest.mark.parametrize("kwargs, match", [
    ({"shape": (4, 32, 30)}, r"shape=\(4, 32, 30\) is not allowed; expected 3 positive integers \(Z, N, N\)"),
    ({"shape": (0, 32, 32)}, r"shape=\(0, 32, 32\) is not allowed"),
    ({"shape": (32, 32)}, r"shape=\(32, 32\) is not allowed"),
    ({"shape": 32}, r"shape=32 is not allowed"),
    ({"n_voids": -1}, r"n_voids=-1 is not allowed; expected an integer >= 0"),
    ({"min_radius": 5.0, "max_radius": 2.0}, r"min_radius=5.0 is not allowed; expected a number <= max_radius=2"),
    ({"max_radius": 0.5}, r"max_radius=0.5 is not allowed; expected a number >= min_radius=1 \(the default\)"),
    ({"min_radius": 0.0}, r"min_radius=0.0 is not allowed; expected a finite number > 0"),
    ({"max_radius": -1.0}, r"max_radius=-1.0 is not allowed"),
    ({"radius_fraction": 0.0}, r"radius_fraction=0.0 is not allowed; expected a finite number > 0 and <= 1"),
    ({"radius_fraction": 1.5}, r"radius_fraction=1.5 is not allowed"),
    ({"gap": -1.0}, r"gap=-1.0 is not allowed"),
])
def test_foam_phantom_rejects_bad_arguments(kwargs, match):
    kwargs = {"shape": (4, 32, 32), "seed": 0, **kwargs}
    with pytest.raises(ValueError, match=match):
        foam_phantom(**kwargs)


def test_to_dict_round_trips_through_json():
    foam = foam_phantom((6, 32, 32), seed=3, n_voids=30)
    back = Foam.from_dict(json.loads(json.dumps(foam.to_dict())))
    assert back == foam and back.shape == (6, 32, 32)
    np.testing.assert_array_equal(back.radii, foam.radii)
    with pytest.raises(ValueError, match="expected a dict with keys"):
        Foam.from_dict({"shape": [1, 8, 8]})


# -- slices -------------------------------------------------------------------------

def test_slices_hold_the_exact_material_area():
    foam = foam_phantom((12, 64, 64), seed=4, n_voids=150)
    slices = foam_slices(foam, z=[0, 5, 11])
    assert slices.shape == (3, 64, 64) and slices.dtype == np.float32
    assert slices.min() >= 0 and slices.max() <= 1
    for k, z in enumerate([0, 5, 11]):
        zc = z - (foam.shape[0] - 1) / 2
        area = np.pi * foam.radius**2
        for (cz, cy, cx), r in zip(foam.centres, foam.radii):
            if r > abs(zc - cz):
                area -= _lens_area(foam.radius, np.sqrt(r * r - (zc - cz) ** 2), np.hypot(cx, cy))
        assert slices[k].sum() == pytest.approx(area, rel=0.005)
    assert foam_slices(foam, z=5).shape == (1, 64, 64)
    np.testing.assert_array_equal(foam_slices(foam, z=slice(4, 6))[1], slices[1])


def test_slices_reject_bad_z():
    foam = foam_phantom((4, 16, 16), seed=0, n_voids=5)
    with pytest.raises(ValueError, match=r"z=4 is not allowed; expected an integer in \[0, 3\]"):
        foam_slices(foam, z=4)
    with pytest.raises(ValueError, match="supersample=0 is not allowed"):
        foam_slices(foam, supersample=0)


# -- sinograms ----------------------------------------------------------------------

def test_analytic_sinogram_matches_radon_of_a_finely_supersampled_slice():
    foam = foam_phantom((8, 64, 64), seed=5, n_voids=250)
    z = 3
    zc = z - (foam.shape[0] - 1) / 2
    assert np.sum(foam.radii > np.abs(zc - foam.centres[:, 0])) >= 80  # ~100 voids cut this slice
    angles = np.linspace(0, 180, 32, endpoint=False)
    analytic = foam_sinograms(foam, angles, z=z)[0]
    numerical = _numerical_sinogram(foam, z, angles)
    assert analytic.shape == (32, 64) and analytic.dtype == np.float32
    assert np.linalg.norm(analytic - numerical) / np.linalg.norm(numerical) < 0.01
    # even N: the axis is pixel N // 2, as in skimage (the slice centre would be 10 % off)
    coarse = radon(foam_slices(foam, z=z, supersample=8)[0].astype(np.float64), theta=angles, circle=True).T
    assert np.linalg.norm(analytic - coarse) / np.linalg.norm(coarse) < 0.03  # measured 1.3 %


def test_an_off_centre_void_fixes_the_orientation():
    # odd N: skimage's rotation axis (pixel N // 2) is then the slice centre itself
    foam = Foam((1, 33, 33), 15.0, np.array([[0.0, 5.0, 8.0]]), np.array([4.0]))
    angles = np.array([0.0, 45.0, 90.0, 135.0])
    analytic = foam_sinograms(foam, angles, supersample=8)[0]
    numerical = _numerical_sinogram(foam, 0, angles)
    assert np.linalg.norm(analytic - numerical) / np.linalg.norm(numerical) < 0.01
    # the void's shadow is centred at t = x cos + y sin (y up), bin k at t = k - N // 2
    empty = foam_sinograms(Foam((1, 33, 33), 15.0, np.zeros((0, 3)), np.zeros(0)), angles, supersample=8)[0]
    shadow = empty - analytic
    t = np.arange(33) - 16
    centroid = (shadow * t).sum(1) / shadow.sum(1)
    theta = np.deg2rad(angles)
    np.testing.assert_allclose(centroid, 8 * np.cos(theta) + 5 * np.sin(theta), atol=0.05)
    # radon of the coarse slice agrees too (to its interpolation error); a wrong direction is off by ~20 %
    coarse = radon(foam_slices(foam, supersample=8)[0].astype(np.float64), theta=angles, circle=True).T
    assert np.linalg.norm(analytic - coarse) / np.linalg.norm(coarse) < 0.02
    mirrored = foam_sinograms(foam, -angles, supersample=8)[0]
    assert np.linalg.norm(mirrored - numerical) / np.linalg.norm(numerical) > 0.1


def test_sinogram_shapes_clipping_and_errors():
    foam = foam_phantom((5, 32, 32), seed=6, n_voids=40)
    sino = foam_sinograms(foam, [0, 30, 60], z=[1, 2], n_det=40, supersample=2)
    assert sino.shape == (2, 3, 40)
    assert sino.min() >= -1e-4  # voids cut by the wall are clipped to the cylinder
    assert np.abs(sino[:, :, :4]).max() == 0  # beyond the cylinder
    for bad, match in [([[0, 1]], "angles=\\[\\[0.0, 1.0\\]\\] is not allowed; expected a 1D array"),
                       ([0, 400], "angles=\\[0.0, 400.0\\] is not allowed; expected .* within \\[-360, 360\\]"),
                       ([0, np.nan], "angles=\\[0.0, nan\\] is not allowed")]:
        with pytest.raises(ValueError, match=match):
            foam_sinograms(foam, bad)
    with pytest.raises(ValueError, match="n_det=0 is not allowed"):
        foam_sinograms(foam, [0], n_det=0)


# -- degradations -------------------------------------------------------------------

def test_poisson_noise_mean_variance_and_seed():
    foam = foam_phantom((1, 32, 32), seed=7, n_voids=10)
    p = foam_sinograms(foam, [0, 60, 120])[0].astype(np.float64)  # (3, 32)
    photons, repeats = 2e4, 3000
    noisy = poisson_noise(np.broadcast_to(p, (repeats, *p.shape)), photons, seed=0)
    mu = 1.5 / p.max()
    expected_counts = photons * np.exp(-mu * p)
    assert expected_counts.min() == pytest.approx(photons * np.exp(-1.5))  # default: thickest chord at 22 %
    variance = 1 / (mu**2 * expected_counts)
    bias = 1 / (2 * mu * expected_counts)
    mean = noisy.mean(0)
    assert np.all(np.abs(mean - (p + bias)) < 5 * np.sqrt(variance / repeats))
    np.testing.assert_allclose(noisy.var(0) / variance, 1, atol=0.15)
    np.testing.assert_array_equal(poisson_noise(p, photons, seed=1), poisson_noise(p, photons, seed=1))
    assert not np.array_equal(poisson_noise(p, photons, seed=1), poisson_noise(p, photons, seed=2))
    assert poisson_noise(p.astype(np.float32), photons, seed=1).dtype == np.float32
    starved = poisson_noise(p, 1.0, seed=0, attenuation=1.0)  # zero counts clamp to one
    assert np.isfinite(starved).all() and starved.max() <= 0.0 + 1e-12


@pytest.mark.parametrize("photons", [0, -5, float("inf")])
def test_poisson_noise_rejects_bad_photons(photons):
    with pytest.raises(ValueError, match=f"photons={photons!r} is not allowed; expected a finite number > 0"):
        poisson_noise(np.zeros((2, 4)), photons, seed=0)


def test_angle_subsets_are_an_interleaved_partition():
    subsets = angle_subsets(64, 4)
    assert len(subsets) == 4 and all(s.shape == (16,) for s in subsets)
    np.testing.assert_array_equal(np.sort(np.concatenate(subsets)), np.arange(64))
    for j, s in enumerate(subsets):
        np.testing.assert_array_equal(s, np.arange(j, 64, 4))
    with pytest.raises(ValueError, match=r"splits k=3 does not divide the 64 angles; choose one of \[2, 4, 8, 16, 32, 64\]"):
        angle_subsets(64, 3)
    with pytest.raises(ValueError, match="k=1 is not allowed; expected an integer >= 2"):
        angle_subsets(64, 1)
