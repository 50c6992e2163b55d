"""Simulated tomography of foams: phantoms, projections, reconstructions and baselines in one zarr store.

``mixscale simulate tomo`` calls :func:`simulate_tomo`. For each of ``objects`` foams
(:func:`mixscale.synthetic.foam_phantom`, one seed each) it writes, slab by slab:

``object{i}/phantom``
    The exact slices (supersampled disk cross-sections), the ground truth.
``object{i}/fbp_{n}``, ``object{i}/fbp_{m}``
    Filtered back-projection (ramp filter) from the few (``n``, over ``angular_range``
    degrees) and the many (``m``, over 180 degrees) projections.
``object{i}/subsets_{m}`` (with ``splits=K``)
    ``(K, Z, Y, X)``: FBP of each of the K interleaved subsets of the ``m`` angles, for
    Noise2Inverse (their mean is exactly ``fbp_{m}``: FBP is linear in the projections).
``object{i}/sirt_{n}``, ``object{i}/tv_{n}``
    Baselines from the few projections: SIRT with the iteration count, and FBP denoised by
    total variation with the weight, that give the best PSNR against the phantom on the
    tuning object (object 1, the validation object, when there are two or more).

Projections are line integrals computed analytically from the spheres
(:func:`mixscale.synthetic.foam_sinograms`), not by projecting the pixel grid that is
reconstructed (no "inverse crime"); with ``photons`` every scan has Poisson noise of
its own. The store is a block store (:class:`mixscale.infer.store.BlockStore`): each
slab is marked complete after its arrays are written, so a killed run resumes where
it stopped, a rerun with other settings is refused unless ``overwrite``, and
``overwrite`` never removes a folder that is not such a store.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .._checks import check_device, check_float, check_int, check_shape, not_allowed

logger = logging.getLogger(__name__)

PLAN_KIND = "a tomography simulation"
TUNED_FILE = ("tomography", "tuned.json")
TUNING_SLICES = 8  # central slices of the tuning object on which SIRT's iterations and TV's weight are chosen
SIRT_MAX_ITERATIONS = 400
TV_WEIGHTS = tuple(float(w) for w in np.geomspace(0.005, 5.0, 19))  # in units of the material's attenuation (1)


@dataclass(frozen=True)
class TomoSimulation:
    """What :func:`simulate_tomo` makes; checked as a whole before anything is written.

    Attributes
    ----------
    objects : int
        Foams, each from its own seed (object 0 to train, 1 to validate, 2 to test).
    shape : (Z, N, N)
        Slices per object and their side in pixels.
    angles : (n, m)
        The few and the many projection angles (n < m is usual, not required).
    photons : float or None
        Incoming photons per detector bin (Poisson noise); None: noise-free.
    angular_range : float
        Degrees covered by the few angles (limited-angle tomography below 180).
    splits : int or None
        K interleaved subsets of the many angles for Noise2Inverse; K must divide m.
    seed : int
    voids : int or None
        Voids per foam (default: :func:`mixscale.synthetic.foam_phantom`'s, 500).
    slab : int
        Slices per block: the unit written, resumed and held in memory.
    """

    objects: int = 3
    shape: tuple[int, int, int] = (16, 128, 128)
    angles: tuple[int, int] = (64, 1024)
    photons: float | None = None
    angular_range: float = 180.0
    splits: int | None = None
    seed: int = 0
    voids: int | None = None
    slab: int = 8

    def __post_init__(self):
        check_int("objects", self.objects, minimum=1)
        shape = check_shape("shape", self.shape, ndim=3, what="(Z, N, N)")
        if shape[1] != shape[2] or shape[1] < 8:
            raise not_allowed("shape", list(self.shape), "(Z, N, N) with square slices of side N >= 8")
        if not isinstance(self.angles, (tuple, list)) or len(self.angles) != 2:
            raise not_allowed("angles", self.angles, "two angle counts: the few and the many, e.g. [64, 1024]")
        for name, n in zip(("angles[0] (the few)", "angles[1] (the many)"), self.angles):
            check_int(name, n, minimum=2)
        if self.photons is not None:
            check_float("photons", self.photons, minimum=0, open_minimum=True)
        check_float("angular_range", self.angular_range, minimum=0, maximum=180, open_minimum=True)
        if self.splits is not None:
            self._check_splits()
        check_int("seed", self.seed, minimum=0)
        if self.voids is not None:
            check_int("voids", self.voids, minimum=0)
        check_int("slab", self.slab, minimum=1)
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "angles", tuple(int(n) for n in self.angles))

    def _check_splits(self) -> None:
        k, m = check_int("splits", self.splits, minimum=2, maximum=64), int(self.angles[1])
        if m % k:
            divisors = [d for d in range(2, min(m, 64) + 1) if m % d == 0]
            raise not_allowed("splits", k, f"a divisor of the {m} angles (angles[1]), such as {divisors[:8]}")

    @property
    def names(self) -> dict[str, str]:
        """Array name (inside an object's group) of each product."""
        n, m = self.angles
        names = {"phantom": "phantom", "few": f"fbp_{n}", "many": f"fbp_{m}", "sirt": f"sirt_{n}",
                 "tv": f"tv_{n}"}
        if self.splits:
            names["subsets"] = f"subsets_{m}"
        return names

    @property
    def slabs(self) -> list[slice]:
        z = self.shape[0]
        return [slice(s, min(s + self.slab, z)) for s in range(0, z, self.slab)]

    def plan(self) -> dict:
        blocks = 2 * self.objects * len(self.slabs)  # first products, then the tuned baselines
        return {"kind": PLAN_KIND, "blocks": blocks, **json.loads(json.dumps(asdict(self)))}


def scan_angles(spec: TomoSimulation) -> tuple[np.ndarray, np.ndarray]:
    """The few angles (over ``angular_range``) and the many (over 180 degrees), in degrees."""
    from ..tomo import parallel_angles

    return parallel_angles(spec.angles[0], spec.angular_range), parallel_angles(spec.angles[1], 180.0)


def _foam(spec: TomoSimulation, index: int):
    from ..synthetic import foam_phantom

    seed = int(np.random.SeedSequence([spec.seed, 0, index]).generate_state(1)[0])  # domain 0: foams
    kwargs = {} if spec.voids is None else {"n_voids": spec.voids}
    return foam_phantom(spec.shape, seed=seed, **kwargs)


def _measured(spec: TomoSimulation, foam, index: int, z: slice, which: int, angles: np.ndarray) -> np.ndarray:
    """Sinograms ``(len(z), A, N)`` of slices ``z``: analytic, with this scan's own Poisson noise."""
    from ..synthetic import foam_sinograms, poisson_noise

    sino = foam_sinograms(foam, angles, z=list(range(z.start, z.stop)))
    if spec.photons is None:
        return np.asarray(sino, np.float32)
    mu = 1.5 / (2 * foam.radius)  # one attenuation per simulation: the noise level never depends on the slab
    out = []
    for k, zi in enumerate(range(z.start, z.stop)):  # noise seeded per slice (domain 1): any slab sees the same
        seed = int(np.random.SeedSequence([spec.seed, 1, index, which, zi]).generate_state(1)[0])
        out.append(poisson_noise(sino[k:k + 1], spec.photons, seed=seed, attenuation=mu))
    return np.concatenate(out).astype(np.float32)


def _fbp(sinograms: np.ndarray, angles: np.ndarray, device: str) -> np.ndarray:
    import torch

    from ..tomo import fbp

    return fbp(torch.from_numpy(sinograms).to(device), angles).cpu().numpy().astype(np.float32)


def _first_products(spec, foam, index, z, angles, device) -> dict[str, np.ndarray]:
    """Phantom, FBP of both scans and (with splits) FBP of each subset of the many angles, for slab ``z``."""
    from ..synthetic import angle_subsets, foam_slices

    few, many = angles
    names = spec.names
    out = {names["phantom"]: np.asarray(foam_slices(foam, list(range(z.start, z.stop))), np.float32),
           names["few"]: _fbp(_measured(spec, foam, index, z, 0, few), few, device)}
    sino = _measured(spec, foam, index, z, 1, many)
    out[names["many"]] = _fbp(sino, many, device)
    if spec.splits:
        out[names["subsets"]] = np.stack([_fbp(np.ascontiguousarray(sino[:, idx]), many[idx], device)
                                          for idx in angle_subsets(len(many), spec.splits)])
    return out


def psnr(x: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB against ``reference`` with a data range of 1 (the material's attenuation)."""
    from ..metrics import psnr as psnr_db

    return psnr_db(x, reference, data_range=1.0)


def tune_baselines(spec: TomoSimulation, store_path: Path, *, device: str = "cpu", foam=None) -> dict:
    """SIRT's iteration count and TV's weight with the best PSNR against the phantom on the tuning object.

    The tuning object is object 1 (the validation object) when there are two or more,
    else object 0; its central :data:`TUNING_SLICES` slices are used. ``foam`` is that
    object's foam when the caller has it (it is made again otherwise).
    """
    import torch
    import zarr

    from ..tomo import denoise_tv, sirt

    index = 1 if spec.objects > 1 else 0
    z0 = max(0, spec.shape[0] // 2 - TUNING_SLICES // 2)
    z = slice(z0, min(spec.shape[0], z0 + TUNING_SLICES))
    group = zarr.open_group(str(store_path), mode="r")
    truth = np.asarray(group[f"object{index}/phantom"][z])
    few_fbp = torch.from_numpy(np.asarray(group[f"object{index}/{spec.names['few']}"][z])).to(device)
    few = scan_angles(spec)[0]
    foam = _foam(spec, index) if foam is None else foam
    sino = torch.from_numpy(_measured(spec, foam, index, z, 0, few)).to(device)
    scores: list[float] = []
    sirt(sino, few, iterations=SIRT_MAX_ITERATIONS, shape=spec.shape[1:],
         callback=lambda i, x: scores.append(psnr(x.cpu().numpy(), truth)))
    tv_scores = [psnr(denoise_tv(few_fbp, w).cpu().numpy(), truth) for w in TV_WEIGHTS]
    best_tv = int(np.argmax(tv_scores))
    tuned = {"object": index, "slices": [z.start, z.stop], "sirt_iterations": int(np.argmax(scores)) + 1,
             "sirt_psnr": float(max(scores)), "tv_weight": TV_WEIGHTS[best_tv], "tv_psnr": tv_scores[best_tv],
             "fbp_psnr": psnr(few_fbp.cpu().numpy(), truth)}
    if tuned["sirt_iterations"] == SIRT_MAX_ITERATIONS:
        logger.warning("SIRT was still improving at its cap of %d iterations: sirt_* arrays are of the cap",
                       SIRT_MAX_ITERATIONS)
    if best_tv in (0, len(TV_WEIGHTS) - 1):
        logger.warning("TV's best weight %.3g is at the end of the weights tried", tuned["tv_weight"])
    logger.info("baselines tuned on object %d: SIRT %d iterations (%.2f dB), TV weight %.3g (%.2f dB), "
                "FBP %.2f dB", index, tuned["sirt_iterations"], tuned["sirt_psnr"], tuned["tv_weight"],
                tuned["tv_psnr"], tuned["fbp_psnr"])
    return tuned


def _baselines(spec, foam, store_path, index, z, tuned, device) -> dict[str, np.ndarray]:
    """SIRT of the few-angle scan and TV of its FBP, for slab ``z`` of object ``index``."""
    import torch
    import zarr

    from ..tomo import denoise_tv, sirt

    few = scan_angles(spec)[0]
    sino = torch.from_numpy(_measured(spec, foam, index, z, 0, few)).to(device)
    fbp_few = zarr.open_array(store=str(store_path), path=f"object{index}/{spec.names['few']}", mode="r")[z]
    names = spec.names
    return {names["sirt"]: sirt(sino, few, iterations=tuned["sirt_iterations"],
                                shape=spec.shape[1:]).cpu().numpy().astype(np.float32),
            names["tv"]: denoise_tv(torch.from_numpy(np.asarray(fbp_few)).to(device),
                                    tuned["tv_weight"]).cpu().numpy().astype(np.float32)}


def _array_specs(spec: TomoSimulation):
    from ..infer.store import ArraySpec

    specs = []
    for i in range(spec.objects):
        for key, name in spec.names.items():
            lead = (spec.splits,) if key == "subsets" else ()
            specs.append(ArraySpec(f"object{i}/{name}", "float32", lead))
    return specs


def _read_tuned(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_tuned(path: Path, tuned: dict) -> None:
    from .._files import atomic_path

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(tuned, indent=1))


def simulate_tomo(out, spec: TomoSimulation | None = None, *, overwrite: bool = False, progress: bool = True,
                  device: str = "cpu", **settings) -> dict:
    """Write the foams, their reconstructions and the baselines into the zarr store ``out``.

    Parameters
    ----------
    out : str or Path
        A ``*.zarr`` folder (created; an existing one made for the same settings is resumed).
    spec : TomoSimulation, optional
        The settings; or give them as keywords (``objects=3, shape=(16, 128, 128), ...``).
    overwrite : bool
        Replace a store made for other settings (never a folder that is not such a store).
    progress : bool
        A progress bar over the slabs.
    device : str
        Where the reconstructions run (``"cpu"``, ``"cuda"``).

    Returns
    -------
    dict
        ``path``, ``arrays`` (names per object), ``tuned`` (:func:`tune_baselines`) and ``settings``.
    """
    from tqdm.auto import tqdm

    from ..infer.store import MARKER_DIR, BlockStore

    spec = spec if spec is not None else TomoSimulation(**settings)
    out = Path(out)
    if out.suffix != ".zarr":
        raise not_allowed("out", str(out), "a zarr store path ending in .zarr")
    device = check_device(device)  # before the store is touched
    n = spec.objects * len(spec.slabs)
    store = BlockStore.prepare(out, shape=spec.shape, block_shape=(spec.slab, *spec.shape[1:]),
                               arrays=_array_specs(spec), plan=spec.plan(), overwrite=overwrite)
    try:
        tuned_path = out.joinpath(MARKER_DIR[0], *TUNED_FILE)
        angles, done = scan_angles(spec), store.done()
        foams = [_foam(spec, i) for i in range(spec.objects)]
        _write_foams(spec, out, foams)
        with tqdm(total=2 * n, initial=len(done), unit="slab", desc="simulate", disable=not progress,
                  dynamic_ncols=True) as bar:
            _write_slabs(store, spec, done, bar, 0,
                         lambda i, z: _first_products(spec, foams[i], i, z, angles, device))
            tuned = _read_tuned(tuned_path)
            if tuned is None:
                bar.set_postfix_str("tuning SIRT and TV")
                tuned = tune_baselines(spec, out, device=device, foam=foams[1 if spec.objects > 1 else 0])
                _write_tuned(tuned_path, tuned)
            _write_slabs(store, spec, done, bar, n,
                         lambda i, z: _baselines(spec, foams[i], out, i, z, tuned, device))
    finally:
        store.unregister_writer()
    return {"path": str(out), "arrays": list(spec.names.values()), "tuned": tuned, "settings": spec.plan()}


def _write_slabs(store, spec: TomoSimulation, done: set[int], bar, offset: int, compute) -> None:
    """Every slab of every object not yet ``done``: ``compute(object, z) -> {name: array}``, written as block
    ``offset + object * slabs + slab`` (then marked complete)."""
    slabs = spec.slabs
    for i in range(spec.objects):
        for s, z in enumerate(slabs):
            index = offset + i * len(slabs) + s
            if index not in done:
                outputs = compute(i, z)
                store.write_block(index, (z, slice(None), slice(None)),
                                  {f"object{i}/{k}": v for k, v in outputs.items()})
                bar.update()


def _write_foams(spec: TomoSimulation, out: Path, foams: list) -> None:
    """Each object's spheres, angles and settings in its group's attributes (for the record; once per store)."""
    import zarr

    few, many = scan_angles(spec)
    for i, foam in enumerate(foams):
        group = zarr.open_group(str(out / f"object{i}"), mode="r+")
        if "foam" in group.attrs:
            continue
        group.attrs.update({"foam": foam.to_dict(), "angles_few_deg": few.tolist(),
                            "angles_many_deg": many.tolist(), "photons": spec.photons})
