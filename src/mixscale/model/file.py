"""The model file: weights in safetensors, everything else as JSON in its header.

A model file carries no code. Loading parses a JSON header and raw tensors; it
never unpickles, so a file from an untrusted source cannot run anything. The
metadata holds a format version, the network name and constructor arguments, the
task, class names, normalisation statistics, the 2.5D input layout and the
training configuration.

Format versions: 2 (written now) records ``context_slices`` and ``slice_axis``
as fields of their own; 1 kept them only inside the training configuration, and
is read by :func:`_upgrade_v1`, the one place that still looks there.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import check_choice
from ..data import atomic_path
from ..nets import create_net, net_defaults
from ..tasks import MODEL_TASKS
from .checks import READABLE_VERSIONS, InvalidModelFile, check_tensors, planned_tensors, read_header, validated_metadata

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
METADATA_KEY = "mixscale"


@dataclass
class ModelInfo:
    """Everything about a trained model except its weights.

    Attributes
    ----------
    net_name : str
        Registry name of the network.
    net_config : dict
        Constructor arguments of the network.
    task : {"segmentation", "regression", "detection", "noise2inverse"}
        As recorded in the file (see :data:`mixscale.tasks.MODEL_TASKS`; detection: a
        patch classifier, class 0 = background; noise2inverse: a regression on ``splits``
        subset reconstructions).
    class_names : list of str or None
        One name per output class (segmentation; detection, where class 0 is background).
    normalization : dict or None
        Input statistics, ``{"mean": [...], "std": [...]}`` per input channel.
    target_normalization : dict or None
        Target statistics for regression; outputs are de-normalised with them.
    train_config : dict
        The resolved training configuration (kept for the record; prediction reads
        only the fields above).
    context_slices : int
        2.5D input: neighbouring slices on each side stacked as channels (0: plain 2D/3D).
    slice_axis : int
        The axis of training volumes that 2D patches were sliced along.
    train_data_sha256 : list of str or None
        SHA-256 of each training image array (dtype, shape and bytes), so that
        calibration can refuse training images.
    splits : int
        Noise2Inverse: the input image holds this many reconstructions from disjoint
        projection subsets on its channel axis; the network sees the mean of all but
        one and prediction averages the combinations (0: an ordinary model).
    calibration : dict or None
        Set by :func:`mixscale.api.calibrate`: ``temperature`` and/or ``conformal``
        (``alpha``, ``score``, ``threshold`` (one value or one per class), ``n``,
        ``data_sha256``, score options).
    format_version : int
    """

    net_name: str
    net_config: dict
    task: str = "segmentation"
    class_names: list[str] | None = None
    normalization: dict | None = None
    target_normalization: dict | None = None
    train_config: dict = field(default_factory=dict)
    context_slices: int = 0
    slice_axis: int = 0
    train_data_sha256: list[str] | None = None
    calibration: dict | None = None
    format_version: int = FORMAT_VERSION
    splits: int = 0

    @property
    def net_arguments(self) -> dict:
        """Every constructor argument of the network: the file's, over the constructor's own defaults."""
        return {**net_defaults(self.net_name), **self.net_config}

    @property
    def spatial_dims(self) -> int:
        return int(self.net_arguments["spatial_dims"])

    @property
    def in_channels(self) -> int:
        """Channels the network takes (2.5D: ``(2 * context_slices + 1)`` times the image's)."""
        return int(self.net_arguments["in_channels"])

    @property
    def out_channels(self) -> int:
        return int(self.net_arguments["out_channels"])

    @property
    def image_channels(self) -> int:
        """Channels of the input image (2.5D stacks ``2k + 1`` slices of it as the network's channels;
        Noise2Inverse takes ``splits`` subset reconstructions, whose means the network sees)."""
        return self.splits or self.in_channels // (2 * self.context_slices + 1)

    def record(self) -> dict:
        """The JSON form written into the file (``splits`` only where it is set)."""
        return {k: v for k, v in self.__dict__.items() if not (k == "splits" and not v)}


def save_model(path: str | os.PathLike, net: nn.Module, info: ModelInfo) -> Path:
    """Write ``net`` and ``info`` to ``path`` (atomically: temporary name, then rename).

    Parameters
    ----------
    path : path-like
        Output file, conventionally ``*.safetensors``.
    net : nn.Module
        A registered network (it must have a ``config()`` method).
    info : ModelInfo

    Returns
    -------
    Path of the written file.
    """
    check_choice("task", info.task, MODEL_TASKS)
    validated_metadata(info.record(), path)  # a file this writes is one every loader accepts
    _check_facts(info, path)
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {METADATA_KEY: json.dumps(info.record(), allow_nan=True)}
    write_safetensors(path, tensors, meta, what="model file")
    logger.info("model written to %s (%s, %d tensors)", path, info.net_name, len(tensors))
    return path


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str], *,
                      what: str = "file") -> Path:
    """Write a safetensors file through a temporary name; a failed write raises one clear ``OSError``.

    The bytes are serialised in memory and written with Python's own file calls (and
    flushed to disk), so a full disk or a missing permission is an ``OSError`` with
    its ``errno`` (safetensors' own writer reports it as a ``SafetensorError``), naming
    ``path``; nothing is left under ``path`` or the temporary name.

    Parameters
    ----------
    path : path-like
    tensors : dict of str to Tensor
        Contiguous CPU tensors.
    metadata : dict of str to str
    what : str
        The file in words, for the error message, e.g. ``"model file"``.

    Returns
    -------
    Path of the written file.
    """
    from safetensors.torch import save

    path = Path(path)
    data = save(tensors, metadata=metadata)
    try:
        with atomic_path(path) as tmp:
            _write_synced(tmp, data)
    except OSError as exc:
        raise _write_error(exc, path, what) from None
    return path


