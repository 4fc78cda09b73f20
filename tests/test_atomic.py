"""atomic.atomic_file: a target is replaced whole or not at all, with the umask's modes."""

import os

import pytest

from attnmt.atomic import atomic_file


def test_failed_write_keeps_previous_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    target.write_text("previous")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as tmp:
            tmp.write_text("half writ")
            raise RuntimeError("disk full")
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_finished_write_replaces_target_with_umask_modes(tmp_path):
    target = tmp_path / "sub" / "out.txt"  # the folder is created
    old = os.umask(0o027)
    try:
        with atomic_file(target, fsync=True) as tmp:
            assert tmp.parent == target.parent and tmp != target
            tmp.write_text("new")
            assert not target.exists()  # nothing visible before the block ends
    finally:
        os.umask(old)
    assert target.read_text() == "new"
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]
