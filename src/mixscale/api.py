"""The Python API: the one place where configs and files become objects.

``train`` a network from a config, ``predict`` with a model file (in memory, or
``predict_blocks`` into a zarr store for data larger than memory), ``evaluate`` a
prediction against ground truth, ``info`` about an image file. The CLI is a thin
layer over these functions.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .blockpredict import predict_blocks
from .pointdetect import detect, write_points_csv  # noqa: F401  (re-exported: api.detect)

logger = logging.getLogger(__name__)


def train(config, *, overrides: Sequence[str] = (), resume: bool = False):
    """Train a network.

    Parameters
    ----------
    config : str, Path, dict or TrainConfig
        A YAML file, a plain dict or a validated config.
    overrides : sequence of str
        ``"key.sub=value"`` settings applied on top of the config.
    resume : bool
        Continue the run in ``config.run_dir`` from its last checkpoint.

    Returns
    -------
    mixscale.train.RunResult
    """
    from .config import TrainConfig, apply_overrides, load_config, validate_config
    from .train import fit

    if isinstance(config, (str, os.PathLike)):
        cfg = load_config(config, overrides)
    elif isinstance(config, dict):
        cfg = validate_config(apply_overrides(config, overrides))
    elif isinstance(config, TrainConfig):
        cfg = validate_config(apply_overrides(config.model_dump(mode="json"), overrides))
    else:
        raise TypeError(f"config must be a path, a dict or a TrainConfig, got {type(config).__name__}")
    return fit(cfg, resume=resume)


def predict(model, image, output=None, *, device: str = "cpu", axis: int | None = None, batch_size: int = 1,
            probabilities: bool = False, overwrite: bool = False, channel_axis: int | None = None,
            tile_shape: Sequence[int] | int | None = None, overlap: float = 0.25,
            blend: str = "gaussian", tta: bool = False, **block_options):
    """Apply a model file to an image, a stack or a volume.

    An ``output`` zarr store (``*.zarr``) switches to block-wise prediction with
    bounded memory, resumable and optionally distributed:
    :func:`mixscale.blockpredict.predict_blocks` (its options, such as
    ``block_shape``, ``scheduler``, ``num_parts``, ``part_id`` and ``progress``,
    pass through ``block_options``); the result is then the lazily opened
    ``labels`` (or ``prediction``) zarr array.

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
    axis : int, optional
        For a 2D model and a 3D input: predict slice by slice along this axis.
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

    Returns
    -------
    ndarray
        Labels ``(*spatial)`` as uint8 (uint16 above 255 classes), probabilities,
        or the de-normalised regression output ``(C, *spatial)`` (squeezed when C = 1).
    """
    from .blockpredict import model_predictor, warn_if_not_tile_exact
    from .data import output_exists, read_image, write_image
    from .infer import predict_slices, predict_whole
    from .modelfile import load_model

    _refuse_detection_model(model)
    if output is not None and Path(output).suffix == ".zarr":
        summary = predict_blocks(model, image, output, device=device, axis=axis, batch_size=batch_size,
                                 probabilities=probabilities, overwrite=overwrite, channel_axis=channel_axis,
                                 tile_shape=tile_shape, overlap=overlap, blend=blend, tta=tta, **block_options)
        return _open_block_result(summary)
    if block_options:
        raise TypeError(f"unknown argument(s) {sorted(block_options)}: block-wise options need a .zarr output")
    device = check_device(device)
    if output is not None and not overwrite and output_exists(str(output)):
        raise FileExistsError(f"output {output} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    net, info = load_model(model, device=device)
    if (info.train_config.get("data") or {}).get("context_slices"):
        raise ValueError("this is a 2.5D model (context slices as channels): predict block-wise, with an output "
                         "ending in .zarr (CLI: -o out.zarr --axis 0)")
    array = np.asarray(read_image(str(image))) if isinstance(image, (str, os.PathLike)) else np.asarray(image)
    x = _model_input(array, info, axis=axis, channel_axis=channel_axis)
    predictor = model_predictor(net, info, tta=tta)
    if tile_shape is not None:
        warn_if_not_tile_exact(net)
        raw = _predict_tiles(predictor, x, info, axis=axis, device=device, tile_shape=tile_shape, overlap=overlap,
                             blend=blend, batch_size=batch_size, halo=int(getattr(net, "halo", 0)))
    elif info.spatial_dims == 2 and x.ndim == 4:
        raw = predict_slices(predictor, x, axis=axis, batch_size=batch_size, device=device)
    else:
        raw = predict_whole(predictor, x, device=device)
    result = _model_output(raw, info, probabilities=probabilities)
    if output is not None:
        write_image(str(output), result, overwrite=overwrite)
        logger.info("prediction written to %s (%s, %s)", output, result.shape, result.dtype)
    return result


def _refuse_detection_model(model) -> None:
    """A patch classifier gives points, not images: point to :func:`detect`."""
    from .modelfile import read_model_info

    if Path(model).is_file() and read_model_info(model).task == "detection":
        raise ValueError(f"{model} is a detection model (a patch classifier): it finds points, it does not map "
                         "images to images; use mixscale.api.detect (CLI: mixscale detect MODEL IMAGE -o points.csv)")


def _open_block_result(summary: dict):
    """The main array of a finished block-wise prediction, opened lazily."""
    import zarr

    group = zarr.open_group(summary["output"], mode="r")
    return group["prediction"] if "prediction" in group else group["labels"]


def _predict_tiles(predictor, x: np.ndarray, info, *, axis, device, tile_shape, overlap, blend,
                   batch_size, halo) -> np.ndarray:
    """Tiled prediction with the network's halo; slice by slice for a 2D model on a volume."""
    import torch

    from .infer import predict_slices, predict_tiled

    def tiled(batch: torch.Tensor) -> torch.Tensor:  # (B, C, *spatial), one tiled pass per image
        return torch.stack([predict_tiled(predictor, img, tile_shape=tile_shape, overlap=overlap, blend=blend,
                                          halo=halo, batch_size=batch_size, device=device) for img in batch])

    if info.spatial_dims == 2 and x.ndim == 4:
        return predict_slices(tiled, x, axis=axis)
    return tiled(torch.from_numpy(np.ascontiguousarray(x))[None])[0].numpy()


