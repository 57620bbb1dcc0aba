"""A loopback Google Cloud Storage: the JSON API calls veil makes, preconditions enforced.

The ``gcp-storage-emulator`` package ignores generation preconditions (a second upload
with ``ifGenerationMatch=0`` succeeds), so locking and compare-and-swap are tested
against this server, which speaks the published JSON API
(https://cloud.google.com/storage/docs/json_api/v1/objects) for:

- ``POST /upload/storage/v1/b/{bucket}/o?uploadType=multipart|media`` (metadata and
  media as ``multipart/related``; ``crc32c``/``md5Hash`` in the metadata checked);
- ``GET /download/storage/v1/b/{bucket}/o/{object}?alt=media`` (``X-Goog-Generation``,
  ``X-Goog-Metageneration``, ``X-Goog-Hash`` headers) and
  ``GET /storage/v1/b/{bucket}/o/{object}`` (the object resource);
- ``GET /storage/v1/b/{bucket}/o?prefix=&delimiter=&pageToken=&maxResults=``;
- ``DELETE /storage/v1/b/{bucket}/o/{object}``; ``GET /storage/v1/b/{bucket}``;
- ``POST /token`` (OAuth, see :mod:`google_auth`).

``ifGenerationMatch`` (0: the object must not exist), ``ifGenerationNotMatch``,
``ifMetagenerationMatch`` are enforced on every call with ``412 conditionNotMet`` as
GCS answers. With ``require_auth`` set, requests need a valid bearer token and an IAM
grant on the bucket (``roles/storage.objectUser``...): anonymous callers get 401,
others without the permission 403 naming it, as GCS does. Every body ever uploaded is
kept in :attr:`GcsServer.uploads`, so a test can scan all bytes written. Requests are
applied one at a time; one whose client has disconnected before its turn (a writer
killed mid-request) is dropped rather than applied after the writers that followed.
"""

from __future__ import annotations

import base64
import collections
import datetime as _dt
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import google_crc32c
import pytest

from .google_auth import CLOUD_PLATFORM, AuthFailure, GoogleAuth, LoopbackServer, Response

SCOPES = {
    CLOUD_PLATFORM,
    "https://www.googleapis.com/auth/devstorage.read_write",
    "https://www.googleapis.com/auth/devstorage.full_control",
}
ROLES = {
    "roles/storage.objectUser": {
        "storage.objects.get",
        "storage.objects.list",
        "storage.objects.create",
        "storage.objects.delete",
    },
    "roles/storage.objectViewer": {"storage.objects.get", "storage.objects.list"},
    "roles/storage.objectCreator": {"storage.objects.create"},
}
PRECONDITION_FAILED = "At least one of the pre-conditions you specified did not hold."


@dataclass
class StoredObject:
    name: str
    data: bytes
    generation: int
    metageneration: int
    content_type: str
    metadata: dict[str, str]
    created: str

    def resource(self, bucket: str) -> dict[str, Any]:
        crc = base64.b64encode(google_crc32c.value(self.data).to_bytes(4, "big")).decode()
        out: dict[str, Any] = {
            "kind": "storage#object",
            "id": f"{bucket}/{self.name}/{self.generation}",
            "name": self.name,
            "bucket": bucket,
            "generation": str(self.generation),
            "metageneration": str(self.metageneration),
            "contentType": self.content_type,
            "storageClass": "STANDARD",
            "size": str(len(self.data)),
            "md5Hash": base64.b64encode(hashlib.md5(self.data).digest()).decode(),  # noqa: S324
            "crc32c": crc,
            "etag": base64.b64encode(str(self.generation).encode()).decode(),
            "timeCreated": self.created,
            "updated": self.created,
        }
        if self.metadata:
            out["metadata"] = dict(self.metadata)
        return out


@dataclass
class Bucket:
    name: str
    objects: dict[str, StoredObject] = field(default_factory=dict)
    grants: dict[str, set[str]] = field(default_factory=dict)  # member -> roles


def _error(code: int, message: str, reason: str, **extra: str) -> Response:
    item = {"message": message, "domain": "global", "reason": reason, **extra}
    return Response(code, {"error": {"code": code, "message": message, "errors": [item]}})


