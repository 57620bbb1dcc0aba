# mypy: disable-error-code="arg-type"
# (the tests pass the environment as **ENV: mypy cannot tell it holds no "home"/"timeout")
"""``veil stack rotate | change-secrets-provider | recipients``: with the passphrase,
key-file and age providers, wrong credentials, and a rotation interrupted part-way."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import veil
from cli_support import (
    DB_PASSWORD,
    FAST_URL,
    PASSPHRASE,
    TOKEN,
    assert_one_error_line,
    call,
    environment,
    run,
)
from veil import Secret, Stack
from veil.providers import PassphraseProvider
from veil.state import FileStore

pyrage = pytest.importorskip("pyrage")

ENV = {"VEIL_PASSPHRASE": PASSPHRASE}


def _state(project: Path, name: str = "dev") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project / ".veil" / "stacks" / f"{name}.json").read_bytes())
    return data


def _config(project: Path, name: str = "dev") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((project / f"veil.{name}.json").read_text())
    return data


def _age_identity(folder: Path, name: str) -> tuple[str, Path]:
    identity = pyrage.x25519.Identity.generate()
    path = folder / f"{name}.txt"
    path.write_text(str(identity) + "\n")
    path.chmod(0o600)
    return str(identity.to_public()), path


def _stack(project: Path, **env: str) -> None:
    """Stack 'dev' (passphrase) with a secure config value and a secret output."""
    assert call(project, "stack", "init", "dev", "--secrets-provider", FAST_URL, **ENV).code == 0
    args = ("-s", "dev", "config", "set", "db:password", "--secret")
    assert call(project, *args, stdin=DB_PASSWORD, **ENV).code == 0
    with Stack.open(
        "dev",
        backend=FileStore(project / ".veil"),
        project_dir=project,
        secrets_provider=PassphraseProvider(passphrase=PASSPHRASE, insecure_weak_kdf=True),
    ) as stack:
        stack.export("token", Secret(TOKEN))
        stack.export("db", {"host": "db", "password": veil.secret(DB_PASSWORD)})
        stack.save()


def _secrets_open(project: Path, **env: str) -> None:
    got = call(project, "-s", "dev", "config", "get", "db:password", "--show-secrets", **env)
    assert got.out == DB_PASSWORD + "\n", got
    out = call(project, "-s", "dev", "stack", "output", "token", "--show-secrets", **env)
    assert out.out == TOKEN + "\n", out


# --- rotate ---------------------------------------------------------------------------


def test_rotate_reseals_state_and_config_and_says_what_changed(tmp_path: Path) -> None:
    _stack(tmp_path)
    before_key = _config(tmp_path)["protection"]["key_id"]
    before_secret = _config(tmp_path)["config"]["db:password"]["secure"]
    result = run(tmp_path, "-s", "dev", "stack", "rotate", **ENV)
    assert result.code == 0, result
    after_key = _config(tmp_path)["protection"]["key_id"]
    assert after_key != before_key
    assert _state(tmp_path)["key_id"] == after_key
    assert f"{before_key} -> {after_key}" in result.out
    assert "resealed 2 secrets in the state and 1 in the config" in result.out
    assert _config(tmp_path)["config"]["db:password"]["secure"] != before_secret
    _secrets_open(tmp_path, **ENV)
    summary = json.loads(call(tmp_path, "-s", "dev", "stack", "rotate", "--json", **ENV).out)
    assert summary["previous_key_id"] == after_key
    assert summary["rotated"] is True
    assert summary["state_secrets"] == 2


def test_rotate_with_a_wrong_passphrase_changes_nothing(tmp_path: Path) -> None:
    _stack(tmp_path)
    before = (tmp_path / "veil.dev.json").read_bytes(), _state(tmp_path)
    result = call(tmp_path, "-s", "dev", "stack", "rotate", VEIL_PASSPHRASE="wrong")
    assert_one_error_line(result, "passphrase does not open", code=1)
    assert ((tmp_path / "veil.dev.json").read_bytes(), _state(tmp_path)) == before


_KILL_AT_CONFIG_WRITE = """
import os, signal, sys
# A shell's background jobs start with SIGINT ignored; a user's Ctrl-C is not.
signal.signal(signal.SIGINT, signal.default_int_handler)
import veil.config
def killed(*args, **kwargs):
    os.kill(os.getpid(), signal.{sig})
