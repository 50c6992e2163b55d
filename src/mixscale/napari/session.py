"""What the plugin decides, without Qt or napari: checks of scribbles, the training config, CLI lines.

Everything here takes plain arrays and values, so it is tested without a display, and the
widgets (:mod:`mixscale.napari.widgets`) stay a thin layer of buttons around it.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# model presets: the network part of a config (anything else comes from the widget's fields)
PRESETS = {
    "MS-D 50": {"name": "msd", "depth": 50},
    "MS-D 100": {"name": "msd", "depth": 100},
    "U-Net small": {"name": "unet", "depth": 3, "base_channels": 16},
}
# above this many bytes an image counts as large: scribbles go into a zarr store, not memory
LARGE_BYTES = 256 * 2**20
LAYER_NAMES = ("scribbles", "prediction", "uncertainty", "probabilities")


class ScribbleError(ValueError):
    """Scribbles that cannot train a model; the message says what to paint."""


@dataclass(frozen=True)
class Settings:
    """The widget's training fields.

    Attributes
    ----------
    preset : str
        A key of :data:`PRESETS`.
    spatial_dims : {2, 3}
        2: the net sees slices (of a volume, along axis 0); 3: sub-volumes.
    epochs, patch, batch_size, samples_per_epoch : int
    device : str
        ``"cpu"``, ``"cuda"``...
    """

    preset: str = "MS-D 50"
    spatial_dims: int = 2
    epochs: int = 30
    patch: int = 64
    batch_size: int = 4
    samples_per_epoch: int = 64
    device: str = "cpu"


def class_counts(scribbles, *, chunk_planes: int = 16) -> np.ndarray:
    """Painted pixels per value of a scribbles array, read a few planes at a time.

    Parameters
    ----------
    scribbles : (*spatial) array-like of int
        0 = unlabelled, 1..K classes; any array that slices into NumPy (zarr included).
    chunk_planes : int
        Planes along axis 0 read at once (a zarr-backed volume is never read whole).

    Returns
    -------
    (K + 1,) ndarray of int64
        ``counts[k]`` pixels of class ``k``; ``counts[0]`` the unlabelled ones.

    Examples
    --------
    >>> class_counts(np.array([[0, 1, 1], [2, 0, 0]])).tolist()
    [3, 2, 1]
    """
    arr = scribbles
    if getattr(arr, "ndim", 0) < 3:
        return np.bincount(np.asarray(arr).ravel().astype(np.int64))
    counts = np.zeros(1, np.int64)
    for start in range(0, arr.shape[0], chunk_planes):
        part = np.bincount(np.asarray(arr[start:start + chunk_planes]).ravel().astype(np.int64))
        size = max(len(part), len(counts))
        counts = np.pad(counts, (0, size - len(counts))) + np.pad(part, (0, size - len(part)))
    return counts


def check_scribbles(image_shape, scribbles) -> list[int]:
    """The classes painted, or a :class:`ScribbleError` saying what is missing.

    Parameters
    ----------
    image_shape : tuple of int
        The image's shape (without channels).
    scribbles : (*spatial) array-like of int
        The ``scribbles`` layer's data.

    Returns
    -------
    list of int
        Classes 1..K with at least one painted pixel.

    Raises
    ------
    ScribbleError
        Another shape than the image, nothing painted, one class only, or a negative value.
    """
    if tuple(scribbles.shape) != tuple(image_shape):
        raise ScribbleError(f"the scribbles layer has shape {tuple(scribbles.shape)} but the image has "
                            f"{tuple(image_shape)}: make a new scribbles layer for this image")
    if np.issubdtype(np.dtype(scribbles.dtype), np.signedinteger) and np.asarray(scribbles).min() < 0:
        raise ScribbleError("the scribbles hold negative values; use 0 for unlabelled and 1, 2, ... for classes")
    counts = class_counts(scribbles)
    painted = [k for k in range(1, len(counts)) if counts[k] > 0]
    if not painted:
        raise ScribbleError("nothing is painted yet: paint at least two classes (1, 2, ...) on the scribbles layer")
    if len(painted) < 2:
        raise ScribbleError(f"only class {painted[0]} is painted: paint at least one more class, so the model has "
                            "something to tell it from")
    return painted


def training_config(*, run_dir, image: str, labels: str, num_classes: int, class_names: list[str],
                    settings: Settings, init_from: str | None = None) -> dict:
    """The config of a training run on a scribbled image (a plain dict, as ``mixscale train`` reads it).

    Parameters
    ----------
    run_dir : str or Path
    image, labels : str
        Addresses of the image and of the scribbles (0 = unlabelled, 1..K).
    num_classes : int
        K.
    class_names : list of str
        K names.
    settings : Settings
    init_from : str, optional
        A model file to start from (Continue training).

    Returns
    -------
    dict
        Validated later by :func:`mixscale.api.train`; 20 % of the painted pixels are held out
        for the validation loss.
    """
    if settings.preset not in PRESETS:
        raise ValueError(f"preset={settings.preset!r} is not allowed; expected one of {list(PRESETS)}")
    patch = [int(settings.patch)] * int(settings.spatial_dims)
    config = {
        "run_dir": str(run_dir),
        "task": "segmentation",
        "data": {"train_images": image, "train_labels": labels, "label_convention": "scribble",
                 "num_classes": int(num_classes), "class_names": list(class_names), "split": "pixels",
                 "val_fraction": 0.2, "spatial_dims": int(settings.spatial_dims), "patch_shape": patch,
                 "batch_size": int(settings.batch_size), "samples_per_epoch": int(settings.samples_per_epoch),
                 "val_samples": 16},
        "net": dict(PRESETS[settings.preset]),
        "trainer": {"max_epochs": int(settings.epochs), "progress_bar": False, **_device(settings.device)},
    }
    if init_from is not None:
        config["init_from"] = str(init_from)
    return config


def _device(device: str) -> dict:
    """Trainer settings for ``"cpu"``, ``"cuda"`` or ``"cuda:i"``."""
    if device == "cpu":
        return {"accelerator": "cpu"}
    if device == "cuda":
        return {"accelerator": "gpu", "devices": 1}
    if device.startswith("cuda:") and device[5:].isdigit():
        return {"accelerator": "gpu", "devices": [int(device[5:])]}
    raise ValueError(f"device={device!r} is not allowed; expected 'cpu', 'cuda' or 'cuda:<index>'")


def cli_commands(config_path, image: str, output: str) -> str:
    """The command lines that repeat this training and prediction (for a cluster or a script).

    Examples
    --------
    >>> print(cli_commands("work/run_001/config.yaml", "data.zarr", "out.zarr"))
    mixscale train work/run_001/config.yaml
    mixscale predict work/run_001/model.safetensors data.zarr -o out.zarr
    """
    model = Path(config_path).parent / "model.safetensors"
    return (f"mixscale train {shlex.quote(str(config_path))}\n"
            f"mixscale predict {shlex.quote(str(model))} {shlex.quote(image)} -o {shlex.quote(output)}")


def uncertainty(probabilities: np.ndarray) -> np.ndarray:
    """``1 - max_c p_c`` per pixel: 0 where the model is sure, up to ``1 - 1/C``.

    Parameters
    ----------
    probabilities : (C, *spatial) ndarray

    Returns
    -------
    (*spatial) ndarray of float32
    """
    return (1.0 - np.asarray(probabilities, np.float32).max(axis=0)).astype(np.float32)


def next_run_dir(work: Path) -> Path:
    """``work/run_001``, ``run_002``...: the first that does not exist."""
    i = 1
    while (work / f"run_{i:03d}").exists():
        i += 1
    return work / f"run_{i:03d}"
