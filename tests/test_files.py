"""atomic_path: the one atomic writer (files and folders, replace or exclusive)."""

from __future__ import annotations

import pytest

from mixscale._files import atomic_path


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_a_new_file_appears_only_when_complete(tmp_path):
    target = tmp_path / "out.txt"
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.txt.") and tmp.name.endswith(".tmp")
        tmp.write_text("new")
        assert not target.exists()  # nothing under the final name while writing
    assert target.read_text() == "new"
    assert _names(tmp_path) == ["out.txt"]


def test_a_failing_writer_leaves_neither_target_nor_temporary(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert _names(tmp_path) == []


def test_an_existing_file_is_replaced_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt  # BaseException too: an interrupted write leaves the old file
    assert target.read_text() == "old" and _names(tmp_path) == ["out.txt"]
    with atomic_path(str(target)) as tmp:  # a str target works as well
        tmp.write_text("new")
    assert target.read_text() == "new" and _names(tmp_path) == ["out.txt"]


def test_a_writer_that_writes_nothing_is_an_error(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="writer produced nothing"):
        with atomic_path(target):
            pass
    assert target.read_text() == "old" and _names(tmp_path) == ["out.txt"]


def test_a_folder_target_is_created_and_replaced_whole(tmp_path):
    target = tmp_path / "store"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("1")
    assert _names(target) == ["a"]
    with pytest.raises(ValueError, match="bad block"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "b").write_text("2")
            raise ValueError("bad block")
    assert _names(target) == ["a"] and _names(tmp_path) == ["store"]  # the old folder, untouched
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "b").write_text("2")
    assert _names(target) == ["b"] and _names(tmp_path) == ["store"]  # replaced whole, the old one gone


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_replace_false_never_replaces_what_is_there(tmp_path, kind):
    target = tmp_path / "out"
    if kind == "file":
        target.write_text("winner")
    else:
        target.mkdir()
        (target / "zarr.json").write_text("winner")

    def write(tmp):
        if kind == "file":
            tmp.write_text("loser")
        else:
            tmp.mkdir()
            (tmp / "zarr.json").write_text("loser")

    with pytest.raises(FileExistsError, match="exists already"):
        with atomic_path(target, replace=False) as tmp:
            write(tmp)
    kept = target if kind == "file" else target / "zarr.json"
    assert kept.read_text() == "winner" and _names(tmp_path) == ["out"]  # the loser's temporary is gone too
    other = tmp_path / "fresh"
    with atomic_path(other, replace=False) as tmp:
        write(tmp)
    assert other.exists() and _names(tmp_path) == ["fresh", "out"]
