"""Block-wise prediction of a model file over an image or volume too large for memory.

:func:`predict_blocks` plans the work (blocks, halos, output arrays), prepares
the zarr output (or resumes it) and runs the blocks on Dask. Each block is
computed by a :class:`BlockJob`, a small picklable object that every worker
process calls with a block index: it loads the model once per process, reads
its block plus a halo from the lazily opened input, predicts it in blended tiles
and writes whole shards of every output array, then marks the block complete.

Modes (from the model and the input): ``native`` (a 2D model on a 2D image, a
3D model on a volume) and ``slices`` (a 2D model along ``axis`` of a volume; with
2.5D context the model sees ``2k+1`` neighbouring slices as channels).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)

PLAN_FORMAT = 1
DEFAULT_PLANE_BLOCK = 2048  # in-plane block edge (2D models), before evening out
DEFAULT_SLAB = 8  # slices per block for a 2D model on a volume
DEFAULT_CUBE = 128  # block edge for a 3D model


@dataclass(frozen=True)
class BlockJob:
    """Everything a worker needs to compute one block; called as ``job(index) -> voxels``."""

    model: str
    image: str
    output: str
    shape: tuple[int, ...]  # spatial shape of the input
    block_shape: tuple[int, ...]
    read_halo: tuple[int, ...]  # context read around each block, per spatial axis
    net_halo: int  # in-plane (or 3D) halo of each tile
    axis: int | None  # slicing axis for a 2D model on a volume
    context: int  # 2.5D context slices on each side
    channel_axis: int | None
    tile_shape: tuple[int, ...] | None
    overlap: float
    blend: str
    batch_size: int
    tta: bool
    device: str
    probabilities: bool

    def __call__(self, index: int) -> int:
        from .infer.blocks import block_region
        from .infer.grid import with_halo
        from .infer.store import BlockStore

        region = block_region(index, self.shape, self.block_shape)
        outer, inner = with_halo(region, self.shape, self.read_halo)
        net, info = _load(self.model, self.device)
        x = self._read(outer, info)
        if self.axis is None:
            outputs = _outputs(self._tiled(net, info, x, inner), info, probabilities=self.probabilities)
        else:
            outputs = self._predict_slices(net, info, x, inner)
        BlockStore(self.output).write_block(index, region, outputs)
        return math.prod(s.stop - s.start for s in region)

    def _read(self, outer: tuple[slice, ...], info) -> np.ndarray:
        """The input region ``(C, *outer)``, normalised with the model's statistics, float32."""
        from .data import Normalization, normalize, open_image

        array = open_image(self.image)
        if self.channel_axis is None:
            x = np.asarray(array[outer], dtype=np.float32)[None]
        else:
            key = list(outer)
            key.insert(self.channel_axis % array.ndim, slice(None))
            x = np.moveaxis(np.asarray(array[tuple(key)], dtype=np.float32), self.channel_axis % array.ndim, 0)
        if not np.isfinite(x).all():
            raise ValueError(f"input {self.image} holds NaN or infinite values in region {outer}")
        if info.normalization:
            x = normalize(x, Normalization.from_dict(info.normalization), channel_axis=0)
        return np.ascontiguousarray(x, dtype=np.float32)

    def _tiled(self, net, info, image, region) -> np.ndarray:
        import torch

        from .infer.tiled import predict_tiled_shrinking

        tiles = self.tile_shape or tuple(r.stop - r.start for r in region)
        return predict_tiled_shrinking(model_predictor(net, info, tta=self.tta), torch.from_numpy(image), tile_shape=tiles,
                                       overlap=self.overlap, blend=self.blend, halo=self.net_halo,
                                       batch_size=self.batch_size, device=self.device, region=region).numpy()

    def _predict_slices(self, net, info, x: np.ndarray, inner) -> dict[str, np.ndarray]:
        """A 2D model slice by slice along ``axis``; 2.5D context by reflection at the volume's ends.

        Each slice is reduced to its outputs (labels, float16 probabilities) at once,
        so a block never holds float32 probabilities for all its slices.
        """
        a = self.axis
        slab = np.moveaxis(x, 1 + a, 1)  # (C, S, H, W)
        plane = tuple(s for i, s in enumerate(inner) if i != a)
        per_slice = []
        for j in range(inner[a].start, inner[a].stop):
            idx = np.abs(np.arange(j - self.context, j + self.context + 1))
            idx = np.where(idx >= slab.shape[1], 2 * (slab.shape[1] - 1) - idx, idx)
            window = slab[:, idx].reshape(-1, *slab.shape[2:])  # channel-major, as in training
            y = self._tiled(net, info, np.ascontiguousarray(window), plane)
            per_slice.append(_outputs(y, info, probabilities=self.probabilities))
        return {name: _stack_along(a, [o[name] for o in per_slice], spatial_ndim=len(inner))
                for name in per_slice[0]}


