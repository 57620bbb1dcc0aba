"""The durable write helpers every file veil writes goes through."""

from __future__ import annotations

import os
from pathlib import Path

from veil._files import create_new, write_atomic


def test_create_new_writes_a_new_file_whole_with_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "k"
    assert create_new(path, b"key\n", 0o600)
    assert path.read_bytes() == b"key\n"
    assert path.stat().st_mode & 0o777 == 0o600
    assert os.listdir(tmp_path) == ["k"]  # no temporary file left


def test_create_new_never_replaces_an_existing_file(tmp_path: Path) -> None:
    path = tmp_path / "k"
    path.write_bytes(b"first")
    assert not create_new(path, b"second")
    assert path.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["k"]


def test_write_atomic_replaces_the_bytes_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "s"
    path.write_bytes(b"old")
    write_atomic(path, b"new")
    assert path.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["s"]


def test_write_atomic_exact_mode_ignores_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        write_atomic(tmp_path / "c", b"x", 0o644, exact_mode=True)
        write_atomic(tmp_path / "d", b"x", 0o644)
    finally:
        os.umask(old)
    assert (tmp_path / "c").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o600
