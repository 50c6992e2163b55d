"""An ensemble: several trained models of one task as one file and one :class:`Model`.

Members may have any architectures; they must agree on the task, the classes, the
image channels, the spatial dims and the 2.5D context. Each keeps its own
normalisation (input and target), applied inside the ensemble's predictor, so the
ensemble takes the raw image like a single model's :meth:`Model.prepare` would.

The file is a safetensors file like a model file: the members' tensors under
``m{i}.`` prefixes and a JSON manifest (each member's metadata and the SHA-256 of
the file it came from). Loading parses JSON and raw tensors only; nothing is
unpickled.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import nn

from .._files import file_sha256
from ..nets import release_scratch
from .checks import Calibration, InvalidModelFile, first_error, read_header
from .file import (build_net, header_metadata, info_from_dict, load_tensors, parse_json, plan_net, read_model_info,
                   write_safetensors)
from .model import Model, channel_affine, member_statistics_predictor

logger = logging.getLogger(__name__)

ENSEMBLE_KEY = "mixscale_ensemble"
ENSEMBLE_VERSION = 1
#: how member outputs become the ensemble's: the mean of probabilities (default) or of logits
COMBINE = ("probabilities", "logits")
#: the facts every member must share, as (name, how to read it from a ModelInfo)
_SHARED = (("task", lambda i: i.task), ("class_names", lambda i: i.class_names),
           ("image channels", lambda i: i.image_channels),
           ("out_channels", lambda i: i.out_channels), ("spatial_dims", lambda i: i.spatial_dims),
           ("context_slices", lambda i: i.context_slices))


class _Member(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    info: dict  # checked by info_from_dict against the model metadata schema
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    source: str


class EnsembleManifest(BaseModel):
    """The schema of an ensemble file's manifest."""

    model_config = ConfigDict(extra="forbid", strict=True)
    format_version: int
    members: list[_Member] = Field(min_length=2, max_length=1024)
    combine: str = Field("probabilities", pattern="^(probabilities|logits)$")
    calibration: Calibration | None = None


def is_ensemble_file(path: str | os.PathLike) -> bool:
    """True for a file written by :func:`save_ensemble` (reads the JSON header only)."""
    return ENSEMBLE_KEY in header_metadata(path)


def check_members(infos: Sequence, names: Sequence[str]) -> None:
    """Every member agrees with the first on :data:`_SHARED`; the error names the member and both values."""
    if len(infos) < 2:
        raise ValueError(f"an ensemble needs at least 2 members, got {len(infos)}")
    for info, name in zip(infos[1:], names[1:]):
        for fact, read in _SHARED:
            if read(info) != read(infos[0]):
                raise ValueError(f"member {name} has {fact}={read(info)!r} but member {names[0]} has "
                                 f"{read(infos[0])!r}; ensemble members must agree on {fact}")


def save_ensemble(path: str | os.PathLike, members: Sequence[str | os.PathLike], *,
                  combine: str = "probabilities") -> Path:
    """Combine model files into one ensemble file (written atomically).

    Parameters
    ----------
    path : path-like
        The ensemble file, conventionally ``*.safetensors``.
    members : sequence of path-like
        Model files (single models) of one task, classes, channels and spatial dims.
    combine : {"probabilities", "logits"}
        The ensemble's class probabilities: the mean of the members' probabilities, or the
        softmax of the mean of their logits (spread, entropy and MI always come from the
        members' probabilities).
    """
    from safetensors.torch import load_file

    from .._checks import check_choice

    check_choice("combine", combine, COMBINE)
    names = [str(m) for m in members]
    for name in names:
        if is_ensemble_file(name):
            raise ValueError(f"member {name} is itself an ensemble; give its member model files")
    infos = [read_model_info(m) for m in names]
    check_members(infos, names)
    tensors, manifest = {}, []
    for i, (name, info) in enumerate(zip(names, infos)):
        for key, value in load_file(name, device="cpu").items():
            tensors[f"m{i}.{key}"] = value.contiguous()
        manifest.append({"info": info.record(), "sha256": file_sha256(name), "source": os.path.basename(name)})
    meta = {ENSEMBLE_KEY: json.dumps({"format_version": ENSEMBLE_VERSION, "members": manifest,
                                         "combine": combine}, allow_nan=True)}
    path = write_safetensors(path, tensors, meta, what="ensemble file")
    logger.info("ensemble of %d members written to %s", len(names), path)
    return path


