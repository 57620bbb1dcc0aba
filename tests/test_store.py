"""FileStore: atomic writes, modes, locking between processes, history, names, URLs."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from veil import (
    InvalidStackNameError,
    StackNotFoundError,
    StateError,
    StateLockedError,
    StoreAccessError,
)
from veil.state import (
    DEFAULT_HISTORY_SIZE,
    FileStore,
    LockInfo,
    StateStore,
    store_from_url,
    validate_stack_name,
)


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(tmp_path / "state")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


_HOLD_LOCK = """
import sys
from veil.state import FileStore
store = FileStore(sys.argv[1])
lock = store.lock(sys.argv[2], owner="ci-runner")
print("locked", flush=True)
sys.stdin.readline()
lock.release()
print("released", flush=True)
"""


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


# --- reading and writing ---------------------------------------------------------------


def test_write_then_read_returns_the_bytes(store: FileStore) -> None:
    store.write("dev", b'{"a": 1}')
    assert store.read("dev") == b'{"a": 1}'


def test_write_replaces_previous_bytes(store: FileStore) -> None:
    store.write("dev", b"one")
    store.write("dev", b"two")
    assert store.read("dev") == b"two"


def test_read_of_missing_stack_raises_stack_not_found(store: FileStore) -> None:
    with pytest.raises(StackNotFoundError, match="no stack 'prod'"):
        store.read("prod")


def test_exists_tells_written_from_missing(store: FileStore) -> None:
    assert not store.exists("dev")
    store.write("dev", b"x")
    assert store.exists("dev")


def test_write_refuses_str_data(store: FileStore) -> None:
    with pytest.raises(StateError, match="bytes"):
        store.write("dev", "text")  # type: ignore[arg-type]


def test_file_store_is_a_state_store(store: FileStore) -> None:
    assert isinstance(store, StateStore)


# --- atomicity and modes -----------------------------------------------------------------


def test_write_leaves_no_temporary_files(store: FileStore) -> None:
    for i in range(5):
        store.write("dev", b"v%d" % i)
    assert sorted(os.listdir(store.root / "stacks")) == ["dev.json"]
    assert not (store.root / "locks" / "dev.lock").exists()


def test_failed_write_removes_its_temporary_file_and_keeps_old_bytes(store: FileStore) -> None:
    store.write("other", b"keep")
    # A folder where the state file should be makes the final rename fail for real.
    (store.root / "stacks" / "dev.json").mkdir()
    with pytest.raises(StoreAccessError, match="cannot write stack 'dev'"):
        store.write("dev", b"new")
    assert sorted(os.listdir(store.root / "stacks")) == ["dev.json", "other.json"]
    assert store.read("other") == b"keep"
    assert store.lock_info("dev") is None


def test_state_and_history_files_are_private(store: FileStore) -> None:
    store.write("dev", b"x")
    assert _mode(store.root / "stacks" / "dev.json") == 0o600
    for entry in store.history("dev"):
        assert _mode(store.root / "history" / "dev" / f"{entry.version:010d}.json") == 0o600


def test_created_folders_are_private(store: FileStore) -> None:
    store.write("dev", b"x")
    for folder in ("stacks", "locks", "history", "history/dev"):
        assert _mode(store.root / folder) == 0o700, folder


def test_lock_file_is_private_and_names_its_holder(store: FileStore) -> None:
    with store.lock("dev", owner="alice"):
        path = store.root / "locks" / "dev.lock"
        assert _mode(path) == 0o600
        record = json.loads(path.read_bytes())
    assert record["owner"] == "alice"
    assert record["host"] == socket.gethostname()
    assert record["pid"] == os.getpid()
    assert record["time"].endswith("+00:00")


# --- locking -------------------------------------------------------------------------------


def test_second_writer_in_same_process_gets_state_locked_error(tmp_path: Path) -> None:
    first, second = FileStore(tmp_path), FileStore(tmp_path)
    with first.lock("dev", owner="alice"), pytest.raises(StateLockedError) as info:
        second.write("dev", b"x")
    message = str(info.value)
    assert "alice" in message
    assert socket.gethostname() in message
    assert f"pid {os.getpid()}" in message
    assert "break_lock('dev')" in message
    assert not second.exists("dev")


def test_holder_writes_while_locked(store: FileStore) -> None:
    with store.lock("dev"):
        store.write("dev", b"1")
        store.write("dev", b"2")
    assert store.read("dev") == b"2"


def test_lock_is_released_after_with_block(tmp_path: Path) -> None:
    first, second = FileStore(tmp_path), FileStore(tmp_path)
    with first.lock("dev") as lock:
        assert lock.held
    assert not lock.held
    assert first.lock_info("dev") is None
    second.write("dev", b"x")


def test_lock_release_twice_is_harmless(store: FileStore) -> None:
    lock = store.lock("dev")
    lock.release()
    lock.release()
    assert store.lock_info("dev") is None


def test_locking_twice_through_one_store_is_refused(store: FileStore) -> None:
    with store.lock("dev"), pytest.raises(StateLockedError, match="already locked"):
        store.lock("dev")


def test_locks_of_different_stacks_are_independent(tmp_path: Path) -> None:
    first, second = FileStore(tmp_path), FileStore(tmp_path)
    with first.lock("dev"):
        second.write("prod", b"x")


def test_lock_held_by_another_process_is_refused_naming_it(store: FileStore) -> None:
    proc = _spawn(_HOLD_LOCK, str(store.root), "dev")
    try:
        assert proc.stdout is not None
        assert proc.stdin is not None
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(StateLockedError) as info:
            store.lock("dev")
        assert f"pid {proc.pid}" in str(info.value)
        assert "ci-runner" in str(info.value)
        proc.stdin.write("\n")
        proc.stdin.flush()
        assert proc.stdout.readline().strip() == "released"
    finally:
        proc.kill()
        proc.wait()
    with store.lock("dev"):
        store.write("dev", b"mine")


def test_stale_lock_of_killed_process_is_taken_over(store: FileStore) -> None:
    proc = _spawn(_HOLD_LOCK, str(store.root), "dev")
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "locked"
    proc.kill()
    proc.wait()
    holder = store.lock_info("dev")
    assert holder is not None
    assert holder.pid == proc.pid
    store.write("dev", b"after crash")
    assert store.read("dev") == b"after crash"
    assert store.lock_info("dev") is None


def test_stale_lock_with_dead_pid_is_taken_over(store: FileStore) -> None:
    path = store.root / "locks" / "dev.lock"
    path.parent.mkdir(parents=True)
    dead = LockInfo(owner="bob", host=socket.gethostname(), pid=_dead_pid(), time="t", token="x")
    path.write_bytes(dead.to_json())
    with store.lock("dev", owner="alice") as lock:
        assert lock.info.owner == "alice"
        assert store.lock_info("dev") == lock.info


def test_lock_record_with_an_impossible_pid_is_taken_over(store: FileStore) -> None:
    path = store.root / "locks" / "dev.lock"
    path.parent.mkdir(parents=True)
    bogus = LockInfo(owner="bob", host=socket.gethostname(), pid=10**30, time="t", token="x")
    path.write_bytes(bogus.to_json())
    with store.lock("dev", owner="alice") as lock:
        assert store.lock_info("dev") == lock.info


def test_lock_record_nested_too_deeply_is_not_a_record(store: FileStore) -> None:
    assert LockInfo.from_json(b"[" * 100_000 + b"]" * 100_000) is None


def test_lock_path_that_is_a_folder_raises_state_error(store: FileStore) -> None:
    (store.root / "locks" / "dev.lock").mkdir(parents=True)
    with pytest.raises(StateError, match="cannot read the lock file"):
        store.lock("dev")


def test_state_path_that_is_a_folder_raises_state_error(store: FileStore) -> None:
    (store.root / "stacks" / "dev.json").mkdir(parents=True)
    with pytest.raises(StateError, match="cannot read the state of stack 'dev'"):
        store.read("dev")


def test_lock_of_dead_pid_on_another_host_is_not_taken_over(store: FileStore) -> None:
    path = store.root / "locks" / "dev.lock"
    path.parent.mkdir(parents=True)
    other = LockInfo(owner="bob", host="elsewhere.invalid", pid=_dead_pid(), time="t", token="x")
    path.write_bytes(other.to_json())
    with pytest.raises(StateLockedError, match=r"bob on host elsewhere\.invalid"):
        store.lock("dev")


def test_break_lock_removes_a_foreign_lock_and_returns_its_holder(store: FileStore) -> None:
    path = store.root / "locks" / "dev.lock"
    path.parent.mkdir(parents=True)
    other = LockInfo(owner="bob", host="elsewhere.invalid", pid=1, time="t", token="x")
    path.write_bytes(other.to_json())
    assert store.break_lock("dev") == other
    assert store.break_lock("dev") is None
    store.write("dev", b"x")


def test_write_after_lock_was_broken_is_refused(tmp_path: Path) -> None:
    holder, breaker = FileStore(tmp_path), FileStore(tmp_path)
    with holder.lock("dev"):
        breaker.break_lock("dev")
        with breaker.lock("dev"), pytest.raises(StateLockedError, match="was broken"):
            holder.write("dev", b"late")
    assert not holder.exists("dev")


def test_release_after_break_keeps_the_new_holders_lock(tmp_path: Path) -> None:
    holder, breaker = FileStore(tmp_path), FileStore(tmp_path)
    lock = holder.lock("dev")
    breaker.break_lock("dev")
    with breaker.lock("dev") as new:
        lock.release()
        assert breaker.lock_info("dev") == new.info


def test_empty_lock_file_left_by_a_crash_is_removed(store: FileStore) -> None:
    path = store.root / "locks" / "dev.lock"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"")
    os.utime(path, (0, 0))
    store.write("dev", b"x")
    assert store.read("dev") == b"x"


_INCREMENT = """
import json, sys, time
from veil import StateLockedError
from veil.state import FileStore
store = FileStore(sys.argv[1])
print("ready", flush=True)
sys.stdin.readline()  # both start together, so that they collide
done = refused = 0
while done < int(sys.argv[2]):
    try:
        with store.lock("dev"):
            n = json.loads(store.read("dev"))["n"]
            time.sleep(0.001)
            store.write("dev", json.dumps({"n": n + 1}).encode())
        done += 1
    except StateLockedError:
        refused += 1
        time.sleep(0.0005)
