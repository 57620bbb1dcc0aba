# mypy: disable-error-code="arg-type"
# (the tests pass the environment as **ENV: mypy cannot tell it holds no "home"/"timeout")
"""``veil stack history | export | import | unlock``, --lock-timeout and --allow-rollback:
kept versions, recovery of a damaged or missing state, and a lock held by a hung run."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_support import (
    FAST_URL,
    PASSPHRASE,
    assert_one_error_line,
    call,
    environment,
    run,
)
from veil import Stack

ENV = {"VEIL_PASSPHRASE": PASSPHRASE}


def _stack(project: Path) -> None:
    """Stack 'dev' with versions 1..4: init, then three secure values set."""
    assert call(project, "stack", "init", "dev", "--secrets-provider", FAST_URL, **ENV).code == 0
    for i in (1, 2, 3):
        args = ("-s", "dev", "config", "set", f"k{i}", "--secret")
        assert call(project, *args, stdin=f"value-{i}", **ENV).code == 0


def _live(project: Path) -> Path:
    return project / ".veil" / "stacks" / "dev.json"


# --- history and export ---------------------------------------------------------------


def test_history_lists_versions_newest_first_with_who_and_key(tmp_path: Path) -> None:
    _stack(tmp_path)
    result = run(tmp_path, "-s", "dev", "stack", "history")  # needs no key
    assert result.code == 0, result
    rows = [line.split() for line in result.out.splitlines()]
    assert rows[0] == ["VERSION", "SERIAL", "TIME", "WHO", "KEY", "ID"]
    assert [r[0] for r in rows[1:]] == ["4", "3", "2", "1"]
    key_id = json.loads(_live(tmp_path).read_bytes())["key_id"]
    assert {r[4] for r in rows[1:]} == {key_id}
    assert "@" in rows[1][3]  # the lock holder that wrote it: owner@host
    as_json = json.loads(call(tmp_path, "-s", "dev", "stack", "history", "--json").out)
    assert [v["serial"] for v in as_json] == [4, 3, 2, 1]


def test_history_of_a_missing_stack_is_not_found(tmp_path: Path) -> None:
    result = call(tmp_path, "-s", "nope", "stack", "history")
    assert_one_error_line(result, "no stack 'nope'", code=3)


def test_export_version_then_import_restores_it_as_a_new_serial(tmp_path: Path) -> None:
    _stack(tmp_path)
    exported = run(tmp_path, "-s", "dev", "stack", "export", "--version", "2", "--file", "v2.json")
    assert exported.code == 0, exported
    assert "Exported version 2" in exported.out
    assert (tmp_path / "v2.json").stat().st_mode & 0o777 == 0o600
    imported = run(tmp_path, "-s", "dev", "stack", "import", "--file", "v2.json", **ENV)
    assert imported.code == 0, imported
    assert "as serial 5" in imported.out
    # The state is version 2's again (one secure value known), under a new serial.
    assert json.loads(_live(tmp_path).read_bytes())["serial"] == 5
    missing = call(tmp_path, "-s", "dev", "stack", "export", "--version", "99")
    assert_one_error_line(missing, "version 99", code=3)


def test_export_prints_the_live_document_without_a_key(tmp_path: Path) -> None:
    _stack(tmp_path)
    result = call(tmp_path, "-s", "dev", "stack", "export")
    assert result.out.encode() == _live(tmp_path).read_bytes()


@pytest.mark.parametrize("damage", ["truncated", "missing", "garbage"])
def test_import_recovers_a_damaged_or_missing_live_state_from_history(
    tmp_path: Path, damage: str
) -> None:
    _stack(tmp_path)
    live = _live(tmp_path)
    if damage == "truncated":
        with live.open("r+b") as f:  # in place: a kept version shares no storage with it
            f.truncate(100)
    elif damage == "missing":
        live.unlink()
    else:
        live.write_bytes(b"\x00" * 64)
    broken = call(tmp_path, "-s", "dev", "config", "get", "k3", "--show-secrets", **ENV)
    assert_one_error_line(broken)
    assert broken.code in (1, 3)
    listed = call(tmp_path, "stack", "ls")
    assert listed.code == 0
    if damage != "missing":
        assert "damaged: " in listed.out.splitlines()[1]
    newest = json.loads(call(tmp_path, "-s", "dev", "stack", "history", "--json").out)[0]
    assert newest["serial"] == 4  # the history copy is intact
    export = ("-s", "dev", "stack", "export", "--version", str(newest["version"]))
    assert call(tmp_path, *export, "--file", "good.json").code == 0
    imported = call(tmp_path, "-s", "dev", "stack", "import", "--file", "good.json", **ENV)
    assert imported.code == 0, imported
    again = call(tmp_path, "-s", "dev", "config", "get", "k3", "--show-secrets", **ENV)
    assert again.out == "value-3\n", again


def test_import_of_another_stacks_export_is_refused(tmp_path: Path) -> None:
    _stack(tmp_path)
    assert call(tmp_path, "stack", "init", "prod", "--secrets-provider", FAST_URL, **ENV).code == 0
    call(tmp_path, "-s", "prod", "stack", "export", "--file", "prod.json")
    before = _live(tmp_path).read_bytes()
    result = call(tmp_path, "-s", "dev", "stack", "import", "--file", "prod.json", **ENV)
    assert_one_error_line(result, "stack 'prod'", code=1)
    assert _live(tmp_path).read_bytes() == before


# --- rollback -------------------------------------------------------------------------


def test_a_rolled_back_state_is_refused_unless_allow_rollback(tmp_path: Path) -> None:
    _stack(tmp_path)
    old = (tmp_path / ".veil" / "history" / "dev" / "0000000004.json").read_bytes()
    call(tmp_path, "-s", "dev", "config", "set", "plain", "x", **ENV)
    _live(tmp_path).write_bytes(old)  # someone with backend access puts serial 4 back
    refused = call(tmp_path, "-s", "dev", "config", "get", "k1", **ENV)
    assert_one_error_line(refused, "rolled back", code=1)
    allowed = call(tmp_path, "-s", "dev", "config", "get", "k1", "--allow-rollback", **ENV)
    assert allowed.code == 0, allowed


# --- locks ----------------------------------------------------------------------------

_HOLD = """
import sys, time
from veil import Stack
from veil.providers import PassphraseProvider
stack = Stack.open("dev", secrets_provider=PassphraseProvider(passphrase=sys.argv[1]))
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
stack.close()
"""


@pytest.fixture
def hung(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    """A run that holds the lock of stack 'dev' and hangs (60 s)."""
    _stack(tmp_path)
    proc = _holder(tmp_path, 60)
    yield proc
    proc.kill()
    proc.wait()


def _holder(project: Path, seconds: float) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _HOLD, PASSPHRASE, str(seconds)],
        cwd=project,
        env=environment(project / ".home"),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == "locked\n"
    return proc


def test_a_lock_held_by_a_hung_run_fails_at_once_and_unlock_says_whose(
    tmp_path: Path, hung: subprocess.Popen[str]
) -> None:
    locked = run(tmp_path, "-s", "dev", "config", "set", "k", "v", **ENV)
    assert_one_error_line(locked, f"pid {hung.pid}", code=1)
    refused = call(tmp_path, "-s", "dev", "stack", "unlock")  # stdin is not a terminal
    assert_one_error_line(refused, "--yes", code=2)
    broken = run(tmp_path, "-s", "dev", "stack", "unlock", "--yes")
    assert broken.code == 0, broken
    assert f"(pid {hung.pid})" in broken.out
    assert "Broke the lock of stack 'dev' held by" in broken.out
    assert call(tmp_path, "-s", "dev", "config", "set", "k", "v", **ENV).code == 0
    assert call(tmp_path, "-s", "dev", "stack", "unlock", "--yes").out == (
        "Stack 'dev' is not locked.\n"
    )
    as_json = call(tmp_path, "-s", "dev", "stack", "unlock", "--yes", "--json")
    assert json.loads(as_json.out) == {"stack": "dev", "broken": None}


def test_lock_timeout_waits_then_fails(tmp_path: Path, hung: subprocess.Popen[str]) -> None:
    start = time.monotonic()
    result = call(tmp_path, "-s", "dev", "config", "set", "k", "v", "--lock-timeout", "0.6", **ENV)
    assert_one_error_line(result, "locked", code=1)
    assert time.monotonic() - start >= 0.6
    start = time.monotonic()
    env_timeout = run(tmp_path, "-s", "dev", "config", "rm", "k1", VEIL_LOCK_TIMEOUT="0.4", **ENV)
    assert_one_error_line(env_timeout, code=1)
    assert time.monotonic() - start >= 0.4


def test_lock_timeout_succeeds_when_the_holder_finishes_in_time(tmp_path: Path) -> None:
    _stack(tmp_path)
    holder = _holder(tmp_path, 0.5)
    try:
        result = run(
            tmp_path, "--lock-timeout", "30", "-s", "dev", "config", "set", "k", "v", **ENV
        )
        assert result.code == 0, result
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_held_by_this_very_process_says_so(tmp_path: Path) -> None:
    _stack(tmp_path)
    from veil.providers import PassphraseProvider
    from veil.state import FileStore

    with Stack.open(
        "dev",
        backend=FileStore(tmp_path / ".veil"),
        project_dir=tmp_path,
        secrets_provider=PassphraseProvider(passphrase=PASSPHRASE, insecure_weak_kdf=True),
    ):
        result = call(tmp_path, "-s", "dev", "config", "set", "k", "v", **ENV)
    assert_one_error_line(result, "this process already has stack 'dev' open", code=1)


def test_bad_lock_timeouts_are_usage_errors(tmp_path: Path) -> None:
    _stack(tmp_path)
    for bad in ("-1", "soon", "inf"):
        result = call(tmp_path, "-s", "dev", "config", "set", "k", "v", "--lock-timeout", bad)
        assert_one_error_line(result, "seconds", code=2)
