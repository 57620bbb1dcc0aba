"""moto's server on 127.0.0.1 for the AWS KMS and S3 tests, behind a counting front.

``ThreadedMotoServer`` runs moto in this process on a free loopback port. In front of it
a small loopback HTTP front (also on a free port) forwards every request unchanged and

- counts the requests per service and operation (``MotoServer.calls``), so tests can
  assert how many KMS calls opening a stack costs;
- makes S3's conditional writes atomic (PutObject/DeleteObject with ``If-Match`` or
  ``If-None-Match``), as the real service guarantees: moto checks the condition and
  writes in two steps, and its threaded server could interleave two requests;
- answers Encrypt and Decrypt as AWS KMS does for what moto does not check: a disabled
  key (``DisabledException``), a key pending deletion (``KMSInvalidStateException``)
  and a key whose usage or spec is not symmetric encryption
  (``InvalidKeyUsageException``), from moto's own record of the key.

Clients use ``MotoServer.endpoint`` (the front) with the credentials in
``MotoServer.env``; the fixture sets no process environment by itself.
"""

from __future__ import annotations

import collections
import contextlib
import http.client
import json
import logging
import os
import re
import socket
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

try:
    from moto.server import ThreadedMotoServer
except ImportError:  # pragma: no cover - reported by the fixture
    ThreadedMotoServer = None

