"""A loopback Azure Key Vault and Microsoft Entra token endpoint, over TLS.

No Key Vault emulator exists, so this server speaks the REST protocol for the calls the
official SDK makes when veil uses a key (checked against Microsoft's REST reference for
Key Vault keys, API versions 7.x):

- ``GET /keys/{name}[/{version}]`` -> a KeyBundle (``key`` JWK with ``kid``, ``kty``,
  ``key_ops``, ``n``, ``e``; ``attributes`` with ``enabled``, ``created``, ``updated``,
  ``recoveryLevel``). Needs the ``get`` key permission.
- ``POST /keys/{name}/{version}/wrapkey`` and ``/unwrapkey`` with JSON ``{"alg", "value"}``
  (``value`` base64url) -> ``{"kid", "value"}``. Real RSA-OAEP-256 (and RSA-OAEP) with the
  key's private key, held only here. Need the ``wrapKey`` / ``unwrapKey`` permissions.
- Every request needs ``api-version`` and a bearer token. Without one the answer is 401
  with ``WWW-Authenticate: Bearer authorization="<authority>/<tenant>", resource="<resource>"``,
  the challenge the SDK's ``ChallengeAuthPolicy`` answers. A token the server has
  expired, or one issued for another audience, is refused with 401 and the challenge.
- Errors use the service's body ``{"error": {"code", "message", "innererror"}}``: 403
  ``Forbidden``/``AccessDenied`` for a missing permission, 403 ``Forbidden``/``KeyDisabled``
  for ``unwrapKey`` on a disabled key (as the service does; wrapping, a public-key
  operation, stays allowed on a disabled key), 404 ``KeyNotFound``, 400 ``BadParameter``
  for a malformed value or a ciphertext the key cannot decrypt.

The token side: ``GET /{tenant}/v2.0/.well-known/openid-configuration`` (MSAL's tenant
discovery) and ``POST /{tenant}/oauth2/v2.0/token`` (client credentials grant), with
AADSTS-style errors for an unknown tenant or a wrong client secret. MSAL's instance
discovery goes to Microsoft's own host, so clients disable it for this authority.

Names: the vault is ``https://<vault>.vault.localhost:PORT`` and the authority
``https://login.localhost:PORT``. Names under ``.localhost`` are loopback (RFC 6761), but
glibc without nss-myhostname does not resolve them, so :func:`resolve_localhost_names`
maps them to 127.0.0.1 in this process (as an ``/etc/hosts`` line would).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import datetime as dt
import ipaddress
import json
import os
import secrets
import socket
import ssl
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

TENANT = "72f988bf-86f1-41af-91ab-2d7cd011db47"
CLIENT_ID = "0d5f8c1e-3c2a-4f4b-9b8e-6a7d5c4b3a21"
CLIENT_SECRET = "loopback-client-secret"
VAULT = "veil"
ALL_KEY_PERMISSIONS = frozenset({"get", "wrapKey", "unwrapKey", "encrypt", "decrypt"})


# --- names and certificates ----------------------------------------------------------

_real_getaddrinfo = socket.getaddrinfo


def _getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    if isinstance(host, str) and host.lower().rstrip(".").endswith(".localhost"):
        host = "127.0.0.1"
    return _real_getaddrinfo(host, *args, **kwargs)


def resolve_localhost_names() -> None:
    """Resolve ``*.localhost`` to 127.0.0.1 in this process (RFC 6761)."""
    socket.getaddrinfo = _getaddrinfo


def make_tls_files(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``*.vault.localhost``, ``login.localhost``,
    ``localhost`` and 127.0.0.1. Returns (ca.pem, server.pem, server.key)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "veil test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "login.localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("*.vault.localhost"),
                    x509.DNSName("login.localhost"),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, cert_path, key_path = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


# --- state ---------------------------------------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64url(text: str) -> bytes:
    if not isinstance(text, str) or not text:
        raise ValueError("empty")
    if any(
        c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=" for c in text
    ):
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_b64url(n: int) -> str:
    return _b64url(n.to_bytes((n.bit_length() + 7) // 8, "big"))


@dataclass
class KeyVersion:
    version: str
    private: Any  # rsa.RSAPrivateKey or ec.EllipticCurvePrivateKey
    kty: str
    key_ops: list[str]
    enabled: bool = True
    created: int = field(default_factory=lambda: int(time.time()))


@dataclass
class Principal:
    secret: str
    permissions: set[str]
    object_id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class Call:
    method: str
    op: str  # "get", "wrapkey", "unwrapkey", "token", "discovery", "other"
    status: int
    authorized: bool


class KeyVaultServer:
    """One vault and one tenant on a loopback HTTPS port. Thread-safe."""

    def __init__(self, tls_dir: Path) -> None:
        self.ca_file, cert, key = make_tls_files(tls_dir)
        self._lock = threading.Lock()
        self.keys: dict[str, list[KeyVersion]] = {}
        self.principals: dict[str, Principal] = {
            CLIENT_ID: Principal(CLIENT_SECRET, set(ALL_KEY_PERMISSIONS))
        }
        self.tokens: dict[str, tuple[str, str, float]] = {}  # token -> (client, scope, exp)
        self.calls: list[Call] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._httpd.daemon_threads = True
        self._httpd.socket = context.wrap_socket(self._httpd.socket, server_side=True)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    # addresses

    @property
    def vault_url(self) -> str:
        return f"https://{VAULT}.vault.localhost:{self.port}"

    @property
    def resource(self) -> str:
        return f"https://vault.localhost:{self.port}"

    @property
    def authority(self) -> str:
        return f"https://login.localhost:{self.port}"

    def key_url(self, name: str, version: str | None = None) -> str:
        """The veil provider URL of a key."""
        tail = f"/{version}" if version else ""
        return f"azurekeyvault://{VAULT}.vault.localhost:{self.port}/keys/{name}{tail}"

    def environment(self) -> dict[str, str]:
        """What a process needs to authenticate here through DefaultAzureCredential."""
        return {
            "AZURE_TENANT_ID": TENANT,
            "AZURE_CLIENT_ID": CLIENT_ID,
            "AZURE_CLIENT_SECRET": CLIENT_SECRET,
            "AZURE_AUTHORITY_HOST": self.authority,
            "AZURE_TOKEN_CREDENTIALS": "EnvironmentCredential",
            "REQUESTS_CA_BUNDLE": str(self.ca_file),
        }

    # administration (what the portal or `az keyvault key` would do)

    def create_key(
        self, name: str, *, kty: str = "RSA", size: int = 2048, key_ops: list[str] | None = None
    ) -> str:
        """Add a new version of key ``name``; return the version id."""
        private: Any = (
            rsa.generate_private_key(65537, size)
            if kty.startswith("RSA")
            else ec.generate_private_key(ec.SECP256R1())
        )
        ops = (
            key_ops
            if key_ops is not None
            else (
                ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
                if kty.startswith("RSA")
                else ["sign", "verify"]
            )
        )
        version = uuid.uuid4().hex
        with self._lock:
            self.keys.setdefault(name, []).append(KeyVersion(version, private, kty, ops))
        return version

    def set_enabled(self, name: str, enabled: bool) -> None:
        with self._lock:
            for v in self.keys[name]:
                v.enabled = enabled

    def delete_key(self, name: str) -> None:
        with self._lock:
            del self.keys[name]

    def add_principal(self, client_id: str, secret: str, permissions: set[str]) -> None:
        with self._lock:
            self.principals[client_id] = Principal(secret, set(permissions))

    def expire_tokens(self) -> None:
        """Every token issued so far is expired from now on (as after its lifetime)."""
        with self._lock:
            self.tokens = {t: (c, s, 0.0) for t, (c, s, _) in self.tokens.items()}

    def count(self, op: str, *, authorized: bool | None = True) -> int:
        with self._lock:
            return sum(
                1
                for c in self.calls
                if c.op == op and (authorized is None or c.authorized == authorized)
            )

    def reset_counts(self) -> None:
        with self._lock:
            self.calls.clear()

    # life

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    # protocol helpers used by the handler

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def _lookup(self, name: str, version: str) -> KeyVersion | None:
        with self._lock:
            versions = self.keys.get(name)
            if not versions:
                return None
            if not version:
                return versions[-1]
            for v in versions:
                if v.version == version:
                    return v
        return None

    def _issue(self, client: str, scope: str, lifetime: int) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            self.tokens[token] = (client, scope, time.time() + lifetime)
        return token

    def _token_info(self, token: str) -> tuple[str, str, float] | None:
        with self._lock:
            return self.tokens.get(token)


def _handler(server: KeyVaultServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # one small response must not wait for a delayed ACK
        _record_as: tuple[str, str] | None = None

        def log_message(self, format: str, *args: Any) -> None:
            pass

        # plumbing

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(
            self, status: int, payload: Any, *, headers: dict[str, str] | None = None
        ) -> None:
            data = json.dumps(payload).encode()
            record_as, self._record_as = self._record_as, None
            if record_as is not None:
                server._record(Call(record_as[0], record_as[1], status, True))
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def _vault_error(
            self, status: int, code: str, message: str, inner: str | None = None, **extra: Any
        ) -> None:
            error: dict[str, Any] = {"code": code, "message": message}
            if inner:
                error["innererror"] = {"code": inner}
            self._send(status, {"error": error}, **extra)

        def _challenge(self) -> dict[str, str]:
            return {
                "WWW-Authenticate": (
                    f'Bearer authorization="{server.authority}/{TENANT}", '
                    f'resource="{server.resource}"'
                )
            }

        # dispatch

        def do_GET(self) -> None:
            self._dispatch("GET")

        def do_POST(self) -> None:
            self._dispatch("POST")

        def _dispatch(self, method: str) -> None:
            parts = urlsplit(self.path)
            host = (self.headers.get("Host") or "").split(":")[0].lower()
            body = self._body()
            if host == "login.localhost":
                self._login(method, parts.path, body)
            elif host == f"{VAULT}.vault.localhost":
                self._vault(method, parts.path, parse_qs(parts.query), body)
            else:
                self._send(404, {"error": {"code": "NotFound", "message": f"no host {host}"}})

        # --- Microsoft Entra ID ---

        def _login(self, method: str, path: str, body: bytes) -> None:
            segments = [s for s in path.split("/") if s]
            tenant = segments[0] if segments else ""
            rest = "/".join(segments[1:])
            if method == "GET" and rest == "v2.0/.well-known/openid-configuration":
                server._record(Call(method, "discovery", 200 if tenant == TENANT else 400, True))
                if tenant != TENANT:
                    self._send(
                        400,
                        {
                            "error": "invalid_tenant",
                            "error_description": f"AADSTS90002: Tenant '{tenant}' not found.",
                        },
                    )
                    return
                base = f"{server.authority}/{TENANT}"
                self._send(
                    200,
                    {
                        "token_endpoint": f"{base}/oauth2/v2.0/token",
                        "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                        "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                        "issuer": f"{base}/v2.0",
                        "token_endpoint_auth_methods_supported": ["client_secret_post"],
                        "response_types_supported": ["code", "id_token", "token"],
                        "tenant_region_scope": "EU",
                    },
                )
                return
            if method == "POST" and rest == "oauth2/v2.0/token":
                self._token(tenant, body)
                return
            self._send(404, {"error": "not_found", "error_description": path})

        def _token(self, tenant: str, body: bytes) -> None:
            form = {k: v[-1] for k, v in parse_qs(body.decode()).items()}
            client = form.get("client_id", "")
            principal = server.principals.get(client)

            def refuse(status: int, error: str, description: str) -> None:
                server._record(Call("POST", "token", status, False))
                self._send(status, {"error": error, "error_description": description})

            if tenant != TENANT:
                refuse(400, "invalid_tenant", f"AADSTS90002: Tenant '{tenant}' not found.")
            elif form.get("grant_type") != "client_credentials":
                refuse(400, "unsupported_grant_type", "AADSTS70003: unsupported grant type")
            elif principal is None:
                refuse(
                    400,
                    "unauthorized_client",
                    f"AADSTS700016: Application with identifier '{client}' was not found "
                    f"in the directory '{tenant}'.",
                )
            elif not secrets.compare_digest(
                form.get("client_secret", "").encode(), principal.secret.encode()
            ):
                refuse(
                    401,
                    "invalid_client",
                    "AADSTS7000215: Invalid client secret provided. Ensure the secret being "
                    "sent in the request is the client secret value, not the client secret ID",
                )
            elif not form.get("scope", "").endswith("/.default"):
                refuse(
                    400,
                    "invalid_scope",
                    "AADSTS1002012: The provided value for scope is not valid.",
                )
            else:
                scope = form["scope"]
                token = server._issue(client, scope, 3599)
                server._record(Call("POST", "token", 200, True))
                self._send(
                    200,
                    {
                        "token_type": "Bearer",
                        "expires_in": 3599,
                        "ext_expires_in": 3599,
                        "access_token": token,
                    },
                )

        # --- Key Vault ---

        def _vault(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> None:
            segments = [s for s in path.split("/") if s]
            op = "other"
            name = version = ""
            if len(segments) >= 2 and segments[0] == "keys":
                name = segments[1]
                if method == "GET" and len(segments) in (2, 3):
                    op, version = "get", (segments[2] if len(segments) == 3 else "")
                elif method == "POST" and segments[-1].lower() in ("wrapkey", "unwrapkey"):
                    op = segments[-1].lower()
                    version = segments[2] if len(segments) == 4 else ""
            auth = self.headers.get("Authorization") or ""
            if not auth.startswith("Bearer "):
                server._record(Call(method, op, 401, False))
                self._vault_error(
                    401,
                    "Unauthorized",
                    "AKV10000: Request is missing a Bearer or PoP token.",
                    headers=self._challenge(),
                )
                return
            info = server._token_info(auth[len("Bearer ") :])
            if info is None or info[2] <= time.time():
                server._record(Call(method, op, 401, False))
                message = (
                    "AKV10032: Invalid issuer or token."
                    if info is None
                    else "[TokenExpired] Error validating token: 'S2S12086'."
                )
                self._vault_error(401, "Unauthorized", message, headers=self._challenge())
                return
            client, scope, _ = info
            if scope != server.resource + "/.default":
                server._record(Call(method, op, 401, False))
                self._vault_error(
                    401,
                    "Unauthorized",
                    f"AKV10022: Invalid audience. Expected {server.resource}, found: {scope}.",
                    headers=self._challenge(),
                )
                return
            if not query.get("api-version"):
                server._record(Call(method, op, 400, True))
                self._vault_error(
                    400, "BadParameter", "The 'api-version' query parameter is required."
                )
                return
            # Recorded by _send before the answer leaves, so a client never sees an
            # answer the counts do not hold yet.
            self._record_as = (method, op)
            self._key_operation(method, op, name, version, client, body)

        def _key_operation(
            self, method: str, op: str, name: str, version: str, client: str, body: bytes
        ) -> int:
            if op == "other":
                self._vault_error(405, "BadRequest", f"{method} {self.path} is not supported here")
                return 405
            permission = {"get": "get", "wrapkey": "wrapKey", "unwrapkey": "unwrapKey"}[op]
            principal = server.principals[client]
            if permission not in principal.permissions:
                self._vault_error(
                    403,
                    "Forbidden",
                    f"The user, group or application 'appid={client};oid={principal.object_id};"
                    f"iss=https://sts.windows.net/{TENANT}/' does not have keys {permission} "
                    f"permission on key vault '{VAULT};location=westeurope'. For help resolving "
                    "this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
                    "AccessDenied",
                )
                return 403
            key = server._lookup(name, version)
            if key is None:
                what = f"(name/id) {name}/{version}" if version else f"(name/id) {name}"
                self._vault_error(
                    404,
                    "KeyNotFound",
                    f"A key with {what} was not found in this key vault. If "
                    "you recently deleted this key you may be able to recover it using the "
                    "correct recovery command. For help resolving this issue, please see "
                    "https://go.microsoft.com/fwlink/?linkid=2125182",
                )
                return 404
            kid = f"{server.vault_url}/keys/{name}/{key.version}"
            if op == "get":
                self._send(200, self._bundle(kid, key))
                return 200
            try:
                request = json.loads(body)
                alg = request["alg"]
                value = _unb64url(request["value"])
            except (ValueError, KeyError, TypeError):
                self._vault_error(
                    400,
                    "BadParameter",
                    "Content of 'value' is not base64url.\r\nProperty 'value' is required.\r\n",
                )
                return 400
            if permission not in key.key_ops:
                self._vault_error(
                    403,
                    "Forbidden",
                    f"Operation {permission} is not permitted on this key.",
                    "KeyOperationForbidden",
                )
                return 403
            if op == "unwrapkey" and not key.enabled:
                self._vault_error(
                    403,
                    "Forbidden",
                    "Operation unwrapKey is not allowed on a disabled key.",
                    "KeyDisabled",
                )
                return 403
            hashes_by_alg = {
                "RSA-OAEP": hashes.SHA1(),  # noqa: S303 - the service's RSA-OAEP is SHA-1
                "RSA-OAEP-256": hashes.SHA256(),
            }
            if not key.kty.startswith("RSA") or alg not in hashes_by_alg:
                self._vault_error(
                    400,
                    "BadParameter",
                    f"Algorithm '{alg}' is not supported for keys of type '{key.kty}'.",
                )
                return 400
            algorithm = hashes_by_alg[alg]
            pad = padding.OAEP(mgf=padding.MGF1(algorithm), algorithm=algorithm, label=None)
            try:
                if op == "wrapkey":
                    result = key.private.public_key().encrypt(value, pad)
                else:
                    result = key.private.decrypt(value, pad)
            except ValueError:
                message = (
                    "Unable to decrypt specified value with this key."
                    if op == "unwrapkey"
                    else "The value is too long for this key and algorithm."
                )
                self._vault_error(400, "BadParameter", message)
                return 400
            self._send(200, {"kid": kid, "value": _b64url(result)})
            return 200

        @staticmethod
        def _bundle(kid: str, key: KeyVersion) -> dict[str, Any]:
            public = key.private.public_key()
            jwk: dict[str, Any] = {"kid": kid, "kty": key.kty, "key_ops": list(key.key_ops)}
            if key.kty.startswith("RSA"):
                numbers = public.public_numbers()
                jwk.update(n=_int_b64url(numbers.n), e=_int_b64url(numbers.e))
            else:
                numbers = public.public_numbers()
                jwk.update(
                    crv="P-256",
                    x=_b64url(numbers.x.to_bytes(32, "big")),
                    y=_b64url(numbers.y.to_bytes(32, "big")),
                )
            return {
                "key": jwk,
                "attributes": {
                    "enabled": key.enabled,
                    "created": key.created,
                    "updated": key.created,
                    "recoveryLevel": "Recoverable+Purgeable",
                    "recoverableDays": 90,
                },
                "tags": {},
            }

    return Handler


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="session")
def keyvault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyVaultServer]:
    """The loopback vault, started once per test session."""
    resolve_localhost_names()
    server = KeyVaultServer(tmp_path_factory.mktemp("keyvault-tls"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def keyvault_env(
    keyvault_server: KeyVaultServer, monkeypatch: pytest.MonkeyPatch
) -> KeyVaultServer:
    """The vault, with this test's environment pointing DefaultAzureCredential at it."""
    for name in list(os.environ):
        if name.startswith("AZURE_"):
            monkeypatch.delenv(name)
    for name, value in keyvault_server.environment().items():
        monkeypatch.setenv(name, value)
    return keyvault_server


@contextlib.contextmanager
def counting(server: KeyVaultServer) -> Iterator[collections.Counter[str]]:
    """Count the calls made inside the block: ``counts[op]`` those with a valid token
    (whatever the answer), ``counts[f"{op}:{status}"]`` by HTTP status."""
    before = len(server.calls)
    counts: collections.Counter[str] = collections.Counter()
    yield counts
    for call in server.calls[before:]:
        if call.authorized:
            counts[call.op] += 1
        counts[f"{call.op}:{call.status}"] += 1
