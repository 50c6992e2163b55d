"""The Python API: the one place where configs and files become objects.

``train`` a network from a config, ``predict`` with a model file (in memory, or
``predict_blocks`` into a zarr store for data larger than memory), ``detect``
objects with a detection model, ``evaluate`` a prediction against ground truth,
``info`` about an image or model file. The CLI, the recipes and (later) the
napari plugin are thin layers over these functions.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from ._checks import check_bool, check_choice, check_device, not_allowed
from .predict.blocks import predict_blocks

__all__ = ["calibrate", "detect", "ensemble", "evaluate", "export", "flatten_scalars", "gui", "import_package", "image_name", "info", "open_blocks", "open_image", "to_ome_zarr", "predict", "predict_blocks", "predict_training", "train", "write_metrics"]

logger = logging.getLogger(__name__)


def train(config, *, overrides: Sequence[str] = (), resume: bool = False, callbacks: Sequence = ()):
    """Train a network.

    Parameters
    ----------
    config : str, Path, dict or TrainConfig
        A YAML file, a plain dict or a validated config.
    overrides : sequence of str
        ``"key.sub=value"`` settings applied on top of the config.
    resume : bool
        Continue the run in ``config.run_dir`` from its last checkpoint.
    callbacks : sequence of lightning.pytorch.Callback
        Extra Lightning callbacks (progress for a GUI, a stop flag, a search's pruning).

    Returns
    -------
    mixscale.train.RunResult
    """
    from .train import build_run, fit

    cfg = _train_config(config, overrides)
    if cfg.ensemble.members > 1:
        return _train_members(cfg, resume=resume, callbacks=callbacks)
    if cfg.ensemble.bootstrap:  # one member: its bootstrap is the data's
        cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"bootstrap": True})})
    return fit(build_run(cfg, resume=resume), callbacks=callbacks)


def _member_config(cfg, index: int):
    """Member ``index`` of an ensemble run: its own seed and run directory (and graph, for random nets;
    and a bootstrap of the data with ``ensemble.bootstrap``)."""
    from .nets import net_defaults

    raw = cfg.model_dump(mode="json")
    raw["seed"] = cfg.seed + index
    raw["run_dir"] = str(Path(cfg.run_dir) / f"member_{index}")
    raw["ensemble"] = {"members": 1}
    if cfg.ensemble.bootstrap:
        raw["data"]["bootstrap"] = True
    if "seed" in net_defaults(cfg.net.name):  # smsnet, random_unet: the seed draws the architecture
        raw["net"]["seed"] = int(raw["net"].get("seed", 0)) + index
    return type(cfg).model_validate(raw)


def _train_members(cfg, *, resume: bool, callbacks: Sequence):
    """Train ``cfg.ensemble.members`` members, each a normal resumable run, then write the ensemble file.

    With ``resume``, finished members (with a model file) are kept, an interrupted one resumes from its
    last checkpoint, and the others start.
    """
    from .model import save_ensemble
    from .train import RunResult, build_run, fit
    from .train.checkpoints import newest_intact_checkpoint

    run_dir = Path(cfg.run_dir)
    if not resume and run_dir.exists() and any(run_dir.iterdir()):
        raise FileExistsError(f"run directory {run_dir} exists and is not empty; choose another run_dir "
                              "or pass --resume to continue it")
    results, epochs = [], []
    for i in range(cfg.ensemble.members):
        member = _member_config(cfg, i)
        done = Path(member.run_dir) / "model.safetensors"
        if resume and done.is_file():
            logger.info("member %d: already trained (%s)", i, done)
            results.append(done)
            continue
        again = resume and newest_intact_checkpoint(Path(member.run_dir)) is not None
        logger.info("member %d of %d: seed %d, %s", i + 1, cfg.ensemble.members, member.seed, member.run_dir)
        run = fit(build_run(member, resume=again), callbacks=callbacks)
        results.append(run.model_path)
        epochs.append(run.epochs)
    path = save_ensemble(run_dir / "ensemble.safetensors", results)
    return RunResult(run_dir, path, None, Path(cfg.run_dir) / "member_0" / "checkpoints" / "last.ckpt",
                     Path(cfg.run_dir) / "member_0" / "logs" / "metrics.csv", None, min(epochs, default=0))


def _train_config(config, overrides: Sequence[str]):
    """A path, a dict or a TrainConfig, with overrides applied, validated."""
    from .config import TrainConfig, apply_overrides, load_config, validate_config

    if isinstance(config, (str, os.PathLike)):
        cfg = load_config(config, overrides)
    elif isinstance(config, dict):
        cfg = validate_config(apply_overrides(config, overrides))
    elif isinstance(config, TrainConfig):
        cfg = validate_config(apply_overrides(config.model_dump(mode="json"), overrides))
    else:
        raise TypeError(f"config must be a path, a dict or a TrainConfig, got {type(config).__name__}")
    return cfg


def predict(model, image, output=None, *, device: str = "cpu", slice_axis: int | None = None, batch_size: int = 1,
            probabilities: bool = False, overwrite: bool = False, channel_axis: int | None = None,
            tile_shape: Sequence[int] | int | None = None, overlap: float = 0.25,
            blend: str = "gaussian", tta: bool = False, uncertainty: bool = False, sets: bool = False,
            risk_mask: bool = False, lower_bound: Sequence[float] | None = None, **block_options):
    """Apply a model file (or an ensemble file) to an image, a stack or a volume.

    An ``output`` zarr store (``*.zarr``) switches to block-wise prediction with
    bounded memory, resumable and optionally distributed:
    :func:`mixscale.predict.predict_blocks` (its options, such as
    ``block_shape``, ``scheduler``, ``blocks_in_flight``, ``num_parts``, ``part_id``
    ``progress``, ``on_block`` and ``should_stop``, pass through ``block_options``); the result is then the lazily
    opened ``labels`` (or ``prediction``) zarr array.

    Parameters
    ----------
    model : str or Path
        A ``model.safetensors`` written by :func:`train`.
    image : str, Path or ndarray
        A file address (any supported format) or an array ``(*spatial)``, or with
        a channel axis (see ``channel_axis``) for multi-channel models.
    output : str or Path, optional
        Where to write the result (any supported format; written atomically).
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``...
    slice_axis : int, optional
        For a 2D model and a 3D input: predict slice by slice along this axis (CLI: ``--axis``).
    batch_size : int
        Slices per forward pass.
    probabilities : bool
        Return class probabilities ``(C, *spatial)`` float32 instead of labels.
    overwrite : bool
        Replace an existing ``output`` (otherwise that is an error).
    channel_axis : int, optional
        Axis of ``image`` holding channels; default: none for single-channel
        models, axis 0 for multi-channel ones.
    tile_shape : int or sequence of int, optional
        Predict in tiles of this shape (per slice for a 2D model on a volume), each
        read with the network's receptive-field halo, blended where they overlap:
        the result equals whole-image prediction with far less memory.
    overlap : float in [0, 1)
        Fraction of a tile shared with its neighbours.
    blend : {"gaussian", "constant"}
    tta : bool
        Test-time augmentation: average over the 8 flips/rotations (2D) or axis
        flips (3D).
    uncertainty : bool
        Statistics over an ensemble's members (or, with ``tta``, the transforms):
        ``prob_mean``, ``prob_std`` (ddof=1), ``entropy``, ``mutual_info`` beside
        ``labels`` (regression: ``prediction_std``); needs a ``.zarr`` output or none.
    sets : bool
        Conformal prediction sets of a calibrated model (:func:`calibrate`): ``sets`` (a
        bitmask, bit ``y`` for class ``y``) and ``set_size``; needs a ``.zarr`` output or none.
    risk_mask : bool
        The class mask of a model calibrated with conformal risk control (``calibrate(...,
        fnr_class=...)``): ``risk_mask`` where ``p_c >= 1 - lambda``, so that the expected share
        of the class's pixels it misses is at most the calibrated ``fnr_alpha``.
    lower_bound : (k, threshold), optional
        ``lower_bound`` ``(K, *spatial)`` uint8: class ``c`` where ``mean - k * std >
        threshold`` over an ensemble's members (or the transforms, with ``tta``); ``std``
        is the members' spread (ddof=1), so the rule means the same for any number of members.

    Returns
    -------
    ndarray
        Labels ``(*spatial)`` as uint8 (uint16 above 256 classes), probabilities,
        or the de-normalised regression output ``(C, *spatial)`` (squeezed when C = 1);
        with ``uncertainty`` (and no output) a dict of those arrays.
    """
    from .data import output_exists, write_image
    from .data.io import carried_geometry
    from .data.guard import check_not_input
    from .model import open_model
    from .predict import predict_array

    check_not_input(image, output)

    if output is not None and Path(output).suffix == ".zarr":
        summary = predict_blocks(model, image, output, device=device, slice_axis=slice_axis, batch_size=batch_size,
                                 probabilities=probabilities, overwrite=overwrite, channel_axis=channel_axis,
                                 tile_shape=tile_shape, overlap=overlap, blend=blend, tta=tta,
                                 uncertainty=uncertainty, sets=sets, risk_mask=risk_mask,
                                 lower_bound=lower_bound, **block_options)
        return _open_block_result(summary)
    if block_options:
        raise TypeError(f"unknown argument(s) {sorted(block_options)}: block-wise options need a .zarr output")
    device = check_device(device)
    if (uncertainty or sets or risk_mask or lower_bound is not None) and output is not None:
        raise ValueError(f"output={str(output)!r}: uncertainty, set and mask arrays are written to a zarr store; give an "
                         "output ending in .zarr, or none to get them as arrays")
    if output is not None and not overwrite and output_exists(str(output)):
        raise FileExistsError(f"output {output} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    loaded = open_model(model, device=device)
    result = predict_array(loaded, _read_array(image), device=device, slice_axis=slice_axis, batch_size=batch_size,
                           probabilities=probabilities, channel_axis=channel_axis, tile_shape=tile_shape,
                           overlap=overlap, blend=blend, tta=tta, uncertainty=uncertainty, sets=sets,
                           risk_mask=risk_mask, lower_bound=lower_bound)
    if output is not None:
        write_image(str(output), result, overwrite=overwrite, **carried_geometry(image, output))
        logger.info("prediction written to %s (%s, %s)", output, result.shape, result.dtype)
    return result


def gui(image=None, *, run: bool = True):
    """Open napari with mixscale's "Train & predict" widget (and ``image``, if given).

    Parameters
    ----------
    image : str, optional
        A file napari or mixscale's reader opens (TIFF, zarr, a prediction store...).
    run : bool
        Start napari's event loop (returns when the window closes); False returns at once.

    Returns
    -------
    napari.Viewer

    Raises
    ------
    mixscale.MissingExtraError
        napari or a Qt binding is missing; the message names the extra to install.
    """
    from ._extras import require_extra

    require_extra("napari", "qtpy", "qtpy.QtWidgets", extra="napari,qt")
    import napari

    viewer = napari.Viewer(title="mixscale")
    if image is not None:
        text = str(image)
        path = Path(text)
        if path.suffix == ".safetensors" or (path / ".mixscale" / "done").is_dir():  # a model file, a store
            viewer.open(text, plugin="mixscale")
        else:  # any image mixscale reads (TIFF, zarr, HDF5 file.h5:/path, MRC, slices/*.tif), lazily
            viewer.add_image(open_image(text, dask=True), name=image_name(text),
                             metadata={"mixscale_address": text})
    viewer.window.add_plugin_dock_widget("mixscale", "Train & predict")
    if run:
        napari.run()
    return viewer


def open_image(address, *, dask: bool = False):
    """Open an image file lazily: nothing is read until it is sliced.

    Parameters
    ----------
    address : str
        Any address mixscale reads: ``image.tif``, ``file.h5:/entry/data``, ``volume.zarr``,
        ``tomo.mrc``, ``"slices/*.tif"``...
    dask : bool
        Return a dask array chunked by plane (whole planes of the last two axes), as a
        viewer wants it.

    Returns
    -------
    array-like
        ``shape``, ``dtype`` and NumPy slicing (:func:`mixscale.data.open_image`), or a
        ``dask.array.Array``.
    """
    from .data import open_image as _open

    arr = _open(address)
    if not dask:
        return arr
    import dask.array as da

    shape = tuple(arr.shape)
    chunks = (1,) * (len(shape) - 2) + shape[-2:] if len(shape) >= 3 else shape
    return da.from_array(arr, chunks=chunks, asarray=True, fancy=False)


def image_name(address: str) -> str:
    """A short name for an image address: the file's stem (``file.h5:/entry/data`` -> ``file``)."""
    text = str(address)
    file_part = text if Path(text).exists() else text.rsplit(":", 1)[0]
    return Path(file_part.rstrip("/")).stem


def open_blocks(output, name: str = "labels", *, offset: int = 0, missing: int = 0):
    """A live, lazy view of a block-wise prediction store being written (complete blocks only).

    Parameters
    ----------
    output : str or Path
        A ``*.zarr`` store of :func:`predict_blocks`.
    name : str
        A spatial output array: ``labels``, ``set_size``...
    offset : int
        Added to the values of complete blocks (a viewer numbering classes from 1 passes 1).
    missing : int
        The value of blocks not yet complete.

    Returns
    -------
    dask.array.Array
        Each compute reads the completion markers again.
    """
    from .infer.store import BlockStore

    return BlockStore(output).lazy(name, offset=offset, missing=missing)


def predict_training(module, image, *, slice_axis: int | None = None, channel_axis: int | None = None,
                     probabilities: bool = True):
    """Predict with the network of a run still training (a preview from a Lightning callback).

    Parameters
    ----------
    module : mixscale.train.MixscaleModule
        The ``pl_module`` a callback receives during :func:`train`; it carries the run's
        ``model_info`` (normalisation, classes), so the preview sees what the model file will.
    image : ndarray
        ``(*spatial)``, or with a channel axis; as for :func:`predict`.
    slice_axis, channel_axis
        As for :func:`predict`.
    probabilities : bool
        Class probabilities ``(C, *spatial)`` float32 (default), else labels.

    Returns
    -------
    ndarray
        As :func:`predict` gives for a model file of these weights. The network itself is not
        touched: a copy in eval mode runs without gradients.
    """
    import copy

    import torch

    from .model import Model
    from .predict import predict_array

    info = getattr(module, "model_info", None)
    if info is None:
        raise ValueError("module has no model_info: pass the pl_module of a run started by mixscale.api.train")
    net = copy.deepcopy(module.net).eval()
    device = str(next(net.parameters()).device)
    with torch.no_grad():
        return predict_array(Model(net, info), np.asarray(image), device=device, slice_axis=slice_axis,
                             channel_axis=channel_axis, probabilities=probabilities)


def detect(model, image, *, threshold: float = 0.5, min_distance: float = 3.0, stride=1, batch_size: int = 1024,
           tta: bool = False, device: str = "cpu", output=None, overwrite: bool = False,
           channel_axis: int | None = None, tile_shape: Sequence[int] | int | None = None,
           star: str | None = None, voxel_size=None, binning: float = 1.0) -> dict:
    """Find objects with a detection model (a patch classifier): points, classes, scores.

    Parameters
    ----------
    model : str or Path
        A ``model.safetensors`` trained with task ``detection``.
    image : str, Path or ndarray
        ``(*spatial)``, or with a channel axis for multi-channel models.
    output : str or Path, optional
        Write the detections (atomically) as a points CSV: ``y,x`` (or ``z,y,x``), ``class``,
        ``score``, readable as training points; or, ending in ``.star``, as a RELION STAR file
        (:mod:`mixscale.data.star`).
    overwrite : bool
        Replace an existing ``output``.
    threshold, min_distance, stride, batch_size, tta, device, channel_axis, tile_shape
        See :func:`mixscale.predict.detect_array`.
    star : {"relion5", "relion4"}, optional
        The STAR convention of a ``.star`` output; default ``relion5`` for a volume, ``relion4`` for a
        2D image (the only one for 2D).
    voxel_size : float or (z, y, x), optional
        Angstrom per voxel for ``relion5``; default: the size the image file records, in Angstrom.
    binning : float
        ``relion4``: pixels of the written coordinates per voxel of ``image``.

    Returns
    -------
    dict
        ``points`` (M, ndim) int64, ``classes`` (M,) int64, ``scores`` (M,) float32
        (highest first) and ``class_names``.
    """
    from .model import Model, is_ensemble_file
    from .predict import detect_array

    device = check_device(device)
    if output is not None and not overwrite and Path(output).exists():
        raise FileExistsError(f"output {output} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if star is not None and (output is None or Path(output).suffix.lower() != ".star"):
        raise not_allowed("star", star, "only with an output ending in .star")
    if is_ensemble_file(model):
        raise ValueError(f"{model} is an ensemble file; detect takes a single detection model file")
    loaded = Model.load(model, device=device)
    array = _read_array(image)
    write = None
    if output is not None:
        shape = array.shape if channel_axis is None else np.delete(array.shape, channel_axis).tolist()
        write = _points_writer(output, image, tuple(shape), star=star, voxel_size=voxel_size, binning=binning)
    result = detect_array(loaded, array, threshold=threshold, min_distance=min_distance,
                          stride=stride, batch_size=batch_size, tta=tta, device=device, channel_axis=channel_axis,
                          tile_shape=tile_shape)
    if write is not None:
        write(result)
        logger.info("%d detections written to %s", len(result["points"]), output)
    return result


def _points_writer(output, image, shape: tuple, *, star, voxel_size, binning):
    """What writes the detections to ``output``: a points CSV, or RELION STAR with the image's shape and
    voxel size in Angstrom, everything it needs checked now (before the detection runs)."""
    from .data import write_points_csv
    from .data.geometry import in_angstrom
    from .data.io import recorded_geometry
    from .data.star import star_coordinates, write_points_star

    if Path(output).suffix.lower() != ".star":
        return lambda r: write_points_csv(output, r["points"], r["classes"], r["scores"])
    convention = star or ("relion5" if len(shape) == 3 else "relion4")
    if voxel_size is None and convention == "relion5":
        found = recorded_geometry(image, len(shape))
        voxel_size = in_angstrom(found["voxel_size"], found.get("unit")) if found else None
    geometry = {"convention": convention, "shape": shape, "voxel_size": voxel_size, "binning": binning}
    star_coordinates(np.zeros((0, len(shape))), **geometry)  # refuses what the file could not hold
    stem = Path(str(image).split(":")[0]).name.split(".")[0] if isinstance(image, (str, os.PathLike)) else ""
    name = re.sub(r"[\s'\"]+", "_", stem) or "image"
    return lambda r: write_points_star(output, r["points"], r["classes"], r["scores"], name=name, **geometry)


def calibrate(model, images, labels, output, *, alpha: float | None = 0.1, score: str = "lac",
              per_class: bool = False, temperature: bool = True, label_convention: str = "dense",
              ignore_index: int = -1, slice_axis: int | None = None, channel_axis: int | None = None,
              min_count: int = 10, seed: int = 0, allow_training_images: bool = False, overwrite: bool = False,
              device: str = "cpu", fnr_class: int | str | None = None, fnr_alpha: float = 0.1,
              fnr_tile: Sequence[int] | int | None = None, **score_options) -> dict:
    """Calibrate a model (or ensemble) file on labelled images: temperature and conformal sets.

    Parameters
    ----------
    model : str or Path
    images, labels : address, array, or lists of them
        Calibration images and their labels (scribbles work: unlabelled pixels are skipped).
    output : str or Path
        The calibrated model file to write (the input file is left as it is).
    alpha : float in (0, 1), or None
        Miscoverage of the prediction sets: they hold the true class of a new labelled pixel
        with probability >= 1 - alpha (pixels exchangeable with the calibration pixels).
    score : {"lac", "aps", "raps"}
    per_class : bool
        Class-conditional thresholds (coverage per class).
    temperature : bool
        Fit temperature scaling by NLL first (on a random half of the labelled pixels).
    label_convention : {"dense", "scribble"}
    allow_training_images : bool
        Calibrating on training images breaks the guarantee; refused unless this is set.
    fnr_class : int or str, optional
        Also calibrate a mask of this class (index or name) by conformal risk control:
        ``predict(..., risk_mask=True)`` then marks ``p_c >= 1 - lambda``, missing on average
        at most ``fnr_alpha`` of the class's pixels of a new image (or tile).
    fnr_alpha : float in (0, 1)
    fnr_tile : int or sequence of int, optional
        Risk control over tiles of this shape rather than over whole images (slices).
    **score_options
        ``randomized=True`` (APS, RAPS), ``lam`` and ``k_reg`` (RAPS).

    Returns
    -------
    dict
        The calibration record (also stored in ``output``).
    """
    from .data import array_sha256, prepare_labels
    from .infer.conformal import check_alpha
    from .model import open_model
    from .model.ensemble import write_calibrated
    from .uq.calibrate import calibrate as fit
    from .uq.calibrate import check_calibratable

    if alpha is not None:
        check_alpha(alpha)
    check_choice("label_convention", label_convention, ("dense", "scribble"))
    if Path(output).exists() and not overwrite:
        raise FileExistsError(f"output {output} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    loaded = open_model(model, device=check_device(device))
    check_calibratable(loaded)
    arrays = [_read_array(a) for a in _as_list(images)]
    targets = [prepare_labels(_read_array(y), num_classes=loaded.out_channels, convention=label_convention,
                              ignore_index=ignore_index) for y in _as_list(labels)]
    if len(arrays) != len(targets):
        raise ValueError(f"{len(arrays)} calibration images but {len(targets)} label files; they must pair up")
    trained_on = set(loaded.info.train_data_sha256 or ())
    for i, a in enumerate(arrays):
        if array_sha256(a) in trained_on and not allow_training_images:
            raise ValueError(f"calibration image {i} is one of the model's training images (same SHA-256): "
                             "calibration on training data breaks the coverage guarantee; use held-out images "
                             "(or allow_training_images=True, CLI --allow-training-images, to do it anyway)")
    record = fit(loaded, arrays, targets, alpha=alpha, score=score, per_class=per_class, temperature=temperature,
                 min_count=min_count, seed=seed, slice_axis=slice_axis, channel_axis=channel_axis,
                 ignore_index=ignore_index, device=device, score_options=score_options,
                 fnr_class=_class_index(loaded, fnr_class), fnr_alpha=fnr_alpha, fnr_tile=fnr_tile)
    write_calibrated(model, output, record)
    logger.info("calibrated model written to %s", output)
    return record


def _class_index(model, name) -> int | None:
    """A class given by index or by name -> its index (None stays None)."""
    if name is None or isinstance(name, int):
        return name
    names = model.class_names or []
    if str(name).isdigit():
        return int(name)
    if name not in names:
        raise not_allowed("fnr_class", name, f"a class index or one of the model's class names {names}")
    return names.index(name)


def _as_list(value) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def ensemble(members: Sequence, output, *, combine: str = "probabilities") -> Path:
    """Combine model files into one ensemble file (see :func:`mixscale.model.save_ensemble`)."""
    from .model import save_ensemble

    if Path(output).exists():
        raise FileExistsError(f"output {output} exists; choose another name")
    return save_ensemble(output, members, combine=combine)


def _read_array(image) -> np.ndarray:
    """A file address read whole, or an array as it is."""
    from .data import read_image

    return np.asarray(read_image(str(image))) if isinstance(image, (str, os.PathLike)) else np.asarray(image)


def _open_block_result(summary: dict):
    """The main array of a finished block-wise prediction, opened lazily."""
    import zarr

    group = zarr.open_group(summary["output"], mode="r")
    return group["prediction"] if "prediction" in group else group["labels"]


def evaluate(pred, target, *, num_classes: int | None = None, ignore_index: int = -1,
             label_convention: str = "dense", task: str = "segmentation", data_range: float | None = None,
             class_names: Sequence[str] | None = None, out: str | os.PathLike | None = None,
             figures: str | os.PathLike | None = None, image=None, panel_slice: int | None = None,
             overwrite: bool = False) -> dict:
    """Compare a prediction with ground truth on labelled pixels only.

    Parameters
    ----------
    pred, target : str, Path or ndarray
        Label maps (segmentation) or images (regression) of one shape. For
        segmentation ``pred`` may also be class probabilities ``(K, *target.shape)``
        (``predict --probabilities``): the labels are their argmax, and the report adds
        ``calibration`` (ECE, MCE, Brier, NLL, AUROC/AURC of the uncertainty against
        the pixel error; :func:`mixscale.metrics.calibration.calibration_report`).
        ``pred`` may also be a block-wise output store (``out.zarr``) or the dict
        :func:`predict` returns: its ``labels``, its probabilities (``prob_mean`` or
        ``probabilities``), and with ``--uncertainty`` the AUROC/AURC of ``mutual_info``
        and of ``std`` (the predicted class's ``prob_std``) too.
    figures : str or Path, optional
        A folder for ``reliability.png`` (with probabilities) and, given ``image`` and
        an ensemble's maps, ``uncertainty_panel.png`` (input | prediction | entropy |
        mutual information; slice ``panel_slice``, default the middle one, of a volume).
    image : str, Path or ndarray, optional
        The input image, for the uncertainty panel.
    num_classes : int, optional
        Inferred from the data when omitted (segmentation).
    label_convention : {"dense", "scribble"}
        How ``target`` marks unlabelled pixels.
    data_range : float, optional
        Required for regression (PSNR, SSIM); e.g. 1.0 or 255.
    out : path, optional
        Write the metrics as ``out`` (``.json`` or ``.csv``), through a temporary name.
    overwrite : bool
        Replace an existing ``out``; without it an existing file is refused before any work.

    Returns
    -------
    dict of metrics
    """
    from .data import prepare_labels
    from .metrics import image_report, segmentation_report

    check_choice("task", task, ("segmentation", "regression"))
    check_choice("label_convention", label_convention, ("dense", "scribble"))
    overwrite = check_bool("overwrite", overwrite)
    if out is not None:
        check_metrics_output(out, overwrite=overwrite)
    p, probs, maps = _prediction_parts(pred)
    t = _read_array(target)
    if probs is not None:
        num_classes = probs.shape[0] if num_classes is None else num_classes
    elif task == "segmentation" and np.issubdtype(p.dtype, np.floating) and p.ndim == t.ndim + 1:
        probs, p = p, p.argmax(0)
        num_classes = probs.shape[0] if num_classes is None else num_classes
    if probs is not None and probs.shape[0] != num_classes:
        raise ValueError(f"pred holds {probs.shape[0]} class probabilities but num_classes={num_classes}")
    if p.shape != t.shape:
        raise ValueError(f"pred has shape {p.shape} but target has shape {t.shape}; they must match")
    if task == "regression":
        if data_range is None:
            raise ValueError("data_range is required for task='regression' (e.g. 1.0 or 255)")
        report = image_report(p.astype(np.float64), t.astype(np.float64), data_range=data_range)
    else:
        if num_classes is None:
            top = int(max(p.max(), t.max()))
            num_classes = max(2, top + (0 if label_convention == "scribble" else 1))
        if not np.issubdtype(p.dtype, np.integer):
            raise ValueError(f"pred has dtype {p.dtype}; segmentation metrics need integer labels "
                             "(predict without --probabilities)")
        t = prepare_labels(t, num_classes=num_classes, convention=label_convention, ignore_index=ignore_index)
        report = segmentation_report(p.astype(np.int64), t, num_classes=num_classes, ignore_index=ignore_index,
                                     class_names=list(class_names) if class_names else None)
        if probs is not None:
            from .metrics.calibration import calibration_report

            others = {k: v for k, v in maps.items() if k in ("mutual_info", "std")}
            report["calibration"] = calibration_report(probs, t, ignore_index=ignore_index, uncertainties=others)
    if figures is not None:
        report["figures"] = _evaluation_figures(Path(figures), probs, t, maps, p, image=image,
                                                panel_slice=panel_slice, ignore_index=ignore_index,
                                                num_classes=num_classes)
    if out is not None:
        write_metrics(report, out, overwrite=overwrite)
    return report


def _prediction_parts(pred) -> tuple[np.ndarray, np.ndarray | None, dict[str, np.ndarray]]:
    """``pred`` (array, address, block store or predict's dict) -> (main array, probabilities, other maps)."""
    parts = pred
    if isinstance(pred, (str, os.PathLike)) and Path(pred).suffix == ".zarr" and Path(pred).is_dir():
        import zarr

        try:
            group = zarr.open_group(str(pred), mode="r")
        except (zarr.errors.BaseZarrError, FileNotFoundError):
            group = None  # an array store: read below as an image
        if group is not None and "labels" in group:
            parts = {name: group[name] for name in group.array_keys()}
    if not isinstance(parts, dict):
        return _read_array(parts), None, {}
    main = np.asarray(parts["labels"] if "labels" in parts else parts["prediction"])
    probs = next((np.asarray(parts[k], np.float32) for k in ("prob_mean", "probabilities") if k in parts), None)
    maps = {k: np.asarray(parts[k], np.float32) for k in ("entropy", "mutual_info") if k in parts}
    if "prob_std" in parts:
        std = np.asarray(parts["prob_std"], np.float32)
        maps["std"] = np.take_along_axis(std, main[None].astype(np.int64), 0)[0]
    return main, probs, maps


def _evaluation_figures(folder: Path, probs, target, maps: dict, labels, *, image, panel_slice, ignore_index,
                        num_classes) -> list[str]:
    """The reliability diagram and the uncertainty panel an evaluation can draw; their paths."""
    from .metrics.calibration import reliability
    from .viz import plot_reliability_diagram, plot_uncertainty_panel

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    if probs is not None:
        bins = reliability(probs, target, ignore_index=ignore_index)
        written.append(plot_reliability_diagram(bins, folder / "reliability.png"))
    if image is not None and {"entropy", "mutual_info"} <= set(maps):
        arrays = [np.asarray(_read_array(image)), labels, maps["entropy"], maps["mutual_info"]]
        if arrays[0].ndim == 3:
            j = arrays[0].shape[0] // 2 if panel_slice is None else panel_slice
            arrays = [a[j] for a in arrays]
        written.append(plot_uncertainty_panel(*arrays, folder / "uncertainty_panel.png", num_classes=num_classes))
    return [str(w) for w in written]


def check_metrics_output(path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """``path`` as a metrics output: it must end in .json or .csv, and exist only with ``overwrite``."""
    path = Path(path)
    if path.suffix not in (".json", ".csv"):
        raise not_allowed("out", str(path), "a metrics file ending in .json or .csv")
    if not overwrite and (path.exists() or path.is_symlink()):
        raise FileExistsError(f"output {path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    return path


def write_metrics(report: dict, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a metrics dict as JSON or as a two-column CSV of scalars, through a temporary name.

    An existing ``path`` is replaced only with ``overwrite`` (checked by the final rename
    itself, so a file that appears meanwhile is not replaced either).
    """
    from .data import atomic_path

    path = check_metrics_output(path, overwrite=check_bool("overwrite", overwrite))
    with atomic_path(path, replace=overwrite) as tmp:
        if path.suffix == ".json":
            tmp.write_text(json.dumps(_nan_to_none(report), indent=2, default=float))
        else:
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["metric", "value"])
                for k, v in flatten_scalars(report).items():
                    w.writerow([k, v])
    return path


def _nan_to_none(value):
    """NaN -> None so that the JSON is strict (``null``), recursively."""
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def flatten_scalars(report: dict, prefix: str = "") -> dict[str, float]:
    """Nested metric dicts -> ``{"per_class.circle.f1": 0.9, ...}``, scalars only."""
    flat = {}
    for k, v in report.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten_scalars(v, key + "."))
        elif isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
            flat[key] = float(v)
    return flat


def export(model, output, *, format: str | None = None, raw: bool = False, static: bool = False,
           **package) -> Path:
    """Export a model file to ONNX, TorchScript or a BioImage Model Zoo package, to run without mixscale.

    The exported graph takes ``(N, in_channels, *spatial)`` float32 in the training images' units and
    gives what ``predict`` gives before labels: class probabilities, or values in the target's units
    (``raw``: the network alone). Batch and spatial sizes are dynamic. See :mod:`mixscale.model.export`.

    Parameters
    ----------
    model : str or Path
        A model file (``.safetensors``; an ensemble is exported member by member).
    output : str or Path
        ``*.onnx`` or ``*.pt`` / ``*.ts`` (written to a temporary name, then renamed).
    format : {"onnx", "torchscript", "bioimageio"}, optional
        Default: from ``output``'s ending (``.zip``: a zoo package, see
        :mod:`mixscale.model.export.bioimageio`). ONNX and packages need the extra ``mixscale[onnx]``.
    raw : bool
    static : bool
        Fixed sizes (for nets with a fixed input shape: the autoencoder, the patch classifier).
    **package
        For packages: ``name``, ``description``, ``authors`` (tuple of str), ``license`` (SPDX).

    Returns
    -------
    Path
    """
    from .model import open_model
    from .model.export import export_model
    from .model.export.bioimageio import export_bioimageio, is_package

    if is_package(output, format):
        if raw or static:
            raise ValueError("a BioImage Model Zoo package holds the network with its pre- and postprocessing "
                             "and dynamic sizes: raw and static do not apply")
        return export_bioimageio(open_model(model), model, output, **package)
    if package:
        raise ValueError(f"{', '.join(sorted(package))}: only for a BioImage Model Zoo package; give an output "
                         "ending in .zip (or format='bioimageio')")
    return export_model(open_model(model), output, format=format, raw=raw, static=static)


def import_package(package, output, *, overwrite: bool = False) -> Path:
    """The mixscale model file attached to a zoo package from :func:`export`, checked against the
    package's test output (exactly) and written to ``output``."""
    from .model.export.bioimageio import import_package as _import

    return _import(package, output, overwrite=overwrite)


def to_ome_zarr(store, output, *, voxel_size=None, unit: str | None = None, levels: int | None = None) -> Path:
    """A finished block-wise prediction (``out.zarr``) as an NGFF 0.5 OME-Zarr image with a 2x pyramid.

    The image is the class probabilities (``c`` axis: the classes) or the regression prediction, else the
    prediction's input image; the labels go to ``labels/segmentation`` with a colour per class. Chunks are
    the prediction's blocks. See :mod:`mixscale.data.ome` for the reductions.

    Parameters
    ----------
    store : str or Path
        A complete block-wise output of :func:`predict`.
    output : str or Path
        A new ``*.zarr`` folder.
    voxel_size : float or (z, y, x), optional
        Default: the input's, when it records one (an MRC header in Angstrom, an OME-Zarr level).
    unit : str, optional
        NGFF space unit of ``voxel_size`` (``"micrometer"`` ...).
    levels : int, optional

    Returns
    -------
    Path
    """
    import zarr

    from .data import open_image
    from .data.io import recorded_geometry
    from .data.ome import write_ome_zarr
    from .infer.store import BlockStore

    blocks = BlockStore(store)
    plan = blocks.read_plan()
    if plan is None or "block_shape" not in plan:
        raise not_allowed("store", str(store), "a block-wise prediction store (predict -o out.zarr)")
    summary = blocks.summary()
    if not summary["blocks_complete"].endswith("(complete)"):
        raise ValueError(f"store {store} is not complete ({summary['blocks_complete']}): finish the prediction "
                         "first (rerun the same predict command)")
    group = zarr.open_group(str(store), mode="r")
    spatial = "zyx"[3 - len(plan["shape"]):]
    names = [n for n in ("probabilities", "prediction") if n in group.array_keys()]
    image = group[names[0]] if names else open_image(plan["image"])
    if not names and plan.get("channel_axis") is not None:
        raise ValueError("the prediction holds labels only and its input has channels: predict with "
                         "--probabilities to have an image for the OME-Zarr")
    axes = ("c" if image.ndim == len(spatial) + 1 else "") + spatial
    carried = recorded_geometry(plan["image"], len(spatial)) if voxel_size is None else {}
    unit = unit or carried.get("unit")
    labels = group["labels"] if "labels" in group.array_keys() else None
    chunks = ((1,) if "c" in axes else ()) + tuple(plan["block_shape"])
    return write_ome_zarr(output, image, axes=axes, labels=labels, voxel_size=voxel_size or carried.get("voxel_size"),
                          unit=unit, chunks=chunks, levels=levels, name=names[0] if names else "image",
                          class_names=plan.get("class_names"))


def info(address: str) -> dict:
    """Shape, dtype, chunks, format and size of an image file (read lazily), or a model file's metadata."""
    if str(address).endswith(".safetensors"):
        from .model.ensemble import describe_file

        return describe_file(address)  # the header only: nothing is allocated from what it says
    from .infer.store import BlockStore

    store = BlockStore(address)
    if store.read_plan() is not None:  # a block-wise prediction: how far it got, and from what
        return store.summary()
    from .data import image_info

    return image_info(str(address))
