"""gcpkms://: the compliance suite and Cloud KMS's own failure modes, against the
loopback Cloud KMS in tests/servers/gcp_kms.py driven by the official client."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

try:
    from google.cloud import kms_v1
    from google.oauth2.credentials import Credentials
except ImportError:  # pragma: no cover - CI installs the extra
    if os.environ.get("CI"):
        pytest.fail("google-cloud-kms is missing: pip install -e '.[test,gcp]'", pytrace=False)
    pytest.skip(
        "google-cloud-kms is not installed (pip install 'veil[gcp]')", allow_module_level=True
    )

import veil
from servers.gcp_kms import (  # noqa: F401 - the last two are fixtures
    PROJECT_KEYS,
    KmsFixture,
    gcp_kms_fixture,
    gcp_kms_session_fixture,
)
from servers.google_auth import closed_port
from veil import (
    ProviderAccessError,
    ProviderConfigError,
    ProviderKeyError,
    ProviderUnavailableError,
    SecretPickleError,
    Stack,
)
from veil.crypto import generate_data_key
from veil.providers import context_bytes, provider_from_url
from veil.providers import gcp as gcp_module
from veil.providers.gcp import GcpKmsProvider
from veil.testing import ProviderComplianceSuite

CTX = {"stack": "dev"}


class TestGcpKmsCompliance(ProviderComplianceSuite):
    @pytest.fixture
    def provider(self, gcp_kms: KmsFixture) -> GcpKmsProvider:
        return GcpKmsProvider(gcp_kms.key)

    @pytest.fixture
    def other_provider(self, gcp_kms: KmsFixture) -> GcpKmsProvider:
        return GcpKmsProvider(gcp_kms.other_key)


# --- URLs and settings ------------------------------------------------------------------


def test_url_round_trip_and_registry(gcp_kms: KmsFixture) -> None:
    provider = provider_from_url(f"gcpkms://{gcp_kms.key}")
    assert isinstance(provider, GcpKmsProvider)
    assert provider.url == f"gcpkms://{gcp_kms.key}"
    assert provider.describe() == {"key": gcp_kms.key}
    assert "gcpkms" in veil.providers.known_schemes()


@pytest.mark.parametrize(
    "url",
    [
        "gcpkms://",
        "gcpkms://projects/p/locations/global/keyRings/r",
        "gcpkms://projects/p/locations/global/keyRings/r/cryptoKeys/k/cryptoKeyVersions/1",
        "gcpkms://projects/p/locations/global/keyRings/r/cryptoKeys/k?endpoint=http://evil",
        "gcpkms://projects/../locations/global/keyRings/r/cryptoKeys/k/..",
        "gcpkms://projects/p/locations/global/keyRings/r/cryptoKeys/k%2F..",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(ProviderConfigError):
        provider_from_url(url)


def test_description_holds_the_key_name_only_never_endpoint_or_credentials(
    gcp_kms: KmsFixture,
) -> None:
    provider = GcpKmsProvider(gcp_kms.key)
    provider.wrap_key(generate_data_key(), CTX)
    assert provider.describe() == {"key": gcp_kms.key}
    with pytest.raises(ProviderConfigError):
        GcpKmsProvider.from_description({"key": gcp_kms.key, "endpoint": "http://evil"})


def test_refuses_pickling_and_repr_names_only_the_key(gcp_kms: KmsFixture) -> None:
    provider = GcpKmsProvider(gcp_kms.key)
    provider.wrap_key(generate_data_key(), CTX)
    with pytest.raises(SecretPickleError):
        pickle.dumps(provider)
    assert repr(provider) == f"GcpKmsProvider({gcp_kms.key!r})"


# --- context binding --------------------------------------------------------------------


def test_context_is_the_kms_additional_authenticated_data(gcp_kms: KmsFixture) -> None:
    """What ``gcloud kms decrypt --additional-authenticated-data-file`` needs."""
    key = generate_data_key()
    wrapped = GcpKmsProvider(gcp_kms.key).wrap_key(key, CTX)
    client = kms_v1.KeyManagementServiceClient(
        transport="rest", client_options={"api_endpoint": gcp_kms.server.url}
    )
    plain = client.decrypt(
        request={
            "name": gcp_kms.key,
            "ciphertext": wrapped,
            "additional_authenticated_data": b'{"stack":"dev"}',
        }
    ).plaintext
    assert plain == key
    assert context_bytes(CTX) == b'{"stack":"dev"}'


def test_rotated_key_still_unwraps_keys_wrapped_by_an_older_version(gcp_kms: KmsFixture) -> None:
    name = f"{PROJECT_KEYS}/cryptoKeys/rotating"
    gcp_kms.server.create_key(name)
    provider = GcpKmsProvider(name)
    key = generate_data_key()
    old = provider.wrap_key(key, CTX)
    gcp_kms.server.rotate(name)
    new = provider.wrap_key(key, CTX)
    assert provider.unwrap_key(old, CTX) == key
    assert provider.unwrap_key(new, CTX) == key


# --- key state ----------------------------------------------------------------------------


@pytest.mark.parametrize("state", ["DISABLED", "DESTROYED"])
def test_disabled_or_destroyed_key_is_a_key_error(gcp_kms: KmsFixture, state: str) -> None:
    name = f"{PROJECT_KEYS}/cryptoKeys/{state.lower()}"
    gcp_kms.server.create_key(name)
    provider = GcpKmsProvider(name)
    wrapped = provider.wrap_key(generate_data_key(), CTX)
    gcp_kms.server.set_state(name, state)
    with pytest.raises(ProviderKeyError, match=f"current state is: {state}"):
        provider.unwrap_key(wrapped, CTX)
    with pytest.raises(ProviderKeyError, match="disabled or destroyed"):
        provider.wrap_key(generate_data_key(), CTX)


def test_missing_key_is_a_key_error_naming_location(gcp_kms: KmsFixture) -> None:
    provider = GcpKmsProvider(f"{PROJECT_KEYS}/cryptoKeys/nope")
    with pytest.raises(ProviderKeyError, match=r"location \(region\)"):
        provider.wrap_key(generate_data_key(), CTX)


def test_key_in_another_location_without_access_is_denied(gcp_kms: KmsFixture) -> None:
    # IAM is checked before existence: no grant there, so 403 "(or it may not exist)".
    provider = GcpKmsProvider(
        "projects/veil-test/locations/europe-west1/keyRings/veil/cryptoKeys/state"
    )
    with pytest.raises(ProviderAccessError, match="or the key does not exist"):
        provider.wrap_key(generate_data_key(), CTX)


def test_key_of_the_wrong_purpose_is_a_key_error(gcp_kms: KmsFixture) -> None:
    name = f"{PROJECT_KEYS}/cryptoKeys/signing"
    gcp_kms.server.create_key(name, purpose="ASYMMETRIC_SIGN")
    with pytest.raises(ProviderKeyError, match="ENCRYPT_DECRYPT"):
        GcpKmsProvider(name).wrap_key(generate_data_key(), CTX)


# --- credentials and permissions ----------------------------------------------------------


def _second_account(gcp_kms: KmsFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    path = tmp_path / "other-account.json"
    email = gcp_kms.server.auth.new_service_account(path, gcp_kms.server.token_uri, "other")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
    return f"serviceAccount:{email}"


def test_denied_encrypt_names_the_permission_and_role(
    gcp_kms: KmsFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _second_account(gcp_kms, tmp_path, monkeypatch)
    with pytest.raises(ProviderAccessError) as info:
        GcpKmsProvider(gcp_kms.key).wrap_key(generate_data_key(), CTX)
    assert "cloudkms.cryptoKeyVersions.useToEncrypt" in str(info.value)
    assert "roles/cloudkms.cryptoKeyEncrypterDecrypter" in str(info.value)


def test_encrypter_only_role_is_denied_decrypt(
    gcp_kms: KmsFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrapped = GcpKmsProvider(gcp_kms.key).wrap_key(generate_data_key(), CTX)
    member = _second_account(gcp_kms, tmp_path, monkeypatch)
    gcp_kms.server.grant(gcp_kms.key, member, "roles/cloudkms.cryptoKeyEncrypter")
    provider = GcpKmsProvider(gcp_kms.key)
    provider.wrap_key(generate_data_key(), CTX)
    with pytest.raises(ProviderAccessError, match=r"cryptoKeyVersions\.useToDecrypt"):
        provider.unwrap_key(wrapped, CTX)


def test_expired_token_is_an_auth_error(gcp_kms: KmsFixture) -> None:
    provider = GcpKmsProvider(gcp_kms.key)
    wrapped = provider.wrap_key(generate_data_key(), CTX)
    gcp_kms.server.auth.clock_offset = 2 * 3600  # every self-signed token is now expired
    with pytest.raises(ProviderAccessError, match="expired or invalid"):
        provider.unwrap_key(wrapped, CTX)


def test_deleted_service_account_key_is_an_auth_error(
    gcp_kms: KmsFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = _second_account(gcp_kms, tmp_path, monkeypatch)
    gcp_kms.server.grant(PROJECT_KEYS, member)
    provider = GcpKmsProvider(gcp_kms.key)
    provider.wrap_key(generate_data_key(), CTX)
    gcp_kms.server.auth.delete_service_account_keys(member.split(":", 1)[1])
    with pytest.raises(ProviderAccessError):
        provider.wrap_key(generate_data_key(), CTX)


def _user_credentials(info: dict[str, str]) -> Credentials:
    return Credentials(
        None,
        refresh_token=info["refresh_token"],
        token_uri=info["token_uri"],
        client_id=info["client_id"],
        client_secret=info["client_secret"],
        scopes=["https://www.googleapis.com/auth/cloud-platform"],
    )


def test_user_credentials_use_the_token_endpoint(gcp_kms: KmsFixture) -> None:
    info = gcp_kms.server.auth.new_authorized_user(gcp_kms.server.token_uri, "dev@x.test")
    gcp_kms.server.grant(gcp_kms.key, "user:dev@x.test")
    before = gcp_kms.server.calls["token"]
    provider = GcpKmsProvider(gcp_kms.key, credentials=_user_credentials(info))
    key = generate_data_key()
    wrapped = provider.wrap_key(key, CTX)
    assert gcp_kms.server.calls["token"] == before + 1
    # An access token revoked by the service: the client refreshes once and goes on.
    gcp_kms.server.auth.revoke_access_tokens()
    assert provider.unwrap_key(wrapped, CTX) == key
    assert gcp_kms.server.calls["token"] == before + 2
    # A revoked refresh token (as after a password change): a typed error.
    gcp_kms.server.auth.revoke_refresh_token(info["refresh_token"])
    revoked = GcpKmsProvider(gcp_kms.key, credentials=_user_credentials(info))
    with pytest.raises(ProviderAccessError, match="expired, revoked or invalid"):
        revoked.unwrap_key(wrapped, CTX)


def test_no_credentials_at_all_is_an_auth_error(
    gcp_kms: KmsFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    with pytest.raises(ProviderAccessError, match="GOOGLE_APPLICATION_CREDENTIALS"):
        GcpKmsProvider(gcp_kms.key).wrap_key(generate_data_key(), CTX)


# --- bounded time ------------------------------------------------------------------------


def test_unreachable_service_fails_within_30_seconds(
    gcp_kms: KmsFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEIL_GCPKMS_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    started = time.monotonic()
    with pytest.raises(ProviderUnavailableError, match="could not be reached"):
        GcpKmsProvider(gcp_kms.key).wrap_key(generate_data_key(), CTX)
    assert time.monotonic() - started < 30


def test_unreachable_token_endpoint_fails_in_bounded_time(gcp_kms: KmsFixture) -> None:
    info = gcp_kms.server.auth.new_authorized_user(
        f"http://127.0.0.1:{closed_port()}/token", "dev@x.test"
    )
    provider = GcpKmsProvider(gcp_kms.key, credentials=_user_credentials(info))
    started = time.monotonic()
    with pytest.raises(ProviderUnavailableError, match="token endpoint"):
        provider.wrap_key(generate_data_key(), CTX)
    assert time.monotonic() - started < 30


# --- no secret in errors -------------------------------------------------------------------


def _chain(exc: BaseException | None) -> list[BaseException]:
    out = []
    while exc is not None and exc not in out:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def test_errors_hold_no_data_key_and_chain_nothing(
    gcp_kms: KmsFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = generate_data_key()
    provider = GcpKmsProvider(gcp_kms.key)
    wrapped = provider.wrap_key(key, CTX)
    failures: list[BaseException] = []
    gcp_kms.server.set_state(gcp_kms.key, "DISABLED")
    try:
        for call in (
            lambda: provider.wrap_key(key, CTX),
            lambda: provider.unwrap_key(wrapped, CTX),
        ):
            with pytest.raises(veil.VeilError) as info:
                call()
            failures.append(info.value)
    finally:
        gcp_kms.server.set_state(gcp_kms.key, "ENABLED")
    monkeypatch.setattr(gcp_module, "RETRY_DEADLINE", 1.0)  # the bound has its own test
    monkeypatch.setenv("VEIL_GCPKMS_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(ProviderUnavailableError) as info:
        GcpKmsProvider(gcp_kms.key).wrap_key(key, CTX)
    failures.append(info.value)
    for failure in failures:
        assert _chain(failure) == [failure]
        text = repr(failure.args) + str(failure)
        for form in (key.hex(), repr(key), __import__("base64").b64encode(key).decode()):
            assert form not in text


# --- the SDK stays out of `import veil` ---------------------------------------------------


def test_import_veil_imports_no_google_sdk() -> None:
    code = "import sys, veil; print(sorted(m for m in sys.modules if m.startswith('google')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_missing_sdk_says_which_extra_to_install() -> None:
    code = textwrap.dedent(
        """
        import sys
        sys.modules["google.cloud.kms_v1"] = None
        from veil.providers import provider_from_url
        try:
            provider_from_url("gcpkms://projects/p/locations/l/keyRings/r/cryptoKeys/k")
        except Exception as exc:
            print(type(exc).__name__, exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("ProviderConfigError")
    assert "pip install 'veil[gcp]'" in out.stdout


# --- one call per open, none per unchanged save -------------------------------------------


def test_stack_of_10000_secrets_costs_one_call_to_open_and_none_to_resave(
    gcp_kms: KmsFixture, tmp_path: Path
) -> None:
    backend = f"file://{tmp_path / 'state'}"
    url = f"gcpkms://{gcp_kms.key}"
    calls = gcp_kms.server.calls
    start = calls.copy()
    with Stack.create("big", backend=backend, secrets_provider=url, project_dir=tmp_path) as s:
        for i in range(10_000):
            s.export(f"s{i}", veil.secret(f"value-{i}"))
        s.save()
    assert calls["encrypt"] - start["encrypt"] == 1
    assert calls["decrypt"] - start["decrypt"] == 0
    before = calls.copy()
    with Stack.open("big", backend=backend, project_dir=tmp_path) as s:
        assert calls["decrypt"] - before["decrypt"] == 1
        assert veil.reveal(s.outputs["s9999"]) == "value-9999"
        s.save()  # unchanged
    assert calls["decrypt"] - before["decrypt"] == 1
    assert calls["encrypt"] - before["encrypt"] == 0


def test_failing_provider_writes_nothing(
    gcp_kms: KmsFixture, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gcp_module, "RETRY_DEADLINE", 1.0)  # the bound has its own test
    monkeypatch.setenv("VEIL_GCPKMS_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    state = tmp_path / "state"
    with pytest.raises(ProviderUnavailableError):
        Stack.create(
            "dev",
            backend=f"file://{state}",
            secrets_provider=f"gcpkms://{gcp_kms.key}",
            project_dir=tmp_path,
        )
    assert not (state / "stacks").exists() or not list((state / "stacks").iterdir())
    assert [p.name for p in tmp_path.iterdir()] == ["state"] or not list(tmp_path.iterdir())