def read_manifest(path: str | os.PathLike, meta: dict | None = None) -> dict:
    """The ensemble's JSON manifest, checked: ``format_version``, ``members`` (info, sha256, source),
    ``combine`` and ``calibration``."""
    meta = header_metadata(path) if meta is None else meta
    if ENSEMBLE_KEY not in meta:
        raise InvalidModelFile(path, "it is not a mixscale ensemble file")
    manifest = parse_json(meta[ENSEMBLE_KEY], path, "ensemble manifest")
    if not isinstance(manifest, dict):
        raise InvalidModelFile(path, f"its ensemble manifest is a JSON {type(manifest).__name__}, not an object")
    if manifest.get("format_version") != ENSEMBLE_VERSION or isinstance(manifest.get("format_version"), bool):
        raise InvalidModelFile(path, f"ensemble format_version={manifest.get('format_version')!r}; this mixscale "
                                     f"reads version {ENSEMBLE_VERSION}: upgrade mixscale")
    try:
        EnsembleManifest.model_validate(manifest)
    except ValidationError as exc:
        raise InvalidModelFile(path, first_error(exc)) from None
    return manifest


def checked_members(path, meta: dict | None = None, entries: dict | None = None) -> tuple[dict, list, list]:
    """An ensemble file's manifest, its members' infos and their networks on the meta device, every
    member's tensors checked against the header and no tensor left that belongs to no member."""
    if meta is None or entries is None:
        meta, entries, _ = read_header(path)
    manifest = read_manifest(path, meta)
    infos = [info_from_dict(e["info"], f"{path} (member {i})") for i, e in enumerate(manifest["members"])]
    nets = [plan_net(info, entries, source=f"{path} (member {i})", prefix=f"m{i}.") for i, info in enumerate(infos)]
    stray = [k for k in entries if not any(k.startswith(f"m{i}.") for i in range(len(infos)))]
    if stray:
        raise InvalidModelFile(path, f"tensor {stray[0]!r} belongs to no member")
    return manifest, infos, nets


class Ensemble(Model):
    """Members that predict together: mean probability (or mean output), and their spread.

    Parameters
    ----------
    members : list of Model
    source : str, optional
    """

    def __init__(self, members: list[Model], *, source: str | None = None, calibration: dict | None = None,
                 combine: str = "probabilities") -> None:
        from .._checks import check_choice

        check_members([m.info for m in members], [m.source or f"#{i}" for i, m in enumerate(members)])
        super().__init__(nn.ModuleList([m.net for m in members]), members[0].info, source=source)
        self.members, self._calibration = members, calibration or {}
        self.combine = check_choice("combine", combine, COMBINE)

    @property
    def calibration(self) -> dict:
        return self._calibration

    def logit_functions(self) -> list[Callable]:
        """Each member's raw logits on the raw input (its own normalisation first)."""
        return [_normalized(m, logits=True) for m in self.members]

    @classmethod
    def load(cls, path, *, device: str = "cpu") -> Ensemble:
        """Read an ensemble file (never unpickles) and build every member on ``device``."""
        manifest, infos, _ = checked_members(path)
        state = load_tensors(path)
        members = []
        for i, info in enumerate(infos):
            prefix = f"m{i}."
            own = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            net = build_net(info, own, source=f"{path} (member {i})").to(device).eval()
            members.append(Model(net, info, source=f"{path}#{i}"))
        return cls(members, source=str(path), calibration=manifest.get("calibration"),
                   combine=manifest.get("combine", "probabilities"))

    @property
    def halo(self) -> int:
        return max(m.halo for m in self.members)

    @property
    def input_normalization(self) -> None:
        """None: each member applies its own normalisation inside the predictor."""
        return None

    def predictor(self, *, tta: bool = False, uncertainty: bool = False) -> Callable:
        """Mean probability (class tasks) or mean output in target units over the members (and the
        test-time transforms with ``tta``); with ``uncertainty`` the statistics of :meth:`Model.outputs`."""
        if self.combine == "logits" and self.task.classes:
            members = [_normalized(m, logits=True) for m in self.members]
            stats = member_statistics_predictor(members, tta=tta, classes=True, logit_members=True,
                                                temperature=self.temperature)
        else:
            members = [_normalized(m, temperature=self.temperature) for m in self.members]
            stats = member_statistics_predictor(members, tta=tta, classes=self.task.classes)
        if uncertainty:
            return stats
        k = self.out_channels
        return lambda batch: stats(batch)[:, :k]

    def _final_units(self, uncertainty: bool) -> bool:
        return True  # members de-normalise their own outputs


