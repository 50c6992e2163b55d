"""Block-wise prediction of a model file over an image or volume too large for memory.

:func:`predict_blocks` plans the work (blocks, halos, output arrays), prepares
the zarr output (or resumes it) and runs the blocks on Dask. Each block is
computed by a :class:`BlockJob`, a small picklable object that every worker
process calls with a block index: it loads the model once per process, reads
its block plus a halo from the lazily opened input, predicts it in blended tiles
and writes whole shards of every output array, then marks the block complete.

Modes (from the model and the input): ``native`` (a 2D model on a 2D image, a
3D model on a volume) and ``slices`` (a 2D model along ``slice_axis`` of a volume; with
2.5D context the model sees ``2k+1`` neighbouring slices as channels).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from .._checks import check_bool, check_choice, check_device, check_fraction, check_int, check_shape
from .._files import file_sha256
from ..request import OutputRequest

if TYPE_CHECKING:  # the model floor imports torch; workers and predict_blocks import it when they run
    from ..model import Model

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
    slice_axis: int | None  # for a 2D model on a volume
    context_slices: int  # 2.5D context slices on each side
    channel_axis: int | None
    tile_shape: tuple[int, ...] | None
    overlap: float
    blend: str
    batch_size: int
    tta: bool
    device: str
    request: OutputRequest

    def __call__(self, index: int) -> int:
        from ..infer.blocks import block_region
        from ..infer.grid import with_halo
        from ..infer.store import BlockStore

        region = block_region(index, self.shape, self.block_shape)
        outer, inner = with_halo(region, self.shape, self.read_halo)
        from ..model import cached_model

        model = cached_model(self.model, self.device)
        x = self._read(outer, model)
        if self.slice_axis is None:
            outputs = model.outputs(self._tiled(model, x, inner), self.request, region=region)
        else:
            outputs = self._predict_slices(model, x, inner, region)
        BlockStore(self.output).write_block(index, region, outputs)
        return math.prod(s.stop - s.start for s in region)

    def _read(self, outer: tuple[slice, ...], model: Model) -> np.ndarray:
        """The input region ``(C, *outer)``, normalised with the model's statistics, float32."""
        from ..data import open_image

        array = open_image(self.image)
        if self.channel_axis is None:
            x = np.asarray(array[outer], dtype=np.float32)[None]
        else:
            key = list(outer)
            key.insert(self.channel_axis % array.ndim, slice(None))
            x = np.moveaxis(np.asarray(array[tuple(key)], dtype=np.float32), self.channel_axis % array.ndim, 0)
        if not np.isfinite(x).all():
            raise ValueError(f"input {self.image} holds NaN or infinite values in region {outer}")
        return model.normalize(x, check_finite=False)

    def _tiled(self, model: Model, image, region) -> np.ndarray:
        import torch

        from ..infer.tiled import predict_tiled_shrinking

        tiles = self.tile_shape or tuple(r.stop - r.start for r in region)
        predictor = model.predictor(tta=self.tta, uncertainty=self.request.statistics)
        return predict_tiled_shrinking(predictor, torch.from_numpy(image), tile_shape=tiles,
                                       overlap=self.overlap, blend=self.blend, halo=self.net_halo,
                                       batch_size=self.batch_size, device=self.device, region=region).numpy()

    def _predict_slices(self, model: Model, x: np.ndarray, inner, region) -> dict[str, np.ndarray]:
        """A 2D model slice by slice along ``slice_axis``; 2.5D context by reflection at the volume's ends.

        Each slice is reduced to its outputs (labels, float16 probabilities) at once,
        so a block never holds float32 probabilities for all its slices.
        """
        a, k = self.slice_axis, self.context_slices
        slab = np.moveaxis(x, 1 + a, 1)  # (C, S, H, W)
        plane = tuple(s for i, s in enumerate(inner) if i != a)
        per_slice = []
        for j in range(inner[a].start, inner[a].stop):
            idx = np.abs(np.arange(j - k, j + k + 1))
            idx = np.where(idx >= slab.shape[1], 2 * (slab.shape[1] - 1) - idx, idx)
            window = slab[:, idx].reshape(-1, *slab.shape[2:])  # channel-major, as in training
            y = self._tiled(model, np.ascontiguousarray(window), plane)
            g = region[a].start + j - inner[a].start  # the slice's index in the whole volume
            where = tuple(slice(g, g + 1) if i == a else r for i, r in enumerate(region))
            per_slice.append(model.outputs(y, self.request, region=where))
        return {name: _stack_along(a, [o[name] for o in per_slice], spatial_ndim=len(inner))
                for name in per_slice[0]}


