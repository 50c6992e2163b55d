"""A zarr output store written block by block, with per-block completion markers.

Every block writes whole shards of every output array (blocks and shards have
the same shape), so workers on different machines never write the same file.
After a block's arrays are written, an empty marker file
``<store>/.mixscale/done/<index>`` is created under a temporary name and renamed:
a block killed mid-write has no marker and is recomputed on resume, so a
half-written block is never taken as complete.

The store also records the *plan* (model, input, settings) it was made for; a
later run with a different plan refuses to mix its blocks in, unless told to
replace the store.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .._files import atomic_path
from .._lock import LockedError, describe, held, is_stale, owner_record, read_owner

logger = logging.getLogger(__name__)

PLAN_KEY = "mixscale_plan"
MARKER_DIR = (".mixscale", "done")


@dataclass(frozen=True)
class ArraySpec:
    """One output array of a block store.

    Attributes
    ----------
    name : str
        Array path inside the store, e.g. ``"labels"``.
    dtype : str
        NumPy dtype name.
    lead : tuple of int
        Leading non-spatial axes (``(C,)`` for probabilities, ``()`` for labels).
    """

    name: str
    dtype: str
    lead: tuple[int, ...] = ()


def chunk_shape(block_shape: Sequence[int], *, plane: int = 256) -> tuple[int, ...]:
    """Inner chunks of a shard: single slices along the first axis of a volume, at most ``plane`` wide in-plane.

    Each entry divides the block's (zarr requires chunks to tile a shard), so a
    viewer showing one slice reads only that slice's chunks.
    """
    def divisor(n: int) -> int:
        return max(d for d in range(1, min(n, plane) + 1) if n % d == 0)

    dims = list(block_shape)
    if len(dims) == 3:
        return (1, divisor(dims[1]), divisor(dims[2]))
    return tuple(divisor(n) for n in dims)


class BlockStore:
    """Open or create the zarr group at ``path`` for a planned block-wise prediction.

    Parameters
    ----------
    path : str or Path
        Directory of the zarr group (``*.zarr``).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._markers = self.path.joinpath(*MARKER_DIR)

    # -- creation --------------------------------------------------------------

    @classmethod
    def prepare(cls, path, *, shape: Sequence[int], block_shape: Sequence[int], arrays: Sequence[ArraySpec],
                plan: dict, overwrite: bool = False) -> "BlockStore":
        """Create the store, or reuse one made for the same ``plan`` (resume).

        Several processes may call this at once (job arrays): the store is built
        under a temporary name and renamed into place, and the losers of that race
        reuse the winner's store after checking its plan.

        Raises
        ------
        FileExistsError
            If ``path`` holds something else: a store for another plan (unless
            ``overwrite``), or a file or folder that is not such a store.
        """
        store = cls(path)
        plan = json.loads(json.dumps(plan))  # JSON-normalised, so it compares with what is read back
        store.path.parent.mkdir(parents=True, exist_ok=True)
        with held(store._prepare_lock, "preparing a block-prediction store", wait=120.0):
            if store.path.exists():
                old = store.read_plan()
                if old == plan:
                    logger.info("resuming %s: %d blocks already complete", store.path, len(store.done()))
                    store.register_writer()
                    return store
                if old is None or not overwrite:  # never remove what mixscale did not write
                    raise FileExistsError(store._mismatch_message(old, plan))
                store._refuse_live_writers()
                logger.warning("replacing %s (made for different settings)", store.path)
                shutil.rmtree(store.path)
            with atomic_path(store.path, replace=False) as tmp:
                _create_group(tmp, shape, block_shape, arrays, plan)
            store.register_writer()
        return store

    # -- writers -----------------------------------------------------------------

    @property
    def _prepare_lock(self) -> Path:
        """Held while a process checks, replaces or creates the store (a sibling of the store)."""
        return self.path.with_name(f".{self.path.name}.lock")

    @property
    def _writers(self) -> Path:
        return self.path.joinpath(MARKER_DIR[0], "writers")

    def register_writer(self) -> None:
        """Record this process as a writer of the store's plan (parts of one plan may write together)."""
        self._writers.mkdir(parents=True, exist_ok=True)
        record = owner_record("writing blocks")
        with atomic_path(self._writers / f"{record['host']}-{record['pid']}") as tmp:
            tmp.write_text(json.dumps(record))
        self._writer_record = record

    def unregister_writer(self) -> None:
        """Remove this process's writer record (at the end of its part, finished or failed)."""
        record = getattr(self, "_writer_record", None)
        if record is not None:
            (self._writers / f"{record['host']}-{record['pid']}").unlink(missing_ok=True)
            self._writer_record = None

    def live_writers(self) -> list[dict]:
        """The other processes recorded as writers of the store that still run (or run on another host)."""
        if not self._writers.is_dir():
            return []
        me = owner_record("")
        found = [read_owner(p) for p in sorted(self._writers.iterdir())]
        return [w for w in found if w is not None and not is_stale(w)
                and (w.get("pid"), w.get("host")) != (me["pid"], me["host"])]

    def _refuse_live_writers(self) -> None:
        live = self.live_writers()
        if live:
            raise LockedError(f"output {self.path} is being written by {describe(live[0])}"
                              f"{f' and {len(live) - 1} more' if len(live) > 1 else ''}; overwrite refused "
                              "while it runs: wait for it to finish, or choose another output")

    def read_plan(self) -> dict | None:
        """The plan stored in the group's attributes; None if this is not a block store."""
        meta = self.path / "zarr.json"
        if not meta.is_file():
            return None
        try:
            return json.loads(meta.read_text()).get("attributes", {}).get(PLAN_KEY)
        except (OSError, ValueError):
            return None

    def _mismatch_message(self, old: dict | None, new: dict) -> str:
        if old is None:
            return (f"output {self.path} exists and is not a mixscale block-prediction store, so it is never "
                    "replaced, with or without overwrite; choose another output or remove it yourself")
        changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        detail = "; ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in changed[:4])
        what = old.get("kind", "a prediction")  # stores of other block-wise jobs name themselves
        return (f"output {self.path} holds {what} made with other settings ({detail}); pass overwrite=True "
                "(CLI: --overwrite) to replace it, or choose another output")

    def summary(self) -> dict:
        """Format, arrays (of nested groups too), blocks complete out of the grid (or out of the plan's
        ``blocks``, for jobs whose blocks are not one grid), and the plan (model, input, settings)."""
        import math

        import zarr

        plan = self.read_plan() or {}
        group = zarr.open_group(str(self.path), mode="r")
        with warnings.catch_warnings():  # zarr notes that the marker folder is no zarr node; it is not meant to be
            warnings.simplefilter("ignore")
            arrays = {name: f"{node.shape} {node.dtype}" for name, node in sorted(group.members(max_depth=None))
                      if isinstance(node, zarr.Array)}
        counts = [-(-n // b) for n, b in zip(plan.get("shape", ()), plan.get("block_shape", ()))]
        total = plan.get("blocks") or (math.prod(counts) if counts else 0)
        done = len(self.done())
        return {"format": f"mixscale block-wise store (zarr): {plan.get('kind', 'a prediction')}", "arrays": arrays,
                "blocks_complete": f"{done} of {total}" + (" (complete)" if done == total else " (resumable)"),
                **{k: plan[k] for k in ("image", "model_sha256", "task", "block_shape", "axis", "tta")
                   if k in plan}}

    # -- blocks ----------------------------------------------------------------

    def done(self) -> set[int]:
        """Indices of the blocks whose outputs are completely written."""
        if not self._markers.is_dir():
            return set()
        return {int(p.name) for p in self._markers.iterdir() if p.name.isdigit()}

    def lazy(self, name: str, *, offset: int = 0, missing: int = 0):
        """A dask array of output ``name`` showing only complete blocks, for a live view.

        Blocks not yet complete read as ``missing``; complete ones as their values plus
        ``offset``. Each compute reads the markers again, so a viewer that refreshes
        sees the blocks written since.

        Parameters
        ----------
        name : str
            An output array of the store, spatial only (``labels``, ``set_size``...).
        offset, missing : int

        Returns
        -------
        dask.array.Array
            ``(*spatial)``, chunked by block.
        """
        import dask.array as da
        import zarr

        arr = zarr.open_group(str(self.path), mode="r")[name]
        view = da.from_zarr(arr, chunks=arr.shards or arr.chunks)
        markers, counts = self._markers, view.numblocks

        def shown(block, block_info=None):
            loc = block_info[0]["chunk-location"]
            done = (markers / str(int(np.ravel_multi_index(loc, counts)))).is_file()
            return (block + block.dtype.type(offset)) if done else np.full_like(block, missing)

        return view.map_blocks(shown, dtype=view.dtype)

    def write_block(self, index: int, region: tuple[slice, ...], outputs: dict[str, np.ndarray]) -> None:
        """Write one block's outputs (``name -> (*lead, *region shape)``), then mark it complete."""
        import zarr

        for name, values in outputs.items():
            array = zarr.open_array(store=str(self.path), path=name, mode="r+")
            lead = (slice(None),) * (array.ndim - len(region))
            array[lead + tuple(region)] = values
        self._markers.mkdir(parents=True, exist_ok=True)
        with atomic_path(self._markers / str(index)) as tmp:  # after every array: the marker says "complete"
            tmp.touch()


def _create_group(path: Path, shape, block_shape, arrays: Sequence[ArraySpec], plan: dict) -> None:
    import zarr

    group = zarr.open_group(str(path), mode="w")
    chunks = chunk_shape(block_shape)
    names = ("z", "y", "x")[-len(shape):]
    for spec in arrays:
        lead_names = ("c",) if len(spec.lead) == 1 else tuple(f"c{i}" for i in range(len(spec.lead)))
        group.create_array(spec.name, shape=tuple(spec.lead) + tuple(shape), dtype=spec.dtype,
                           shards=tuple(spec.lead) + tuple(block_shape),
                           chunks=(1,) * len(spec.lead) + chunks, fill_value=0,
                           dimension_names=lead_names + names)
    group.attrs[PLAN_KEY] = plan
    path.joinpath(*MARKER_DIR).mkdir(parents=True)