veil.config.write_atomic = killed
from veil.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT"])
def test_a_rotation_interrupted_before_the_config_write_leaves_a_stack_that_opens(
    tmp_path: Path, sig: str
) -> None:
    _stack(tmp_path)
    old_key = _config(tmp_path)["protection"]["key_id"]
    proc = subprocess.run(
        [sys.executable, "-c", _KILL_AT_CONFIG_WRITE.format(sig=sig), "-s", "dev", "stack",
         "rotate"],
        cwd=tmp_path,
        env=environment(tmp_path / ".home", **ENV),
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    if sig == "SIGKILL":
        assert proc.returncode == -signal.SIGKILL
    else:
        assert (proc.returncode, proc.stderr) == (130, "veil: error: interrupted\n")
    # The state has the new key, the config still the old one: both still open.
    assert _state(tmp_path)["key_id"] != old_key
    assert _config(tmp_path)["protection"]["key_id"] == old_key
    _secrets_open(tmp_path, **ENV)
    again = call(tmp_path, "-s", "dev", "stack", "rotate", **ENV)
    assert again.code == 0, again
    assert _config(tmp_path)["protection"]["key_id"] == _state(tmp_path)["key_id"]
    _secrets_open(tmp_path, **ENV)


# --- change-secrets-provider ----------------------------------------------------------


def test_change_secrets_provider_rotates_by_default_and_drops_the_old_provider(
    tmp_path: Path,
) -> None:
    _stack(tmp_path)
    old_key = _state(tmp_path)["key_id"]
    key = tmp_path / "keys" / "dev.key"
    result = run(
        tmp_path, "-s", "dev", "stack", "change-secrets-provider", "file://keys/dev.key", **ENV
    )
    assert result.code == 0, result
    assert "now protected by file://keys/dev.key alone; its data key was rotated too" in result.out
    assert key.is_file()
    assert _state(tmp_path)["key_id"] != old_key
    assert [r["scheme"] for r in _config(tmp_path)["protection"]["recipients"]] == ["file"]
    _secrets_open(tmp_path)  # no passphrase needed any more
    # VEIL_KEY_FILE names the key file instead of the stored path.
    key.rename(tmp_path / "moved.key")
    missing = call(tmp_path, "-s", "dev", "config", "get", "db:password")
    assert_one_error_line(missing, "keys/dev.key", code=1)
    _secrets_open(tmp_path, VEIL_KEY_FILE=str(tmp_path / "moved.key"))


def test_change_secrets_provider_keep_data_key_says_the_key_was_kept(tmp_path: Path) -> None:
    _stack(tmp_path)
    recipient, identity = _age_identity(tmp_path, "age")
    old_key = _state(tmp_path)["key_id"]
    result = call(
        tmp_path, "-s", "dev", "stack", "change-secrets-provider", f"age://{recipient}",
        "--keep-data-key", **ENV,
    )  # fmt: skip
    assert result.code == 0, result
    assert "kept (re-wrapped only)" in result.out
    assert _state(tmp_path)["key_id"] == old_key
    _secrets_open(tmp_path, VEIL_AGE_IDENTITY=str(identity))
    refused = call(tmp_path, "-s", "dev", "config", "ls", **ENV)  # the passphrase no longer opens
    assert_one_error_line(refused, code=1)


def test_change_to_a_new_passphrase_takes_it_from_veil_new_passphrase(tmp_path: Path) -> None:
    _stack(tmp_path)
    args = ("-s", "dev", "stack", "change-secrets-provider", FAST_URL)
    refused = call(tmp_path, *args, **ENV)
    assert_one_error_line(refused, "VEIL_NEW_PASSPHRASE", code=1)
    changed = call(tmp_path, *args, VEIL_NEW_PASSPHRASE="the new one", **ENV)
    assert changed.code == 0, changed
    _secrets_open(tmp_path, VEIL_PASSPHRASE="the new one")
    old = call(tmp_path, "-s", "dev", "config", "ls", **ENV)
    assert_one_error_line(old, "passphrase does not open", code=1)


# --- recipients -----------------------------------------------------------------------


def test_recipients_add_ls_rm_with_an_age_break_glass_key(tmp_path: Path) -> None:
    _stack(tmp_path)
    recipient, identity = _age_identity(tmp_path, "glass")
    url = f"age://{recipient}"
    added = run(tmp_path, "-s", "dev", "stack", "recipients", "add", url, **ENV)
    assert added.code == 0, added
    assert "nothing re-encrypted" in added.out
    listed = run(tmp_path, "-s", "dev", "stack", "recipients", "ls", **ENV)
    rows = [line.split() for line in listed.out.splitlines()]
    assert rows[0] == ["SCHEME", "URL"]
    assert sorted(rows[1:]) == [["age", url], ["passphrase", "passphrase://"]]
    # Break-glass: the age identity alone opens the stack.
    _secrets_open(tmp_path, VEIL_AGE_IDENTITY=str(identity))
    as_json = json.loads(
        call(tmp_path, "-s", "dev", "stack", "recipients", "ls", "--json", **ENV).out
    )
    assert set(as_json["recipients"]) == {url, "passphrase://"}
    key_before = as_json["key_id"]
    # Removing one rotates the data key; SCHEME:// names the one of that scheme.
    removed = run(tmp_path, "-s", "dev", "stack", "recipients", "rm", "age://", **ENV)
    assert removed.code == 0, removed
    assert f"Removed recipient {url}" in removed.out
    assert _state(tmp_path)["key_id"] != key_before
    gone = call(tmp_path, "-s", "dev", "config", "ls", VEIL_AGE_IDENTITY=str(identity))
    assert_one_error_line(gone, code=1)
    _secrets_open(tmp_path, **ENV)


def test_recipients_rm_of_the_last_one_is_refused(tmp_path: Path) -> None:
    _stack(tmp_path)
    result = call(tmp_path, "-s", "dev", "stack", "recipients", "rm", "passphrase://", **ENV)
    assert_one_error_line(result, "last recipient", code=1)


def test_recipients_rm_keep_data_key_keeps_it(tmp_path: Path) -> None:
    _stack(tmp_path)
    call(tmp_path, "-s", "dev", "stack", "recipients", "add", "file://dev.key", **ENV)
    key = _state(tmp_path)["key_id"]
    result = call(
        tmp_path, "-s", "dev", "stack", "recipients", "rm", "file://dev.key", "--keep-data-key",
        **ENV,
    )  # fmt: skip
    assert result.code == 0, result
    assert _state(tmp_path)["key_id"] == key
    assert "kept (re-wrapped only)" in result.out


def test_recipients_add_of_a_second_recipient_of_a_scheme_is_refused(tmp_path: Path) -> None:
    _stack(tmp_path)
    args = ("-s", "dev", "stack", "recipients", "add", FAST_URL)
    result = call(tmp_path, *args, VEIL_NEW_PASSPHRASE="another", **ENV)
    assert_one_error_line(result, "already has a passphrase:// recipient", code=1)


def test_key_file_stack_with_a_wrong_key_file_fails_cleanly(tmp_path: Path) -> None:
    assert call(tmp_path, "stack", "init", "dev", "--secrets-provider", "file://dev.key").code == 0
    assert call(tmp_path, "-s", "dev", "config", "set", "k", "--secret", stdin="v1").code == 0
    other = tmp_path / "other.key"
    other.write_bytes(os.urandom(32))
    other.chmod(0o600)
    result = run(tmp_path, "-s", "dev", "stack", "rotate", VEIL_KEY_FILE=str(other))
    assert_one_error_line(result, code=1)
    assert call(tmp_path, "-s", "dev", "stack", "rotate").code == 0