def _stack_along(axis: int, slices: list[np.ndarray], *, spatial_ndim: int) -> np.ndarray:
    """Stack per-slice arrays ``(*lead, H, W)`` into ``(*lead, *spatial)`` with the slices on spatial ``axis``."""
    lead = slices[0].ndim - (spatial_ndim - 1)
    return np.stack(slices, axis=lead + axis)


def model_predictor(net, info, *, tta: bool = False):
    """The callable that tiles and blocks run: class probabilities for segmentation (so that
    overlapping tiles and test-time augmentations average probabilities), raw outputs otherwise."""
    import torch

    from .infer.tta import TestTimeAugmentation

    def predictor(batch: torch.Tensor) -> torch.Tensor:
        out = net(batch)
        return torch.softmax(out.float(), dim=1) if info.task == "segmentation" else out

    return TestTimeAugmentation(predictor) if tta else predictor


def _outputs(y: np.ndarray, info, *, probabilities: bool) -> dict[str, np.ndarray]:
    """Block outputs by array name: labels (+ float16 probabilities), or the regression prediction."""
    from .data import Normalization, denormalize

    if info.task == "regression":
        if info.target_normalization:
            y = denormalize(y, Normalization.from_dict(info.target_normalization), channel_axis=0)
        return {"prediction": (y[0] if y.shape[0] == 1 else y).astype(np.float32)}
    out = {"labels": y.argmax(0).astype(_label_dtype(y.shape[0]))}
    if probabilities:
        out["probabilities"] = y.astype(np.float16)
    return out


def _label_dtype(classes: int) -> str:
    return "uint8" if classes <= 256 else "uint16"


@functools.lru_cache(maxsize=2)
def _load(model: str, device: str):
    """The model, loaded once per worker process (and evaluated without gradients)."""
    from .modelfile import load_model

    net, info = load_model(model, device=device)
    for p in net.parameters():
        p.requires_grad_(False)
    return net.eval(), info


