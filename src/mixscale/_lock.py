"""One writer at a time: lock files that name their owner, and stale ones that are taken over.

A lock is a small JSON file (``pid``, ``host``, ``started``, ``what``) created
with ``O_CREAT | O_EXCL``, so exactly one process can create it. A lock whose
owner was on this host and is no longer alive is stale: it is moved aside under
a unique name (a rename, so two processes that both find it stale cannot both
take it over) and the creation is tried again. A lock held by a process on
another host is never broken: the error names the owner and the file to remove
once that process is known to be gone.

Used for a training run directory (``run.lock``) and for the writers of a
block-prediction store (one registration per writing process; see
:mod:`mixscale.infer.store`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path

logger = logging.getLogger(__name__)


class LockedError(RuntimeError):
    """Another live process holds the lock; the message names it."""


def owner_record(what: str) -> dict:
    """This process as a lock owner: ``pid``, ``host``, ``started`` (UNIX time) and ``what`` it does."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "what": what}


def read_owner(path: Path) -> dict | None:
    """The owner recorded in lock file ``path``; None if it is gone or unreadable (being written)."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def pid_alive(pid) -> bool:
    """Whether process ``pid`` exists on this host."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        return True
    return True


def is_stale(record: dict | None) -> bool:
    """A lock is stale when its owner ran on this host and is no longer alive."""
    return record is not None and record.get("host") == socket.gethostname() and not pid_alive(record.get("pid"))


def describe(record: dict | None) -> str:
    """``pid 123 on host 'node7' (training, since 2026-12-03 06:10:00)``."""
    if record is None:
        return "another process"
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.get("started") or 0))
    return f"pid {record.get('pid')} on host {record.get('host')!r} ({record.get('what')}, since {started})"


def _create(path: Path, record: dict) -> bool:
    """Create lock file ``path`` holding ``record``; False if it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        json.dump(record, f)
    return True


def _break_stale(path: Path, record: dict) -> None:
    """Move a stale lock aside (a rename: of two processes that found it stale, one succeeds)."""
    aside = path.with_name(f"{path.name}.stale-{os.getpid()}-{time.monotonic_ns()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    taken = read_owner(aside)
    if taken != record and not is_stale(taken):  # a new owner got in between: give its lock back
        with contextlib.suppress(OSError):
            os.rename(aside, path)
        return
    logger.warning("took over the stale lock %s of %s, which is no longer running", path, describe(record))
    aside.unlink(missing_ok=True)


def acquire(path: str | os.PathLike, what: str, *, wait: float = 0.0) -> dict:
    """Take lock ``path`` for this process, taking over a stale one.

    Parameters
    ----------
    path : str or Path
        The lock file (its folder must exist).
    what : str
        What the owner does, for the message another process gets.
    wait : float
        Seconds to wait for a live owner to release it (short critical sections);
        0 refuses at once.

    Returns
    -------
    dict
        The owner record written.

    Raises
    ------
    LockedError
        If a live process (or one on another host) holds it.
    """
    path, record = Path(path), owner_record(what)
    deadline, unreadable = time.monotonic() + wait, 0
    while True:
        if _create(path, record):
            return record
        owner = read_owner(path)
        if owner is None:  # created but not yet written, or just released: look again
            unreadable += 1
            if unreadable > 500:
                raise LockedError(f"lock file {path} cannot be read; remove it if no mixscale process uses it")
            time.sleep(0.01)
            continue
        if is_stale(owner):
            _break_stale(path, owner)
        elif time.monotonic() < deadline:
            time.sleep(0.05)
        else:
            raise LockedError(f"{path.parent} is in use by {describe(owner)}; wait for it to finish, or if that "
                              f"process is gone (it ran on another host), remove {path}")


def release(path: str | os.PathLike, record: dict) -> None:
    """Remove lock ``path`` if it still holds ``record`` (never another owner's lock)."""
    path = Path(path)
    if read_owner(path) == json.loads(json.dumps(record)):
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def held(path: str | os.PathLike, what: str, *, wait: float = 0.0):
    """Hold lock ``path`` for the ``with`` block (released on any exit; a killed process leaves a stale lock)."""
    record = acquire(path, what, wait=wait)
    try:
        yield record
    finally:
        release(path, record)