def check_device(device: str) -> str:
    """``device`` if torch knows it and it is available here; a clear ValueError otherwise."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device={device!r} is not allowed; expected cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} is not available: this torch build sees no CUDA GPU; use cpu")
    return str(dev)


def _model_input(array: np.ndarray, info, *, axis: int | None, channel_axis: int | None) -> np.ndarray:
    """Check an input against the model, add the channel axis, apply the stored normalisation."""
    from .data import Normalization, normalize

    cfg = info.net_config
    cin, dims = int(cfg.get("in_channels", 1)), info.spatial_dims
    if channel_axis is None and cin == 1:
        x = array[None]
    else:
        ax = 0 if channel_axis is None else channel_axis
        if not -array.ndim <= ax < array.ndim:
            raise ValueError(f"channel_axis={ax} is out of range for an input of shape {array.shape}")
        x = np.moveaxis(array, ax, 0)
    if x.shape[0] != cin:
        raise ValueError(f"input of shape {array.shape} has {x.shape[0]} channels; the model expects {cin}")
    spatial = x.ndim - 1
    if dims == 3 and spatial != 3:
        raise ValueError(f"input of shape {array.shape} is {spatial}D but the model is 3D; it needs a volume")
    if dims == 2 and spatial == 3 and axis is None:
        raise ValueError(f"input of shape {array.shape} is 3D but the model is 2D; pass axis=0 (CLI: --axis 0) "
                         "to predict it slice by slice along that axis")
    if spatial not in (2, 3) or (dims == 2 and spatial == 3 and axis not in (0, 1, 2)):
        raise ValueError(f"input of shape {array.shape} does not fit a {dims}D model (axis={axis})")
    if not np.isfinite(x).all():
        raise ValueError("input image contains NaN or infinite values")
    if info.normalization:
        x = normalize(x.astype(np.float32), Normalization.from_dict(info.normalization), channel_axis=0)
    return x.astype(np.float32, copy=False)


def _model_output(raw: np.ndarray, info, *, probabilities: bool) -> np.ndarray:
    """Probabilities -> labels (or kept); regression output -> the target's units."""
    from .data import Normalization, denormalize

    if info.task == "regression":
        out = raw
        if info.target_normalization:
            out = denormalize(raw, Normalization.from_dict(info.target_normalization), channel_axis=0)
        return out[0] if out.shape[0] == 1 else out
    if probabilities:  # the predictor already returns probabilities (see model_predictor)
        return raw.astype(np.float32)
    return raw.argmax(0).astype(np.uint8 if raw.shape[0] <= 256 else np.uint16)