class GcsServer(LoopbackServer):
    """GCS JSON API objects calls with real generation preconditions."""

    def __init__(self, auth: GoogleAuth | None = None) -> None:
        super().__init__()
        self.auth = auth or GoogleAuth()
        self.token_uri = f"{self.url}/token"
        self.buckets: dict[str, Bucket] = {}
        self.require_auth = False
        self.uploads: list[bytes] = []
        self.calls: collections.Counter[str] = collections.Counter()
        self._mutex = threading.Lock()
        self._last_generation = 0

    def create_bucket(self, name: str) -> Bucket:
        return self.buckets.setdefault(name, Bucket(name))

    def grant(self, bucket: str, member: str, role: str = "roles/storage.objectUser") -> None:
        self.buckets[bucket].grants.setdefault(member, set()).add(role)

    def _generation(self) -> int:
        now = int(time.time() * 1_000_000)
        self._last_generation = max(now, self._last_generation + 1)
        return self._last_generation

    # --- dispatch ------------------------------------------------------------------------

    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Response:
        parts = urlsplit(path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        route = parts.path
        if method == "POST" and route == "/token":
            status, payload = self.auth.token_endpoint(body, self.token_uri)
            return Response(status, payload)
        with self._mutex:  # one request at a time: each is atomic, as GCS's are
            if self.client_gone():
                return _error(499, "Client Closed Request", "cancelled")
            return self._dispatch(method, route, query, headers, body)

    def _dispatch(
        self, method: str, route: str, query: dict[str, str], headers: dict[str, str], body: bytes
    ) -> Response:
        m = re.fullmatch(r"/upload/storage/v1/b/([^/]+)/o", route)
        if m and method == "POST":
            return self._with_bucket(m[1], "storage.objects.create", headers, query, body)
        m = re.fullmatch(r"/(?:download/)?storage/v1/b/([^/]+)/o/(.+)", route)
        if m and method in ("GET", "DELETE"):
            name = unquote(m[2])
            if method == "DELETE":
                return self._with_bucket(m[1], "storage.objects.delete", headers, query, name)
            return self._with_bucket(m[1], "storage.objects.get", headers, query, name)
        m = re.fullmatch(r"/storage/v1/b/([^/]+)/o", route)
        if m and method == "GET":
            return self._with_bucket(m[1], "storage.objects.list", headers, query, None)
        m = re.fullmatch(r"/storage/v1/b/([^/]+)", route)
        if m and method == "GET":
            return self._with_bucket(m[1], "storage.buckets.get", headers, query, None)
        return _error(404, "Not Found", "notFound")

    def _with_bucket(
        self,
        bucket_name: str,
        permission: str,
        headers: dict[str, str],
        query: dict[str, str],
        arg: Any,
    ) -> Response:
        self.calls[permission] += 1
        denied = self._authorize(bucket_name, permission, headers)
        if denied is not None:
            return denied
        bucket = self.buckets.get(bucket_name)
        if bucket is None:
            return _error(404, "The specified bucket does not exist.", "notFound")
        if permission == "storage.buckets.get":
            return Response(200, {"kind": "storage#bucket", "name": bucket.name, "id": bucket.name})
        if permission == "storage.objects.list":
            return self._list(bucket, query)
        if permission == "storage.objects.create":
            return self._upload(bucket, headers, query, arg)
        current = bucket.objects.get(arg)
        if current is None:
            return _error(404, f"No such object: {bucket.name}/{arg}", "notFound")
        failed = _preconditions(current, query)
        if failed is not None:
            return failed
        if permission == "storage.objects.delete":
            del bucket.objects[arg]
            return Response(204)
        if "generation" in query and query["generation"] != str(current.generation):
            return _error(404, f"No such object: {bucket.name}/{arg}", "notFound")
        if query.get("alt") == "media":
            return Response(200, current.data, _media_headers(current))
        return Response(200, current.resource(bucket.name))

    def _authorize(
        self, bucket_name: str, permission: str, headers: dict[str, str]
    ) -> Response | None:
        if not self.require_auth:
            return None
        authorization = headers.get("authorization")
        try:
            member = self.auth.authenticate(
                authorization, "https://storage.googleapis.com/", SCOPES
            )
        except AuthFailure as failure:
            if authorization:
                return _error(
                    401,
                    failure.message,
                    "authError",
                    locationType="header",
                    location="Authorization",
                )
            return _error(
                401,
                f"Anonymous caller does not have {permission} access to the Google Cloud "
                f"Storage object. Permission '{permission}' denied on resource (or it may "
                "not exist).",
                "required",
                locationType="header",
                location="Authorization",
            )
        bucket = self.buckets.get(bucket_name)
        roles = bucket.grants.get(member, set()) if bucket else set()
        if any(permission in ROLES.get(r, ()) for r in roles) or (
            permission == "storage.buckets.get" and roles
        ):
            return None
        who = member.split(":", 1)[-1]
        return _error(
            403,
            f"{who} does not have {permission} access to the Google Cloud Storage object. "
            f"Permission '{permission}' denied on resource (or it may not exist).",
            "forbidden",
        )

    # --- objects -------------------------------------------------------------------------

    def _upload(
        self, bucket: Bucket, headers: dict[str, str], query: dict[str, str], body: bytes
    ) -> Response:
        kind = query.get("uploadType")
        if kind == "multipart":
            parsed = _multipart(headers.get("content-type", ""), body)
            if parsed is None:
                return _error(400, "Invalid multipart request.", "invalid")
            meta, data, content_type = parsed
        elif kind == "media":
            meta, data = {"name": query.get("name", "")}, body
            content_type = headers.get("content-type", "application/octet-stream")
        else:
            return _error(400, f"Unsupported upload type: {kind}", "invalid")
        name = meta.get("name") or query.get("name")
        if not name:
            return _error(400, "Required", "required")
        if "crc32c" in meta:
            expected = base64.b64decode(meta["crc32c"])
            if expected != google_crc32c.value(data).to_bytes(4, "big"):
                return _error(400, 'Provided CRC32C "..." doesn\'t match calculated.', "invalid")
        md5 = hashlib.md5(data).digest()  # noqa: S324
        if "md5Hash" in meta and base64.b64decode(meta["md5Hash"]) != md5:
            return _error(400, "Provided MD5 hash doesn't match calculated.", "invalid")
        current = bucket.objects.get(name)
        if current is not None and self.require_auth:
            denied = self._authorize(bucket.name, "storage.objects.delete", headers)
            if denied is not None:  # replacing an object needs delete as well as create
                return denied
        failed = _preconditions(current, query)
        if failed is not None:
            return failed
        self.uploads.append(data)
        stored = StoredObject(
            name=name,
            data=data,
            generation=self._generation(),
            metageneration=1,
            content_type=meta.get("contentType") or content_type,
            metadata={str(k): str(v) for k, v in (meta.get("metadata") or {}).items()},
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")[:-6]
            + "Z",
        )
        bucket.objects[name] = stored
        return Response(200, stored.resource(bucket.name))

    def _list(self, bucket: Bucket, query: dict[str, str]) -> Response:
        prefix = query.get("prefix", "")
        delimiter = query.get("delimiter", "")
        size = max(1, min(int(query.get("maxResults") or 1000), 1000))
        names = sorted(n for n in bucket.objects if n.startswith(prefix))
        start = query.get("pageToken", "")
        names = [n for n in names if n > start] if start else names
        items, prefixes = [], set()
        for name in names:
            rest = name[len(prefix) :]
            if delimiter and delimiter in rest:
                prefixes.add(prefix + rest.split(delimiter, 1)[0] + delimiter)
                continue
            items.append(name)
        page = items[:size]
        out: dict[str, Any] = {
            "kind": "storage#objects",
            "items": [bucket.objects[n].resource(bucket.name) for n in page],
        }
        if prefixes:
            out["prefixes"] = sorted(prefixes)
        if len(items) > size:
            out["nextPageToken"] = page[-1]
        return Response(200, out)


def _preconditions(current: StoredObject | None, query: dict[str, str]) -> Response | None:
    generation = current.generation if current else 0
    checks = []
    if "ifGenerationMatch" in query:
        checks.append(int(query["ifGenerationMatch"]) == generation)
    if "ifGenerationNotMatch" in query:
        checks.append(int(query["ifGenerationNotMatch"]) != generation)
    if "ifMetagenerationMatch" in query:
        checks.append(
            current is not None and int(query["ifMetagenerationMatch"]) == current.metageneration
        )
    if all(checks):
        return None
    return _error(
        412, PRECONDITION_FAILED, "conditionNotMet", locationType="header", location="If-Match"
    )


def _media_headers(obj: StoredObject) -> dict[str, str]:
    crc = base64.b64encode(google_crc32c.value(obj.data).to_bytes(4, "big")).decode()
    md5 = base64.b64encode(hashlib.md5(obj.data).digest()).decode()  # noqa: S324
    return {
        "Content-Type": obj.content_type,
        "X-Goog-Generation": str(obj.generation),
        "X-Goog-Metageneration": str(obj.metageneration),
        "X-Goog-Hash": f"crc32c={crc},md5={md5}",
        "X-Goog-Stored-Content-Length": str(len(obj.data)),
        "X-Goog-Storage-Class": "STANDARD",
        "ETag": f'"{md5}"',
    }


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, Any], bytes, str] | None:
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        return None
    boundary = b"--" + match[1].encode()
    parts = [p for p in body.split(boundary) if p.strip(b"\r\n") not in (b"", b"--")]
    if len(parts) != 2:
        return None
    decoded = []
    for part in parts:
        head, _, content = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        decoded.append((head.decode("latin-1"), content))
    try:
        meta = json.loads(decoded[0][1])
    except ValueError:
        return None
    media_type = "application/octet-stream"
    for line in decoded[1][0].splitlines():
        if line.lower().startswith("content-type:"):
            media_type = line.split(":", 1)[1].strip()
    return meta, decoded[1][1], media_type


# --- pytest fixtures -------------------------------------------------------------------


@pytest.fixture(scope="session", name="gcs_server")
def gcs_server_fixture() -> Iterator[GcsServer]:
    server = GcsServer().start()
    server.create_bucket("veil-state")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", name="gcs_emulator")
def gcs_emulator_fixture() -> Iterator[str]:
    """The ``gcp-storage-emulator`` package, in this process; its URL."""
    import os

    try:
        from gcp_storage_emulator.server import create_server
    except ImportError:
        message = "gcp-storage-emulator is not installed: pip install gcp-storage-emulator"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="veil-emulated")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
