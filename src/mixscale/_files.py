"""Writing files so that nothing half-written is ever left under a final name.

:func:`atomic_path` is the one way mixscale writes a file or folder in place:
write to a temporary sibling, then rename onto the target. Only the standard
library is imported, so every floor may use it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import uuid
from pathlib import Path


def _tmp_name(target: Path) -> Path:
    return target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"


def _move_exclusive(tmp: Path, target: Path) -> None:
    """Rename ``tmp`` to ``target`` unless something is there (checked by the rename itself, not before)."""
    try:
        if tmp.is_dir():
            os.rename(tmp, target)  # fails on an existing file or non-empty folder
        else:
            os.link(tmp, target)  # fails on anything existing; unlike rename it never replaces
            tmp.unlink()
    except (FileExistsError, IsADirectoryError, NotADirectoryError) as exc:
        raise FileExistsError(f"{target} exists already") from exc
    except OSError as exc:
        if not target.exists():
            raise
        raise FileExistsError(f"{target} exists already") from exc


def current_umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux: /proc)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: set and restore at once
    os.umask(mask)
    return mask


def _plain_mode(tmp: Path, target: Path) -> int:
    """The mode a plain ``open()`` (or ``mkdir``) would give ``target``: an existing file keeps its own,
    a new one ``0o666 & ~umask`` (plus the execute bits the writer gave it), a folder ``0o777 & ~umask``."""
    if tmp.is_dir():
        return 0o777 & ~current_umask()
    if target.is_file():  # open(target, "w") on an existing file keeps its mode
        return stat.S_IMODE(target.stat().st_mode)
    executable = stat.S_IMODE(tmp.stat().st_mode) & 0o111
    return (0o666 | executable) & ~current_umask()


def _give_plain_mode(tmp: Path, target: Path) -> None:
    """Writers that create their file with ``mkstemp`` or a library's private mode (safetensors: 0600)
    would otherwise leave outputs unreadable to the group and others, unlike every other file."""
    if tmp.is_symlink():
        return
    mode = _plain_mode(tmp, target)
    if stat.S_IMODE(tmp.stat().st_mode) != mode:
        os.chmod(tmp, mode)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, replace: bool = True):
    """Yield a temporary sibling path; move it onto ``target`` on success.

    Works for files and directories. An existing directory target is moved
    aside, replaced, and deleted only once the new one is in place. If the
    writer raises, the temporary is removed and ``target`` is left as it was.

    The result has the mode a plain ``open()`` would give it, whatever mode the
    writer created the temporary with (``mkstemp`` and some libraries use 0600):
    an existing file's own mode, else ``0o666 & ~umask`` (folders ``0o777 & ~umask``).

    Parameters
    ----------
    target : str or os.PathLike
    replace : bool
        With ``False`` an existing ``target`` (a file, or a folder that is not
        empty) is never replaced: the final rename raises ``FileExistsError``
        (and the temporary is removed) when something is already there, e.g.
        another process won a race to create it. The rename itself checks, so
        there is no window between a check and the move.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> with atomic_path(folder / "a.txt") as tmp:
    ...     _ = tmp.write_text("done")
    >>> sorted(p.name for p in folder.iterdir())
    ['a.txt']
    >>> import shutil; shutil.rmtree(folder)
    """
    target = Path(target)
    tmp = _tmp_name(target)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"writer produced nothing at {tmp}")
        _give_plain_mode(tmp, target)
        if not replace:
            _move_exclusive(tmp, target)
        elif target.is_dir() and not target.is_symlink():
            trash = _tmp_name(target)
            os.rename(target, trash)
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(trash, target)
                raise
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
