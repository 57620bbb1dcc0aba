"""Google's OAuth 2.0 side, as the loopback Google API servers in this folder need it.

Real credentials, checked for real: the official ``google-auth`` library builds them
from an ordinary credentials file (``GOOGLE_APPLICATION_CREDENTIALS``) whose
``token_uri`` points at the loopback ``/token`` endpoint served here.

- ``service_account`` files hold an RSA key made by the test. The Cloud client
  libraries sign their own bearer tokens with it ("self-signed JWT", RS256, ``kid`` =
  ``private_key_id``); others exchange a signed assertion at ``/token``
  (``urn:ietf:params:oauth:grant-type:jwt-bearer``). Both are verified against the
  public key registered for the account, with ``exp``/``iat`` checked against this
  server's clock (which a test may move to expire every token).
- ``authorized_user`` files (what ``gcloud auth application-default login`` writes)
  trade a refresh token at ``/token`` (``grant_type=refresh_token``) for an access
  token; a revoked refresh token gets ``invalid_grant`` as from Google.

Errors follow Google's shapes: the token endpoint's ``{"error": "invalid_grant",
"error_description": ...}`` with HTTP 400, and the APIs' JSON error envelope
``{"error": {"code", "message", "status", "details": [ErrorInfo]}}``.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_LIFETIME = 3599

MISSING_CREDENTIALS = (
    "Request is missing required authentication credential. Expected OAuth 2 access "
    "token, login cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
INVALID_CREDENTIALS = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, "
    "login cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)


class AuthFailure(Exception):
    """A request whose bearer token is missing or not good: HTTP 401."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class ServiceAccount:
    email: str
    keys: dict[str, rsa.RSAPublicKey] = field(default_factory=dict)