print(done, refused)
"""


def test_two_processes_saving_one_stack_lose_no_update(store: FileStore) -> None:
    store.write("dev", b'{"n": 0}')
    procs = [_spawn(_INCREMENT, str(store.root), "40") for _ in range(2)]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    results = []
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write("go\n")
        proc.stdin.flush()
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        results.append([int(x) for x in out.split()])
    assert json.loads(store.read("dev"))["n"] == 80
    assert sum(r[1] for r in results) > 0  # they did collide, and were refused


_SAVE_WHILE_HELD = """
import sys
from veil import StateLockedError
from veil.state import FileStore
store = FileStore(sys.argv[1])
try:
    store.write("dev", b"second")
except StateLockedError as exc:
    print("refused:", exc)
"""


def test_second_process_saving_a_held_stack_gets_state_locked_error(store: FileStore) -> None:
    store.write("dev", b"first")
    with store.lock("dev", owner="alice"):
        out = subprocess.run(
            [sys.executable, "-c", _SAVE_WHILE_HELD, str(store.root)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        store.write("dev", b"first, updated")
    assert out.startswith("refused:")
    assert f"alice on host {socket.gethostname()} (pid {os.getpid()})" in out
    assert store.read("dev") == b"first, updated"


# --- history ---------------------------------------------------------------------------


def test_history_keeps_the_last_n_versions_newest_first(tmp_path: Path) -> None:
    store = FileStore(tmp_path, history_size=3)
    for i in range(1, 6):
        store.write("dev", b"v%d" % i)
    entries = store.history("dev")
    assert [e.version for e in entries] == [5, 4, 3]
    assert [store.read_version("dev", e.version) for e in entries] == [b"v5", b"v4", b"v3"]
    assert entries[0].size == 2
    assert len(os.listdir(tmp_path / "history" / "dev")) == 3


def test_current_version_is_first_in_history(store: FileStore) -> None:
    store.write("dev", b"a")
    store.write("dev", b"b")
    assert store.read_version("dev", store.history("dev")[0].version) == store.read("dev")


def test_default_history_size_is_ten(store: FileStore) -> None:
    assert DEFAULT_HISTORY_SIZE == 10
    for i in range(12):
        store.write("dev", b"%d" % i)
    assert len(store.history("dev")) == 10


def test_pruned_version_raises_stack_not_found(tmp_path: Path) -> None:
    store = FileStore(tmp_path, history_size=1)
    store.write("dev", b"a")
    store.write("dev", b"b")
    with pytest.raises(StackNotFoundError, match="version 1"):
        store.read_version("dev", 1)


def test_history_size_zero_keeps_no_history(tmp_path: Path) -> None:
    store = FileStore(tmp_path, history_size=0)
    store.write("dev", b"a")
    assert store.history("dev") == []


def test_history_of_unknown_stack_is_empty(store: FileStore) -> None:
    assert store.history("nope") == []


def test_negative_history_size_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="history_size"):
        FileStore(tmp_path, history_size=-1)


# --- names, listing, deleting -----------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["", "../x", "..", ".", "a/b", "a\\b", ".hidden", "-x", "a b", "a\x00b", "x" * 101]
)
def test_invalid_stack_names_are_refused(store: FileStore, name: str) -> None:
    with pytest.raises(InvalidStackNameError):
        store.write(name, b"x")
    with pytest.raises(InvalidStackNameError):
        store.read(name)
    with pytest.raises(InvalidStackNameError):
        store.lock(name)
    assert not (store.root / "x.json").exists()


def test_non_str_stack_name_is_refused() -> None:
    with pytest.raises(InvalidStackNameError, match="must be a str"):
        validate_stack_name(3)


@pytest.mark.parametrize("name", ["dev", "prod-eu.1", "A_b", "0", "x" * 100])
def test_valid_stack_names_are_accepted(store: FileStore, name: str) -> None:
    store.write(name, b"x")
    assert store.read(name) == b"x"


def test_invalid_stack_name_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="invalid stack name"):
        validate_stack_name("../etc")


def test_list_stacks_is_sorted_and_complete(store: FileStore) -> None:
    assert store.list_stacks() == []
    for name in ("prod", "dev", "staging"):
        store.write(name, b"x")
    (store.root / "stacks" / ".dev.json.1234.tmp").write_bytes(b"junk")
    assert store.list_stacks() == ["dev", "prod", "staging"]


def test_delete_removes_stack_and_history(store: FileStore) -> None:
    store.write("dev", b"x")
    store.delete("dev")
    assert not store.exists("dev")
    assert store.history("dev") == []
    assert store.list_stacks() == []


def test_delete_of_missing_stack_raises(store: FileStore) -> None:
    with pytest.raises(StackNotFoundError):
        store.delete("dev")


def test_delete_of_locked_stack_is_refused(tmp_path: Path) -> None:
    first, second = FileStore(tmp_path), FileStore(tmp_path)
    first.write("dev", b"x")
    with first.lock("dev"), pytest.raises(StateLockedError):
        second.delete("dev")
    assert first.exists("dev")


# --- URLs ---------------------------------------------------------------------------------


def test_default_url_is_dot_veil_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    store = store_from_url()
    assert isinstance(store, FileStore)
    assert store.root == tmp_path / ".veil"


def test_relative_file_url_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = store_from_url("file://state/dir")
    assert isinstance(store, FileStore)
    assert store.root == tmp_path / "state" / "dir"


def test_absolute_file_url(tmp_path: Path) -> None:
    store = store_from_url(f"file://{tmp_path}/abs")
    assert isinstance(store, FileStore)
    assert store.root == tmp_path / "abs"
    assert store_from_url(store.url).root == store.root  # type: ignore[attr-defined]


def test_history_parameter_in_url(tmp_path: Path) -> None:
    store = store_from_url(f"file://{tmp_path}?history=3")
    assert isinstance(store, FileStore)
    assert store.history_size == 3


def test_unknown_url_parameter_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StateError, match="unknown parameter 'colour'"):
        store_from_url(f"file://{tmp_path}?colour=red")


def test_unknown_url_scheme_lists_known_ones() -> None:
    with pytest.raises(StateError, match=r"known: azblob, file, gs, postgres, postgresql, s3"):
        store_from_url("ftp://example.invalid/x")


def test_plain_path_means_file_store(tmp_path: Path) -> None:
    store = store_from_url(str(tmp_path / "plain"))
    assert isinstance(store, FileStore)
    assert store.root == tmp_path / "plain"
