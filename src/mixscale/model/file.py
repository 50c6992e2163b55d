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

import json
import logging
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

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
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
    task : {"segmentation", "regression", "detection"}
        As recorded in the file (see :data:`mixscale.tasks.MODEL_TASKS`; detection: a
        patch classifier, class 0 = background).
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
        """Channels of the input image (2.5D stacks ``2k + 1`` slices of it as the network's channels)."""
        return self.in_channels // (2 * self.context_slices + 1)


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
    from safetensors.torch import save_file

    check_choice("task", info.task, MODEL_TASKS)
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {METADATA_KEY: json.dumps(info.__dict__, allow_nan=True)}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    logger.info("model written to %s (%s, %d tensors)", path, info.net_name, len(tensors))
    return path


def read_model_info(path: str | os.PathLike) -> ModelInfo:
    """Read only the metadata of a model file (no weights, no code)."""
    header = _read_header(Path(path))
    return _info_from_header(header, path)


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> tuple[nn.Module, ModelInfo]:
    """Rebuild the network of a model file and load its weights.

    Returns
    -------
    net : nn.Module
        In eval mode, on ``device``.
    info : ModelInfo
    """
    from safetensors.torch import load_file

    info = read_model_info(path)
    return build_net(info, load_file(str(path), device="cpu"), source=path).to(device).eval(), info


def build_net(info: ModelInfo, state: dict, *, source) -> nn.Module:
    """The network of ``info`` with the weights ``state`` (names must match exactly)."""
    net = create_net(info.net_name, **info.net_config)
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"model file {source} does not match network {info.net_name!r}: "
                         f"missing {missing}, unexpected {unexpected}")
    return net


def _read_header(path: Path) -> dict:
    """Parse the safetensors JSON header by hand, so nothing but JSON is ever decoded."""
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 1 < size < min(100_000_000, path.stat().st_size):
            raise ValueError(f"{path} is not a mixscale model file (safetensors header expected); "
                             "pickled checkpoints are refused because loading them can run code")
        raw = f.read(size)
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path} is not a mixscale model file: unreadable safetensors header ({exc})") from None


def header_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors ``__metadata__`` of a file (JSON only; no tensors read)."""
    return _read_header(Path(path)).get("__metadata__") or {}


def _info_from_header(header: dict, path) -> ModelInfo:
    meta = header.get("__metadata__") or {}
    if METADATA_KEY not in meta:
        raise ValueError(f"{path} is a safetensors file without mixscale metadata")
    return info_from_dict(json.loads(meta[METADATA_KEY]), path)


def info_from_dict(data: dict[str, Any], path) -> ModelInfo:
    """A :class:`ModelInfo` from its JSON form, of any readable format version."""
    version = data.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise ValueError(f"{path} has model format_version={version!r}; this mixscale reads versions "
                         f"{list(READABLE_VERSIONS)}: upgrade mixscale")
    if version == 1:
        data = _upgrade_v1(data)
    known = set(ModelInfo.__dataclass_fields__)
    return ModelInfo(**{k: v for k, v in data.items() if k in known})


def _upgrade_v1(data: dict) -> dict:
    """Version 1 kept the 2.5D layout only in the training config: lift it into fields of their own."""
    section = (data.get("train_config") or {}).get("data") or {}
    return {**data, "context_slices": int(section.get("context_slices") or 0),
            "slice_axis": int(section.get("slice_axis") or 0), "format_version": FORMAT_VERSION}
