"""Shared helpers: atomic writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zooprobe.core.files import atomic_path, atomic_write_text


def test_atomic_writes_replace_whole_files_with_the_usual_mode(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "file.txt"
    atomic_write_text(target, "first")
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # readable like any file the user writes
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "second"  # a failed write leaves the old file and no temporary file
    assert [p.name for p in target.parent.iterdir()] == ["file.txt"]
