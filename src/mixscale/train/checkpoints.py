"""Checkpoints and logs that survive a kill or a full disk, and a data order that resumes exactly.

- :class:`AtomicCheckpointIO` writes every Lightning checkpoint under a temporary
  name and renames it into place, so a full disk or a kill never leaves a
  truncated ``best.ckpt``/``last.ckpt`` under its final name.
- :func:`newest_intact_checkpoint` is where ``--resume`` continues from: the
  newest checkpoint that reads as a whole (``last`` before ``best`` at equal age).
- :class:`MetricsHistory` keeps the epochs logged before a resume on disk in
  ``logs/metrics.earlier.csv`` until they are merged back into ``metrics.csv``, so
  a kill during a resumed run loses no row.
- :class:`EpochShuffle` shuffles the training items with a permutation drawn from
  ``(seed, epoch)``: a resumed run sees the same order as an uninterrupted one.
"""

from __future__ import annotations

import csv
import errno
import logging
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler

from .._files import atomic_path

logger = logging.getLogger(__name__)

CHECKPOINT_NAMES = ("last.ckpt", "best.ckpt")


def checkpoint_io():
    """A Lightning ``CheckpointIO`` that writes through a temporary name (see :class:`AtomicCheckpointIO`)."""
    from lightning.pytorch.plugins.io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        """``torch.save`` to a temporary sibling, then a rename; a failed write leaves the old file."""

        def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                with atomic_path(path) as tmp:
                    torch.save(checkpoint, tmp)
            except OSError as exc:
                if exc.errno == errno.ENOSPC:
                    raise OSError(errno.ENOSPC, f"no space left on the device to write checkpoint {path}; "
                                                "the earlier checkpoints are intact: free space and resume "
                                                "with --resume") from None
                raise

    return AtomicCheckpointIO()


def is_intact(path: Path) -> bool:
    """Whether ``path`` is a whole checkpoint (``torch.save`` writes a zip whose directory is at its end)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (OSError, zipfile.BadZipFile, EOFError):
        return False


def newest_intact_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint of ``run_dir`` to resume from: the newest intact one; None if there is none.

    Damaged checkpoints (truncated by an older version on a full disk) are named in a warning and skipped.
    """
    found = []
    for rank, name in enumerate(CHECKPOINT_NAMES):
        path = Path(run_dir) / "checkpoints" / name
        if not path.is_file():
            continue
        if not is_intact(path):
            logger.warning("checkpoint %s is damaged (truncated?): skipped", path)
            continue
        found.append((path.stat().st_mtime_ns, -rank, path))
    if not found:
        return None
    newest = max(found)[2]
    if newest.name != CHECKPOINT_NAMES[0]:
        logger.warning("resuming from %s: there is no intact %s", newest, CHECKPOINT_NAMES[0])
    return newest


def read_rows(path: Path) -> list[dict]:
    """Rows of a metrics CSV (empty if there is none)."""
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def merge_rows(earlier: list[dict], new: list[dict]) -> list[dict]:
    """``earlier`` rows of the epochs before the first epoch of ``new``, then ``new``."""
    first_new = min((int(r["epoch"]) for r in new if r.get("epoch")), default=None)
    old = [r for r in earlier if first_new is None or int(r.get("epoch") or 0) < first_new]
    return old + new


def write_rows(rows: list[dict], path: Path) -> None:
    """Write ``rows`` as a CSV through a temporary name."""
    fields = list(dict.fromkeys(k for r in rows for k in r))
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


class MetricsHistory:
    """The ``metrics.csv`` of a run that may be resumed any number of times, and killed at any moment.

    Lightning's CSV logger starts a fresh ``metrics.csv`` when a run resumes. Before
    it does, :meth:`keep` merges what is there into ``metrics.earlier.csv`` (written
    atomically); :meth:`merge` puts those rows back in front of the new ones at the
    end of the run, and removes the earlier file. After a kill, the next resume
    finds both files and merges them first.

    Parameters
    ----------
    logs : Path
        The run's ``logs`` folder.
    """

    def __init__(self, logs: Path) -> None:
        self.current, self.earlier = Path(logs) / "metrics.csv", Path(logs) / "metrics.earlier.csv"

    def keep(self) -> None:
        """Save every row logged so far to the earlier file (before a resumed run starts logging)."""
        rows = merge_rows(read_rows(self.earlier), read_rows(self.current))
        if rows:
            write_rows(rows, self.earlier)

    def merge(self) -> None:
        """Rows of the earlier file before the new rows, as ``metrics.csv``; the earlier file removed."""
        if not self.earlier.is_file():
            return
        write_rows(merge_rows(read_rows(self.earlier), read_rows(self.current)), self.current)
        self.earlier.unlink()


class EpochShuffle(Sampler):
    """Indices ``0 .. n-1`` in an order drawn from ``(seed, epoch)``; Lightning calls :meth:`set_epoch`.

    Parameters
    ----------
    n : int
        Length of the dataset.
    seed : int
    """

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed, self.epoch = int(n), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        order = np.random.default_rng([self.seed, self.epoch, 0x5EED]).permutation(self.n)
        return iter(order.tolist())