class GoogleAuth:
    """Accounts, issued tokens and a clock, shared by the servers of one test run."""

    def __init__(self) -> None:
        self.service_accounts: dict[str, ServiceAccount] = {}
        self.refresh_tokens: dict[str, tuple[str, str, str]] = {}  # token -> (id, secret, user)
        self.access_tokens: dict[str, tuple[str, float]] = {}  # token -> (principal, expiry)
        self.clock_offset = 0.0
        self.token_requests = 0
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.time() + self.clock_offset

    # --- accounts --------------------------------------------------------------------

    def new_service_account(self, path: Path, token_uri: str, name: str = "veil-test") -> str:
        """Write a service-account key file for a new account; return its email."""
        email = f"{name}-{secrets.token_hex(3)}@veil-test.iam.gserviceaccount.com"
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        kid = secrets.token_hex(20)
        self.service_accounts[email] = ServiceAccount(email, {kid: key.public_key()})
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        info = {
            "type": "service_account",
            "project_id": "veil-test",
            "private_key_id": kid,
            "private_key": pem,
            "client_email": email,
            "client_id": str(secrets.randbelow(10**20)),
            "auth_uri": "http://127.0.0.1:9/auth",
            "token_uri": token_uri,
        }
        path.write_text(json.dumps(info))
        path.chmod(0o600)
        return email

    def delete_service_account_keys(self, email: str) -> None:
        self.service_accounts[email].keys.clear()

    def new_authorized_user(self, token_uri: str, user: str) -> dict[str, str]:
        """An ``authorized_user`` record for ``user`` (what ``gcloud auth
        application-default login`` writes). google-auth always sends such a file's
        refresh token to Google's own token endpoint, so tests build
        ``google.oauth2.credentials.Credentials(token_uri=...)`` from it instead."""
        info = {
            "type": "authorized_user",
            "client_id": f"{secrets.token_hex(6)}.apps.googleusercontent.com",
            "client_secret": secrets.token_urlsafe(18),
            "refresh_token": "1//" + secrets.token_urlsafe(40),
            "token_uri": token_uri,
        }
        self.refresh_tokens[info["refresh_token"]] = (
            info["client_id"],
            info["client_secret"],
            user,
        )
        return info

    def revoke_refresh_token(self, refresh: str) -> None:
        self.refresh_tokens.pop(refresh, None)

    def revoke_access_tokens(self) -> None:
        with self._lock:
            self.access_tokens.clear()

    # --- the token endpoint ----------------------------------------------------------

    def token_endpoint(self, body: bytes, token_uri: str) -> tuple[int, dict[str, Any]]:
        """Answer ``POST /token`` (form-encoded), as oauth2.googleapis.com does."""
        with self._lock:
            self.token_requests += 1
        form = {k: v[-1] for k, v in parse_qs(body.decode("ascii", "replace")).items()}
        grant = form.get("grant_type")
        if grant == "refresh_token":
            entry = self.refresh_tokens.get(form.get("refresh_token", ""))
            if entry is None:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "Token has been expired or revoked.",
                }
            client_id, client_secret, user = entry
            if form.get("client_id") != client_id or form.get("client_secret") != client_secret:
                return 401, {"error": "invalid_client", "error_description": "Unauthorized"}
            return 200, self._issue(f"user:{user}")
        if grant == JWT_BEARER:
            try:
                claims = self.verify_jwt(form.get("assertion", ""))
            except AuthFailure:
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "Invalid JWT Signature.",
                }
            # google-auth names Google's token endpoint as the audience whatever the
            # token_uri it posts to; Google accepts either.
            if claims.get("aud") not in (token_uri, GOOGLE_TOKEN_URI):
                return 400, {
                    "error": "invalid_grant",
                    "error_description": "Invalid JWT: Token must be a short-lived token "
                    "(60 minutes) and in a reasonable timeframe.",
                }
            return 200, self._issue(f"serviceAccount:{claims['iss']}")
        return 400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}

    def _issue(self, principal: str) -> dict[str, Any]:
        token = "ya29." + secrets.token_urlsafe(48)
        with self._lock:
            self.access_tokens[token] = (principal, self.now() + TOKEN_LIFETIME)
        return {
            "access_token": token,
            "expires_in": TOKEN_LIFETIME,
            "scope": CLOUD_PLATFORM,
            "token_type": "Bearer",
        }

    # --- checking a request's bearer token -------------------------------------------

    def verify_jwt(self, token: str) -> dict[str, Any]:
        """The claims of a JWT signed by a registered service account key (RS256)."""
        try:
            head_b64, body_b64, sig_b64 = token.split(".")
            header = json.loads(b64url_decode(head_b64))
            claims = json.loads(b64url_decode(body_b64))
            signature = b64url_decode(sig_b64)
        except (ValueError, UnicodeDecodeError):
            raise AuthFailure(INVALID_CREDENTIALS, "ACCESS_TOKEN_TYPE_UNSUPPORTED") from None
        account = self.service_accounts.get(claims.get("iss", ""))
        key = account.keys.get(header.get("kid", "")) if account else None
        if header.get("alg") != "RS256" or key is None:
            raise AuthFailure(INVALID_CREDENTIALS, "ACCESS_TOKEN_TYPE_UNSUPPORTED")
        try:
            key.verify(
                signature,
                f"{head_b64}.{body_b64}".encode("ascii"),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            raise AuthFailure(INVALID_CREDENTIALS, "ACCESS_TOKEN_TYPE_UNSUPPORTED") from None
        now = self.now()
        iat, exp = claims.get("iat"), claims.get("exp")
        if not isinstance(iat, int) or not isinstance(exp, int) or exp - iat > 3600:
            raise AuthFailure(INVALID_CREDENTIALS, "ACCESS_TOKEN_TYPE_UNSUPPORTED")
        if exp <= now or iat > now + 300:
            raise AuthFailure(INVALID_CREDENTIALS, "ACCESS_TOKEN_EXPIRED")
        if claims.get("sub", claims["iss"]) != claims["iss"]:
            raise AuthFailure(INVALID_CREDENTIALS, "ACCESS_TOKEN_TYPE_UNSUPPORTED")
        return dict(claims)

    def authenticate(self, authorization: str | None, audience: str, scopes: set[str]) -> str:
        """The principal (``serviceAccount:...``, ``user:...``) a request acts as."""
        if not authorization:
            raise AuthFailure(MISSING_CREDENTIALS, "CREDENTIALS_MISSING")
        kind, _, token = authorization.partition(" ")
        if kind.lower() != "bearer" or not token:
            raise AuthFailure(INVALID_CREDENTIALS, "ACCESS_TOKEN_TYPE_UNSUPPORTED")
        if token.count(".") == 2 and not token.startswith("ya29."):
            claims = self.verify_jwt(token)
            granted = set(str(claims.get("scope", "")).split())
            if claims.get("aud") != audience and not granted & scopes:
                raise AuthFailure(INVALID_CREDENTIALS, "ACCESS_TOKEN_SCOPE_INSUFFICIENT")
            return f"serviceAccount:{claims['iss']}"
        with self._lock:
            entry = self.access_tokens.get(token)
        if entry is None:
            raise AuthFailure(INVALID_CREDENTIALS, "ACCESS_TOKEN_TYPE_UNSUPPORTED")
        principal, expiry = entry
        if expiry <= self.now():
            raise AuthFailure(INVALID_CREDENTIALS, "ACCESS_TOKEN_EXPIRED")
        return principal


def error_body(code: int, status: str, message: str, **info: Any) -> dict[str, Any]:
    """Google's JSON error envelope (``google.rpc.Status`` over HTTP)."""
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if info:
        error["details"] = [
            {
                "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                "reason": info.pop("reason"),
                "domain": info.pop("domain", "googleapis.com"),
                "metadata": {k: str(v) for k, v in info.items()},
            }
        ]
    return {"error": error}


# --- HTTP plumbing shared by the loopback servers --------------------------------------


class Response:
    def __init__(
        self, status: int, body: bytes | dict[str, Any] = b"", headers: dict[str, str] | None = None
    ) -> None:
        self.status = status
        self.headers = dict(headers or {})
        if isinstance(body, dict):
            self.body = json.dumps(body).encode()
            self.headers.setdefault("Content-Type", "application/json; charset=UTF-8")
        else:
            self.body = body


class LoopbackServer:
    """A threaded HTTP/1.1 server on 127.0.0.1 and a free port, calling ``handle``."""

    def __init__(self) -> None:
        import http.server

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out without a 40 ms stall

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                try:
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    outer._client.socket = self.connection
                    response = outer.handle(self.command, self.path, headers, body)
                except Exception as exc:  # a server bug: say so, as a 500
                    response = Response(
                        500, error_body(500, "INTERNAL", f"{type(exc).__name__}: {exc}")
                    )
                self.send_response(response.status)
                for name, value in response.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(response.body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(response.body)

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                import sys

                # A client killed mid-request (the crash tests do it): nothing to report.
                if not isinstance(sys.exc_info()[1], ConnectionError):
                    super().handle_error(request, client_address)

        self._httpd = Server(("127.0.0.1", 0), Handler)
        self.port = self._httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._client = threading.local()

    def client_gone(self) -> bool:
        """Whether the client of the request being handled (in this thread) has closed
        its connection already, as a killed process's has: a front end drops such a
        request instead of applying it late, after its sender's successors acted."""
        import socket

        sock = getattr(self._client, "socket", None)
        if sock is None:
            return False
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        """Answer one request; ``headers`` has lower-case names."""
        raise NotImplementedError


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