ACCOUNT = "123456789012"
REGION = "us-east-1"
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "AKIAVEILTESTS0000000",
    "AWS_SECRET_ACCESS_KEY": "veil-tests-secret-access-key-0000000000",
}
_HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "expect"}
# moto answers an IAM refusal in the query protocol's XML, where KMS speaks JSON.
_KMS_AUTH_CODES = {
    "AccessDenied": "AccessDeniedException",
    "InvalidClientTokenId": "UnrecognizedClientException",
    "SignatureDoesNotMatch": "InvalidSignatureException",
}
_CIPHERTEXT_KEY_UNKNOWN = (
    "The ciphertext refers to a customer master key that does not exist, does not exist "
    "in this region, or you are not allowed to access."
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    return free_port()


class MotoServer:
    """moto on loopback, reached through a counting front at :attr:`endpoint`."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self._count_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._moto: Any = None
        self._front: Any = None
        self._thread: threading.Thread | None = None
        self.moto_port = 0
        self.port = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        return {**CREDENTIALS, "AWS_DEFAULT_REGION": REGION}

    def start(self) -> None:
        from werkzeug.serving import make_server

        self.moto_port = free_port()
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=self.moto_port, verbose=False)
        self._moto.start()
        self._front = make_server("127.0.0.1", 0, self._app, threaded=True)
        self.port = self._front.server_address[1]
        self._thread = threading.Thread(target=self._front.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._front is not None:
            self._front.shutdown()
            self._front.server_close()
        if self._thread is not None:
            self._thread.join(10)
        if self._moto is not None:
            self._moto.stop()

    # --- counting -----------------------------------------------------------------------

    def count(self, prefix: str = "") -> int:
        """Requests received whose ``service:operation`` starts with ``prefix``."""
        with self._count_lock:
            return sum(n for k, n in self.calls.items() if k.startswith(prefix))

    @contextlib.contextmanager
    def counting(self) -> Iterator[collections.Counter[str]]:
        """The requests received inside the ``with`` block, per ``service:operation``."""
        with self._count_lock:
            before = collections.Counter(self.calls)
        seen: collections.Counter[str] = collections.Counter()
        try:
            yield seen
        finally:
            with self._count_lock:
                seen.update(self.calls - before)

    # --- moto's record of KMS keys ---------------------------------------------------------

    def kms_backend(self, region: str = REGION) -> Any:
        from moto.kms.models import kms_backends

        return kms_backends[ACCOUNT][region]

    # --- the front -------------------------------------------------------------------------

    def _app(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        method = environ["REQUEST_METHOD"]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        headers = {
            key[5:].replace("_", "-").title(): value
            for key, value in environ.items()
            if key.startswith("HTTP_") and key[5:].replace("_", "-").lower() not in _HOP_HEADERS
        }
        if environ.get("CONTENT_TYPE"):
            headers["Content-Type"] = environ["CONTENT_TYPE"]
        path = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ["PATH_INFO"]
        if environ.get("QUERY_STRING") and "?" not in path:
            path += "?" + environ["QUERY_STRING"]
        target = headers.get("X-Amz-Target", "")
        if target.startswith("TrentService."):
            operation = "kms:" + target.split(".", 1)[1]
        else:
            operation = f"s3:{method}"
        with self._count_lock:
            self.calls[operation] += 1

        refusal = self._kms_refusal(operation, body, headers.get("Authorization", ""))
        if refusal is not None:
            start_response("400 Bad Request", [("Content-Type", "application/x-amz-json-1.1")])
            return [refusal]

        conditional = operation in ("s3:PUT", "s3:DELETE") and (
            "If-Match" in headers or "If-None-Match" in headers
        )
        lock = self._write_lock if conditional else contextlib.nullcontext()
        with lock:
            status, reason, out_headers, data = self._forward(method, path, headers, body)
        if operation.startswith("kms:"):
            status, reason, out_headers, data = _as_kms(status, reason, out_headers, data)
        start_response(f"{status} {reason}", out_headers)
        return [data]

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.moto_port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            out = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_HEADERS]
            out.append(("Content-Length", str(len(data))))
            return resp.status, resp.reason, out, data
        finally:
            conn.close()

    def _kms_refusal(self, operation: str, body: bytes, authorization: str) -> bytes | None:
        if operation not in ("kms:Encrypt", "kms:Decrypt"):
            return None
        try:
            params = json.loads(body or b"{}")
            key_id = params.get("KeyId")
            if not key_id:
                return None
            backend = self.kms_backend(_region_of(key_id, authorization))
            key = backend.keys[backend.any_id_to_key_id(key_id)]
        except Exception:  # moto answers for unknown keys itself
            return None
        if key.key_state == "Disabled":
            return _kms_error("DisabledException", f"{key.arn} is disabled.")
        if key.key_state != "Enabled":
            return _kms_error("KMSInvalidStateException", f"{key.arn} is {key.key_state}.")
        usage = key.key_usage or "ENCRYPT_DECRYPT"  # moto leaves the default unset
        if usage != "ENCRYPT_DECRYPT" or key.key_spec != "SYMMETRIC_DEFAULT":
            return _kms_error(
                "InvalidKeyUsageException",
                f"{operation.split(':')[1]} with SYMMETRIC_DEFAULT is not valid for {key.arn} "
                f"(KeyUsage {usage}, KeySpec {key.key_spec}).",
            )
        return None


def _region_of(key_id: str, authorization: str) -> str:
    """The region a KMS request addresses: the key ARN's, else the signature's scope
    (``Credential=AKID/DATE/REGION/kms/aws4_request``)."""
    if key_id.startswith("arn:"):
        return key_id.split(":")[3]
    scope = re.search(r"Credential=[^/]+/[^/]+/([^/]+)/kms/", authorization)
    return scope.group(1) if scope else REGION


def _as_kms(
    status: int, reason: str, headers: list[tuple[str, str]], data: bytes
) -> tuple[int, str, list[tuple[str, str]], bytes]:
    """KMS's own error shapes where moto's differ: IAM refusals as JSON (not XML), and
    the message AWS gives with a Decrypt refused for the ciphertext's key (moto drops
    it)."""
    if status == 403 and data.lstrip().startswith(b"<"):
        code = re.search(rb"<Code>([^<]*)</Code>", data)
        message = re.search(rb"<Message>([^<]*)</Message>", data)
        kind = code.group(1).decode() if code else "AccessDenied"
        body = _kms_error(
            _KMS_AUTH_CODES.get(kind, kind), message.group(1).decode() if message else ""
        )
    elif status == 400 and data.strip() == b'{"__type":"AccessDeniedException"}':
        body = _kms_error("AccessDeniedException", _CIPHERTEXT_KEY_UNKNOWN)
    else:
        return status, reason, headers, data
    out = [(k, v) for k, v in headers if k.lower() not in ("content-type", "content-length")]
    out += [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(body)))]
    return 400, "Bad Request", out, body


def _kms_error(kind: str, message: str) -> bytes:
    return json.dumps({"__type": kind, "message": message}).encode()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    if ThreadedMotoServer is None:
        reason = "moto's server is not installed: pip install 'veil[test]' (moto[server])"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    # One log line per request would cost more than the request.
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = MotoServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_env(moto_server: MotoServer, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> MotoServer:
    """Credentials for moto and the front as the endpoint, through the SDK's usual chain;
    no shared config or credentials file of the user's is read."""
    for name, value in moto_server.env.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_KMS", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    return moto_server
