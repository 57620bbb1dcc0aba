"""`hashivault://`: Vault / OpenBao transit, against OpenBao's dev server."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

if not os.environ.get("CI"):
    pytest.importorskip("hvac", reason="pip install 'veil[vault]'")

import veil
from servers.openbao import OpenBao, free_port, openbao
from veil import Secret, Stack
from veil.crypto import generate_data_key
from veil.providers import provider_from_url
from veil.providers.vault import VaultTransitProvider
from veil.testing import ProviderComplianceSuite

__all__ = ["openbao"]  # the session fixture, imported for pytest

CONTEXT = {"stack": "dev"}


@pytest.fixture
def vault_env(openbao: OpenBao, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> OpenBao:
    for name in list(os.environ):
        if name.startswith(("VAULT_", "BAO_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.vault-token of the user's
    monkeypatch.setenv("VAULT_ADDR", openbao.address)
    monkeypatch.setenv("VAULT_TOKEN", openbao.root_token)
    return openbao


@pytest.fixture(scope="session")
def keys(openbao: OpenBao) -> OpenBao:
    openbao.create_key("veil-a")
    openbao.create_key("veil-b")
    openbao.create_key("veil-derived", derived=True)
    openbao.create_key("veil-chacha", key_type="chacha20-poly1305")
    openbao.create_key("veil-signing", key_type="ed25519")
    openbao.create_key("veil-rsa", key_type="rsa-2048")
    return openbao


class TestVaultTransitCompliance(ProviderComplianceSuite):
    @pytest.fixture
    def provider(self, vault_env: OpenBao, keys: OpenBao) -> VaultTransitProvider:
        return VaultTransitProvider("veil-a")

    @pytest.fixture
    def other_provider(self, vault_env: OpenBao, keys: OpenBao) -> VaultTransitProvider:
        return VaultTransitProvider("veil-b")


class TestVaultDerivedKeyCompliance(ProviderComplianceSuite):
    @pytest.fixture
    def provider(self, vault_env: OpenBao, keys: OpenBao) -> VaultTransitProvider:
        return VaultTransitProvider("veil-derived")

    @pytest.fixture
    def other_provider(self, vault_env: OpenBao, keys: OpenBao) -> VaultTransitProvider:
        return VaultTransitProvider("veil-chacha")


# --- URL and settings ------------------------------------------------------------------


def test_url_names_key_and_mount() -> None:
    p = provider_from_url("hashivault://my-key?mount=team/transit")
    assert isinstance(p, VaultTransitProvider)
    assert (p.key, p.mount) == ("my-key", "team/transit")
    assert p.url == "hashivault://my-key?mount=team/transit"
    assert provider_from_url("hashivault://k").url == "hashivault://k"  # default mount
    assert provider_from_url("hashivault://k").describe() == {"key": "k", "mount": "transit"}


@pytest.mark.parametrize(
    "url",
    [
        "hashivault://",
        "hashivault://a/b",
        "hashivault://k?mount=../sys",
        "hashivault://k?address=http://evil",
        "hashivault://k?token=x",
    ],
)
def test_bad_urls_are_refused(url: str) -> None:
    with pytest.raises(veil.ProviderConfigError):
        provider_from_url(url)


def test_description_never_holds_address_or_token(vault_env: OpenBao, keys: OpenBao) -> None:
    p = VaultTransitProvider("veil-a")
    p.wrap_key(generate_data_key(), CONTEXT)
    shown = repr(p) + str(p.describe()) + p.url
    assert vault_env.root_token not in shown
    assert vault_env.address not in shown
    with pytest.raises(veil.ProviderConfigError):
        VaultTransitProvider.from_description({"key": "veil-a", "address": "http://x"})


def test_provider_with_a_token_refuses_pickling() -> None:
    p = VaultTransitProvider("k", address="http://127.0.0.1:1", token="s.secret-token")
    with pytest.raises(veil.SecretPickleError):
        pickle.dumps(p)
    assert "secret-token" not in repr(p)


def test_import_veil_imports_no_hvac() -> None:
    code = (
        "import sys, veil, veil.providers, veil.state\n"
        "veil.providers.known_schemes()\n"
        "assert 'hvac' not in sys.modules and 'requests' not in sys.modules, "
        "sorted(m for m in sys.modules if m.startswith(('hvac', 'requests')))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_bao_variables_work_too(
    vault_env: OpenBao, keys: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VAULT_ADDR")
    monkeypatch.delenv("VAULT_TOKEN")
    monkeypatch.setenv("BAO_ADDR", vault_env.address)
    monkeypatch.setenv("BAO_TOKEN", vault_env.root_token)
    p = provider_from_url("hashivault://veil-a")
    key = generate_data_key()
    assert p.unwrap_key(p.wrap_key(key, CONTEXT), CONTEXT) == key


def test_token_from_the_vault_token_file(
    vault_env: OpenBao, keys: OpenBao, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("VAULT_TOKEN")
    (tmp_path / ".vault-token").write_text(vault_env.root_token + "\n")
    p = VaultTransitProvider("veil-a")
    key = generate_data_key()
    assert p.unwrap_key(p.wrap_key(key, CONTEXT), CONTEXT) == key


def test_another_mount(vault_env: OpenBao) -> None:
    vault_env.enable_transit("team/transit")
    vault_env.create_key("k", mount="team/transit")
    p = provider_from_url("hashivault://k?mount=team/transit")
    key = generate_data_key()
    wrapped = p.wrap_key(key, CONTEXT)
    assert p.unwrap_key(wrapped, CONTEXT) == key
    # The same key name on the default mount is another key.
    vault_env.create_key("k")
    with pytest.raises(veil.KeyUnwrapError):
        VaultTransitProvider("k").unwrap_key(wrapped, CONTEXT)


def test_namespace_from_the_environment(
    vault_env: OpenBao, keys: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hvac

    vault_env.root.sys.create_namespace("ns1")
    team = hvac.Client(url=vault_env.address, token=vault_env.root_token, namespace="ns1")
    team.sys.enable_secrets_engine("transit", path="transit")
    team.secrets.transit.create_key("veil-a")  # same name as a key outside the namespace
    monkeypatch.setenv("VAULT_NAMESPACE", "ns1")
    p = VaultTransitProvider("veil-a")
    key = generate_data_key()
    wrapped = p.wrap_key(key, CONTEXT)
    assert p.unwrap_key(wrapped, CONTEXT) == key
    monkeypatch.delenv("VAULT_NAMESPACE")
    with pytest.raises(veil.KeyUnwrapError):  # the root namespace's veil-a is another key
        VaultTransitProvider("veil-a").unwrap_key(wrapped, CONTEXT)


def test_wrapped_key_is_a_transit_ciphertext_bound_to_the_stack(
    vault_env: OpenBao, keys: OpenBao
) -> None:
    # Recoverable by hand with the vault/bao command: decrypt with the same AAD.
    import base64

    p = VaultTransitProvider("veil-a")
    key = generate_data_key()
    wrapped = p.wrap_key(key, {"stack": "prod"})
    assert wrapped.startswith(b"vault:v1:")
    aad = base64.b64encode(b'{"stack":"prod"}').decode()
    got = vault_env.root.secrets.transit.decrypt_data(
        "veil-a", wrapped.decode(), associated_data=aad
    )
    assert base64.b64decode(got["data"]["plaintext"]) == key
    with pytest.raises(Exception, match="message authentication failed"):
        vault_env.root.secrets.transit.decrypt_data("veil-a", wrapped.decode())


def test_rotated_key_still_unwraps_old_wrapped_keys(vault_env: OpenBao) -> None:
    vault_env.create_key("veil-rotating")
    p = VaultTransitProvider("veil-rotating")
    key = generate_data_key()
    old = p.wrap_key(key, CONTEXT)
    vault_env.root.secrets.transit.rotate_key("veil-rotating")
    assert p.wrap_key(key, CONTEXT).startswith(b"vault:v2:")
    assert p.unwrap_key(old, CONTEXT) == key


# --- failures ------------------------------------------------------------------------


def _assert_clean(exc: BaseException, *secrets: str | bytes) -> None:
    """No secret in the message, the args, or a chained exception."""
    assert exc.__cause__ is None
    assert exc.__context__ is None
    text = str(exc) + repr(exc.args)
    for s in secrets:
        shown = s if isinstance(s, str) else s.hex()
        assert shown not in text


def test_unreachable_server_fails_fast_and_typed(
    vault_env: OpenBao, keys: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{free_port()}")
    key = generate_data_key()
    start = time.monotonic()
    with pytest.raises(veil.ProviderUnavailableError, match="VAULT_ADDR") as info:
        VaultTransitProvider("veil-a").wrap_key(key, CONTEXT)
    assert time.monotonic() - start < 30
    _assert_clean(info.value, key, vault_env.root_token)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join()
    for s in held:
        s.close()
    listener.close()


def test_server_that_never_answers_times_out(vault_env: OpenBao, silent_server: str) -> None:
    p = VaultTransitProvider("veil-a", address=silent_server, timeout=(1.0, 1.0))
    start = time.monotonic()
    with pytest.raises(veil.ProviderUnavailableError, match="no answer"):
        p.unwrap_key(b"vault:v1:" + b"A" * 80, CONTEXT)
    assert time.monotonic() - start < 5


def test_default_timeouts_are_bounded_below_30_seconds() -> None:
    from veil.providers.vault import DEFAULT_TIMEOUT

    assert sum(DEFAULT_TIMEOUT) < 30


def test_missing_address_says_which_variable(
    vault_env: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VAULT_ADDR")
    with pytest.raises(veil.ProviderConfigError, match="VAULT_ADDR"):
        VaultTransitProvider("veil-a").wrap_key(generate_data_key(), CONTEXT)


def test_missing_token_says_where_tokens_come_from(
    vault_env: OpenBao, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VAULT_TOKEN")
    with pytest.raises(veil.ProviderAccessError, match="VAULT_TOKEN"):
        VaultTransitProvider("veil-a").wrap_key(generate_data_key(), CONTEXT)


def test_invalid_token_is_told_apart(vault_env: OpenBao, keys: OpenBao) -> None:
    p = VaultTransitProvider("veil-a", token="s.not-a-real-token")
    with pytest.raises(veil.ProviderAccessError, match="invalid, expired") as info:
        p.wrap_key(generate_data_key(), CONTEXT)
    _assert_clean(info.value, "s.not-a-real-token")


def test_expired_token_is_told_apart(vault_env: OpenBao, keys: OpenBao) -> None:
    token = vault_env.token(ttl="1s")
    p = VaultTransitProvider("veil-a", token=token)
    wrapped = VaultTransitProvider("veil-a").wrap_key(generate_data_key(), CONTEXT)
    time.sleep(2.2)
    with pytest.raises(veil.ProviderAccessError, match="invalid, expired") as info:
        p.unwrap_key(wrapped, CONTEXT)
    _assert_clean(info.value, token)


ENCRYPT_ONLY = """
path "transit/encrypt/veil-a" { capabilities = ["update"] }
path "transit/encrypt/veil-nothing" { capabilities = ["update"] }
path "transit/decrypt/veil-nothing" { capabilities = ["update"] }
path "auth/token/lookup-self" { capabilities = ["read"] }
"""


def test_policy_without_decrypt_names_the_capability(vault_env: OpenBao, keys: OpenBao) -> None:
    token = vault_env.token(ENCRYPT_ONLY)
    p = VaultTransitProvider("veil-a", token=token)
    key = generate_data_key()
    wrapped = p.wrap_key(key, CONTEXT)  # encrypt is allowed
    with pytest.raises(
        veil.ProviderAccessError, match=r"'update' on 'transit/decrypt/veil-a'"
    ) as info:
        p.unwrap_key(wrapped, CONTEXT)
    _assert_clean(info.value, token, key)


def test_policy_without_encrypt_names_the_capability(vault_env: OpenBao, keys: OpenBao) -> None:
    token = vault_env.token(ENCRYPT_ONLY)
    key = generate_data_key()
    with pytest.raises(
        veil.ProviderAccessError, match=r"'update' on 'transit/encrypt/veil-b'"
    ) as info:
        VaultTransitProvider("veil-b", token=token).wrap_key(key, CONTEXT)
    _assert_clean(info.value, token, key)


def test_missing_key_with_update_only_policy_is_refused_not_created(
    vault_env: OpenBao, keys: OpenBao
) -> None:
    token = vault_env.token(ENCRYPT_ONLY)
    with pytest.raises(veil.ProviderAccessError, match="does not exist"):
        VaultTransitProvider("veil-nothing", token=token).wrap_key(generate_data_key(), CONTEXT)
    with pytest.raises(veil.ProviderKeyError, match="does not exist"):
        VaultTransitProvider("veil-nothing", token=token).unwrap_key(
            b"vault:v1:" + b"A" * 80, CONTEXT
        )
    import hvac.exceptions

    with pytest.raises(hvac.exceptions.InvalidPath):  # nothing was created
        vault_env.root.secrets.transit.read_key("veil-nothing")


def test_missing_key_on_unwrap(vault_env: OpenBao, keys: OpenBao) -> None:
    wrapped = VaultTransitProvider("veil-a").wrap_key(generate_data_key(), CONTEXT)
    with pytest.raises(veil.ProviderKeyError, match=r"'veil-missing'.*does not exist"):
        VaultTransitProvider("veil-missing").unwrap_key(wrapped, CONTEXT)


def test_deleted_key(vault_env: OpenBao) -> None:
    vault_env.create_key("veil-doomed")
    p = VaultTransitProvider("veil-doomed")
    wrapped = p.wrap_key(generate_data_key(), CONTEXT)
    vault_env.delete_key("veil-doomed")
    with pytest.raises(veil.ProviderKeyError, match="deleted"):
        p.unwrap_key(wrapped, CONTEXT)


@pytest.mark.parametrize("name", ["veil-signing", "veil-rsa"])
def test_key_of_the_wrong_type(vault_env: OpenBao, keys: OpenBao, name: str) -> None:
    p = VaultTransitProvider(name)
    with pytest.raises(veil.ProviderKeyError, match="aes256-gcm96"):
        p.wrap_key(generate_data_key(), CONTEXT)
    with pytest.raises(veil.ProviderKeyError, match="type"):
        p.unwrap_key(b"vault:v1:" + b"A" * 80, CONTEXT)


def test_missing_mount(vault_env: OpenBao) -> None:
    with pytest.raises(veil.ProviderConfigError, match="no transit engine at mount 'nowhere'"):
        provider_from_url("hashivault://k?mount=nowhere").wrap_key(generate_data_key(), CONTEXT)


def test_wrapped_key_of_another_stack_does_not_unwrap(vault_env: OpenBao, keys: OpenBao) -> None:
    p = VaultTransitProvider("veil-a")
    wrapped = p.wrap_key(generate_data_key(), {"stack": "prod"})
    with pytest.raises(veil.KeyUnwrapError, match="another stack"):
        p.unwrap_key(wrapped, {"stack": "dev"})


def test_nothing_is_written_when_the_provider_fails(
    vault_env: OpenBao, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from veil.state import FileStore

    store = FileStore(tmp_path / "state")
    monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(veil.ProviderUnavailableError):
        Stack.create("dev", backend=store, secrets_provider="hashivault://k", project_dir=tmp_path)
    assert store.list_stacks() == []
    assert store.lock_info("dev") is None
    assert list(tmp_path.glob("veil.*")) == []


# --- calls per stack open --------------------------------------------------------------


def test_one_transit_call_opens_a_stack_of_10000_secrets_and_none_saves_it_unchanged(
    vault_env: OpenBao, tmp_path: Path
) -> None:
    vault_env.enable_transit("count")
    vault_env.create_key("k", mount="count")
    backend = f"file://{tmp_path / 'state'}"
    url = "hashivault://k?mount=count"
    setup = vault_env.requests_to("count/")  # the key's creation
    with Stack.create("dev", backend=backend, secrets_provider=url, project_dir=tmp_path) as s:
        for i in range(10_000):
            s.export(f"s{i}", Secret(f"value-{i}"))
        s.save()
    assert vault_env.requests_to("count/") - setup == 1  # one encrypt at create
    assert vault_env.requests_to("count/encrypt/k") == 1

    before = vault_env.requests_to("count/")
    with Stack.open("dev", backend=backend, project_dir=tmp_path) as s:
        assert vault_env.requests_to("count/") - before == 1
        assert veil.reveal(s.outputs["s9999"]) == "value-9999"
        s.save()
    assert vault_env.requests_to("count/") - before == 1
    assert vault_env.requests_to("count/decrypt/k") == 1


def test_key_version_below_min_decryption_version(vault_env: OpenBao) -> None:
    vault_env.create_key("veil-trimmed")
    p = VaultTransitProvider("veil-trimmed")
    old = p.wrap_key(generate_data_key(), CONTEXT)
    vault_env.root.secrets.transit.rotate_key("veil-trimmed")
    vault_env.root.secrets.transit.update_key_configuration(
        "veil-trimmed", min_decryption_version=2
    )
    with pytest.raises(veil.ProviderKeyError, match="min_decryption_version"):
        p.unwrap_key(old, CONTEXT)