def _write_synced(path: Path, data: bytes) -> None:
    """Write ``data`` and flush it to the device (a full disk may only show at the flush)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_error(exc: OSError, path: Path, what: str) -> OSError:
    """One line that names ``path`` (not the temporary name) and the cause."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        cause = "no space left on the device" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        return OSError(exc.errno, f"{cause} to write {what} {path}; nothing was written under that name: "
                                  "free space and retry")
    return OSError(exc.errno, f"cannot write {what} {path}: {exc.strerror or exc}")


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """Read only the metadata of a model file (no weights, no code), checked (:mod:`mixscale.model.checks`)."""
    meta, _, _ = read_header(path)
    return _info_from_meta(meta, path)


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelInfo]:
    """Rebuild the network of a model file and load its weights.

    The header, the metadata and the tensors' names and shapes are checked before the
    network is built (a malformed file raises :class:`InvalidModelFile`); the tensors
    are read once.

    Returns
    -------
    net : nn.Module
        In eval mode, on ``device``.
    info : ModelInfo
    """
    meta, entries, _ = read_header(path)
    info = _info_from_meta(meta, path)
    plan_net(info, entries, source=path)
    return build_net(info, load_tensors(path), source=path).to(device).eval(), info


def plan_net(info: ModelInfo, entries: dict, *, source, prefix: str = ""):
    """Check the file's tensor entries (names after ``prefix``) against the network ``info`` describes,
    built on the meta device within a budget the entries set; the meta network (no memory)."""
    mine = [e for k, e in entries.items() if k.startswith(prefix)]
    elements = sum(math.prod(e["shape"]) for e in mine)
    planned, net = planned_tensors(info.net_name, info.net_config, budget_tensors=len(mine),
                                   budget_elements=2 * elements + 65536, path=source)
    check_tensors(planned, entries, source, prefix=prefix)
    return net


def load_tensors(path) -> dict[str, torch.Tensor]:
    """Every tensor of a checked safetensors file, read once, on the CPU."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidModelFile(path, f"its tensors cannot be read ({exc})") from None


def build_net(info: ModelInfo, state: dict, *, source) -> nn.Module:
    """The network of ``info`` with the weights ``state`` (names must match exactly; checked first by
    :func:`plan_net`)."""
    net = create_net(info.net_name, **info.net_config)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InvalidModelFile(source, f"its tensors do not match network {info.net_name!r}: missing {missing}, "
                                       f"unexpected {unexpected}")
    return net


def header_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors ``__metadata__`` of a file (JSON only; no tensors read), checked."""
    return read_header(path)[0]


