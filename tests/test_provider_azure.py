"""Azure Key Vault provider, against the loopback Key Vault and token endpoint over TLS,
driven by the official SDK (azure-keyvault-keys, azure-identity) unchanged."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import textwrap
import time
import traceback
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

if not os.environ.get("CI"):  # CI installs every extra: there a missing one fails
    pytest.importorskip("azure.keyvault.keys", reason="needs the extra: pip install 'veil[azure]'")

import veil
from servers.azure_keyvault import (
    CLIENT_SECRET,
    KeyVaultServer,
    counting,
    keyvault_env,
    keyvault_server,
)
from veil.crypto import generate_data_key
from veil.providers import azure as azure_module
from veil.providers import provider_from_description, provider_from_url
from veil.providers.azure import AzureKeyVaultProvider
from veil.state import store_from_url
from veil.testing import ProviderComplianceSuite, Restore

__all__ = ["keyvault_env", "keyvault_server"]  # fixtures, imported for pytest

CTX = {"stack": "dev"}

pytestmark = pytest.mark.server  # the loopback Key Vault


@pytest.fixture(autouse=True)
def _fresh_clients() -> Iterator[None]:
    # Each test starts as a new process would: no cached credential, key or client.
    azure_module.clear_cache()
    yield
    azure_module.clear_cache()


def new_key(server: KeyVaultServer, **options: object) -> str:
    name = "k-" + uuid.uuid4().hex[:12]
    server.create_key(name, **options)  # type: ignore[arg-type]
    return name


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- the compliance suite -------------------------------------------------------------


class TestAzureKeyVaultCompliance(ProviderComplianceSuite):
    @pytest.fixture
    def provider(self, keyvault_env: KeyVaultServer) -> AzureKeyVaultProvider:
        return AzureKeyVaultProvider.from_url(keyvault_env.key_url(new_key(keyvault_env)))

    @pytest.fixture
    def other_provider(self, keyvault_env: KeyVaultServer) -> AzureKeyVaultProvider:
        return AzureKeyVaultProvider.from_url(keyvault_env.key_url(new_key(keyvault_env)))

    @pytest.fixture
    def restore(self, keyvault_env: KeyVaultServer) -> Restore:
        def fresh(description: object) -> veil.providers.SecretsProvider:
            azure_module.clear_cache()  # as a new process: credentials from the environment
            return provider_from_description("azurekeyvault", description)  # type: ignore[arg-type]

        return fresh


# --- URLs and settings ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "key_id"),
    [
        (
            "azurekeyvault://myvault.vault.azure.net/keys/app-key",
            "https://myvault.vault.azure.net/keys/app-key",
        ),
        (
            "azurekeyvault://MyVault.vault.azure.net/keys/app-key/0123456789abcdef0123456789abcdef",
            "https://myvault.vault.azure.net/keys/app-key/0123456789abcdef0123456789abcdef",
        ),
        (
            "azurekeyvault://hsm1.managedhsm.azure.net/keys/k",
            "https://hsm1.managedhsm.azure.net/keys/k",
        ),
    ],
)
def test_url_forms_name_a_key_and_round_trip(url: str, key_id: str) -> None:
    provider = provider_from_url(url)
    assert isinstance(provider, AzureKeyVaultProvider)
    assert provider.key_id == key_id
    again_from_url = provider_from_url(provider.url)
    assert isinstance(again_from_url, AzureKeyVaultProvider)
    assert again_from_url.key_id == key_id
    again = AzureKeyVaultProvider.from_description(provider.describe())
    assert again.key_id == key_id


@pytest.mark.parametrize(
    "url",
    [
        "azurekeyvault://",
        "azurekeyvault://myvault.vault.azure.net",
        "azurekeyvault://myvault.vault.azure.net/secrets/x",
        "azurekeyvault://myvault.vault.azure.net/keys/",
        "azurekeyvault://myvault.vault.azure.net/keys/bad_name",
        "azurekeyvault://myvault.vault.azure.net/keys/k/v/extra",
        "azurekeyvault://myvault.vault.azure.net/keys/k/not-a-version!",
        "azurekeyvault://myvault.vault.azure.net/keys/k?region=x",
        "azurekeyvault://user@myvault.vault.azure.net/keys/k",
    ],
)
def test_malformed_urls_are_config_errors(url: str) -> None:
    with pytest.raises(veil.ProviderConfigError, match=r"azurekeyvault|Key Vault"):
        provider_from_url(url)


def test_describe_holds_vault_and_key_and_no_credentials(keyvault_env: KeyVaultServer) -> None:
    provider = provider_from_url(keyvault_env.key_url(new_key(keyvault_env)))
    provider.wrap_key(generate_data_key(), CTX)
    description = provider.describe()
    assert set(description) == {"vault", "key"}
    assert CLIENT_SECRET not in repr(description) + repr(provider)


def test_refuses_to_be_pickled(keyvault_env: KeyVaultServer) -> None:
    provider = provider_from_url(keyvault_env.key_url(new_key(keyvault_env)))
    with pytest.raises(veil.SecretPickleError):
        pickle.dumps(provider)


# --- context binding and key versions ---------------------------------------------------


def test_another_stacks_wrapped_key_is_refused_by_veil_not_by_the_vault(
    keyvault_env: KeyVaultServer,
) -> None:
    provider = provider_from_url(keyvault_env.key_url(new_key(keyvault_env)))
    wrapped = provider.wrap_key(generate_data_key(), {"stack": "prod"})
    with counting(keyvault_env) as calls, pytest.raises(veil.KeyUnwrapError, match="another"):
        provider.unwrap_key(wrapped, {"stack": "dev"})
    # Key Vault did unwrap (RSA has no associated data); the context digest refused it.
    assert calls["unwrapkey"] == 1


def test_stack_opens_after_the_key_is_rotated(keyvault_env: KeyVaultServer) -> None:
    name = new_key(keyvault_env)
    provider = provider_from_url(keyvault_env.key_url(name))
    key = generate_data_key()
    old = provider.wrap_key(key, CTX)
    keyvault_env.create_key(name)  # a new current version
    azure_module.clear_cache()
    new = provider_from_url(keyvault_env.key_url(name)).wrap_key(key, CTX)
    assert old[2:34] != new[2:34]  # each records the version that wrapped it
    assert provider.unwrap_key(old, CTX) == key
    assert provider.unwrap_key(new, CTX) == key


def test_a_pinned_version_wraps_with_that_version(keyvault_env: KeyVaultServer) -> None:
    name = new_key(keyvault_env)
    first = keyvault_env.keys[name][0].version
    keyvault_env.create_key(name)
    pinned = provider_from_url(keyvault_env.key_url(name, first))
    wrapped = pinned.wrap_key(generate_data_key(), CTX)
    assert wrapped[2:34].decode() == first
    assert pinned.describe()["version"] == first


# --- failures: typed, naming what to check, nothing secret attached --------------------


def _chain(exc: BaseException) -> str:
    parts = []
    seen: BaseException | None = exc
    while seen is not None:
        parts.append(repr(seen.args) + str(seen))
        seen = seen.__cause__ or seen.__context__
    return " ".join(parts) + "".join(traceback.format_exception(exc))


def test_disabled_key_does_not_wrap_or_unwrap(keyvault_env: KeyVaultServer) -> None:
    name = new_key(keyvault_env)
    provider = provider_from_url(keyvault_env.key_url(name))
    wrapped = provider.wrap_key(generate_data_key(), CTX)
    keyvault_env.set_enabled(name, False)
    azure_module.clear_cache()
    with counting(keyvault_env) as calls, pytest.raises(veil.ProviderKeyError, match="disabled"):
        provider.wrap_key(generate_data_key(), CTX)
    assert calls["wrapkey"] == 0
    with pytest.raises(veil.ProviderKeyError, match="disabled"):
        provider.unwrap_key(wrapped, CTX)


def test_disabled_key_is_refused_by_the_vault_when_only_it_unwraps(
    keyvault_env: KeyVaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A caller without keys/get: the SDK does every operation at the vault.
    name = new_key(keyvault_env)
    wrapped = provider_from_url(keyvault_env.key_url(name)).wrap_key(generate_data_key(), CTX)
    client, secret = str(uuid.uuid4()), "s-" + uuid.uuid4().hex
    keyvault_env.add_principal(client, secret, {"wrapKey", "unwrapKey"})
    monkeypatch.setenv("AZURE_CLIENT_ID", client)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", secret)
    keyvault_env.set_enabled(name, False)
    with counting(keyvault_env) as calls, pytest.raises(veil.ProviderKeyError, match="disabled"):
        provider_from_url(keyvault_env.key_url(name)).unwrap_key(wrapped, CTX)
    assert calls["unwrapkey:403"] == 1  # Key Vault itself refused: 403 KeyDisabled
    assert calls["unwrapkey:200"] == 0


def test_without_get_permission_the_vault_wraps_and_unwraps(
    keyvault_env: KeyVaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, secret = str(uuid.uuid4()), "s-" + uuid.uuid4().hex
    keyvault_env.add_principal(client, secret, {"wrapKey", "unwrapKey"})
    monkeypatch.setenv("AZURE_CLIENT_ID", client)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", secret)
    provider = provider_from_url(keyvault_env.key_url(new_key(keyvault_env)))
    key = generate_data_key()
    with counting(keyvault_env) as calls:
        wrapped = provider.wrap_key(key, CTX)
    assert calls["wrapkey"] == 1
    assert provider.unwrap_key(wrapped, CTX) == key


@pytest.mark.parametrize(
    ("permissions", "operation"),
    [({"get", "wrapKey"}, "unwrapKey"), ({"unwrapKey"}, "wrapKey")],
)
def test_missing_permission_names_it_and_the_role(
    keyvault_env: KeyVaultServer,
    monkeypatch: pytest.MonkeyPatch,
    permissions: set[str],
    operation: str,
) -> None:
    name = new_key(keyvault_env)
    wrapped = provider_from_url(keyvault_env.key_url(name)).wrap_key(generate_data_key(), CTX)
    azure_module.clear_cache()
    client, secret = str(uuid.uuid4()), "s-" + uuid.uuid4().hex
    keyvault_env.add_principal(client, secret, permissions)
    monkeypatch.setenv("AZURE_CLIENT_ID", client)
    monkeypatch.setenv("AZURE_CLIENT_SECRET", secret)
    provider = provider_from_url(keyvault_env.key_url(name))

    def attempt() -> None:
        if operation == "wrapKey":
            provider.wrap_key(generate_data_key(), CTX)
        else:
            provider.unwrap_key(wrapped, CTX)

    with pytest.raises(veil.ProviderAccessError) as caught:
        attempt()
    message = str(caught.value)
    assert f"keys/{operation}" in message
    assert "Key Vault Crypto" in message
    assert secret not in _chain(caught.value)


def test_key_without_wrap_operation_is_a_key_error(keyvault_env: KeyVaultServer) -> None:
    name = new_key(keyvault_env, key_ops=["sign", "verify"])
    with pytest.raises(veil.ProviderKeyError, match="wrapKey"):
        provider_from_url(keyvault_env.key_url(name)).wrap_key(generate_data_key(), CTX)


def test_key_of_the_wrong_type_is_a_key_error(keyvault_env: KeyVaultServer) -> None:
    name = new_key(keyvault_env, kty="EC")
    with pytest.raises(veil.ProviderKeyError, match=r"type EC.*RSA"):
        provider_from_url(keyvault_env.key_url(name)).wrap_key(generate_data_key(), CTX)


def test_missing_or_deleted_key_is_a_key_error(keyvault_env: KeyVaultServer) -> None:
    name = new_key(keyvault_env)
    provider = provider_from_url(keyvault_env.key_url(name))
    wrapped = provider.wrap_key(generate_data_key(), CTX)
    keyvault_env.delete_key(name)
    azure_module.clear_cache()
    with pytest.raises(veil.ProviderKeyError, match="not found"):
        provider.unwrap_key(wrapped, CTX)
    with pytest.raises(veil.ProviderKeyError, match="not found"):
        provider.wrap_key(generate_data_key(), CTX)


def test_wrong_client_secret_is_an_access_error_without_the_secret(
    keyvault_env: KeyVaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_CLIENT_SECRET", "wrong-secret-value")
    provider = provider_from_url(keyvault_env.key_url(new_key(keyvault_env)))
    with pytest.raises(veil.ProviderAccessError, match="AZURE_CLIENT_SECRET") as caught:
        provider.wrap_key(generate_data_key(), CTX)
    assert "wrong-secret-value" not in _chain(caught.value)
    assert caught.value.__cause__ is None


def test_expired_token_is_an_access_error(keyvault_env: KeyVaultServer) -> None:
    provider = provider_from_url(keyvault_env.key_url(new_key(keyvault_env)))
    key = generate_data_key()
    wrapped = provider.wrap_key(key, CTX)
    keyvault_env.expire_tokens()  # the cached token is no longer accepted by the vault
    with counting(keyvault_env) as calls, pytest.raises(veil.ProviderAccessError, match="expired"):
        provider.unwrap_key(wrapped, CTX)
    assert calls["unwrapkey:401"] >= 1
    assert calls["unwrapkey:200"] == 0
    azure_module.clear_cache()  # a new sign-in gets a fresh token
    assert provider_from_url(provider.url).unwrap_key(wrapped, CTX) == key


def test_unreachable_vault_fails_fast(keyvault_env: KeyVaultServer) -> None:
    provider = provider_from_url(f"azurekeyvault://veil.vault.localhost:{closed_port()}/keys/k")
    start = time.monotonic()
    with pytest.raises(veil.ProviderUnavailableError, match="cannot reach"):
        provider.wrap_key(generate_data_key(), CTX)
    assert time.monotonic() - start < 30


def test_unreachable_login_endpoint_fails_fast(
    keyvault_env: KeyVaultServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AZURE_AUTHORITY_HOST", f"https://login.localhost:{closed_port()}")
    provider = provider_from_url(keyvault_env.key_url(new_key(keyvault_env)))
    start = time.monotonic()
    with pytest.raises((veil.ProviderAccessError, veil.ProviderUnavailableError)):
        provider.wrap_key(generate_data_key(), CTX)
    assert time.monotonic() - start < 30


def test_data_key_never_appears_in_an_unwrap_error(keyvault_env: KeyVaultServer) -> None:
    provider = provider_from_url(keyvault_env.key_url(new_key(keyvault_env)))
    key = generate_data_key()
    wrapped = provider.wrap_key(key, {"stack": "a"})
    with pytest.raises(veil.KeyUnwrapError) as caught:
        provider.unwrap_key(wrapped, {"stack": "b"})
    text = _chain(caught.value)
    assert key.hex() not in text
    assert repr(key) not in text
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None


def test_nothing_is_written_when_the_key_cannot_wrap(
    keyvault_env: KeyVaultServer, tmp_path: Path
) -> None:
    name = new_key(keyvault_env)
    keyvault_env.set_enabled(name, False)
    backend = f"file://{tmp_path / 'state'}"
    url = keyvault_env.key_url(name)
    with pytest.raises(veil.ProviderKeyError, match="disabled"):
        veil.Stack.create("dev", backend=backend, secrets_provider=url, project_dir=tmp_path)
    assert store_from_url(backend).list_stacks() == []
    assert not (tmp_path / "veil.dev.json").exists()


# --- one call per open -------------------------------------------------------------------


def test_ten_thousand_secrets_open_with_one_unwrap_and_save_unchanged_with_none(
    keyvault_env: KeyVaultServer, tmp_path: Path
) -> None:
    url = keyvault_env.key_url(new_key(keyvault_env))
    backend = f"file://{tmp_path / 'state'}"
    secrets = {f"s{i}": veil.Secret(f"value-{i}") for i in range(10_000)}
    with (
        counting(keyvault_env) as created,
        veil.Stack.create(
            "dev", backend=backend, secrets_provider=url, project_dir=tmp_path
        ) as stack,
    ):
        stack.export("secrets", secrets)
        stack.save()
    assert created["wrapkey"] + created["get"] <= 2  # the key read once, wrapped once
    assert created["unwrapkey"] == 0

    azure_module.clear_cache()  # as a new process
    with counting(keyvault_env) as opened:
        stack = veil.Stack.open("dev", backend=backend, project_dir=tmp_path)
    assert opened["unwrapkey"] == 1
    assert opened["wrapkey"] == 0
    assert opened["get"] <= 1  # the SDK reads the key's public half once per process
    with counting(keyvault_env) as saved:
        stack.save()
    stack.close()
    assert sum(saved.values()) == 0

    # Same process: the key is not read again.
    with (
        counting(keyvault_env) as again,
        veil.Stack.open("dev", backend=backend, project_dir=tmp_path) as reopened,
    ):
        assert veil.reveal(reopened.outputs["secrets"]["s9999"]) == "value-9999"
    assert again["unwrapkey"] == 1
    assert again["get"] == 0
    assert again["wrapkey"] == 0


# --- packaging ---------------------------------------------------------------------------


def test_import_veil_imports_no_azure_sdk() -> None:
    code = (
        "import sys, veil; veil.providers.provider_class('file'); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('azure', 'msal')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_missing_sdk_says_which_extra_to_install() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["azure.keyvault.keys"] = None
        import veil
        from veil.providers import provider_from_url
        try:
            provider_from_url("azurekeyvault://v.vault.azure.net/keys/k")
        except veil.ProviderConfigError as exc:
            print(exc)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "pip install 'veil[azure]'" in out
