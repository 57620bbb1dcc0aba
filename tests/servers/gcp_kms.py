"""A loopback Cloud KMS: the v1 REST calls veil makes, as Google serves them.

Google Cloud KMS has no emulator, so this server speaks the published REST protocol
(https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys)
for the two methods veil uses, and the official ``google-cloud-kms`` client talks to
it unchanged over its REST transport:

- ``POST /v1/{name=projects/*/locations/*/keyRings/*/cryptoKeys/**}:encrypt`` with
  ``{"plaintext", "additionalAuthenticatedData", "plaintextCrc32c",
  "additionalAuthenticatedDataCrc32c"}`` (bytes as base64, int64 as strings), answering
  ``{"name", "ciphertext", "ciphertextCrc32c", "verifiedPlaintextCrc32c",
  "verifiedAdditionalAuthenticatedDataCrc32c", "protectionLevel"}``; ``name`` may be a
  CryptoKey (its primary version is used) or a CryptoKeyVersion.
- ``POST /v1/{name=projects/*/locations/*/keyRings/*/cryptoKeys/*}:decrypt`` with
  ``{"ciphertext", "additionalAuthenticatedData", ...Crc32c}``, answering
  ``{"plaintext", "plaintextCrc32c", "usedPrimary", "protectionLevel"}``.

Honest where it matters: encryption is AES-256-GCM under a per-version key with the
additional authenticated data as GCM associated data, so a wrong AAD, another key or
altered bytes fail (``400 INVALID_ARGUMENT "Decryption failed: the ciphertext is
invalid."`` or ``"... verify that 'name' refers to the correct CryptoKey."``). Bearer
tokens are verified (see :mod:`google_auth`): missing, forged or expired ones get
``401 UNAUTHENTICATED``. IAM is checked before existence, as Google does: a caller
without ``cloudkms.cryptoKeyVersions.useToEncrypt``/``useToDecrypt`` on the key (granted
on the key, its key ring, location or project, e.g. through
``roles/cloudkms.cryptoKeyEncrypterDecrypter``) gets ``403 PERMISSION_DENIED ... (or it
may not exist)``; one allowed on a missing key gets ``404 NOT_FOUND``; a key version not
``ENABLED`` gets ``400 FAILED_PRECONDITION``; a key whose purpose is not
``ENCRYPT_DECRYPT`` gets ``400 FAILED_PRECONDITION``.

Run it by hand: ``python tests/servers/gcp_kms.py`` prints the environment to export.
"""

from __future__ import annotations

import base64
import binascii
import collections
import json
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import google_crc32c
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

try:
    from .google_auth import (
        CLOUD_PLATFORM,
        AuthFailure,
        GoogleAuth,
        LoopbackServer,
        Response,
        error_body,
    )
except ImportError:  # run as a script
    from google_auth import (  # type: ignore[no-redef]
        CLOUD_PLATFORM,
        AuthFailure,
        GoogleAuth,
        LoopbackServer,
        Response,
        error_body,
    )

ENCRYPTER_DECRYPTER = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
ROLES = {
    ENCRYPTER_DECRYPTER: {
        "cloudkms.cryptoKeyVersions.useToEncrypt",
        "cloudkms.cryptoKeyVersions.useToDecrypt",
    },
    "roles/cloudkms.cryptoKeyEncrypter": {"cloudkms.cryptoKeyVersions.useToEncrypt"},
    "roles/cloudkms.cryptoKeyDecrypter": {"cloudkms.cryptoKeyVersions.useToDecrypt"},
}
SCOPES = {CLOUD_PLATFORM, "https://www.googleapis.com/auth/cloudkms"}
AUDIENCE = "https://cloudkms.googleapis.com/"
MAX_DATA = 64 * 1024

_KEY = r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/:]+"
_ROUTE = re.compile(rf"/v1/(?P<name>{_KEY}(?:/cryptoKeyVersions/[^/:]+)?):(?P<verb>[a-zA-Z]+)\Z")
_TAG = 16  # bytes naming the key version at the head of a ciphertext


@dataclass
class KeyVersion:
    name: str
    secret: bytes
    tag: bytes
    state: str = "ENABLED"


