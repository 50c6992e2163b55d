"""Writing files so that nothing half-written is ever left under a final name.

:func:`atomic_path` is the one way mixscale writes a file or folder in place:
write to a temporary sibling, then rename onto the target. Only the standard
library is imported, so every floor may use it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path


def _tmp_name(target: Path) -> Path:
    return target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


@contextlib.contextmanager
def atomic_path(target: Path):
    """Yield a temporary sibling path; move it onto ``target`` on success.

    Works for files and directories. An existing directory target is moved
    aside, replaced, and deleted only once the new one is in place.
    """
    tmp = _tmp_name(target)
    try:
        yield tmp
        if not tmp.exists():
            raise RuntimeError(f"writer produced nothing at {tmp}")
        if target.is_dir() and not target.is_symlink():
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