def _stack_along(axis: int, slices: list[np.ndarray], *, spatial_ndim: int) -> np.ndarray:
    """Stack per-slice arrays ``(*lead, H, W)`` into ``(*lead, *spatial)`` with the slices on spatial ``axis``."""
    lead = slices[0].ndim - (spatial_ndim - 1)
    return np.stack(slices, axis=lead + axis)


def even_block(size: int, largest: int, multiple: int = 1) -> int:
    """A block edge <= ``largest`` (rounded up to ``multiple``) that splits ``size`` into near-equal blocks."""
    if size <= largest:
        return size
    count = -(-size // largest)
    edge = -(-size // count)
    return min(size, -(-edge // multiple) * multiple)


def default_block_shape(shape: Sequence[int], *, slice_axis: int | None, spatial_dims: int) -> tuple[int, ...]:
    """Blocks of a few slices x the plane (2D model), or cubes (3D model), evened out over the input."""
    if spatial_dims == 3:
        return tuple(even_block(n, DEFAULT_CUBE, 16) for n in shape)
    return tuple(min(n, DEFAULT_SLAB) if i == slice_axis else even_block(n, DEFAULT_PLANE_BLOCK, 256)
                 for i, n in enumerate(shape))


def plan_dict(job: BlockJob, model: Model, model_sha256: str) -> dict:
    """What makes a store's blocks compatible: model, input and every setting that changes results.

    The stored keys are a file format: ``axis`` and ``context`` keep their version-1
    names (they hold ``slice_axis`` and ``context_slices``), so stores written
    before still resume.
    """
    keep = ("image", "shape", "block_shape", "read_halo", "net_halo", "channel_axis", "tile_shape", "overlap",
            "blend", "tta")
    plan = {k: v for k, v in asdict(job).items() if k in keep}
    plan.update(axis=job.slice_axis, context=job.context_slices, format=PLAN_FORMAT, model_sha256=model_sha256,
                task=model.info.task, class_names=model.class_names, probabilities=job.request.probabilities)
    plan.update(job.request.plan())  # only what was asked for, so that stores written before still match
    return plan


def check_output_address(output) -> Path:
    """A zarr store path for the block-wise output; a clear error otherwise."""
    path = Path(output)
    if path.suffix != ".zarr":
        raise ValueError(f"output={str(output)!r} is not allowed for block-wise prediction; expected a zarr store "
                         "path ending in .zarr (arrays 'labels', 'probabilities' or 'prediction' go inside)")
    return path


def predict_blocks(model, image, output, *, slice_axis: int | None = None, channel_axis: int | None = None,
                   block_shape: Sequence[int] | None = None, tile_shape: Sequence[int] | int | None = None,
                   overlap: float = 0.25, blend: str = "gaussian", batch_size: int = 1, tta: bool = False,
                   probabilities: bool = False, device: str = "cpu", scheduler=None,
                   blocks_in_flight: int | None = None, num_parts: int = 1, part_id: int = 0,
                   overwrite: bool = False, progress: bool = False, uncertainty: bool = False,
                   sets: bool = False, risk_mask: bool = False, lower_bound: tuple[float, float] | None = None,
                   on_block: Callable[[int, int], None] | None = None,
                   should_stop: Callable[[], bool] | None = None) -> dict:
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
    slice_axis : int, optional
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
    blocks_in_flight : int, optional
        Blocks computed at once by local schedulers (CLI: ``--workers``).
    num_parts, part_id : int
        Compute only every ``num_parts``-th block starting at ``part_id`` (job
        arrays); all parts write into the same store.
    overwrite : bool
        Replace a store made with other settings.
    progress : bool
        Show a progress bar.
    uncertainty : bool
        Also write ``prob_mean``, ``prob_std``, ``entropy``, ``mutual_info`` (float16; for
        regression ``prediction_std``): statistics over an ensemble's members, or over the
        test-time transforms of a single model (``tta``).
    sets : bool
        Also write the conformal prediction sets of a calibrated model: ``sets`` (bitmask)
        and ``set_size`` (uint8).
    risk_mask : bool
        Also write ``risk_mask`` (uint8), the class mask of a model calibrated with conformal
        risk control (its false-negative rate is controlled).
    lower_bound : (k, threshold), optional
        Also write ``lower_bound`` ``(K, *spatial)`` uint8: class ``c`` where
        ``mean - k * std > threshold`` over the members.
    on_block : callable, optional
        ``on_block(done, total)`` after each block of this call (a GUI's progress bar).
    should_stop : callable, optional
        Asked before each block; once it returns True the remaining blocks are left
        undone (not marked complete), so a later call with the same settings resumes
        them. Local schedulers only (``None``, ``"threads"``, ``"sync"``).

    Returns
    -------
    dict
        ``output``, ``blocks`` (in the grid), ``computed`` and ``skipped`` (already
        complete) in this part, ``complete`` (every block of the grid is done),
        ``voxels``, ``seconds``, ``voxels_per_second``.
    """
    import time

    from ..infer.blocks import block_counts, part_indices, run_blocks
    from ..infer.store import BlockStore

    from ..data.guard import check_not_input

    from ..infer.blocks import check_run_options

    device = check_device(device)
    scheduler, blocks_in_flight = check_run_options(scheduler, blocks_in_flight)
    if should_stop is not None and scheduler not in (None, "threads", "sync"):
        raise ValueError(f"should_stop works with the local schedulers None, 'threads' and 'sync', not "
                         f"scheduler={scheduler!r} (a stop flag cannot reach other processes)")
    out = check_output_address(output)
    path, image = str(Path(model).resolve()), _absolute_address(image)
    check_not_input(image, out)
    from ..model import cached_model

    net_model = cached_model(path, device)
    net_model.require(per_patch=False, use="predict_blocks")
    net_model.warn_if_not_tile_exact()
    job = _plan_job(net_model, path, image, out, slice_axis=slice_axis, channel_axis=channel_axis,
                    block_shape=block_shape, tile_shape=tile_shape, overlap=overlap, blend=blend,
                    batch_size=batch_size, tta=tta, device=device,
                    request=OutputRequest.checked(probabilities=probabilities, uncertainty=uncertainty, sets=sets,
                                                  risk_mask=risk_mask, lower_bound=lower_bound))
    net_model.check_request(job.request, tta=job.tta)  # an impossible combination fails here
    total = math.prod(block_counts(job.shape, job.block_shape))
    mine = part_indices(total, num_parts, part_id)
    store = BlockStore.prepare(out, shape=job.shape, block_shape=job.block_shape,
                               arrays=net_model.output_arrays(job.request),
                               plan=plan_dict(job, net_model, file_sha256(path)), overwrite=overwrite)
    try:
        finished = store.done()
        todo = [i for i in mine if i not in finished]
        logger.info("%s: %d blocks of %s over %s; part %d/%d computes %d (%d already complete)", out, total,
                    job.block_shape, job.shape, part_id, num_parts, len(todo), len(mine) - len(todo))
        start = time.perf_counter()
        compute = job if should_stop is None else StoppableBlocks(job, should_stop)
        voxels = run_blocks(compute, todo, scheduler=scheduler, blocks_in_flight=blocks_in_flight, progress=progress,
                            on_block=on_block)
        seconds = time.perf_counter() - start
        left = set(todo) - store.done()
    finally:
        store.unregister_writer()
    return {"output": str(out), "blocks": total, "computed": len(todo) - len(left), "skipped": len(mine) - len(todo),
            "stopped": bool(left),
            "complete": len(store.done()) == total, "voxels": voxels, "seconds": seconds,
            "voxels_per_second": voxels / seconds if seconds > 0 else 0.0}


class StoppableBlocks:
    """A block job that computes nothing (and marks nothing complete) once ``should_stop()`` is true."""

    def __init__(self, job: Callable[[int], int], should_stop: Callable[[], bool]) -> None:
        self.job, self.should_stop = job, should_stop

    def __call__(self, index: int) -> int:
        return 0 if self.should_stop() else self.job(index)


def _plan_job(model: Model, path: str, image: str, out: Path, *, slice_axis, channel_axis, block_shape, tile_shape,
              overlap, blend, batch_size, tta, device, request: OutputRequest) -> BlockJob:
    """The checked job: the input's layout against the model, blocks, halos and tiling settings."""
    from ..data import open_image
    from ..infer.blend import BLENDS
    from ..infer.tiled import check_tile_shape

    source = open_image(image)
    _refuse_whole_file_reader(source, image)
    layout = model.layout(source.shape, slice_axis=slice_axis, channel_axis=channel_axis)
    spatial, axis, halo = layout.spatial_shape, layout.slice_axis, model.halo
    dims = model.spatial_dims
    if block_shape is None:
        blocks = default_block_shape(spatial, slice_axis=axis, spatial_dims=dims if axis is None else 2)
    else:
        blocks = tuple(min(v, n) for v, n in zip(check_shape("block_shape", block_shape, ndim=len(spatial),
                                                             what=f"(one per axis of the input's spatial shape "
                                                                  f"{spatial})"), spatial))
    tiles = None if tile_shape is None else check_shape("tile_shape", tile_shape, ndim=dims,
                                                        what=f"(the model is {dims}D)")
    if tiles is not None:
        check_tile_shape(tiles, halo, [b for i, b in enumerate(blocks) if i != axis])
    return BlockJob(
        model=path, image=image, output=str(out.resolve()), shape=spatial, block_shape=blocks,
        read_halo=tuple(model.context_slices if i == axis else halo for i in range(len(spatial))),
        net_halo=halo, slice_axis=axis, context_slices=model.context_slices, channel_axis=layout.channel_axis,
        tile_shape=tiles,
        overlap=check_fraction("overlap", overlap), blend=check_choice("blend", blend, BLENDS),
        batch_size=check_int("batch_size", batch_size, minimum=1), tta=check_bool("tta", tta), device=device,
        request=request)


def _refuse_whole_file_reader(source, image: str) -> None:
    """A reader that can only load the whole file would read it again for every block: refuse it."""
    if getattr(source, "whole_file", False):
        raise ValueError(f"input {image} can only be read as a whole (see the warning above), so block-wise "
                         "prediction would read the whole file once per block; convert it first (for example "
                         "to zarr or to an uncompressed or tiled TIFF) or predict it in memory with an output "
                         "that does not end in .zarr")


def _absolute_address(image) -> str:
    """The input address with an absolute file part, so that workers elsewhere find it."""
    if not isinstance(image, (str, os.PathLike)):
        raise TypeError(f"image must be a file address for block-wise prediction, got {type(image).__name__}")
    text = os.fspath(image)
    return text if os.path.isabs(text) else os.path.join(os.getcwd(), text)
