"""FileStore passes the StateStore compliance suite, and keeps history apart from the live file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from veil import StoreAccessError
from veil.state import FileStore
from veil.testing import StateStoreComplianceSuite


class TestFileStore(StateStoreComplianceSuite):
    takes_over_stale_locks = True

    @pytest.fixture
    def store(self, tmp_path: Path) -> FileStore:
        return FileStore(tmp_path / "state")


def test_history_files_are_copies_not_links_of_the_live_file(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.write("dev", b"one")
    store.write("dev", b"two")
    live = (tmp_path / "stacks" / "dev.json").stat()
    assert live.st_nlink == 1
    for entry in store.history("dev"):
        kept = (tmp_path / "history" / "dev" / f"{entry.version:010d}.json").stat()
        assert kept.st_nlink == 1
        assert (kept.st_dev, kept.st_ino) != (live.st_dev, live.st_ino)


def test_editing_the_live_file_in_place_leaves_history_alone(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    store.write("dev", b"original")
    with open(tmp_path / "stacks" / "dev.json", "r+b") as f:
        f.write(b"EDITED!!")
    assert store.read_version("dev", 1) == b"original"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to read-only folders")
def test_write_to_a_read_only_folder_is_a_store_access_error(tmp_path: Path) -> None:
    store = FileStore(tmp_path / "state")
    store.write("dev", b"x")
    (tmp_path / "state" / "stacks").chmod(0o500)
    try:
        with pytest.raises(StoreAccessError, match="cannot write stack 'dev'"):
            store.write("dev", b"y")
    finally:
        (tmp_path / "state" / "stacks").chmod(0o700)
    assert store.read("dev") == b"x"


def test_lock_in_a_folder_that_is_a_file_is_a_store_access_error(tmp_path: Path) -> None:
    (tmp_path / "state").write_bytes(b"not a folder")
    store = FileStore(tmp_path / "state")
    with pytest.raises(StoreAccessError, match="cannot take the lock of stack 'dev'"):
        store.lock("dev")
    with pytest.raises(StoreAccessError):
        store.write("dev", b"x")


def test_url_keeps_a_non_default_history_size(tmp_path: Path) -> None:
    from veil.state import store_from_url

    store = FileStore(tmp_path / "odd #name?", history_size=3)
    again = store_from_url(store.url)
    assert isinstance(again, FileStore)
    assert again.root == store.root
    assert again.history_size == 3
