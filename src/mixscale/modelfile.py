"""The model file: weights in safetensors, everything else as JSON in its header.

A model file carries no code. Loading parses a JSON header and raw tensors; it
never unpickles, so a file from an untrusted source cannot run anything. The
metadata holds a format version, the network name and constructor arguments, the
task, class names, normalisation statistics and the training configuration.
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

from .nets import create_net

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
METADATA_KEY = "mixscale"
TASKS = ("segmentation", "regression", "detection")  # detection: a patch classifier, class 0 = background


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
    class_names : list of str or None
        One name per output class (segmentation; detection, where class 0 is background).
    normalization : dict or None
        Input statistics, ``{"mean": [...], "std": [...]}`` per input channel.
    target_normalization : dict or None
        Target statistics for regression; outputs are de-normalised with them.
    train_config : dict
        The resolved training configuration.
    format_version : int
    """

    net_name: str
    net_config: dict
    task: str = "segmentation"
    class_names: list[str] | None = None
    normalization: dict | None = None
    target_normalization: dict | None = None
    train_config: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def spatial_dims(self) -> int:
        return int(self.net_config.get("spatial_dims", 2))


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

    if info.task not in TASKS:
        raise ValueError(f"task={info.task!r} is not allowed; expected one of {list(TASKS)}")
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {METADATA_KEY: json.dumps(info.__dict__, allow_nan=True)}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
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
    net = create_net(info.net_name, **info.net_config)
    state = load_file(str(path), device="cpu")
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"model file {path} does not match network {info.net_name!r}: "
                         f"missing {missing}, unexpected {unexpected}")
    return net.to(device).eval(), info


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


def _info_from_header(header: dict, path) -> ModelInfo:
    meta = header.get("__metadata__") or {}
    if METADATA_KEY not in meta:
        raise ValueError(f"{path} is a safetensors file without mixscale metadata")
    data: dict[str, Any] = json.loads(meta[METADATA_KEY])
    version = data.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"{path} has model format_version={version!r}; this mixscale reads versions "
                         f"<= {FORMAT_VERSION}: upgrade mixscale")
    known = set(ModelInfo.__dataclass_fields__)
    return ModelInfo(**{k: v for k, v in data.items() if k in known})