def evaluate(pred, target, *, num_classes: int | None = None, ignore_index: int = -1,
             label_convention: str = "dense", task: str = "segmentation", data_range: float | None = None,
             class_names: Sequence[str] | None = None, out: str | os.PathLike | None = None) -> dict:
    """Compare a prediction with ground truth on labelled pixels only.

    Parameters
    ----------
    pred, target : str, Path or ndarray
        Label maps (segmentation) or images (regression) of one shape.
    num_classes : int, optional
        Inferred from the data when omitted (segmentation).
    label_convention : {"dense", "scribble"}
        How ``target`` marks unlabelled pixels.
    data_range : float, optional
        Required for regression (PSNR, SSIM); e.g. 1.0 or 255.
    out : path, optional
        Write the metrics as ``out`` (``.json`` or ``.csv``).

    Returns
    -------
    dict of metrics
    """
    from .data import prepare_labels, read_image
    from .metrics import image_report, segmentation_report

    load = lambda a: np.asarray(read_image(str(a))) if isinstance(a, (str, os.PathLike)) else np.asarray(a)  # noqa
    p, t = load(pred), load(target)
    if p.shape != t.shape:
        raise ValueError(f"pred has shape {p.shape} but target has shape {t.shape}; they must match")
    if task == "regression":
        if data_range is None:
            raise ValueError("data_range is required for task='regression' (e.g. 1.0 or 255)")
        report = image_report(p.astype(np.float64), t.astype(np.float64), data_range=data_range)
    elif task == "segmentation":
        if num_classes is None:
            top = int(max(p.max(), t.max()))
            num_classes = max(2, top + (0 if label_convention == "scribble" else 1))
        if not np.issubdtype(p.dtype, np.integer):
            raise ValueError(f"pred has dtype {p.dtype}; segmentation metrics need integer labels "
                             "(predict without --probabilities)")
        t = prepare_labels(t, num_classes=num_classes, convention=label_convention, ignore_index=ignore_index)
        report = segmentation_report(p.astype(np.int64), t, num_classes=num_classes, ignore_index=ignore_index,
                                     class_names=list(class_names) if class_names else None)
    else:
        raise ValueError(f"task={task!r} is not allowed; expected 'segmentation' or 'regression'")
    if out is not None:
        write_metrics(report, out)
    return report


def write_metrics(report: dict, path: str | os.PathLike) -> Path:
    """Write a metrics dict as JSON or as a two-column CSV of scalars (atomically)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix == ".json":
        tmp.write_text(json.dumps(_nan_to_none(report), indent=2, default=float))
    elif path.suffix == ".csv":
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["metric", "value"])
            for k, v in flatten_scalars(report).items():
                w.writerow([k, v])
    else:
        raise ValueError(f"metrics output {path} must end in .json or .csv")
    os.replace(tmp, path)
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


def info(address: str) -> dict:
    """Shape, dtype, chunks, format and size of an image file (read lazily), or a model file's metadata."""
    if str(address).endswith(".safetensors"):
        from .modelfile import load_model

        net, meta = load_model(address)
        shape = {"parameters": sum(p.numel() for p in net.parameters()),
                 "receptive_field": int(getattr(net, "receptive_field", 0)) or None}
        return {"format": "mixscale model", **{k: v for k, v in meta.__dict__.items() if k != "train_config"},
                **shape}
    from .infer.store import BlockStore

    store = BlockStore(address)
    if store.read_plan() is not None:  # a block-wise prediction: how far it got, and from what
        return store.summary()
    from .data import image_info

    return image_info(str(address))
