"""A BioImage Model Zoo package (bioimageio.spec 0.5) of one model: ``rdf.yaml``, ONNX and TorchScript
weights and, for every net that takes any input size (not Noise2Inverse), ``pytorch_state_dict`` weights
with the plain-torch architecture file :mod:`~mixscale.model.export.architectures` (all self-contained:
they run without mixscale), test input and output, cover, documentation, and the mixscale model file
attached, so that :func:`import_package` restores it without unpickling.

The weights are the network alone (:class:`~mixscale.model.export.graph.ExportedModel` with
``raw=True``); the training's normalisation is the package's preprocessing
(``fixed_zero_mean_unit_variance``), class probabilities its postprocessing (``scale_linear`` by
``1 / T`` for a calibrated temperature, then ``softmax``), regression outputs are scaled back to the
target's units by ``scale_linear``. Every axis but batch and channel is a space axis of any size from
``2 * halo + 1`` (step 1: the nets pad inside), and the outputs declare the halo tiles must drop.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from ..._checks import not_allowed
from ..._files import atomic_path
from ..model import Model

logger = logging.getLogger(__name__)

PAPER = {"text": "Pelt, D.M. & Sethian, J.A. A mixed-scale dense convolutional neural network for image "
                 "analysis. PNAS 115 (2), 254-259 (2018)", "doi": "10.1073/pnas.1715832114"}
MODEL_FILE = "mixscale.safetensors"
ARCHITECTURE_FILE = "architectures.py"
SPACE_AXES = {2: ("y", "x"), 3: ("z", "y", "x")}


def _channel_names(model: Model) -> list[str]:
    """One name per network channel, channel-major as in training: subsets (Noise2Inverse), then image
    channels, then 2.5D slices, e.g. ``channel0_slice-1``."""
    k, splits = model.info.context_slices, model.info.splits
    per_subset = model.in_channels // (splits or 1) // (2 * k + 1)
    parts = [[f"subset{g}" for g in range(splits)] if splits else [""], [f"channel{c}" for c in range(per_subset)],
             [f"slice{z - k:+d}" for z in range(2 * k + 1)] if k else [""]]
    return ["_".join(p for p in names if p) for names in itertools.product(*parts)]


def _per_channel(values, channels: int) -> list[float]:
    """Per-channel statistics repeated channel-major over ``channels`` (2.5D slices, subsets)."""
    return [float(v) for v in np.repeat(np.asarray(values, float), channels // len(values))]


def _op(op: str, **values: list[float]) -> dict:
    """A processing step with scalar kwargs, or lists along the channel axis when there are several."""
    if all(len(v) == 1 for v in values.values()):
        return {"id": op, "kwargs": {k: v[0] for k, v in values.items()}}
    return {"id": op, "kwargs": {**values, "axis": "channel"}}


def _preprocessing(model: Model) -> list[dict]:
    norm = model.info.normalization
    if not norm:
        return []
    mean, std = (_per_channel(norm[k], model.in_channels) for k in ("mean", "std"))
    return [_op("fixed_zero_mean_unit_variance", mean=mean, std=std)]


def _postprocessing(model: Model) -> list[dict]:
    if model.task.classes:
        t = model.temperature
        scale = [] if t == 1.0 else [{"id": "scale_linear", "kwargs": {"gain": 1.0 / t, "offset": 0.0}}]
        return scale + [{"id": "softmax", "kwargs": {"axis": "channel"}}]
    target = model.info.target_normalization
    if not target:
        return []
    return [_op("scale_linear", gain=[float(g) for g in target["std"]], offset=[float(o) for o in target["mean"]])]


def is_package(output, format: str | None) -> bool:
    """Whether an export to ``output`` in ``format`` (None: from the ending) is a zoo package."""
    return format == "bioimageio" or (format is None and Path(output).suffix.lower() == ".zip")


def minimum_size(model: Model) -> int:
    """The smallest size per space axis the package declares: beyond twice the halo, and at least 16."""
    return max(2 * model.halo + 1, 16)


def _axes(model: Model, channel_names: list[str], *, output: bool) -> list[dict]:
    space = []
    for a in SPACE_AXES[model.spatial_dims]:
        if output:
            space.append({"id": a, "type": "space", "size": {"tensor_id": "input", "axis_id": a},
                          "halo": model.halo})
        else:
            space.append({"id": a, "type": "space", "size": {"min": minimum_size(model), "step": 1}})
    return [{"type": "batch"}, {"type": "channel", "channel_names": channel_names}] + space


def sample_tensors(model: Model, size: int | None = None, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A test input ``(1, C, *S)`` in the training images' units (normal with the training statistics) and
    the model's output on it (probabilities or target units), computed by mixscale's own predictor."""
    side = size or max(minimum_size(model), 64 if model.spatial_dims == 2 else 32)
    norm = model.info.normalization or {"mean": [0.0], "std": [1.0]}
    mean, std = (np.array(_per_channel(norm[k], model.in_channels), np.float32) for k in ("mean", "std"))
    rng = np.random.default_rng(seed)
    shape = (1, model.in_channels) + (side,) * model.spatial_dims
    bcast = (1, -1) + (1,) * model.spatial_dims
    x = (rng.normal(size=shape).astype(np.float32) * std.reshape(bcast) + mean.reshape(bcast)).astype(np.float32)
    return x, output_on(model, x)