def parse_json(text: str, path, what: str):
    """JSON from a metadata string; InvalidModelFile naming ``what`` otherwise."""
    try:
        return json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidModelFile(path, f"its {what} is not JSON ({exc})") from None


def _info_from_meta(meta: dict, path) -> ModelInfo:
    if METADATA_KEY not in meta:
        kind = "an ensemble file (open it with open_model)" if "mixscale_ensemble" in meta else \
            "a safetensors file without mixscale metadata"
        raise InvalidModelFile(path, f"it is {kind}")
    return info_from_dict(parse_json(meta[METADATA_KEY], path, "metadata"), path)


def info_from_dict(data: Any, path) -> ModelInfo:
    """A :class:`ModelInfo` from its JSON form, of any readable format version, checked against its schema."""
    data = validated_metadata(data, path)
    if data["format_version"] == 1:
        data = _upgrade_v1(data, path)
    info = ModelInfo(**data)
    _check_facts(info, path)
    return info


def _check_facts(info: ModelInfo, path) -> None:
    """Facts that must agree with each other (each is valid alone): channels, names, statistics."""
    try:
        channels, classes = info.in_channels, info.out_channels
    except (TypeError, ValueError) as exc:
        raise InvalidModelFile(path, f"net_config gives no usable channel counts ({exc})") from None
    if not isinstance(channels, int) or not isinstance(classes, int) or channels < 1 or classes < 1:
        raise InvalidModelFile(path, f"net_config has in_channels={channels!r}, out_channels={classes!r}")
    if (info.task == "noise2inverse") != (info.splits >= 2):
        raise InvalidModelFile(path, f"task {info.task!r} with splits={info.splits}: a Noise2Inverse model needs "
                                     "splits >= 2, and only a Noise2Inverse model has splits")
    if info.splits and channels != 2 * info.context_slices + 1:
        raise InvalidModelFile(path, f"a Noise2Inverse model (splits={info.splits}) takes one image channel: "
                                     f"in_channels={channels} should be 2 * context_slices + 1 = "
                                     f"{2 * info.context_slices + 1}")
    if channels % (2 * info.context_slices + 1):
        raise InvalidModelFile(path, f"in_channels={channels} is not a multiple of 2 * context_slices + 1 = "
                                     f"{2 * info.context_slices + 1}")
    if info.class_names is not None and len(info.class_names) != classes:
        raise InvalidModelFile(path, f"{len(info.class_names)} class_names for out_channels={classes}")
    for key, want in (("normalization", info.image_channels), ("target_normalization", classes)):
        stats = getattr(info, key)
        if stats and not len(stats["mean"]) == len(stats["std"]) == want:
            raise InvalidModelFile(path, f"{key} has {len(stats['mean'])} means and {len(stats['std'])} stds; "
                                         f"{want} expected")
        if stats and not all(v > 0 for v in stats["std"]):
            raise InvalidModelFile(path, f"{key}.std must be positive, got {stats['std']}")
    _check_calibration_facts(info.calibration, classes, path)


def _check_calibration_facts(calibration: dict | None, classes: int, path) -> None:
    conformal = (calibration or {}).get("conformal")
    if conformal and isinstance(conformal["threshold"], list) and len(conformal["threshold"]) != classes:
        raise InvalidModelFile(path, f"calibration.conformal.threshold has {len(conformal['threshold'])} "
                                     f"values for {classes} classes")
    risk = (calibration or {}).get("risk")
    if risk and risk["class"] >= classes:
        raise InvalidModelFile(path, f"calibration.risk.class={risk['class']} is not one of the {classes} classes")


def _upgrade_v1(data: dict, path=None) -> dict:
    """Version 1 kept the 2.5D layout only in the training config: lift it into fields of their own."""
    section = (data.get("train_config") or {}).get("data") or {}
    if not isinstance(section, dict):
        raise InvalidModelFile(path, "train_config.data must be an object")
    lifted = {"context_slices": section.get("context_slices") or 0, "slice_axis": section.get("slice_axis") or 0}
    for key, top in (("context_slices", 64), ("slice_axis", 2)):
        value = lifted[key]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
            raise InvalidModelFile(path, f"train_config.data.{key}={value!r} is not an integer in 0..{top}")
    return {**data, **lifted, "format_version": FORMAT_VERSION}
