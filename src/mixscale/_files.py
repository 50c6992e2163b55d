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
