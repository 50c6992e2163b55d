"""Model files from anywhere: every malformed file is one :class:`InvalidModelFile`, found before anything is built.

A model file is read in three steps, each of which trusts nothing the step before has
not checked:

1. :func:`read_header`: the safetensors header by hand (its size against the file's,
   JSON only), every tensor entry (dtype, shape, offsets inside the file, the bytes
   the shape needs, no overlaps).
2. The metadata against a schema per format version (:class:`MetadataV2`,
   :class:`MetadataV1`; pydantic, ``extra="forbid"``, types and ranges): a list where
   an object belongs, ``null`` where a value belongs, an unknown network or constructor
   argument, an absurd number, are each a one-line reason.
3. :func:`planned_tensors`: the network the metadata describes is built on the
   ``meta`` device (no memory) under a budget of modules and elements set by the
   file's own tensors, so a header asking for a million channels or a billion layers
   stops at once; its tensor names and shapes must be the file's, the first
   difference named with both shapes. Only then is the network built for real.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..tasks import MODEL_TASKS

READABLE_VERSIONS = (1, 2)  # model file format versions this build reads
MAX_HEADER_BYTES = 100_000_000
MAX_INT = 2 ** 16  # any integer of a network's constructor arguments (channels, depth, sizes)
MAX_LIST = 4096
DTYPES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


class InvalidModelFile(ValueError):
    """This is not a valid mixscale model file: ``path`` and ``reason`` say where and why."""

    def __init__(self, path, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{path} is not a valid mixscale model file: {reason}")


# -- the metadata's schema ---------------------------------------------------------------
class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Normalization(_Strict):
    mean: list[float] = Field(min_length=1, max_length=MAX_LIST)
    std: list[float] = Field(min_length=1, max_length=MAX_LIST)

    @field_validator("mean", "std")
    @classmethod
    def _finite(cls, v):
        if not all(math.isfinite(x) for x in v):
            raise ValueError("values must be finite")
        return v


class Conformal(_Strict):
    alpha: float = Field(gt=0, lt=1)
    score: Literal["lac", "aps", "raps"]
    per_class: bool
    threshold: float | list[float]
    n: int = Field(ge=0)
    score_options: dict[str, bool | int | float] = Field(default_factory=dict)
    seed: int = Field(0, ge=0)


class Risk(_Strict):
    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    class_: int = Field(alias="class", ge=0)
    alpha: float = Field(gt=0, lt=1)
    lambda_: float = Field(alias="lambda", ge=0, le=1)
    n: int = Field(ge=0)
    loss: Literal["fnr"]
    unit: Literal["image", "tile"]
    tile_shape: list[int] | None


class Calibration(_Strict):
    temperature: float = Field(gt=0, le=1e6)
    pixels: int = Field(ge=0)
    data_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    conformal: Conformal | None = None
    risk: Risk | None = None


class MetadataV2(_Strict):
    """The metadata of format version 2 (what :func:`mixscale.model.save_model` writes)."""

    net_name: str
    net_config: dict[str, Any]
    task: Literal[tuple(MODEL_TASKS)] = "segmentation"
    class_names: list[str] | None = Field(None, max_length=65536)
    normalization: Normalization | None = None
    target_normalization: Normalization | None = None
    train_config: dict[str, Any] = Field(default_factory=dict)
    context_slices: int = Field(0, ge=0, le=64)
    slice_axis: int = Field(0, ge=0, le=2)
    train_data_sha256: list[str] | None = Field(None, max_length=1_000_000)
    calibration: Calibration | None = None
    format_version: Literal[2]
    splits: int = Field(0, ge=0, le=64)

    @field_validator("net_name")
    @classmethod
    def _known_net(cls, v):
        from ..nets import list_nets

        if v not in list_nets():
            raise ValueError(f"unknown network {v!r}; this mixscale knows {list_nets()}")
        return v

    @field_validator("net_config")
    @classmethod
    def _sizes(cls, v):
        _check_json_sizes(v, "net_config")
        return v

    @field_validator("train_data_sha256")
    @classmethod
    def _digests(cls, v):
        if v is not None and not all(isinstance(d, str) and len(d) == 64 for d in v):
            raise ValueError("each entry must be a SHA-256 hex digest")
        return v


class MetadataV1(MetadataV2):
    """Format version 1: no ``context_slices``/``slice_axis`` fields (they lived in ``train_config``)."""

    context_slices: None = Field(None, exclude=True)
    slice_axis: None = Field(None, exclude=True)
    format_version: Literal[1]


def _check_json_sizes(value, where: str) -> None:
    """No integer above :data:`MAX_INT` in magnitude, no list longer than :data:`MAX_LIST`, anywhere."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return
    if isinstance(value, int):
        if abs(value) > MAX_INT:
            raise ValueError(f"{where}={value} is out of range (at most {MAX_INT} in magnitude)")
        return
    if isinstance(value, list):
        if len(value) > MAX_LIST:
            raise ValueError(f"{where} is a list of {len(value)} entries (at most {MAX_LIST})")
        for i, item in enumerate(value):
            _check_json_sizes(item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, item in value.items():
            _check_json_sizes(item, f"{where}.{k}")
        return
    raise ValueError(f"{where} holds a {type(value).__name__}")


def validated_metadata(data, path) -> dict:
    """The metadata dict, checked against the schema of its format version; InvalidModelFile otherwise."""
    if not isinstance(data, dict):
        raise InvalidModelFile(path, f"its metadata is a JSON {type(data).__name__}, not an object")
    version = data.get("format_version")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise InvalidModelFile(path, f"model format_version={version!r}; this mixscale reads versions "
                                     f"{list(READABLE_VERSIONS)}: upgrade mixscale")
    schema = MetadataV2 if version == 2 else MetadataV1
    try:
        schema.model_validate(data)
    except ValidationError as exc:
        raise InvalidModelFile(path, first_error(exc)) from None
    out = dict(data)  # the schema forbids other keys (and version 1's layout fields are lifted later)
    unknown = set(out["net_config"]) - set(_constructor_arguments(out["net_name"]))
    if unknown:
        raise InvalidModelFile(path, f"net_config has argument(s) {sorted(unknown)} that network "
                                     f"{out['net_name']!r} does not take")
    return out


def _constructor_arguments(name: str) -> list[str]:
    from ..nets import net_defaults

    return list(net_defaults(name))


def first_error(exc: ValidationError) -> str:
    """The first of a schema's complaints, as one line naming the field."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "metadata"
    return f"{where}: {err['msg']} (got {_short(err.get('input'))})"


def _short(value) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- the header and its tensors ------------------------------------------------------------
def read_header(path) -> tuple[dict, dict[str, dict], int]:
    """The parsed safetensors header of ``path``: ``(metadata strings, tensor entries, data start)``.

    Every tensor entry is checked: a known dtype, a shape of non-negative integers,
    offsets inside the file that hold exactly the shape's bytes, no two overlapping.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    file_size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else -1
        if not 1 < size <= min(MAX_HEADER_BYTES, file_size - 8):
            raise InvalidModelFile(path, "no safetensors header (a pickled checkpoint? those are refused, since "
                                         "loading them can run code; or a truncated file)")
        raw = f.read(size)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise InvalidModelFile(path, f"unreadable safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise InvalidModelFile(path, f"the safetensors header is a JSON {type(header).__name__}, not an object")
    meta = header.pop("__metadata__", None) or {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise InvalidModelFile(path, "the safetensors __metadata__ must map names to strings")
    _check_entries(header, path, data_bytes=file_size - 8 - size)
    return meta, header, 8 + size


def _check_entries(entries: dict, path, *, data_bytes: int) -> None:
    spans = []
    for name, entry in entries.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise InvalidModelFile(path, f"tensor {name!r} has a malformed header entry")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in DTYPES:
            raise InvalidModelFile(path, f"tensor {name!r} has an unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                  for n in shape):
            raise InvalidModelFile(path, f"tensor {name!r} has a malformed shape {_short(shape)}")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
            raise InvalidModelFile(path, f"tensor {name!r} has malformed data_offsets {_short(offsets)}")
        begin, end = offsets
        if not 0 <= begin <= end <= data_bytes:
            raise InvalidModelFile(path, f"tensor {name!r} lies at bytes {begin}..{end}, outside the file's "
                                         f"{data_bytes} bytes of tensor data (truncated or corrupted)")
        if end - begin != math.prod(shape) * DTYPES[dtype]:
            raise InvalidModelFile(path, f"tensor {name!r} of shape {shape} ({dtype}) needs "
                                         f"{math.prod(shape) * DTYPES[dtype]} bytes, the file gives it {end - begin}")
        spans.append((begin, end, name))
    spans.sort()
    for (_, end, a), (begin, _, b) in zip(spans, spans[1:]):
        if begin < end:
            raise InvalidModelFile(path, f"tensors {a!r} and {b!r} overlap in the file")


class _Budget(Exception):
    """Raised inside a network's constructor when it grows past what the file holds."""


def planned_tensors(name: str, config: dict, *, budget_tensors: int, budget_elements: int,
                    path) -> tuple[dict[str, tuple[tuple[int, ...], Any]], Any]:
    """Build network ``name`` on the ``meta`` device, within a budget: its state-dict shapes and the net.

    Returns
    -------
    shapes : dict
        ``{tensor name: (shape, dtype)}`` of the network's state dict.
    net : nn.Module
        The network on the meta device (no memory): parameter counts, receptive field.
    """
    import torch
    from torch.nn.modules import module as module_mod

    from ..nets import create_net

    counts = {"modules": 0, "elements": 0}
    max_modules = 16 * budget_tensors + 64

    def on_module(parent, key, sub):
        counts["modules"] += 1
        if counts["modules"] > max_modules:
            raise _Budget(f"more than {max_modules} modules for the file's {budget_tensors} tensors")

    def on_tensor(parent, key, tensor):
        if tensor is not None:
            counts["elements"] += tensor.numel()
            if counts["elements"] > budget_elements:
                raise _Budget(f"more than {budget_elements} elements, which is more than the file holds")
        return None

    handles = [module_mod.register_module_module_registration_hook(on_module),
               module_mod.register_module_parameter_registration_hook(on_tensor),
               module_mod.register_module_buffer_registration_hook(on_tensor)]
    try:
        with torch.device("meta"):
            net = create_net(name, **config)
    except _Budget as exc:
        raise InvalidModelFile(path, f"its net_config ({_short(config)}) describes a network larger than the "
                                     f"file's tensors: {exc}") from None
    except (TypeError, ValueError, KeyError, IndexError, ZeroDivisionError, RuntimeError, OverflowError) as exc:
        raise InvalidModelFile(path, f"network {name!r} cannot be built from net_config {_short(config)}: "
                                     f"{exc}") from None
    finally:
        for h in handles:
            h.remove()
    return {k: (tuple(v.shape), v.dtype) for k, v in net.state_dict().items()}, net


def check_tensors(planned: dict, entries: dict[str, dict], path, *, prefix: str = "") -> None:
    """The file's tensors (``entries``, names after ``prefix``) must be exactly the planned ones."""
    have = {k[len(prefix):]: v for k, v in entries.items() if k.startswith(prefix)}
    missing = [k for k in planned if k not in have]
    if missing:
        raise InvalidModelFile(path, f"tensor {prefix + missing[0]!r} of the network is missing from the file "
                                     f"({len(missing)} missing)")
    extra = [k for k in have if k not in planned]
    if extra:
        raise InvalidModelFile(path, f"tensor {prefix + extra[0]!r} in the file is not part of the network "
                                     f"({len(extra)} unexpected)")
    for key, (shape, dtype) in planned.items():
        if tuple(have[key]["shape"]) != shape:
            raise InvalidModelFile(path, f"tensor {prefix + key!r} has shape {tuple(have[key]['shape'])} in the "
                                         f"file but {shape} in the network its header describes")
        if have[key]["dtype"] not in _allowed_dtypes(dtype):
            raise InvalidModelFile(path, f"tensor {prefix + key!r} is {have[key]['dtype']} in the file; the "
                                         f"network holds {dtype}")


def _allowed_dtypes(dtype) -> tuple[str, ...]:
    import torch

    if dtype.is_floating_point:
        return ("F64", "F32", "F16", "BF16")
    return ("I64", "I32", "I16", "I8", "U8") if dtype != torch.bool else ("BOOL",)