def _cover(path: Path, x: np.ndarray, y: np.ndarray, classes: bool) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mid = tuple(s // 2 for s in x.shape[2:-2])  # the middle slice of a volume
    image = x[(0, x.shape[1] // 2, *mid)]
    out = y[(0, slice(None), *mid)]
    out = out.argmax(0) if classes else out[0]
    fig, axes = plt.subplots(1, 2, figsize=(6, 3))
    for ax, img, title in zip(axes, (image, out), ("input", "output")):
        ax.imshow(img, cmap="gray" if not classes or title == "input" else "tab10")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _readme(model: Model, name: str) -> str:
    info = model.info
    lines = [f"# {name}", "", f"A {info.net_name} network trained with mixscale for {info.task}.", "",
             f"- input: {model.in_channels} channel(s), {model.spatial_dims}D, float32 in the units of the training "
             f"images (preprocessing: the training's normalisation)",
             f"- output: {'class probabilities: ' + ', '.join(info.class_names or []) if model.task.classes else 'values in the target units'}",
             f"- halo: {model.halo} pixels each side (tiles must overlap by that much for exact results)"]
    if info.context_slices:
        lines.append(f"- 2.5D: the channels are {2 * info.context_slices + 1} consecutive slices, centred on the one "
                     "predicted")
    if info.splits:
        lines.append(f"- Noise2Inverse: the channels are {info.splits} subset reconstructions; the output is the mean "
                     "over the combinations")
    formats = "ONNX, TorchScript, PyTorch state dict" if has_plain_architecture(model) else "ONNX, TorchScript"
    lines += ["", f"The weights ({formats}) run without mixscale. The attached `mixscale.safetensors` is the "
              "mixscale model file: `mixscale import package.zip -o model.safetensors` restores it.", "",
              "Cite: " + PAPER["text"] + f", doi:{PAPER['doi']}.", ""]
    return "\n".join(lines)


def _rdf(model: Model, *, name: str, description: str, authors: list[str], license: str) -> dict:
    names = _channel_names(model)
    classes = list(model.info.class_names or [f"channel{i}" for i in range(model.out_channels)])
    return {"format_version": "0.5.4", "type": "model", "name": name, "description": description,
            "authors": [{"name": a} for a in authors], "cite": [PAPER], "license": license,
            "documentation": {"source": "README.md"}, "covers": [{"source": "cover.png"}],
            "tags": ["mixscale", model.info.net_name, model.info.task, f"{model.spatial_dims}d"],
            "attachments": [{"source": MODEL_FILE}],
            "inputs": [{"id": "input", "axes": _axes(model, names, output=False), "data": {"type": "float32"},
                        "test_tensor": {"source": "test_input.npy"}, "preprocessing": _preprocessing(model)}],
            "outputs": [{"id": "output", "axes": _axes(model, classes[: model.out_channels], output=True),
                         "data": {"type": "float32"}, "test_tensor": {"source": "test_output.npy"},
                         "postprocessing": _postprocessing(model)}],
            "weights": {"onnx": {"source": "model.onnx", "opset_version": 18},
                        "torchscript": {"source": "model.pt", "pytorch_version": _torch_version()},
                        **_state_dict_weights(model)},
            "config": {"mixscale": {"task": model.info.task, "net": model.info.net_name,
                                    "context_slices": model.info.context_slices, "splits": model.info.splits}}}


#: the class of the architecture file for each net it covers (every net of the zoo that takes any size)
PLAIN_ARCHITECTURES = {"msd": "MSD", "unet": "UNet", "unet3plus": "UNet3Plus", "smsnet": "SMSNet",
                       "random_unet": "RandomUNet"}


def has_plain_architecture(model: Model) -> bool:
    """Whether the package can hold ``pytorch_state_dict`` weights: a net of :data:`PLAIN_ARCHITECTURES`
    (MS-D with or without batch norm, U-Net, UNet 3+, SMSNet, random U-Net), without Noise2Inverse's
    combinations (the architecture file is the plain network)."""
    return model.info.net_name in PLAIN_ARCHITECTURES and not model.info.splits


def _architecture_kwargs(model: Model) -> dict:
    """The net's ``config()``, JSON- and YAML-safe: the keyword arguments of its plain class."""
    return json.loads(json.dumps(model.net.config()))


def _state_dict_weights(model: Model) -> dict:
    if not has_plain_architecture(model):
        return {}
    callable_ = PLAIN_ARCHITECTURES[model.info.net_name]
    return {"pytorch_state_dict": {"source": "weights.pt", "pytorch_version": _torch_version(),
                                   "architecture": {"source": ARCHITECTURE_FILE, "callable": callable_,
                                                    "kwargs": _architecture_kwargs(model)}}}


def _write_state_dict(model: Model, folder: Path) -> None:
    """``weights.pt`` (the plain state dict) and a copy of the architecture file, checked to load strictly."""
    import torch

    from . import architectures

    if not has_plain_architecture(model):
        return
    state = {k: v.detach().cpu().clone().contiguous() for k, v in model.net.state_dict().items()}
    plain = getattr(architectures, PLAIN_ARCHITECTURES[model.info.net_name])(**_architecture_kwargs(model))
    plain.load_state_dict(state, strict=True)  # a mismatch is a mixscale bug: never write a package that fails
    torch.save(state, folder / "weights.pt")
    shutil.copyfile(Path(architectures.__file__), folder / ARCHITECTURE_FILE)


def _torch_version() -> str:
    import torch

    return torch.__version__.split("+")[0]


def export_bioimageio(model: Model, model_file, output, *, name: str | None = None, description: str | None = None,
                      authors: tuple[str, ...] = ("mixscale user",), license: str = "CC-BY-4.0") -> Path:
    """Write a BioImage Model Zoo package (a zip) of ``model`` (read from ``model_file``) to ``output``.

    Parameters
    ----------
    model : Model
        The single model (an ensemble is refused).
    model_file : str or Path
        Its mixscale model file, attached to the package.
    output : str or Path
        ``*.zip``; written to a temporary name, then renamed.
    name, description : str, optional
    authors : tuple of str
    license : str
        An SPDX identifier.

    Returns
    -------
    Path
    """
    import yaml

    from .graph import export_model

    output = Path(output)
    if output.suffix.lower() != ".zip":
        raise not_allowed("output", str(output), "a .zip file for format 'bioimageio'")
    name = name or f"mixscale {model.info.net_name} {model.info.task} {model.spatial_dims}D"
    if not re.fullmatch(r"[A-Za-z0-9_+\- ()]{5,128}", name):
        raise not_allowed("name", name, "5 to 128 letters, digits, spaces and _+-() (the zoo's rule)")
    description = description or f"A {model.info.net_name} network trained with mixscale for {model.info.task}."
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        export_model(model, folder / "model.onnx", raw=True)
        export_model(model, folder / "model.pt", raw=True)
        _write_state_dict(model, folder)
        x, y = sample_tensors(model)
        np.save(folder / "test_input.npy", x)
        np.save(folder / "test_output.npy", y)
        _cover(folder / "cover.png", x, y, bool(model.task.classes))
        (folder / "README.md").write_text(_readme(model, name))
        shutil.copyfile(model_file, folder / MODEL_FILE)
        rdf = _rdf(model, name=name, description=description, authors=list(authors), license=license)
        (folder / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False))
        with atomic_path(output) as zipped:
            with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as z:
                for p in sorted(folder.iterdir()):
                    z.write(p, p.name)
    logger.info("wrote the BioImage Model Zoo package %s", output)
    return output


def import_package(package, output, *, overwrite: bool = False) -> Path:
    """Restore the mixscale model file attached to a package written by :func:`export_bioimageio`.

    The file is checked as every model file is (read without unpickling, its network rebuilt) and must
    reproduce the package's test output exactly before it is written to ``output``.
    """
    from ..ensemble import open_model

    package = Path(package)
    if not zipfile.is_zipfile(package):
        raise not_allowed("package", str(package), "a BioImage Model Zoo package (.zip) written by mixscale export")
    output = Path(output)
    if output.exists() and not overwrite:
        raise FileExistsError(f"output {output} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    with tempfile.TemporaryDirectory() as tmp, zipfile.ZipFile(package) as z:
        if MODEL_FILE not in z.namelist():
            raise ValueError(f"package {package} has no attached {MODEL_FILE}: it was not written by mixscale export")
        for member in (MODEL_FILE, "test_input.npy", "test_output.npy"):
            z.extract(member, tmp)
        restored = open_model(Path(tmp) / MODEL_FILE)
        x = np.load(Path(tmp) / "test_input.npy", allow_pickle=False)
        expected = np.load(Path(tmp) / "test_output.npy", allow_pickle=False)
        got = output_on(restored, x)
        if not np.array_equal(got, expected):
            raise ValueError(f"the model file in {package} does not reproduce the package's test output (max "
                             f"difference {float(np.abs(got - expected).max()):.3g})")
        with atomic_path(output) as dst:
            shutil.copyfile(Path(tmp) / MODEL_FILE, dst)
    logger.info("restored %s from %s", output, package)
    return output


def output_on(model: Model, x: np.ndarray) -> np.ndarray:
    """The model's output ``(1, K, *S)`` on a test input ``x`` in the training images' units."""
    import torch

    from ..model import channel_affine

    with torch.no_grad():
        return model._member_output(channel_affine(torch.from_numpy(x), model.info.normalization,
                                                   inverse=True)).float().numpy()

