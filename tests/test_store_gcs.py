"""gs://: the StateStore compliance suite against the loopback GCS server (which enforces
generation preconditions), the basics against gcp-storage-emulator, a scan of every
object written for plaintext, and GCS's own failure modes."""

from __future__ import annotations

import base64
import json
import os
import pickle
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    import google.cloud.storage  # noqa: F401
except ImportError:  # pragma: no cover - CI installs the extra
    if os.environ.get("CI"):
        pytest.fail("google-cloud-storage is missing: pip install -e '.[test,gcp]'", pytrace=False)
    pytest.skip(
        "google-cloud-storage is not installed (pip install 'veil[gcp]')", allow_module_level=True
    )

import veil
from servers.gcs import (  # noqa: F401 - the last two are fixtures
    GcsServer,
    gcs_emulator_fixture,
    gcs_server_fixture,
)
from servers.google_auth import closed_port
from veil import (
    SecretPickleError,
    Stack,
    StackNotFoundError,
    StateError,
    StateLockedError,
    StoreAccessError,
    StoreUnavailableError,
)
from veil.state import gcs as gcs_module
from veil.state import store_from_url
from veil.state.gcs import GcsStore
from veil.testing import StateStoreComplianceSuite


@pytest.fixture(name="on_server")
def on_server_fixture(gcs_server: GcsServer, monkeypatch: pytest.MonkeyPatch) -> GcsServer:
    """The loopback server, reached as an emulator (no credentials)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_server.url)
    gcs_server.require_auth = False
    return gcs_server


def _fresh(bucket: str = "veil-state") -> str:
    return f"gs://{bucket}/t-{secrets.token_hex(6)}"


class TestGcsStore(StateStoreComplianceSuite):
    @pytest.fixture
    def store(self, on_server: GcsServer) -> GcsStore:
        return GcsStore.from_url(_fresh())


# --- URLs ----------------------------------------------------------------------------------


def test_url_forms() -> None:
    store = store_from_url("gs://bucket-1/team/app?history=4")
    assert isinstance(store, GcsStore)
    assert (store.bucket_name, store.prefix, store.history_size) == ("bucket-1", "team/app", 4)
    assert store.url == "gs://bucket-1/team/app?history=4"
    assert store_from_url("gs://bucket-1").url == "gs://bucket-1"
    for bad in ("gs://", "gs://b?region=x", "gs://b?history=-1", "gs://b?history=x", "gs://a b"):
        with pytest.raises(StateError):
            store_from_url(bad)


def test_store_refuses_pickling() -> None:
    with pytest.raises(SecretPickleError):
        pickle.dumps(GcsStore("bucket"))


# --- the layout and the preconditions, seen from the server ---------------------------------


def test_objects_are_laid_out_under_the_prefix(on_server: GcsServer) -> None:
    url = _fresh()
    store = GcsStore.from_url(url)
    store.write("dev", b"{}")
    prefix = url.split("/", 3)[3]
    names = sorted(n for n in on_server.buckets["veil-state"].objects if n.startswith(prefix))
    assert names == [f"{prefix}/history/dev/0000000001.json", f"{prefix}/stacks/dev.json"]
    live = on_server.buckets["veil-state"].objects[f"{prefix}/stacks/dev.json"]
    assert live.metadata == {"veil-version": "1"}


def test_second_lock_is_refused_by_the_server_precondition(on_server: GcsServer) -> None:
    url = _fresh()
    first, second = GcsStore.from_url(url), GcsStore.from_url(url)
    before = on_server.calls["storage.objects.create"]
    with first.lock("dev", owner="ci-runner"):
        with pytest.raises(StateLockedError, match="ci-runner") as info:
            second.lock("dev")
        assert "veil stack unlock dev" in str(info.value)
    assert on_server.calls["storage.objects.create"] == before + 2


# --- against gcp-storage-emulator ------------------------------------------------------------


def test_basics_on_gcp_storage_emulator(gcs_emulator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator)
    store = store_from_url(_fresh("veil-emulated") + "?history=2")
    assert store.list_stacks() == []
    for n in range(4):
        store.write("dev", f'{{"n": {n}}}'.encode())
    assert store.read("dev") == b'{"n": 3}'
    assert [e.version for e in store.history("dev")] == [4, 3]
    assert store.read_version("dev", 3) == b'{"n": 2}'
    assert store.list_stacks() == ["dev"]
    with store.lock("dev") as held:
        assert held.held
        assert store.lock_info("dev") is not None
    assert store.lock_info("dev") is None
    store.delete("dev")
    assert not store.exists("dev")
    with pytest.raises(StackNotFoundError):
        store.read("dev")


# --- no plaintext in any object ever written ----------------------------------------------------


def _forms(plain: str) -> set[bytes]:
    raw = plain.encode()
    return {
        raw,
        raw.hex().encode(),
        json.dumps(plain)[1:-1].encode(),
        base64.b64encode(raw),
        base64.urlsafe_b64encode(raw),
    }


def test_no_secret_plaintext_in_any_object_written(on_server: GcsServer, tmp_path: Path) -> None:
    plaintexts = [f"pw-{secrets.token_hex(12)}" for _ in range(20)]
    provider = f"file://{tmp_path / 'stack.key'}"
    start = len(on_server.uploads)
    url = _fresh()
    with Stack.create("app", backend=url, secrets_provider=provider, project_dir=tmp_path) as s:
        for i, plain in enumerate(plaintexts[:10]):
            s.export(f"s{i}", veil.secret(plain))
        s.export("nested", {"db": {"password": veil.secret(plaintexts[10])}})
        s.save()
        s.export("derived", veil.Output.secret(plaintexts[11]).apply(lambda v: v + "!"))
        s.save()
    with Stack.open("app", backend=url, project_dir=tmp_path) as s:
        for i, plain in enumerate(plaintexts[12:], 12):
            s.export(f"s{i}", veil.secret(plain))
        s.save()
        assert veil.reveal(s.outputs["s12"]) == plaintexts[12]
    written = on_server.uploads[start:]
    assert len(written) >= 8  # state, history and lock objects of four writes at least
    for blob in written:
        for plain in plaintexts:
            for form in _forms(plain):
                assert form not in blob, f"plaintext of a secret in an object: {form[:12]!r}"


# --- typed errors ------------------------------------------------------------------------------


def test_missing_bucket_is_a_store_access_error(on_server: GcsServer) -> None:
    store = GcsStore.from_url("gs://no-such-bucket/x")
    with pytest.raises(StoreAccessError, match="bucket 'no-such-bucket' does not exist"):
        store.write("dev", b"{}")
    with pytest.raises(StoreAccessError, match="does not exist"):
        store.list_stacks()


def test_unreachable_service_fails_within_30_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{closed_port()}")
    store = GcsStore.from_url("gs://veil-state/x")
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="could not be reached"):
        store.write("dev", b"{}")
    assert time.monotonic() - started < 30


@pytest.fixture(name="authenticated")
def authenticated_fixture(
    gcs_server: GcsServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[GcsServer, str]]:
    """The server requiring OAuth, reached with a service account key file whose
    token_uri is the server's own token endpoint (the client's endpoint setting
    ``API_ENDPOINT_OVERRIDE`` keeps credentials, unlike ``STORAGE_EMULATOR_HOST``)."""
    path = tmp_path / "service-account.json"
    email = gcs_server.auth.new_service_account(path, gcs_server.token_uri, "state")
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("API_ENDPOINT_OVERRIDE", gcs_server.url)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    gcs_server.require_auth = True
    gcs_server.auth.clock_offset = 0.0
    try:
        yield gcs_server, f"serviceAccount:{email}"
    finally:
        gcs_server.require_auth = False
        gcs_server.auth.clock_offset = 0.0


def test_credentials_from_adc_reach_the_token_endpoint(
    authenticated: tuple[GcsServer, str],
) -> None:
    server, member = authenticated
    server.grant("veil-state", member)
    before = server.auth.token_requests
    store = GcsStore.from_url(_fresh())
    store.write("dev", b"{}")
    assert store.read("dev") == b"{}"
    assert server.auth.token_requests == before + 1


def test_denied_names_the_permission_and_role(authenticated: tuple[GcsServer, str]) -> None:
    server, member = authenticated
    server.grant("veil-state", member, "roles/storage.objectViewer")
    store = GcsStore.from_url(_fresh())
    assert store.list_stacks() == []
    with pytest.raises(StoreAccessError, match=r"storage\.objects\.create") as info:
        store.write("dev", b"{}")
    assert "roles/storage.objectUser" in str(info.value)


def test_anonymous_caller_is_refused(
    authenticated: tuple[GcsServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = authenticated
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", server.url)  # the client sends no token
    with pytest.raises(StoreAccessError, match="not authenticated"):
        GcsStore.from_url(_fresh()).list_stacks()


def test_expired_credentials_are_a_store_access_error(
    authenticated: tuple[GcsServer, str],
) -> None:
    server, member = authenticated
    server.grant("veil-state", member)
    server.auth.clock_offset = 2 * 3600  # the signed assertion is now too old
    with pytest.raises(StoreAccessError, match="expired, revoked or invalid"):
        GcsStore.from_url(_fresh()).list_stacks()


def test_no_credentials_is_a_store_access_error(
    authenticated: tuple[GcsServer, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    with pytest.raises(StoreAccessError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        GcsStore.from_url(_fresh()).list_stacks()


def test_errors_chain_nothing_from_the_client_library(on_server: GcsServer) -> None:
    with pytest.raises(StoreAccessError) as info:
        GcsStore.from_url("gs://no-such-bucket").read("dev")
    assert info.value.__cause__ is None
    assert info.value.__context__ is None


def test_import_veil_state_imports_no_google_sdk() -> None:
    code = (
        "import sys, veil, veil.state; "
        "print(sorted(m for m in sys.modules if m.startswith('google')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_sdk_says_which_extra_to_install() -> None:
    code = (
        "import sys; sys.modules['google.cloud.storage'] = None\n"
        "from veil.state import store_from_url\n"
        "try:\n    store_from_url('gs://b')\n"
        "except Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'veil[gcp]'" in out.stdout
    assert out.stdout.startswith("StateError")


def test_retry_deadline_is_short() -> None:
    assert gcs_module.RETRY_DEADLINE + gcs_module.ATTEMPT_TIMEOUT < 30