def _normalized(member: Model, *, temperature: float = 1.0, logits: bool = False) -> Callable:
    """A member's output (or raw logits) on the raw input: its own input normalisation first."""
    norm = member.info.normalization

    def run(batch):
        batch = channel_affine(batch, norm, inverse=True)
        out = member.net(batch) if logits else member._member_output(batch, temperature=temperature)
        release_scratch(member.net)  # a member's kept buffers would otherwise stay resident for every member
        return out

    return run


def write_calibrated(source, output, calibration: dict) -> Path:
    """Copy the model or ensemble file ``source`` to ``output`` with ``calibration`` recorded (atomically)."""
    from safetensors.torch import load_file

    from .file import METADATA_KEY

    tensors = load_file(str(source), device="cpu")
    if is_ensemble_file(source):
        manifest = {**read_manifest(source), "calibration": calibration}
        meta = {ENSEMBLE_KEY: json.dumps(manifest, allow_nan=True)}
    else:
        info = read_model_info(source)
        info.calibration = calibration
        meta = {METADATA_KEY: json.dumps(info.record(), allow_nan=True)}
    return write_safetensors(output, tensors, meta, what="calibrated model file")


def describe_file(path) -> dict:
    """What a model or ensemble file holds, from its header alone: no tensor is read, no network allocated.

    The parameter count and receptive field come from the network the header describes,
    built on the meta device after its tensors were checked against the file's.
    """
    meta, entries, _ = read_header(path)
    if ENSEMBLE_KEY in meta:
        manifest, infos, nets = checked_members(path, meta, entries)
        out = {"format": "mixscale ensemble", **_public(infos[0]), "net_name": [i.net_name for i in infos],
               "members": len(infos), "calibration": manifest.get("calibration"),
               "combine": manifest.get("combine", "probabilities")}
        out.pop("net_config")
    else:
        info = read_model_info(path)
        nets = [plan_net(info, entries, source=path)]
        out = {"format": "mixscale model", **_public(info)}
    out["parameters"] = sum(p.numel() for net in nets for p in net.parameters())
    out["receptive_field"] = max(int(getattr(net, "receptive_field", 0)) for net in nets) or None
    return out


def _public(info) -> dict:
    return {k: v for k, v in info.record().items() if k != "train_config"}


def open_model(path, *, device: str = "cpu") -> Model:
    """A model file or an ensemble file, as the :class:`Model` every prediction runs."""
    return Ensemble.load(path, device=device) if is_ensemble_file(path) else Model.load(path, device=device)


@functools.lru_cache(maxsize=2)
def cached_model(path: str, device: str) -> Model:
    """The model (or ensemble) of ``path``, loaded once per process (workers call it per block),
    with no gradients."""
    model = open_model(path, device=device)
    for p in model.net.parameters():
        p.requires_grad_(False)
    return model