@dataclass
class CryptoKey:
    name: str
    purpose: str = "ENCRYPT_DECRYPT"
    versions: list[KeyVersion] = field(default_factory=list)
    primary: int = 0


def crc32c(data: bytes) -> int:
    return int(google_crc32c.value(data))


class GcpKmsServer(LoopbackServer):
    """Cloud KMS v1 encrypt/decrypt and an OAuth token endpoint on one loopback port."""

    def __init__(self, auth: GoogleAuth | None = None) -> None:
        super().__init__()
        self.auth = auth or GoogleAuth()
        self.token_uri = f"{self.url}/token"
        self.keys: dict[str, CryptoKey] = {}
        self.grants: dict[str, dict[str, set[str]]] = {}  # resource -> member -> roles
        self.calls: collections.Counter[str] = collections.Counter()
        self._mutex = threading.Lock()

    # --- administration, as a test sets things up --------------------------------------

    def create_key(self, name: str, purpose: str = "ENCRYPT_DECRYPT") -> CryptoKey:
        key = CryptoKey(name, purpose)
        self.keys[name] = key
        self.rotate(name)
        return key

    def rotate(self, name: str) -> KeyVersion:
        """A new primary version, as ``gcloud kms keys versions create --primary``."""
        key = self.keys[name]
        version = KeyVersion(
            f"{name}/cryptoKeyVersions/{len(key.versions) + 1}",
            secrets.token_bytes(32),
            secrets.token_bytes(_TAG),
        )
        key.versions.append(version)
        key.primary = len(key.versions) - 1
        return version

    def set_state(self, name: str, state: str, version: int | None = None) -> None:
        """``DISABLED``, ``DESTROYED`` or ``ENABLED`` for one version (default: all)."""
        for v in self.keys[name].versions:
            if version is None or v.name.endswith(f"/cryptoKeyVersions/{version}"):
                v.state = state

    def grant(self, resource: str, member: str, role: str = ENCRYPTER_DECRYPTER) -> None:
        self.grants.setdefault(resource, {}).setdefault(member, set()).add(role)

    def revoke(self, resource: str, member: str) -> None:
        self.grants.get(resource, {}).pop(member, None)

    def _allowed(self, member: str, resource: str, permission: str) -> bool:
        parts = resource.split("/")
        for n in range(2, len(parts) + 1, 2):  # projects/P, .../locations/L, ...
            roles = self.grants.get("/".join(parts[:n]), {}).get(member, set())
            if any(permission in ROLES.get(r, ()) for r in roles):
                return True
        return False

    # --- the protocol --------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        route = urlsplit(path).path
        if method == "POST" and route == "/token":
            with self._mutex:
                self.calls["token"] += 1
            status, payload = self.auth.token_endpoint(body, self.token_uri)
            return Response(status, payload)
        match = _ROUTE.match(unquote(route))
        if method != "POST" or match is None or match["verb"] not in ("encrypt", "decrypt"):
            return Response(404, error_body(404, "NOT_FOUND", f"Method not found: {route}"))
        verb, name = match["verb"], match["name"]
        with self._mutex:
            self.calls[verb] += 1
        method_id = f"google.cloud.kms.v1.KeyManagementService.{verb.capitalize()}"
        try:
            member = self.auth.authenticate(headers.get("authorization"), AUDIENCE, SCOPES)
        except AuthFailure as failure:
            return Response(
                401,
                error_body(
                    401,
                    "UNAUTHENTICATED",
                    failure.message,
                    reason=failure.reason,
                    service="cloudkms.googleapis.com",
                    method=method_id,
                ),
                {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
            )
        try:
            request = json.loads(body or b"{}")
            if not isinstance(request, dict):
                raise ValueError
        except ValueError:
            return _invalid("Invalid JSON payload received.")
        if verb == "encrypt":
            return self._encrypt(member, name, request)
        if "/cryptoKeyVersions/" in name:
            return Response(404, error_body(404, "NOT_FOUND", f"Method not found: {route}"))
        return self._decrypt(member, name, request)

    def _check(self, member: str, name: str, permission: str) -> Response | CryptoKey:
        key_name = name.split("/cryptoKeyVersions/")[0]
        if not self._allowed(member, key_name, permission):
            return Response(
                403,
                error_body(
                    403,
                    "PERMISSION_DENIED",
                    f"Permission '{permission}' denied on resource '{name}' (or it may not exist).",
                    reason="IAM_PERMISSION_DENIED",
                    domain="cloudkms.googleapis.com",
                    permission=permission,
                    resource=name,
                ),
            )
        key = self.keys.get(key_name)
        if key is None or (name != key_name and not any(v.name == name for v in key.versions)):
            return Response(404, error_body(404, "NOT_FOUND", f"{name} not found."))
        if key.purpose != "ENCRYPT_DECRYPT":
            return Response(
                400,
                error_body(
                    400,
                    "FAILED_PRECONDITION",
                    f"{key_name} has purpose {key.purpose}; this operation requires "
                    "purpose ENCRYPT_DECRYPT.",
                ),
            )
        return key

    def _encrypt(self, member: str, name: str, request: dict[str, Any]) -> Response:
        checked = self._check(member, name, "cloudkms.cryptoKeyVersions.useToEncrypt")
        if isinstance(checked, Response):
            return checked
        fields = _bytes_fields(request, "plaintext", "additionalAuthenticatedData")
        if isinstance(fields, Response):
            return fields
        plaintext, aad = fields
        if not plaintext:
            return _invalid("Plaintext is required.")
        if len(plaintext) > MAX_DATA or len(aad) > MAX_DATA:
            return _invalid("The request exceeds the maximum data size of 65536 bytes.")
        verified = _crc_checks(
            request, ("plaintextCrc32c", plaintext), ("additionalAuthenticatedDataCrc32c", aad)
        )
        if isinstance(verified, Response):
            return verified
        key = checked
        version = (
            next(v for v in key.versions if v.name == name)
            if "/cryptoKeyVersions/" in name
            else key.versions[key.primary]
        )
        if version.state != "ENABLED":
            return _not_enabled(version)
        nonce = secrets.token_bytes(12)
        ciphertext = version.tag + nonce + AESGCM(version.secret).encrypt(nonce, plaintext, aad)
        return Response(
            200,
            {
                "name": version.name,
                "ciphertext": base64.b64encode(ciphertext).decode(),
                "ciphertextCrc32c": str(crc32c(ciphertext)),
                "verifiedPlaintextCrc32c": verified[0],
                "verifiedAdditionalAuthenticatedDataCrc32c": verified[1],
                "protectionLevel": "SOFTWARE",
            },
        )

    def _decrypt(self, member: str, name: str, request: dict[str, Any]) -> Response:
        checked = self._check(member, name, "cloudkms.cryptoKeyVersions.useToDecrypt")
        if isinstance(checked, Response):
            return checked
        fields = _bytes_fields(request, "ciphertext", "additionalAuthenticatedData")
        if isinstance(fields, Response):
            return fields
        ciphertext, aad = fields
        if not ciphertext:
            return _invalid("Ciphertext is required.")
        crcs = _crc_checks(
            request, ("ciphertextCrc32c", ciphertext), ("additionalAuthenticatedDataCrc32c", aad)
        )
        if isinstance(crcs, Response):
            return crcs
        key = checked
        tag = ciphertext[:_TAG]
        version = next((v for v in key.versions if v.tag == tag), None)
        if version is None:
            elsewhere = any(v.tag == tag for k in self.keys.values() for v in k.versions)
            return _invalid(
                "Decryption failed: verify that 'name' refers to the correct CryptoKey."
                if elsewhere
                else "Decryption failed: the ciphertext is invalid."
            )
        if version.state != "ENABLED":
            return _not_enabled(version)
        body = ciphertext[_TAG:]
        try:
            plaintext = AESGCM(version.secret).decrypt(body[:12], body[12:], aad)
        except (InvalidTag, ValueError):
            return _invalid("Decryption failed: the ciphertext is invalid.")
        return Response(
            200,
            {
                "plaintext": base64.b64encode(plaintext).decode(),
                "plaintextCrc32c": str(crc32c(plaintext)),
                "usedPrimary": version is key.versions[key.primary],
                "protectionLevel": "SOFTWARE",
            },
        )


def _invalid(message: str) -> Response:
    return Response(400, error_body(400, "INVALID_ARGUMENT", message))


def _not_enabled(version: KeyVersion) -> Response:
    return Response(
        400,
        error_body(
            400,
            "FAILED_PRECONDITION",
            f"{version.name} is not enabled, current state is: {version.state}.",
        ),
    )


def _bytes_fields(request: dict[str, Any], *names: str) -> tuple[bytes, ...] | Response:
    out = []
    for name in names:
        value = request.get(name, "")
        if not isinstance(value, str):
            return _invalid(f"Invalid value at '{name}' (TYPE_BYTES)")
        try:
            # proto3 JSON bytes: standard or URL-safe base64, padding optional.
            text = value.replace("-", "+").replace("_", "/")
            out.append(base64.b64decode(text + "=" * (-len(text) % 4), validate=True))
        except (binascii.Error, ValueError):
            return _invalid(f"Invalid value at '{name}' (TYPE_BYTES), Base64 decoding failed")
    return tuple(out)


def _crc_checks(request: dict[str, Any], *fields: tuple[str, bytes]) -> tuple[bool, ...] | Response:
    verified = []
    for name, data in fields:
        given = request.get(name)
        if given is None:
            verified.append(False)
            continue
        try:
            value = int(given)
        except (TypeError, ValueError):
            return _invalid(f"Invalid value at '{name}' (TYPE_INT64)")
        if value != crc32c(data):
            snake = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
            return _invalid(
                f"The checksum in field {snake} did not match the data in field "
                f"{snake.removesuffix('_crc32c')}."
            )
        verified.append(True)
    return tuple(verified)


# --- pytest fixtures -------------------------------------------------------------------


@dataclass
class KmsFixture:
    """A running server, an account with a credentials file, and two keys."""

    server: GcpKmsServer
    credentials_file: Path
    member: str
    key: str
    other_key: str

    @property
    def env(self) -> dict[str, str]:
        return {
            "GOOGLE_APPLICATION_CREDENTIALS": str(self.credentials_file),
            "VEIL_GCPKMS_ENDPOINT": self.server.url,
        }


PROJECT_KEYS = "projects/veil-test/locations/global/keyRings/veil"


@pytest.fixture(scope="session", name="gcp_kms_session")
def gcp_kms_session_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KmsFixture]:
    server = GcpKmsServer().start()
    try:
        creds = tmp_path_factory.mktemp("gcpkms") / "service-account.json"
        email = server.auth.new_service_account(creds, server.token_uri)
        member = f"serviceAccount:{email}"
        key = server.create_key(f"{PROJECT_KEYS}/cryptoKeys/state").name
        other = server.create_key(f"{PROJECT_KEYS}/cryptoKeys/other").name
        server.grant(PROJECT_KEYS, member)
        yield KmsFixture(server, creds, member, key, other)
    finally:
        server.stop()


@pytest.fixture(name="gcp_kms")
def gcp_kms_fixture(gcp_kms_session: KmsFixture, monkeypatch: pytest.MonkeyPatch) -> KmsFixture:
    """The session's server with its credentials in this test's environment."""
    for name, value in gcp_kms_session.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "veil-test")
    gcp_kms_session.server.auth.clock_offset = 0.0
    return gcp_kms_session


def main() -> None:  # pragma: no cover - a manual helper
    import tempfile
    import time

    server = GcpKmsServer().start()
    folder = Path(tempfile.mkdtemp(prefix="veil-gcpkms-"))
    creds = folder / "service-account.json"
    email = server.auth.new_service_account(creds, server.token_uri)
    key = server.create_key(f"{PROJECT_KEYS}/cryptoKeys/dev").name
    server.grant(PROJECT_KEYS, f"serviceAccount:{email}")
    print(f"export GOOGLE_APPLICATION_CREDENTIALS={creds}")
    print(f"export VEIL_GCPKMS_ENDPOINT={server.url}")
    print(f"# secrets provider: gcpkms://{key}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
