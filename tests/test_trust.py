"""Only authenticated things choose keys: attacks by whoever can write the committed
config file or the state backend (but not both), each with every local provider.

Each test plays the attacker with nothing but file edits and the public API, then the
victim's next ordinary operation, and checks that it is refused with a typed error and
that nothing was written.
"""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import time
import warnings
from pathlib import Path
from typing import Any

import pyrage
import pytest

import veil
from veil import Secret, Stack
from veil.config import StackConfig
from veil.crypto import generate_data_key, key_id
from veil.providers import AgeProvider, LocalKeyProvider, PassphraseProvider, SecretsProvider
from veil.state import dumps

PASSPHRASE = "correct horse battery staple"


class Victim:
    """One victim's stack with one kind of local provider."""

    def __init__(self, kind: str, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kind = kind
        self.project = tmp / "project"
        self.project.mkdir()
        self.backend = f"file://{tmp / 'state'}"
        self.state_file = tmp / "state" / "stacks" / "dev.json"
        self.config_file = self.project / "veil.dev.json"
        self.tmp = tmp
        if kind == "age":
            identity = pyrage.x25519.Identity.generate()
            self.recipient = str(identity.to_public())
            id_file = tmp / "me.agekey"
            id_file.write_text(str(identity) + "\n")
            id_file.chmod(0o600)
            monkeypatch.setenv("VEIL_AGE_IDENTITY", str(id_file))
        if kind == "passphrase":
            monkeypatch.setenv("VEIL_PASSPHRASE", PASSPHRASE)
            monkeypatch.setenv("VEIL_INSECURE_WEAK_KDF", "1")  # fast settings, for tests

    def provider(self) -> SecretsProvider:
        if self.kind == "passphrase":
            return PassphraseProvider(
                passphrase=PASSPHRASE, memory_cost=8, iterations=1, lanes=1, insecure_weak_kdf=True
            )
        if self.kind == "file":
            return LocalKeyProvider(self.tmp / "keys" / "dev.key")
        return AgeProvider(self.recipient)

    def create(self) -> Stack:
        return Stack.create(
            "dev", backend=self.backend, secrets_provider=self.provider(), project_dir=self.project
        )

    def open(self, **kwargs: Any) -> Stack:
        kwargs.setdefault("secrets_provider", self.provider())
        return Stack.open("dev", backend=self.backend, project_dir=self.project, **kwargs)

    def files(self) -> dict[str, bytes]:
        out = {}
        for root in (self.project, self.tmp / "state"):
            for p in sorted(root.rglob("*")):
                if p.is_file():
                    out[str(p)] = p.read_bytes()
        return out

    def config(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.config_file.read_text())
        return loaded

    def write_config(self, doc: dict[str, Any]) -> None:
        self.config_file.write_text(json.dumps(doc, indent=2))

    def state(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.state_file.read_text())
        return loaded


@pytest.fixture(params=["passphrase", "file", "age"])
def victim(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Victim:
    v = Victim(request.param, tmp_path, monkeypatch)
    with v.create() as stack:
        stack.config.set("db:password", "pw-before-0123", secret=True)
        stack.config.set("app:region", "eu-west-1")
        stack.export("token", Secret("tok-0123456789"))
        stack.save()
    return v


def test_a_config_naming_another_data_key_is_refused(victim: Victim) -> None:
    attacker_key = generate_data_key()
    doc = victim.config()
    doc["protection"]["key_id"] = key_id(attacker_key)
    victim.write_config(doc)
    before = victim.files()
    with pytest.raises(veil.ConfigStateMismatchError, match="data key") as info:
        victim.open()
    assert "pull the latest config" in str(info.value)
    assert victim.files() == before


def test_an_old_format_config_with_an_attackers_keyring_chooses_no_key(victim: Victim) -> None:
    # The attack of a config file that carried a wrapped key: a keyring holding the
    # attacker's key, wrapped for the victim's recipient (anyone can, with age).
    attacker_key = generate_data_key()
    wrapped = victim.provider().wrap_key(attacker_key, {"stack": "dev"})
    state = victim.state()
    doc = {
        "format": "veil.config/1",
        "stack": "dev",
        "config": {},
        "keyring": {
            "key_id": key_id(attacker_key),
            "providers": [
                {
                    "scheme": p["scheme"],
                    "description": p["description"],
                    "wrapped_key": base64.b64encode(wrapped).decode(),
                }
                for p in state["providers"]
            ],
        },
    }
    victim.write_config(doc)
    before = victim.files()
    # The victim's next 'config set --secret' opens the stack first: refused there.
    with pytest.raises(veil.ConfigStateMismatchError):
        victim.open()
    assert victim.files() == before


def test_a_config_naming_other_recipients_is_refused_before_any_provider_is_used(
    victim: Victim, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = victim.config()
    intruder = str(pyrage.x25519.Identity.generate().to_public())
    doc["protection"]["recipients"].append(
        {"scheme": "age", "settings": {"recipients": [intruder]}}
    )
    victim.write_config(doc)
    # No credentials at all: the mismatch is found before a provider is built.
    for name in ("VEIL_PASSPHRASE", "VEIL_AGE_IDENTITY"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(veil.ConfigStateMismatchError, match="recipients"):
        Stack.open("dev", backend=victim.backend, project_dir=victim.project)


def test_a_forged_state_under_the_attackers_key_is_refused(victim: Victim) -> None:
    # A complete, correctly MAC'd state: the attacker's own data key, wrapped for the
    # victim's recipient (possible with age's public recipient) and, in a second
    # variant, for the attacker too.
    before_state = victim.state_file.read_bytes()
    variants: list[SecretsProvider] = [victim.provider()]
    if victim.kind == "age":
        intruder = str(pyrage.x25519.Identity.generate().to_public())
        variants.append(AgeProvider([victim.recipient, intruder]))
    for provider in variants:
        forged = dumps(
            {"outputs": {"token": Secret("attackers-token")}},
            provider=provider,
            stack="dev",
            serial=99,
        )
        victim.state_file.write_bytes(forged)
        config_before = victim.config_file.read_bytes()
        # The victim's next rotate_key() opens the stack first: refused there.
        with pytest.raises(veil.ConfigStateMismatchError):
            victim.open()
        assert victim.config_file.read_bytes() == config_before
    victim.state_file.write_bytes(before_state)
    with victim.open() as stack:
        assert stack.outputs["token"] == Secret("tok-0123456789")


def test_rollback_to_an_older_state_is_refused(victim: Victim) -> None:
    with victim.open() as stack:
        stack.rotate_key()
        stack.save()
        stack.export("n", 3)
        stack.save()
        serial = stack.serial
    store = veil.state.FileStore(victim.tmp / "state")
    oldest = min(e.version for e in store.history("dev"))
    old = store.read_version("dev", oldest)
    victim.state_file.write_bytes(old)
    with pytest.raises(veil.StateRollbackError, match=rf"serial 1, older than serial {serial}"):
        victim.open()
    with pytest.raises(veil.StateRollbackError):
        victim.open(lock=False)
    # The rotation is not undone either: the config records the new key.
    with pytest.raises(veil.ConfigStateMismatchError):
        victim.open(allow_rollback=True)


def test_a_deliberate_restore_is_allowed_explicitly(victim: Victim) -> None:
    with victim.open() as stack:
        stack.export("n", 2)
        stack.save()
    store = veil.state.FileStore(victim.tmp / "state")
    versions = sorted(e.version for e in store.history("dev"))
    victim.state_file.write_bytes(store.read_version("dev", versions[-2]))
    with pytest.raises(veil.StateRollbackError):
        victim.open()
    with victim.open(allow_rollback=True) as stack:
        assert "n" not in stack.outputs
    with victim.open() as stack:  # the restore is now what this folder has seen
        assert stack.outputs["token"] == Secret("tok-0123456789")


def test_a_restored_pre_rotation_config_never_undoes_the_rotation(victim: Victim) -> None:
    old_config = victim.config_file.read_bytes()
    with victim.open() as stack:
        stack.rotate_key()
        stack.save()
        new_key = stack.config.protection.key_id
    assert victim.state()["key_id"] == new_key
    # The config from before the rotation (git history, a teammate's checkout): the
    # state no longer vouches for its key, so it is refused, not used.
    victim.config_file.write_bytes(old_config)
    with pytest.raises(veil.ConfigStateMismatchError, match="data key") as info:
        victim.open()
    assert "pull the latest config" in str(info.value)
    assert victim.state()["key_id"] == new_key


def test_a_save_never_makes_config_secrets_unreadable(victim: Victim) -> None:
    # A crash between the state write and the config write of a rotation.
    def crash(self: StackConfig) -> None:
        raise KeyboardInterrupt

    for _ in range(2):  # twice: the second rotation starts from an unfinished one
        with victim.open() as stack, pytest.MonkeyPatch.context() as patch:
            stack.rotate_key()
            patch.setattr(StackConfig, "save", crash)
            with pytest.raises(KeyboardInterrupt):
                stack.save()
    assert victim.config()["protection"]["key_id"] != victim.state()["key_id"]
    for _ in range(2):  # an ordinary save, then another: the config follows the state
        with victim.open() as stack:
            assert veil.reveal(stack.config.require_secret("db:password")) == "pw-before-0123"
            assert stack.outputs["token"] == Secret("tok-0123456789")
            stack.save()
    assert victim.config()["protection"]["key_id"] == victim.state()["key_id"]


def test_an_older_secure_value_copied_into_the_config_is_refused(victim: Victim) -> None:
    old_token = victim.config()["config"]["db:password"]
    with victim.open() as stack:
        stack.config.set("db:password", "pw-after-45678", secret=True)
        stack.save()
    doc = victim.config()
    doc["config"]["db:password"] = old_token
    victim.write_config(doc)
    with pytest.raises(veil.ConfigStateMismatchError, match="older value"):
        victim.open()
    # Setting the older value again deliberately is fine.
    doc["config"]["db:password"] = {"secure": "veil:v1:not-a-value"}
    victim.write_config(doc)
    with victim.open() as stack:
        stack.config.set("db:password", "pw-before-0123", secret=True)
        stack.save()
    with victim.open() as stack:
        assert veil.reveal(stack.config.require_secret("db:password")) == "pw-before-0123"


def test_a_removed_secure_value_put_back_from_history_is_refused(victim: Victim) -> None:
    old_token = victim.config()["config"]["db:password"]
    with victim.open() as stack:
        stack.config.remove("db:password")
        stack.save()
    doc = victim.config()
    doc["config"]["db:password"] = old_token
    victim.write_config(doc)
    with pytest.raises(veil.ConfigStateMismatchError, match="older value"):
        victim.open()


def test_a_plain_config_value_holding_a_secure_value_is_sealed(
    victim: Victim, monkeypatch: pytest.MonkeyPatch
) -> None:
    with victim.open() as stack:
        with pytest.warns(veil.LeakWarning, match="equals the plaintext of a secure value"):
            stack.config.set("copy", "pw-before-0123")
        with pytest.warns(veil.LeakWarning, match="contains the plaintext"):
            stack.config.set("dsn", "postgres://app@db/app?password=pw-before-0123")
        assert stack.config.is_secret("copy")
        assert stack.config.is_secret("dsn")
        stack.save()
        monkeypatch.setenv("VEIL_STRICT", "1")
        with pytest.raises(veil.PlaintextLeakError, match="nothing was written"):
            stack.config.set("again", ["x", "pw-before-0123"])
        assert "again" not in stack.config
    assert b"pw-before-0123" not in victim.config_file.read_bytes()


def test_the_config_records_what_protects_the_stack_and_changes_only_with_it(
    victim: Victim,
) -> None:
    doc = victim.config()
    state = victim.state()
    assert doc["protection"]["key_id"] == state["key_id"]
    assert [r["scheme"] for r in doc["protection"]["recipients"]] == [
        p["scheme"] for p in state["providers"]
    ]
    before = victim.config_file.read_bytes()
    with victim.open() as stack:
        stack.export("more", Secret("another-secret"))
        stack.save()
        stack.save()
    assert victim.config_file.read_bytes() == before  # saves cause no churn in git


def test_a_stack_with_two_recipients_keeps_both_across_saves(victim: Victim) -> None:
    other: SecretsProvider | None = (
        LocalKeyProvider(victim.tmp / "other.key") if victim.kind != "file" else None
    )
    if other is None:
        other = PassphraseProvider(passphrase="another passphrase", kdf="pbkdf2")
    with victim.open() as stack:
        stack.change_secrets_provider(other, keep=True)
        stack.save()
    with victim.open() as stack:  # opened with the first provider, saved as usual
        stack.export("x", Secret("xx-secret"))
        stack.save()
    assert len(victim.state()["providers"]) == 2
    assert len(victim.config()["protection"]["recipients"]) == 2


# --- crash safety of a rotation ---------------------------------------------------------

ROTATION_KILLS = 100


def _rotate_forever(project: Path, backend: str, key: Path) -> None:
    n = 0
    while True:
        n += 1
        with Stack.open(
            "dev", backend=backend, project_dir=project, secrets_provider=LocalKeyProvider(key)
        ) as stack:
            stack.rotate_key()
            stack.export(f"k{n % 5}", Secret(f"rotated-{n}"))
            stack.save()


def test_sigkill_during_rotations_always_leaves_a_stack_that_opens(tmp_path: Path) -> None:
    if not hasattr(os, "fork"):
        pytest.skip("needs os.fork")
    project = tmp_path / "project"
    project.mkdir()
    backend = f"file://{tmp_path / 'state'}"
    key = tmp_path / "dev.key"
    with Stack.create(
        "dev", backend=backend, secrets_provider=LocalKeyProvider(key), project_dir=project
    ) as stack:
        stack.config.set("db:password", "pw-0123456789", secret=True)
        stack.export("token", Secret("tok-0123456789"))
        stack.save()
    rng = random.Random(7)
    rotated = 0
    last_key = ""
    for _ in range(ROTATION_KILLS):
        pid = os.fork()
        if pid == 0:
            try:
                warnings.simplefilter("ignore")
                _rotate_forever(project, backend, key)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.0, 0.15))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        with Stack.open(
            "dev", backend=backend, project_dir=project, secrets_provider=LocalKeyProvider(key)
        ) as stack:
            assert veil.reveal(stack.config.require_secret("db:password")) == "pw-0123456789"
            assert stack.outputs["token"] == Secret("tok-0123456789")
            for value in stack.outputs.values():
                assert isinstance(value, Secret)
            kid = stack.config.protection.key_id
            rotated += kid != last_key
            last_key = kid
    assert rotated >= 10  # rotations did complete between kills


def test_a_config_file_of_the_first_format_opens_and_is_upgraded(victim: Victim) -> None:
    doc = victim.config()
    state = victim.state()
    doc["format"] = "veil.config/1"
    doc["keyring"] = {"key_id": state["key_id"], "providers": state["providers"]}
    del doc["protection"]
    victim.write_config(doc)
    with victim.open() as stack:
        assert veil.reveal(stack.config.require_secret("db:password")) == "pw-before-0123"
        stack.save()
    upgraded = victim.config()
    assert upgraded["format"] == "veil.config/2"
    assert "keyring" not in upgraded
    assert upgraded["protection"]["key_id"] == state["key_id"]
    assert upgraded["config"]["db:password"] == doc["config"]["db:password"]
