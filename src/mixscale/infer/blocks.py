"""Block-wise execution: a grid of non-overlapping blocks, run on Dask, with progress.

The work per block is any picklable callable ``compute(index) -> voxels``; it
reads its block with a halo, predicts, and writes its own part of the output
(see :mod:`mixscale.infer.store`). This module only decides which blocks run
where: the local Dask scheduler (threads, by default), a ``dask.distributed``
cluster given by address or client, and ``num_parts``/``part_id`` sharding for
job arrays.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Iterable, Sequence

from .._checks import check_int, check_shape, not_allowed

logger = logging.getLogger(__name__)

LOCAL_SCHEDULERS = ("threads", "sync", "processes")


def block_counts(shape: Sequence[int], block_shape: Sequence[int]) -> tuple[int, ...]:
    """Blocks per axis when ``block_shape`` tiles ``shape`` (edge blocks are smaller)."""
    block_shape = check_shape("block_shape", block_shape, ndim=len(shape))
    return tuple(-(-n // b) for n, b in zip(shape, block_shape))


def block_region(index: int, shape: Sequence[int], block_shape: Sequence[int]) -> tuple[slice, ...]:
    """The slices of block ``index`` (C order) of the grid of ``block_shape`` over ``shape``."""
    counts = block_counts(shape, block_shape)
    if not 0 <= index < math.prod(counts):
        raise ValueError(f"block index {index} is out of range; the grid has {math.prod(counts)} blocks")
    region = []
    for n, b, i in zip(shape, block_shape, _unravel(index, counts)):
        region.append(slice(i * b, min((i + 1) * b, n)))
    return tuple(region)


def _unravel(index: int, counts: Sequence[int]) -> list[int]:
    out = []
    for c in reversed(counts):
        index, r = divmod(index, c)
        out.append(r)
    return out[::-1]


def block_grid(shape: Sequence[int], block_shape: Sequence[int]) -> list[tuple[slice, ...]]:
    """Every block of the grid of ``block_shape`` over ``shape``, in C order.

    Examples
    --------
    >>> [tuple((s.start, s.stop) for s in b) for b in block_grid((5, 4), (2, 4))]
    [((0, 2), (0, 4)), ((2, 4), (0, 4)), ((4, 5), (0, 4))]
    """
    return [block_region(i, shape, block_shape) for i in range(math.prod(block_counts(shape, block_shape)))]


def part_indices(count: int, num_parts: int = 1, part_id: int = 0) -> list[int]:
    """Block indices of part ``part_id`` of ``num_parts`` (round robin, so parts get similar work)."""
    num_parts = check_int("num_parts", num_parts, minimum=1)
    part_id = check_int("part_id", part_id, minimum=0, maximum=num_parts - 1)
    return list(range(part_id, count, num_parts))


def check_run_options(scheduler=None, blocks_in_flight: int | None = None):
    """``scheduler`` and ``blocks_in_flight`` of :func:`run_blocks`, checked without starting anything.

    Call it before any output is written, so that a wrong value is refused before a store exists.

    Parameters
    ----------
    scheduler : None, str or distributed.Client
        ``None``, one of :data:`LOCAL_SCHEDULERS`, an address such as ``"tcp://host:8786"``
        (not contacted here), or a ``distributed.Client``.
    blocks_in_flight : int, optional
        At least 1.

    Returns
    -------
    (scheduler, blocks_in_flight), checked.

    Examples
    --------
    >>> check_run_options("sync", 2)
    ('sync', 2)
    >>> check_run_options("threads", 0)
    Traceback (most recent call last):
    ...
    ValueError: blocks_in_flight=0 is not allowed; expected an integer >= 1
    """
    if blocks_in_flight is not None:
        blocks_in_flight = check_int("blocks_in_flight", blocks_in_flight, minimum=1)
    if scheduler is None or _is_client(scheduler):
        return scheduler, blocks_in_flight
    if not isinstance(scheduler, str):
        raise not_allowed("scheduler", scheduler, _SCHEDULERS, TypeError)
    if scheduler not in LOCAL_SCHEDULERS and ":" not in scheduler:
        raise not_allowed("scheduler", scheduler, _SCHEDULERS)
    return scheduler, blocks_in_flight


_SCHEDULERS = (f"one of {list(LOCAL_SCHEDULERS)}, a dask.distributed address such as 'tcp://host:8786', "
               "or a distributed.Client")


def _is_client(value) -> bool:
    """Whether ``value`` is a ``distributed.Client`` (without importing distributed)."""
    return any(c.__name__ == "Client" and c.__module__.startswith("distributed") for c in type(value).__mro__)


class Progress:
    """Blocks done, voxels per second and time left, as a tqdm bar on stderr (or silent)."""

    def __init__(self, total: int, *, enabled: bool = True, on_block: Callable[[int, int], None] | None = None) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="block", disable=not enabled, dynamic_ncols=True, desc="predict")
        self.blocks, self.voxels, self.start, self.total = 0, 0, time.perf_counter(), total
        self.on_block = on_block

    def update(self, voxels: int) -> None:
        self.blocks += 1
        self.voxels += int(voxels)
        rate = self.voxels / max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix_str(f"{rate / 1e6:.3g} Mvox/s", refresh=False)
        self.bar.update(1)
        if self.on_block is not None:
            self.on_block(self.blocks, self.total)

    def close(self) -> None:
        self.bar.close()
        elapsed = time.perf_counter() - self.start
        logger.info("%d blocks, %.3g voxels in %.1f s (%.3g voxels/s)", self.blocks, self.voxels, elapsed,
                    self.voxels / max(elapsed, 1e-9))


def run_blocks(compute: Callable[[int], int], indices: Iterable[int], *, scheduler=None,
               blocks_in_flight: int | None = None, progress: bool = False,
               on_block: Callable[[int, int], None] | None = None) -> int:
    """Run ``compute(i)`` for every block index on Dask; return the voxels computed.

    Parameters
    ----------
    compute : callable
        ``index -> voxels written``; picklable for process and distributed schedulers.
    indices : iterable of int
    scheduler : None, str or distributed.Client
        ``None`` or ``"threads"``: Dask's local threaded scheduler; ``"sync"``: one
        block after another in this thread; ``"processes"``: local processes; an
        address such as ``"tcp://host:8786"`` or a ``distributed.Client``: that
        cluster (local, or remote such as dask-jobqueue on SLURM).
    blocks_in_flight : int, optional
        Blocks computed at once for the local schedulers (default: 2 threads, so reading
        and writing one block overlaps computing another).
    progress : bool
        Show a progress bar.
    on_block : callable, optional
        ``on_block(done, total)`` after each block (in the thread that runs the scheduler),
        for a GUI's progress.

    Notes
    -----
    When a block fails the exception propagates once the blocks already started
    are done; completed blocks keep their markers, so a rerun resumes.
    """
    scheduler, blocks_in_flight = check_run_options(scheduler, blocks_in_flight)
    indices = list(indices)
    bar = Progress(len(indices), enabled=progress, on_block=on_block)
    try:
        if scheduler is None or isinstance(scheduler, str) and scheduler in LOCAL_SCHEDULERS:
            _run_local(compute, indices, scheduler or "threads", blocks_in_flight, bar)
        else:
            _run_distributed(compute, indices, scheduler, bar)
    finally:
        bar.close()
    return bar.voxels


def _run_local(compute, indices, scheduler, blocks_in_flight, bar) -> None:
    import dask
    from dask.callbacks import Callback

    tasks = [dask.delayed(compute, pure=False)(i, dask_key_name=f"block-{i}") for i in indices]
    workers = 1 if scheduler == "sync" else (blocks_in_flight or 2)

    class _Tick(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            bar.update(result)

    with _Tick():
        dask.compute(*tasks, scheduler=scheduler, num_workers=workers)


def _run_distributed(compute, indices, scheduler, bar) -> None:
    from distributed import Client, as_completed

    own = not isinstance(scheduler, Client)  # an address, checked by check_run_options
    client = Client(scheduler) if own else scheduler
    try:
        futures = client.map(compute, indices, pure=False)
        for future in as_completed(futures):
            bar.update(future.result())
    finally:
        if own:
            client.close()
