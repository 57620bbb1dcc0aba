"""The azblob:// state store against Azurite (Microsoft's storage emulator)."""

from __future__ import annotations

import base64
import os
import socket
import time
import uuid
from pathlib import Path

import pytest

if not os.environ.get("CI"):  # CI installs every extra: there a missing one fails
    pytest.importorskip("azure.storage.blob", reason="needs the extra: pip install 'veil[azure]'")

from azure.storage.blob import BlobServiceClient

import veil
from servers.azurite import KEY, Azurite, azurite
from veil.providers import LocalKeyProvider
from veil.state import store_from_url
from veil.state.azblob import AzureBlobStore
from veil.testing import StateStoreComplianceSuite

__all__ = ["azurite"]  # the session fixture, imported for pytest

pytestmark = pytest.mark.server  # Azurite


def new_container(server: Azurite) -> str:
    name = "veil-" + uuid.uuid4().hex[:16]
    BlobServiceClient.from_connection_string(server.connection_string()).create_container(name)
    return name


@pytest.fixture
def azurite_env(azurite: Azurite, monkeypatch: pytest.MonkeyPatch) -> Azurite:
    for name in ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string())
    return azurite


class TestAzureBlobStoreCompliance(StateStoreComplianceSuite):
    @pytest.fixture
    def store(self, azurite_env: Azurite) -> AzureBlobStore:
        return AzureBlobStore.from_url(f"azblob://{new_container(azurite_env)}/teams/web")


# --- URLs ---------------------------------------------------------------------------------


def test_url_forms(azurite_env: Azurite) -> None:
    container = new_container(azurite_env)
    store = store_from_url(f"azblob://{container}/a/b?history=3")
    assert isinstance(store, AzureBlobStore)
    assert (store.container, store.prefix, store.history_size) == (container, "a/b", 3)
    assert store.url == f"azblob://{container}/a/b?history=3"
    assert store_from_url(f"azblob://{container}").url == f"azblob://{container}"
    assert "AccountKey" not in repr(store)
    assert KEY not in repr(store)


@pytest.mark.parametrize(
    "url",
    [
        "azblob://",
        "azblob://Upper",
        "azblob://ab",
        "azblob://a--b",
        "azblob://acct@container",
        "azblob://container:1234",
        "azblob://container?history=-1",
        "azblob://container?history=x",
        "azblob://container?colour=blue",
        "azblob://container/a/../b",
    ],
)
def test_malformed_urls_are_state_errors(azurite_env: Azurite, url: str) -> None:
    with pytest.raises(veil.StateError):
        store_from_url(url)


def test_store_without_a_prefix_keeps_stacks_at_the_container_root(azurite_env: Azurite) -> None:
    container = new_container(azurite_env)
    store = store_from_url(f"azblob://{container}")
    store.write("dev", b"state")
    service = BlobServiceClient.from_connection_string(azurite_env.connection_string())
    names = sorted(b.name for b in service.get_container_client(container).list_blobs())
    assert names == ["history/dev/0000000001.json", "stacks/dev.json"]


# --- nothing but sealed bytes leaves the process --------------------------------------------


def test_no_blob_holds_a_secrets_plaintext(azurite_env: Azurite, tmp_path: Path) -> None:
    container = new_container(azurite_env)
    backend = f"azblob://{container}/p"
    provider = LocalKeyProvider(tmp_path / "dev.key")
    markers = [f"plaintext-marker-{uuid.uuid4().hex}-{i}" for i in range(50)]
    with veil.Stack.create(
        "dev", backend=backend, secrets_provider=provider, project_dir=tmp_path
    ) as stack:
        stack.config.set("db:password", markers[0], secret=True)
        stack.export("secrets", {f"k{i}": veil.Secret(m) for i, m in enumerate(markers)})
        stack.export("public", "visible-value")
        stack.save()
        stack.export("more", veil.Secret(markers[1] + "-again"))
        stack.save()
    service = BlobServiceClient.from_connection_string(azurite_env.connection_string())
    client = service.get_container_client(container)
    blobs = {b.name: client.download_blob(b.name).readall() for b in client.list_blobs()}
    assert any(name.endswith("stacks/dev.json") for name in blobs)
    assert any("/history/" in name for name in blobs)
    everything = b"\n".join(blobs.values())
    assert b"visible-value" in everything  # the scan sees plain values
    for marker in markers:
        for form in (marker.encode(), base64.b64encode(marker.encode())):
            assert form not in everything


# --- failures ---------------------------------------------------------------------------------


def test_missing_container_is_an_access_error_naming_it(azurite_env: Azurite) -> None:
    store = store_from_url("azblob://no-such-container")
    for call in (
        lambda: store.write("dev", b"x"),
        lambda: store.read("dev"),
        lambda: store.exists("dev"),
        store.list_stacks,
    ):
        with pytest.raises(veil.StoreAccessError, match=r"no-such-container.*does not exist"):
            call()


def test_wrong_account_key_is_an_access_error_without_the_key(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = new_container(azurite)
    wrong = base64.b64encode(b"w" * 64).decode()
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string(wrong))
    store = store_from_url(f"azblob://{container}")
    with pytest.raises(veil.StoreAccessError, match="AZURE_STORAGE_KEY") as caught:
        store.write("dev", b"x")
    assert wrong not in str(caught.value)
    assert caught.value.__cause__ is None


def test_malformed_connection_string_does_not_echo_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountKey=c2VjcmV0LWtleQ==;junk")
    with pytest.raises(veil.StoreAccessError, match="malformed") as caught:
        store_from_url("azblob://container")
    assert "c2VjcmV0LWtleQ" not in str(caught.value)


def test_no_account_configured_says_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AZURE_STORAGE_CONNECTION_STRING",
        "AZURE_STORAGE_ACCOUNT",
        "AZURE_STORAGE_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(veil.StoreAccessError, match="AZURE_STORAGE_CONNECTION_STRING"):
        store_from_url("azblob://container")


def test_unreachable_account_fails_within_bounded_time(
    azurite: Azurite, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv(
        "AZURE_STORAGE_CONNECTION_STRING",
        azurite.connection_string().replace(f":{azurite.port}/", f":{port}/"),
    )
    store = store_from_url("azblob://container")
    start = time.monotonic()
    with pytest.raises(veil.StoreUnavailableError, match="cannot reach"):
        store.write("dev", b"x")
    assert time.monotonic() - start < 30


def test_write_is_conditional_on_the_etag_seen_when_locking(azurite_env: Azurite) -> None:
    container = new_container(azurite_env)
    store = store_from_url(f"azblob://{container}")
    store.write("dev", b"v1")
    service = BlobServiceClient.from_connection_string(azurite_env.connection_string())
    with store.lock("dev"):
        # Someone writes the blob directly, bypassing the lock: the next save must not
        # overwrite it.
        service.get_blob_client(container, "stacks/dev.json").upload_blob(
            b"intruder", overwrite=True
        )
        with pytest.raises(veil.StateLockedError, match="another writer"):
            store.write("dev", b"stale")
    assert store.read("dev") == b"intruder"