def warn_if_not_tile_exact(net) -> bool:
    """Warn (and return True) when ``net`` normalises over the whole input (instance or group norm):
    tiles and blocks then see other statistics than the whole image, so they can differ from it."""
    from torch import nn

    kinds = (nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d, nn.GroupNorm)
    found = sorted({type(m).__name__ for m in net.modules() if isinstance(m, kinds)})
    if found:
        logger.warning("the network uses %s, which normalises over the whole input: tiled or block-wise "
                       "results can differ from whole-image prediction (train with norm='batch' or None for "
                       "tile-exact results)", ", ".join(found))
    return bool(found)


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (a model file is small)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def even_block(size: int, largest: int, multiple: int = 1) -> int:
    """A block edge <= ``largest`` (rounded up to ``multiple``) that splits ``size`` into near-equal blocks."""
    if size <= largest:
        return size
    count = -(-size // largest)
    edge = -(-size // count)
    return min(size, -(-edge // multiple) * multiple)


def default_block_shape(shape: Sequence[int], *, axis: int | None, spatial_dims: int) -> tuple[int, ...]:
    """Blocks of a few slices x the plane (2D model), or cubes (3D model), evened out over the input."""
    if spatial_dims == 3:
        return tuple(even_block(n, DEFAULT_CUBE, 16) for n in shape)
    return tuple(min(n, DEFAULT_SLAB) if i == axis else even_block(n, DEFAULT_PLANE_BLOCK, 256)
                 for i, n in enumerate(shape))


def plan_dict(job: BlockJob, info, model_sha256: str) -> dict:
    """What makes a store's blocks compatible: model, input and every setting that changes results."""
    keep = ("image", "shape", "block_shape", "read_halo", "net_halo", "axis", "context", "channel_axis",
            "tile_shape", "overlap", "blend", "tta", "probabilities")
    plan = {k: v for k, v in asdict(job).items() if k in keep}
    plan.update(format=PLAN_FORMAT, model_sha256=model_sha256, task=info.task, class_names=info.class_names)
    return plan


def output_arrays(info, *, probabilities: bool, out_channels: int):
    """The arrays a block store holds for this model."""
    from .infer.store import ArraySpec

    if info.task == "regression":
        return [ArraySpec("prediction", "float32", () if out_channels == 1 else (out_channels,))]
    specs = [ArraySpec("labels", _label_dtype(out_channels))]
    if probabilities:
        specs.append(ArraySpec("probabilities", "float16", (out_channels,)))
    return specs


def check_output_address(output) -> Path:
    """A zarr store path for the block-wise output; a clear error otherwise."""
    path = Path(output)
    if path.suffix != ".zarr":
        raise ValueError(f"output={str(output)!r} is not allowed for block-wise prediction; expected a zarr store "
                         "path ending in .zarr (arrays 'labels', 'probabilities' or 'prediction' go inside)")
    return path


def predict_blocks(model, image, output, *, axis: int | None = None, channel_axis: int | None = None,
                   block_shape: Sequence[int] | None = None, tile_shape: Sequence[int] | int | None = None,
                   overlap: float = 0.25, blend: str = "gaussian", batch_size: int = 1, tta: bool = False,
                   probabilities: bool = False, device: str = "cpu", scheduler=None, num_workers: int | None = None,
                   num_parts: int = 1, part_id: int = 0, overwrite: bool = False, progress: bool = False) -> dict:
    """Predict an image or volume block by block into a zarr store, with bounded memory.

    Parameters
    ----------
    model : str or Path
        A model file.
    image : str
        Input address (zarr, HDF5 ``file.h5:/path``, TIFF or a folder/glob of
        slices), read lazily, block by block.
    output : str or Path
        A ``*.zarr`` store: ``labels`` (uint8, uint16 above 256 classes) and, with
        ``probabilities``, ``probabilities`` (float16, ``(C, *spatial)``); for
        regression ``prediction`` (float32). An existing store made with the same
        settings is resumed: only blocks not yet complete are computed.
    axis : int, optional
        For a 2D model on a volume: the axis to slice along.
    channel_axis : int, optional
        Axis of the input holding channels (multi-channel models).
    block_shape : sequence of int, optional
        Output block (= shard) shape per spatial axis; default a few slices by
        the plane (2D models) or 128-cubes (3D), evened out over the input.
    tile_shape : int or sequence of int, optional
        Tiles within a block (model's spatial axes); default the whole block.
    overlap, blend, batch_size
        As for :func:`mixscale.infer.predict_tiled`.
    tta : bool
        Average over the 8 flips/rotations.
    device : str
    scheduler : None, str or distributed.Client
        See :func:`mixscale.infer.blocks.run_blocks`.
    num_workers : int, optional
        Blocks in flight for local schedulers.
    num_parts, part_id : int
        Compute only every ``num_parts``-th block starting at ``part_id`` (job
        arrays); all parts write into the same store.
    overwrite : bool
        Replace a store made with other settings.
    progress : bool
        Show a progress bar.

    Returns
    -------
    dict
        ``output``, ``blocks`` (in the grid), ``computed`` and ``skipped`` (already
        complete) in this part, ``complete`` (every block of the grid is done),
        ``voxels``, ``seconds``, ``voxels_per_second``.
    """
    import time

    from .api import check_device
    from .infer.blocks import block_counts, part_indices, run_blocks
    from .infer.store import BlockStore

    device = check_device(device)
    out = check_output_address(output)
    model, image = str(Path(model).resolve()), _absolute_address(image)
    net, info = _load(model, device)
    if info.task == "detection":
        raise ValueError(f"{model} is a detection model (a patch classifier): it finds points; use "
                         "mixscale.api.detect (CLI: mixscale detect MODEL IMAGE -o points.csv)")
    warn_if_not_tile_exact(net)
    spatial, channel_axis, context = _input_layout(image, info, axis=axis, channel_axis=channel_axis)
    slicing = info.spatial_dims == 2 and len(spatial) == 3
    halo = int(getattr(net, "halo", 0))
    job = BlockJob(
        model=model, image=image, output=str(out.resolve()), shape=spatial,
        block_shape=_check_block_shape(block_shape, spatial, axis=axis if slicing else None, dims=info.spatial_dims),
        read_halo=tuple(context if slicing and i == axis % 3 else halo for i in range(len(spatial))),
        net_halo=halo, axis=axis % 3 if slicing else None, context=context, channel_axis=channel_axis,
        tile_shape=_check_tile_shape(tile_shape, info.spatial_dims), overlap=float(overlap), blend=blend,
        batch_size=batch_size, tta=bool(tta), device=device, probabilities=bool(probabilities))
    _check_tiling(job)
    total = math.prod(block_counts(spatial, job.block_shape))
    mine = part_indices(total, num_parts, part_id)
    arrays = output_arrays(info, probabilities=probabilities, out_channels=int(info.net_config.get("out_channels", 1)))
    store = BlockStore.prepare(out, shape=spatial, block_shape=job.block_shape, arrays=arrays,
                               plan=plan_dict(job, info, file_sha256(model)), overwrite=overwrite)
    finished = store.done()
    todo = [i for i in mine if i not in finished]
    logger.info("%s: %d blocks of %s over %s; part %d/%d computes %d (%d already complete)", out, total,
                job.block_shape, spatial, part_id, num_parts, len(todo), len(mine) - len(todo))
    start = time.perf_counter()
    voxels = run_blocks(job, todo, scheduler=scheduler, num_workers=num_workers, progress=progress)
    seconds = time.perf_counter() - start
    return {"output": str(out), "blocks": total, "computed": len(todo), "skipped": len(mine) - len(todo),
            "complete": len(store.done()) == total, "voxels": voxels, "seconds": seconds,
            "voxels_per_second": voxels / seconds if seconds > 0 else 0.0}


def _absolute_address(image) -> str:
    """The input address with an absolute file part, so that workers elsewhere find it."""
    if not isinstance(image, (str, os.PathLike)):
        raise TypeError(f"image must be a file address for block-wise prediction, got {type(image).__name__}")
    text = os.fspath(image)
    return text if os.path.isabs(text) else os.path.join(os.getcwd(), text)


def _input_layout(image: str, info, *, axis, channel_axis) -> tuple[tuple[int, ...], int | None, int]:
    """Spatial shape, channel axis and 2.5D context of ``image`` for this model; clear errors otherwise."""
    from .data import open_image

    shape = tuple(int(n) for n in open_image(image).shape)
    cin, dims = int(info.net_config.get("in_channels", 1)), info.spatial_dims
    context = int((info.train_config.get("data") or {}).get("context_slices", 0) or 0)
    base = cin // (2 * context + 1)
    if channel_axis is None and base == 1:
        spatial = shape
    else:
        ax = 0 if channel_axis is None else channel_axis
        if not -len(shape) <= ax < len(shape):
            raise ValueError(f"channel_axis={ax} is out of range for an input of shape {shape}")
        channel_axis = ax % len(shape)
        if shape[channel_axis] != base:
            raise ValueError(f"input of shape {shape} has {shape[channel_axis]} channels on axis {channel_axis}; "
                             f"the model expects {base}")
        spatial = shape[:channel_axis] + shape[channel_axis + 1:]
    if len(spatial) not in (2, 3) or (dims == 3 and len(spatial) != 3):
        raise ValueError(f"input of spatial shape {spatial} does not fit a {dims}D model")
    if dims == 2 and len(spatial) == 3 and axis not in (0, 1, 2, -1, -2, -3):
        raise ValueError(f"input of shape {shape} is 3D but the model is 2D; pass axis=0 (CLI: --axis 0) to "
                         f"predict it slice by slice along that axis (got axis={axis!r})")
    if context and not (dims == 2 and len(spatial) == 3):
        raise ValueError(f"the model takes {context} context slices on each side (2.5D); it needs a volume")
    return spatial, channel_axis, context


def _check_block_shape(block_shape, spatial, *, axis, dims) -> tuple[int, ...]:
    if block_shape is None:
        return default_block_shape(spatial, axis=axis, spatial_dims=dims if axis is None else 2)
    values = (block_shape,) * len(spatial) if isinstance(block_shape, int) else tuple(block_shape)
    if len(values) != len(spatial) or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"block_shape={block_shape!r} is not allowed; expected {len(spatial)} integers >= 1 "
                         f"(one per axis of the input's spatial shape {spatial})")
    return tuple(min(v, n) for v, n in zip(values, spatial))


def _check_tile_shape(tile_shape, dims: int) -> tuple[int, ...] | None:
    if tile_shape is None:
        return None
    values = (tile_shape,) * dims if isinstance(tile_shape, int) else tuple(tile_shape)
    if len(values) != dims or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise ValueError(f"tile_shape={tile_shape!r} is not allowed; expected {dims} integers >= 1 "
                         f"(the model is {dims}D)")
    return values


def _check_tiling(job: BlockJob) -> None:
    from .infer.blend import BLENDS

    if not 0 <= job.overlap < 1:
        raise ValueError(f"overlap={job.overlap} is not allowed; expected a fraction in [0, 1)")
    if job.blend not in BLENDS:
        raise ValueError(f"blend={job.blend!r} is not allowed; expected one of {list(BLENDS)}")
    if isinstance(job.batch_size, bool) or not isinstance(job.batch_size, int) or job.batch_size < 1:
        raise ValueError(f"batch_size={job.batch_size!r} is not allowed; expected an integer >= 1")
