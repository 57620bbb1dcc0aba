"""Stack: create/open, config with secure values, outputs, saving, locks, rotation,
changing providers. Everything runs against a real FileStore in a temp folder."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import veil
from veil import (
    ConfigError,
    ConfigMissingError,
    DecryptionError,
    IncorrectPassphraseError,
    KeyUnwrapError,
    Output,
    PendingOutputError,
    Secret,
    Stack,
    StackExistsError,
    StackNotFoundError,
    StateError,
    StateLockedError,
    UnknownValueError,
)
from veil.providers import LocalKeyProvider, PassphraseProvider
from veil.state import store_from_url

PASSPHRASE = "correct horse battery staple"
FAST_URL = "passphrase://?memory_cost=8&iterations=1&lanes=1"


def fast(passphrase: str = PASSPHRASE) -> PassphraseProvider:
    """A passphrase provider with Argon2id parameters low enough for tests."""
    return PassphraseProvider(
        passphrase=passphrase, memory_cost=8, iterations=1, lanes=1, insecure_weak_kdf=True
    )


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("VEIL_PASSPHRASE", raising=False)
    monkeypatch.delenv("VEIL_PASSPHRASE_FILE", raising=False)
    monkeypatch.delenv("VEIL_BACKEND_URL", raising=False)
    return tmp_path


@pytest.fixture
def backend(project: Path) -> str:
    return f"file://{project / 'state'}"


@pytest.fixture
def stack(backend: str, project: Path) -> Iterator[Stack]:
    s = Stack.create("dev", backend=backend, secrets_provider=fast(), project_dir=project)
    yield s
    s.close()


def reopen(backend: str, project: Path, **kwargs: Any) -> Stack:
    kwargs.setdefault("secrets_provider", fast())
    return Stack.open("dev", backend=backend, project_dir=project, **kwargs)


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def config_doc(project: Path, name: str = "dev") -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((project / f"veil.{name}.json").read_text())
    return doc


def state_bytes(project: Path, name: str = "dev") -> bytes:
    return (project / "state" / "stacks" / f"{name}.json").read_bytes()


# --- create and open ----------------------------------------------------------------


def test_create_with_provider_url_uses_environment_passphrase(
    backend: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEIL_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("VEIL_INSECURE_WEAK_KDF", "1")  # the stack uses fast KDF settings
    with Stack.create("dev", backend=backend, secrets_provider=FAST_URL) as s:
        assert s.name == "dev"
        assert s.serial == 1
        assert s.provider.scheme == "passphrase"
    assert (project / "veil.dev.json").is_file()
    assert "dev" in store_from_url(backend).list_stacks()


def test_create_with_provider_instance(backend: str, project: Path) -> None:
    with Stack.create("dev", backend=backend, secrets_provider=fast()) as s:
        assert s.serial == 1
    with reopen(backend, project) as s:
        assert s.outputs == {}


def test_create_refuses_an_existing_stack(stack: Stack, backend: str) -> None:
    with pytest.raises(StackExistsError, match="'dev' already exists"):
        Stack.create("dev", backend=backend, secrets_provider=fast())


def test_create_refuses_an_existing_config_file(backend: str, project: Path) -> None:
    (project / "veil.dev.json").write_text("{}")
    with pytest.raises(StackExistsError, match="config file"):
        Stack.create("dev", backend=backend, secrets_provider=fast())
    assert (project / "veil.dev.json").read_text() == "{}"


def test_open_an_unknown_stack_raises_stack_not_found(backend: str) -> None:
    with pytest.raises(StackNotFoundError, match=r"no stack 'nope'.*veil stack init nope"):
        Stack.open("nope", backend=backend, secrets_provider=fast())


def test_open_without_provider_takes_passphrase_from_environment(
    stack: Stack, backend: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.export("token", Secret("tok-abc-123"))
    stack.save()
    stack.close()
    monkeypatch.setenv("VEIL_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("VEIL_INSECURE_WEAK_KDF", "1")  # the stack uses fast KDF settings
    with Stack.open("dev", backend=backend) as s:
        assert veil.reveal(s.outputs["token"]) == "tok-abc-123"
        assert isinstance(s.provider, PassphraseProvider)


def test_open_without_provider_reads_passphrase_file(
    stack: Stack, backend: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.close()
    secret_file = project / "pass.txt"
    secret_file.write_text(PASSPHRASE + "\n")
    monkeypatch.setenv("VEIL_PASSPHRASE_FILE", str(secret_file))
    monkeypatch.setenv("VEIL_INSECURE_WEAK_KDF", "1")  # the stack uses fast KDF settings
    with Stack.open("dev", backend=backend) as s:
        assert s.serial == 1


def test_open_with_instance_takes_salt_and_kdf_from_the_stored_description(
    stack: Stack, backend: str, project: Path
) -> None:
    stack.close()
    # Default (slow) parameters on the instance: the stored low ones must win, or the
    # derived key would differ and the passphrase be reported wrong.
    opener = PassphraseProvider(passphrase=PASSPHRASE, insecure_weak_kdf=True)
    with Stack.open("dev", backend=backend, secrets_provider=opener):
        pass


@pytest.mark.parametrize("how", ["instance", "environment"])
def test_wrong_passphrase_raises_and_writes_nothing(
    stack: Stack, backend: str, project: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    stack.config.set("db:password", "pw-0123456789", secret=True)
    stack.export("x", 1)
    stack.save()
    stack.close()
    before = snapshot(project)
    provider = None
    if how == "instance":
        provider = fast("not the passphrase")
    else:
        monkeypatch.setenv("VEIL_PASSPHRASE", "not the passphrase")
        monkeypatch.setenv("VEIL_INSECURE_WEAK_KDF", "1")  # the stack uses fast KDF settings
    with pytest.raises(IncorrectPassphraseError, match="Nothing was written"):
        Stack.open("dev", backend=backend, secrets_provider=provider)
    assert snapshot(project) == before
    # The failed open left no lock behind.
    reopen(backend, project).close()


def test_open_refuses_a_config_file_of_another_stack(
    stack: Stack, backend: str, project: Path
) -> None:
    stack.close()
    with Stack.create("prod", backend=backend, secrets_provider=fast()) as prod:
        prod.save()
    (project / "veil.dev.json").write_bytes((project / "veil.prod.json").read_bytes())
    with pytest.raises(ConfigError, match="config of stack 'prod', not 'dev'"):
        reopen(backend, project)


def test_open_without_a_config_file_starts_an_empty_config(
    stack: Stack, backend: str, project: Path
) -> None:
    stack.close()
    (project / "veil.dev.json").unlink()
    with reopen(backend, project) as s:
        assert len(s.config) == 0
        s.config.set("k", "v")
        s.save()
    assert config_doc(project)["config"] == {"k": "v"}


# --- config ---------------------------------------------------------------------------


def test_config_getters_return_outputs(stack: Stack) -> None:
    stack.config.set("app:region", "eu-west-1")
    for out in (
        stack.config.get("app:region"),
        stack.config.require("app:region"),
        stack.config.get_secret("app:region"),
        stack.config.require_secret("app:region"),
    ):
        assert isinstance(out, Output)
        assert veil.reveal(out) == "eu-west-1"


def test_plain_value_is_secret_only_through_secret_getters(stack: Stack) -> None:
    stack.config.set("app:region", "eu-west-1")
    assert not veil.is_secret(stack.config.get("app:region"))
    assert not veil.is_secret(stack.config.require("app:region"))
    assert veil.is_secret(stack.config.get_secret("app:region"))
    assert veil.is_secret(stack.config.require_secret("app:region"))


def test_secure_value_is_secret_whichever_getter_reads_it(stack: Stack) -> None:
    stack.config.set("db:password", "pw-0123456789", secret=True)
    for out in (
        stack.config.get("db:password"),
        stack.config.require("db:password"),
        stack.config.get_secret("db:password"),
        stack.config.require_secret("db:password"),
    ):
        assert veil.is_secret(out)
        assert veil.reveal(out) == "pw-0123456789"


def test_secure_value_stays_secret_after_reopen(stack: Stack, backend: str, project: Path) -> None:
    stack.config.set("db:password", "pw-0123456789", secret=True)
    stack.save()
    stack.close()
    with reopen(backend, project) as s:
        assert s.config.is_secure("db:password")
        assert veil.is_secret(s.config.get("db:password"))
        assert veil.reveal(s.config.get("db:password")) == "pw-0123456789"


def test_setting_a_secret_value_stores_it_secure(stack: Stack) -> None:
    stack.config.set("a", Secret("from-a-secret"))
    stack.config.set("b", veil.secret("from-an-output"))
    assert stack.config.is_secure("a")
    assert stack.config.is_secure("b")


def test_config_get_of_a_missing_key_is_none_or_the_default(stack: Stack) -> None:
    assert stack.config.get("nope") is None
    assert stack.config.get_secret("nope") is None
    assert veil.reveal(stack.config.get("nope", "fallback")) == "fallback"


@pytest.mark.parametrize("getter", ["require", "require_secret"])
def test_require_of_a_missing_key_raises_config_missing(stack: Stack, getter: str) -> None:
    with pytest.raises(ConfigMissingError, match=r"'db:password'.*veil config set db:password"):
        getattr(stack.config, getter)("db:password")


def test_config_remove(stack: Stack) -> None:
    stack.config.set("k", "v")
    stack.config.remove("k")
    assert "k" not in stack.config
    with pytest.raises(ConfigMissingError):
        stack.config.remove("k")


def test_config_file_is_human_readable_json(stack: Stack, project: Path) -> None:
    stack.config.set("app:region", "eu-west-1")
    stack.config.set("app:replicas", 3)
    stack.config.set("db:password", "pw-0123456789", secret=True)
    stack.save()
    text = (project / "veil.dev.json").read_text()
    assert text.endswith("\n")
    assert "\n  " in text  # indented, one member per line
    doc = json.loads(text)
    assert doc["stack"] == "dev"
    assert doc["config"]["app:region"] == "eu-west-1"
    assert doc["config"]["app:replicas"] == 3
    assert set(doc["config"]["db:password"]) == {"secure"}
    assert doc["config"]["db:password"]["secure"].startswith("veil:v1:")
    assert "pw-0123456789" not in text


def test_resave_keeps_config_bytes(stack: Stack, backend: str, project: Path) -> None:
    stack.config.set("db:password", "pw-0123456789", secret=True)
    stack.config.set("app:region", "eu-west-1")
    stack.save()
    first = (project / "veil.dev.json").read_bytes()
    stack.config.set("db:password", "pw-0123456789", secret=True)  # the same value again
    stack.save()
    assert (project / "veil.dev.json").read_bytes() == first
    stack.close()
    with reopen(backend, project) as s:
        s.config.set("db:password", "pw-0123456789", secret=True)
        s.save()
    assert (project / "veil.dev.json").read_bytes() == first


def test_resave_after_reopen_from_environment_keeps_config_bytes(
    stack: Stack, backend: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.config.set("db:password", "pw-0123456789", secret=True)
    stack.save()
    stack.close()
    first = (project / "veil.dev.json").read_bytes()
    monkeypatch.setenv("VEIL_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("VEIL_INSECURE_WEAK_KDF", "1")  # the stack uses fast KDF settings
    with Stack.open("dev", backend=backend) as s:
        s.save()
    assert (project / "veil.dev.json").read_bytes() == first


def test_changing_one_secure_value_changes_only_its_line(stack: Stack, project: Path) -> None:
    stack.config.set("a", "secret-a-value", secret=True)
    stack.config.set("b", "secret-b-value", secret=True)
    stack.save()
    before = config_doc(project)
    stack.config.set("b", "secret-b-changed", secret=True)
    stack.save()
    after = config_doc(project)
    assert after["config"]["a"] == before["config"]["a"]
    assert after["config"]["b"] != before["config"]["b"]


def test_secure_value_moved_to_another_key_does_not_open(
    stack: Stack, backend: str, project: Path
) -> None:
    stack.config.set("db:password", "pw-0123456789", secret=True)
    stack.save()
    stack.close()
    doc = config_doc(project)
    doc["config"]["other:key"] = doc["config"].pop("db:password")
    (project / "veil.dev.json").write_text(json.dumps(doc, indent=2))
    with (
        reopen(backend, project) as s,
        pytest.raises(DecryptionError, match=r"'other:key'.*copied from another key") as e,
    ):
        s.config.get("other:key")
    assert "pw-0123456789" not in str(e.value)


def test_a_secure_value_that_does_not_open_can_be_set_again(
    stack: Stack, backend: str, project: Path
) -> None:
    stack.config.set("db:password", "pw-0123456789", secret=True)
    stack.save()
    stack.close()
    doc = config_doc(project)
    doc["config"]["other:key"] = doc["config"].pop("db:password")
    (project / "veil.dev.json").write_text(json.dumps(doc, indent=2))
    with reopen(backend, project) as s:
        s.config.set("other:key", "pw-new-value", secret=True)  # what the error advises
        s.save()
    with reopen(backend, project) as s:
        assert s.config.value("other:key").reveal() == "pw-new-value"


def test_config_file_nested_too_deeply_raises_config_error(
    stack: Stack, backend: str, project: Path
) -> None:
    stack.close()
    (project / "veil.dev.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ConfigError, match="nested too deeply"):
        reopen(backend, project)


def test_create_in_a_missing_project_folder_writes_nothing(backend: str, project: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        Stack.create("dev", backend=backend, secrets_provider=fast(), project_dir=project / "no")
    assert not store_from_url(backend).exists("dev")


def test_config_save_that_fails_raises_config_error(stack: Stack, project: Path) -> None:
    stack.config.set("app:x", 1)
    stack.config._path = project / "gone" / "veil.dev.json"
    with pytest.raises(ConfigError, match="cannot write config file"):
        stack.config.save()


def test_secure_value_copied_from_another_stack_does_not_open(
    stack: Stack, backend: str, project: Path
) -> None:
    stack.config.set("db:password", "pw-0123456789", secret=True)
    stack.save()
    with Stack.create("prod", backend=backend, secrets_provider=fast()) as prod:
        prod.config.set("db:password", "prod-password-1", secret=True)
        prod.save()
    doc = config_doc(project, "prod")
    doc["config"]["db:password"] = config_doc(project)["config"]["db:password"]
    (project / "veil.prod.json").write_text(json.dumps(doc, indent=2))
    with (
        Stack.open("prod", backend=backend, secrets_provider=fast()) as prod,
        pytest.raises(DecryptionError, match="stack 'prod' does not open"),
    ):
        prod.config.require_secret("db:password")


def test_rotation_with_an_unopenable_secure_value_writes_nothing(
    stack: Stack, project: Path
) -> None:
    stack.config.set("a", "secret-a-value", secret=True)
    stack.save()
    stack.close()
    doc = config_doc(project)
    doc["config"]["b"] = doc["config"]["a"]
    (project / "veil.dev.json").write_text(json.dumps(doc))
    with reopen(f"file://{project / 'state'}", project) as s:
        before = snapshot(project / "state")
        s.rotate_key()
        with pytest.raises(DecryptionError, match="'b'"):
            s.save()
        after = snapshot(project / "state")
    assert {k: v for k, v in after.items() if "locks" not in k} == {
        k: v for k, v in before.items() if "locks" not in k
    }


def test_config_refuses_non_json_values(stack: Stack) -> None:
    with pytest.raises(veil.InvalidValueError):
        stack.config.set("k", object())
    with pytest.raises(veil.InvalidValueError):
        stack.config.set("k", float("nan"))


def test_config_refuses_bad_keys(stack: Stack) -> None:
    with pytest.raises(ConfigError):
        stack.config.set(" padded ", "v")


# --- outputs and saving ------------------------------------------------------------------


def test_outputs_show_secret_leaves_as_secret(stack: Stack) -> None:
    password = veil.secret("pw-0123456789")
    stack.export("db", {"host": "db.internal", "password": password})
    stack.export("url", Output.format("postgres://app:{}@db", password))
    stack.export("plain", Output.from_input([1, 2]))
    outputs = stack.outputs
    assert outputs["db"]["host"] == "db.internal"
    assert isinstance(outputs["db"]["password"], Secret)
    assert isinstance(outputs["url"], Secret)
    assert outputs["url"].reveal() == "postgres://app:pw-0123456789@db"
    assert outputs["plain"] == [1, 2]


def test_export_refuses_an_empty_name(stack: Stack) -> None:
    with pytest.raises(ConfigError):
        stack.export("", 1)


def test_save_grows_the_serial(stack: Stack) -> None:
    assert stack.serial == 1
    stack.save()
    stack.save()
    assert stack.serial == 3


def test_reopen_gives_the_same_outputs(stack: Stack, backend: str, project: Path) -> None:
    stack.export("db", {"host": "db.internal", "password": veil.secret("pw-0123456789")})
    stack.export("list", [Secret("s1-abcdef"), 2, {"n": None}])
    stack.save()
    expected = stack.outputs
    stack.close()
    with reopen(backend, project) as s:
        assert s.serial == 2
        got = s.outputs
    assert got["db"]["host"] == "db.internal"
    assert isinstance(got["db"]["password"], Secret)
    assert got == expected  # Secret equality compares plaintexts in constant time


def test_state_keeps_plain_outputs_readable(stack: Stack, project: Path) -> None:
    stack.export("db", {"host": "db.internal", "password": veil.secret("pw-0123456789")})
    stack.save()
    state = json.loads(state_bytes(project))
    db = state["tree"]["outputs"]["db"]
    assert db["host"] == "db.internal"
    assert set(db["password"]) == {"$secret"}


def test_save_with_a_pending_output_names_its_path(stack: Stack) -> None:
    pending: Output[int] = veil.deferred_output()[0]
    stack.export("db", {"replicas": [1, pending]})
    with pytest.raises(PendingOutputError, match=r"outputs\.db\.replicas\[1\]"):
        stack.save()


def test_save_with_an_unknown_output_raises(stack: Stack) -> None:
    stack.export("db", Output.from_input(veil.UNKNOWN))
    with pytest.raises(UnknownValueError):
        stack.save()


def test_save_async_awaits_pending_outputs(stack: Stack, backend: str, project: Path) -> None:
    async def password() -> str:
        await asyncio.sleep(0.01)
        return "late-password-1"

    async def program() -> None:
        late: Output[str] = Output.secret(Output.from_input(asyncio.ensure_future(password())))
        stack.export("db", {"password": late, "port": 5432})
        await stack.save_async()

    asyncio.run(program())
    assert stack.serial == 2
    stack.close()
    with reopen(backend, project) as s:
        assert s.outputs["db"]["port"] == 5432
        assert s.outputs["db"]["password"] == Secret("late-password-1")


def test_unchanged_secrets_keep_their_ciphertext_across_saves(
    stack: Stack, backend: str, project: Path
) -> None:
    stack.export("token", Secret("tok-abc-123"))
    stack.save()
    sealed = json.loads(state_bytes(project))["tree"]["outputs"]["token"]
    stack.close()
    with reopen(backend, project) as s:
        s.save()
    assert json.loads(state_bytes(project))["tree"]["outputs"]["token"] == sealed


def test_repr_shows_no_secret(stack: Stack) -> None:
    stack.config.set("db:password", "pw-0123456789", secret=True)
    stack.export("t", Secret("tok-abc-123"))
    for text in (repr(stack), repr(stack.config), repr(stack.outputs), repr(stack.provider)):
        assert "pw-0123456789" not in text
        assert "tok-abc-123" not in text
        assert PASSPHRASE not in text


# --- locking ---------------------------------------------------------------------------


def _hold_lock_in_another_process(root: Path) -> subprocess.Popen[str]:
    code = (
        "import sys, time, veil.state\n"
        f"lock = veil.state.FileStore({str(root)!r}).lock('dev', owner='alice')\n"
        "print('held', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_second_writer_gets_state_locked(stack: Stack, backend: str, project: Path) -> None:
    stack.close()
    proc = _hold_lock_in_another_process(Path(backend.removeprefix("file://")))
    try:
        with pytest.raises(StateLockedError, match=r"'dev' is locked.*alice"):
            reopen(backend, project)
    finally:
        proc.kill()
        proc.wait()


def test_opening_a_stack_this_process_holds_says_so(
    stack: Stack, backend: str, project: Path
) -> None:
    with pytest.raises(StateLockedError, match="this process already has stack 'dev' open"):
        reopen(backend, project)


def test_lock_timeout_waits_for_the_holder(
    stack: Stack, backend: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = Path(backend.removeprefix("file://"))
    stack.close()
    proc = _hold_lock_in_another_process(root)

    def end_holder() -> None:  # the holder goes away: its lock is stale
        proc.kill()
        proc.wait()

    threading.Timer(0.5, end_holder).start()
    with reopen(backend, project, lock_timeout=20) as s:
        assert s.serial >= 1
    proc = _hold_lock_in_another_process(root)
    try:
        monkeypatch.setenv("VEIL_LOCK_TIMEOUT", "0.2")
        start = time.monotonic()
        with pytest.raises(StateLockedError, match="alice"):
            reopen(backend, project)
        assert time.monotonic() - start >= 0.2
        monkeypatch.setenv("VEIL_LOCK_TIMEOUT", "soon")
        with pytest.raises(veil.ConfigError, match="VEIL_LOCK_TIMEOUT"):
            reopen(backend, project)
    finally:
        proc.kill()
        proc.wait()


def test_lock_is_released_on_close(stack: Stack, backend: str, project: Path) -> None:
    stack.close()
    with reopen(backend, project):
        pass
    reopen(backend, project).close()


def test_read_only_open_ignores_the_lock_and_refuses_to_save(
    stack: Stack, backend: str, project: Path
) -> None:
    stack.export("x", 1)
    stack.save()
    with reopen(backend, project, lock=False) as ro:
        assert ro.outputs == {"x": 1}
        ro.export("x", 2)
        with pytest.raises(StateError, match="read-only"):
            ro.save()
    assert json.loads(state_bytes(project))["tree"]["outputs"] == {"x": 1}


def test_save_after_close_is_refused(stack: Stack) -> None:
    stack.close()
    with pytest.raises(StateError, match="closed"):
        stack.save()


# --- rotation and providers ------------------------------------------------------------


def test_rotate_key_reseals_config_and_state(stack: Stack, backend: str, project: Path) -> None:
    stack.config.set("db:password", "pw-0123456789", secret=True)
    stack.config.set("app:region", "eu-west-1")
    stack.export("token", Secret("tok-abc-123"))
    stack.save()
    old_state = json.loads(state_bytes(project))
    old_config = config_doc(project)
    old_tokens = [
        old_state["tree"]["outputs"]["token"]["$secret"],
        old_config["config"]["db:password"]["secure"],
        *(p["wrapped_key"] for p in old_state["providers"]),
    ]
    stack.rotate_key()
    stack.save()
    stack.close()

    new_state = state_bytes(project)
    new_config = (project / "veil.dev.json").read_bytes()
    assert json.loads(new_state)["key_id"] != old_state["key_id"]
    assert json.loads(new_config)["protection"]["key_id"] == json.loads(new_state)["key_id"]
    for token in old_tokens:
        assert token.encode() not in new_state
        assert token.encode() not in new_config
    with reopen(backend, project) as s:
        assert veil.reveal(s.config.require_secret("db:password")) == "pw-0123456789"
        assert veil.reveal(s.config.require("app:region")) == "eu-west-1"
        assert s.outputs["token"] == Secret("tok-abc-123")


def test_rotation_happens_once(stack: Stack, project: Path) -> None:
    stack.export("token", Secret("tok-abc-123"))
    stack.rotate_key()
    stack.save()
    rotated = json.loads(state_bytes(project))["key_id"]
    stack.save()
    assert json.loads(state_bytes(project))["key_id"] == rotated


def test_change_secrets_provider_to_a_key_file(
    stack: Stack, backend: str, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack.config.set("db:password", "pw-0123456789", secret=True)
    stack.export("token", Secret("tok-abc-123"))
    stack.save()
    key_file = project / "keys" / "dev.key"
    stack.change_secrets_provider(f"file://{key_file}")
    stack.save()
    stack.close()
    assert key_file.is_file()

    with reopen(backend, project, secrets_provider=LocalKeyProvider(key_file)) as s:
        assert s.outputs["token"] == Secret("tok-abc-123")
        assert veil.reveal(s.config.require_secret("db:password")) == "pw-0123456789"
    with pytest.raises(KeyUnwrapError, match="written for: file"):
        reopen(backend, project, secrets_provider=fast())
    # Without a provider it is rebuilt from the stored description (the key file path).
    monkeypatch.setenv("VEIL_PASSPHRASE", PASSPHRASE)
    with Stack.open("dev", backend=backend) as s:
        assert isinstance(s.provider, LocalKeyProvider)
    schemes = [p["scheme"] for p in config_doc(project)["protection"]["recipients"]]
    assert schemes == ["file"]


def test_change_secrets_provider_keeping_the_old_one(
    stack: Stack, backend: str, project: Path
) -> None:
    stack.export("token", Secret("tok-abc-123"))
    key_file = project / "dev.key"
    stack.change_secrets_provider(LocalKeyProvider(key_file), keep=True)
    stack.save()
    stack.close()
    for provider in (LocalKeyProvider(key_file), fast()):
        with reopen(backend, project, secrets_provider=provider) as s:
            assert s.outputs["token"] == Secret("tok-abc-123")


def test_change_secrets_provider_with_rotation_gives_a_new_key(
    stack: Stack, backend: str, project: Path
) -> None:
    stack.config.set("db:password", "pw-0123456789", secret=True)
    stack.save()
    old = json.loads(state_bytes(project))["key_id"]
    key_file = project / "dev.key"
    stack.change_secrets_provider(LocalKeyProvider(key_file), rotate_key=True)
    stack.save()
    stack.close()
    assert json.loads(state_bytes(project))["key_id"] != old
    with reopen(backend, project, secrets_provider=LocalKeyProvider(key_file)) as s:
        assert veil.reveal(s.config.require_secret("db:password")) == "pw-0123456789"


def test_default_argon2_parameters_open_a_stack(backend: str, project: Path) -> None:
    with Stack.create(
        "dev", backend=backend, secrets_provider=PassphraseProvider(passphrase=PASSPHRASE)
    ) as s:
        s.export("token", Secret("tok-abc-123"))
        s.save()
    description = json.loads(state_bytes(project))["providers"][0]["description"]
    assert (description["memory_cost"], description["iterations"], description["lanes"]) == (
        65536,
        3,
        4,
    )
    with Stack.open(
        "dev", backend=backend, secrets_provider=PassphraseProvider(passphrase=PASSPHRASE)
    ):
        pass


# --- plain config values shaped like credentials ----------------------------------


def test_plain_config_value_shaped_like_a_credential_warns_without_the_value(
    stack: Stack,
) -> None:
    with pytest.warns(veil.LeakWarning, match="db:url") as caught:
        stack.config.set("db:url", "postgres://app:pw-in-url-9@db:5432/app")
    assert "pw-in-url-9" not in str(caught[0].message)
    assert "--secret" in str(caught[0].message)


def test_plain_config_value_shaped_like_a_credential_is_refused_when_strict(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEIL_STRICT", "1")
    with pytest.raises(veil.PlaintextLeakError, match="nothing was written"):
        stack.config.set("aws:key", {"id": "AKIAABCDEFGHIJKLMNOP"})
    assert "aws:key" not in stack.config


def test_secure_config_value_shaped_like_a_credential_is_fine(stack: Stack) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        stack.config.set("db:url", "postgres://app:pw-in-url-9@db:5432/app", secret=True)
        stack.config.set("app:region", "eu-west-1")


def test_save_without_config_changes_does_not_rewrite_the_config_file(
    stack: Stack, project: Path
) -> None:
    stack.config.set("app:region", "eu-west-1")
    stack.save()
    path = project / "veil.dev.json"
    before = path.stat().st_mtime_ns, path.stat().st_ino
    stack.export("n", 1)
    stack.save()
    assert (path.stat().st_mtime_ns, path.stat().st_ino) == before


def test_config_value_nested_too_deeply_is_a_typed_error(stack: Stack) -> None:
    deep: list[Any] = []
    cur = deep
    for _ in range(5000):
        cur.append([])
        cur = cur[0]
    with pytest.raises(veil.InvalidValueError, match="nested too deeply"):
        stack.config.set("deep", deep)


def _nested(levels: int) -> list[Any]:
    deep: list[Any] = []
    cur = deep
    for _ in range(levels - 1):
        cur.append([])
        cur = cur[0]
    return deep


def test_config_depth_limit_is_the_same_on_every_python(stack: Stack) -> None:
    from veil.config import MAX_CONFIG_DEPTH

    stack.config.set("ok", _nested(MAX_CONFIG_DEPTH))
    assert stack.config.require("ok").apply(lambda v: v) is not None
    with pytest.raises(veil.InvalidValueError, match=f"more than {MAX_CONFIG_DEPTH} levels"):
        stack.config.set("deep", _nested(MAX_CONFIG_DEPTH + 1))
