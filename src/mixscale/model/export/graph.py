"""The exported graph (:class:`ExportedModel`) and the writers of its two formats."""

from __future__ import annotations

import copy
import json
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from ..._checks import check_bool, check_choice, not_allowed
from ..._extras import require_extra
from ..._files import atomic_path
from ...nets.classifier import has_score_map
from ..ensemble import Ensemble
from ..model import Model, channel_affine, noise2inverse_forward, tempered_softmax

logger = logging.getLogger(__name__)

#: formats :func:`export_model` writes, and the file endings that choose them
FORMATS = {"onnx": (".onnx",), "torchscript": (".pt", ".ts", ".torchscript")}
#: the ONNX operator set the graphs are written in
OPSET = 18
#: the spatial size of the example input per axis (2D, 3D): inside every net's limits
EXAMPLE_SIZE = {2: 64, 3: 32}


class ExportedModel(nn.Module):
    """One model's whole prediction as a plain torch module (what is traced and exported).

    Parameters
    ----------
    model : Model
        A single model (an ensemble is refused: export its members one by one).
    raw : bool
        The network alone: normalised input -> logits or normalised outputs.

    Shapes
    ------
    ``forward``: ``(N, in_channels, *spatial)`` float32 -> ``(N, K, *spatial)`` float32. A detection
    model's patch classifier gives its score map: the class probabilities of the patch centred on
    every pixel (``dense_logits``, what ``mixscale detect`` picks peaks from); one with instance or
    group norm has none and scores patches, ``(N, C, *patch_shape) -> (N, K)``.
    """

    def __init__(self, model: Model, *, raw: bool = False) -> None:
        super().__init__()
        if not isinstance(model, Model) or isinstance(model, Ensemble):
            raise not_allowed("model", getattr(model, "source", model), "a single model file (an ensemble is "
                              "exported member by member: export each model it was made of)")
        self.net = copy.deepcopy(model.net).eval().requires_grad_(False)  # outputs users can .numpy()
        self.score_map = has_score_map(self.net)
        self.raw = check_bool("raw", raw)
        self.splits = model.info.splits
        self.classes = bool(model.task.classes)
        self.temperature = model.temperature
        self.input_norm = model.info.normalization
        self.target_norm = model.info.target_normalization

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.raw:
            x = channel_affine(x, self.input_norm, inverse=True)
        if self.splits:
            out = noise2inverse_forward(self.net, x, self.splits)
        else:
            out = self.net.dense_logits(x) if self.score_map else self.net(x)
        if self.raw:
            return out
        if self.classes:
            return tempered_softmax(out, self.temperature)
        return channel_affine(out.float(), self.target_norm)


def fixed_shape(model: Model) -> tuple[int, ...] | None:
    """The one spatial input shape of the exported graph, or None where it takes any size."""
    return None if has_score_map(model.net) else model.net.fixed_input_shape


def exported_metadata(model: Model, *, raw: bool) -> dict[str, str]:
    """What the exported file records besides its graph (ONNX metadata, TorchScript extra files)."""
    from ... import __version__

    info = model.info
    return {"mixscale_version": __version__, "task": info.task, "net": info.net_name,
            "output": "network output (raw)" if raw else ("class probabilities" if model.task.classes
                                                          else "values in the target's units")
            + (" of the patch centred on every pixel" if has_score_map(model.net) else ""),
            "class_names": json.dumps(info.class_names), "context_slices": str(info.context_slices),
            "splits": str(info.splits), "halo": str(model.halo), "in_channels": str(info.in_channels),
            "normalization": json.dumps(info.normalization),
            "target_normalization": json.dumps(info.target_normalization),
            "temperature": repr(model.temperature)}


def example_input(model: Model, *, static: bool) -> torch.Tensor:
    """``(2, in_channels, *spatial)`` random input at a size every net takes (its own for a fixed net)."""
    fixed = fixed_shape(model)
    if fixed is not None and not static:
        raise ValueError(f"net {model.info.net_name!r} takes only inputs of spatial shape {list(fixed)}, so it "
                         "cannot be exported with dynamic sizes; pass static=True (CLI: --static) to export it "
                         "at that shape")
    spatial = fixed or (EXAMPLE_SIZE[model.spatial_dims],) * model.spatial_dims
    generator = torch.Generator().manual_seed(0)
    return torch.randn(2, model.in_channels, *spatial, generator=generator)


def export_model(model: Model, output, *, format: str | None = None, raw: bool = False,
                 static: bool = False) -> Path:
    """Write ``model`` as ONNX or TorchScript to ``output`` (a temporary name, renamed when complete).

    Parameters
    ----------
    model : Model
    output : str or Path
        The file to write; its ending chooses the format when ``format`` is None
        (``.onnx``; ``.pt``, ``.ts``, ``.torchscript``).
    format : {"onnx", "torchscript"}, optional
    raw : bool
        Export the network alone (see :class:`ExportedModel`).
    static : bool
        Fix the batch and spatial sizes to those of the example input (needed for nets with a
        fixed input shape; the batch is then 2).

    Returns
    -------
    Path
    """
    output = Path(output)
    fmt = format if format is not None else _format_of(output)
    check_choice("format", fmt, tuple(FORMATS))
    check_bool("static", static)
    module = ExportedModel(model, raw=raw)
    example = example_input(model, static=static)
    meta = exported_metadata(model, raw=raw)
    with atomic_path(output) as tmp:
        (_write_onnx if fmt == "onnx" else _write_torchscript)(module, example, tmp, meta, static=static)
    logger.info("exported %s as %s to %s", model.info.net_name, fmt, output)
    return output


def _format_of(path: Path) -> str:
    for fmt, endings in FORMATS.items():
        if path.suffix.lower() in endings:
            return fmt
    raise not_allowed("output", str(path), "a file ending in .onnx (ONNX), .pt/.ts/.torchscript (TorchScript) or "
                      ".zip (BioImage Model Zoo package), or give format=")


def _write_onnx(module: ExportedModel, example: torch.Tensor, path: Path, meta: dict, *, static: bool) -> None:
    require_extra("onnx", "onnxscript", extra="onnx")
    import onnx

    dims = None if static else ({i: torch.export.Dim.AUTO for i in range(example.ndim) if i != 1},)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's notes on its own internals
        program = torch.onnx.export(module, (example,), dynamo=True, dynamic_shapes=dims, opset_version=OPSET,
                                    input_names=["input"], output_names=["output"], verbose=False)
    proto = program.model_proto
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save_model(proto, str(path))


def _write_torchscript(module: ExportedModel, example: torch.Tensor, path: Path, meta: dict, *,
                       static: bool) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings about sizes read in Python: checked by the tests
        traced = torch.jit.trace(module, (example,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={"mixscale.json": json.dumps(meta)})  # deprecated in 2.13
