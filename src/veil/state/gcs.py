"""`gs://BUCKET[/PREFIX][?history=N]`: stacks as objects in Google Cloud Storage.

Needs the optional extra ``veil[gcp]`` (``google-cloud-storage``). Credentials come from
Application Default Credentials; ``STORAGE_EMULATOR_HOST`` (the client library's own
setting) sends every call to an emulator instead, without credentials, and
``API_ENDPOINT_OVERRIDE`` to another endpoint with them.

Layout under ``PREFIX/``: ``stacks/<stack>.json`` (the current state; its custom
metadata ``veil-version`` counts the writes), ``history/<stack>/<version>.json`` (the
last ``history`` versions, separate objects) and ``locks/<stack>.lock`` (the holder's
:class:`~veil.state.LockInfo` record).

One writer at a time, by generation preconditions alone:

- the lock object is created with ``ifGenerationMatch=0``, so only one creator wins;
- while a lock is held, the store remembers the state object's generation, and every
  write or delete of it is conditional on that generation (``ifGenerationMatch``; 0 for
  a stack that does not exist yet). A writer whose lock was broken and whose stack was
  written meanwhile gets :class:`~veil.StateLockedError` and writes nothing.
- releasing deletes the lock object only if it is still the one this lock created.

Every call is bounded: each HTTP attempt times out after :data:`ATTEMPT_TIMEOUT`
seconds and transient failures are retried for at most :data:`RETRY_DEADLINE` seconds.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import os
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar
from urllib.parse import parse_qs, quote, unquote, urlsplit

from ..errors import (
    InvalidStackNameError,
    SecretPickleError,
    StackNotFoundError,
    StateError,
    StateLockedError,
    StoreAccessError,
    StoreUnavailableError,
    VeilError,
)
from .store import (
    DEFAULT_HISTORY_SIZE,
    HeldLock,
    HistoryEntry,
    LockInfo,
    StackLock,
    StateStore,
    validate_stack_name,
)

_sdk: Any
try:
    import google.auth
    import google.auth.exceptions
    import google.cloud.storage
    import requests
    from google.api_core import exceptions as _api_exceptions
    from google.auth.transport.requests import Request as _AuthRequest
    from google.cloud.storage.retry import DEFAULT_RETRY as _DEFAULT_RETRY
    from google.resumable_media import common as _media_common

    _sdk = google.cloud.storage
except ImportError:  # pragma: no cover - exercised only without the extra
    _sdk = None

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ATTEMPT_TIMEOUT", "RETRY_DEADLINE", "GcsStore"]

_T = TypeVar("_T")

ATTEMPT_TIMEOUT: Final = 8.0
"""Seconds one HTTP attempt (or one credentials refresh) may take."""
RETRY_DEADLINE: Final = 8.0
"""Seconds within which transient failures are retried."""

SCOPE: Final = "https://www.googleapis.com/auth/devstorage.read_write"
ROLE: Final = "roles/storage.objectUser"
VERSION_KEY: Final = "veil-version"
_MISSING: Final = "the gs:// state store needs google-cloud-storage: pip install 'veil[gcp]'"
_ADC_HELP: Final = (
    "run 'gcloud auth application-default login', or set GOOGLE_APPLICATION_CREDENTIALS "
    "to a service account key file"
)
_PERMISSIONS: Final = {
    "read": "storage.objects.get",
    "write": "storage.objects.create",
    "delete": "storage.objects.delete",
    "list": "storage.objects.list",
}


def _require_sdk() -> Any:
    if _sdk is None:
        raise StateError(_MISSING)
    return _sdk


class _Conflict(Exception):
    """A generation precondition did not hold (HTTP 412)."""


class _Missing(Exception):
    """The object does not exist (HTTP 404, bucket present)."""


class _GcsStackLock(HeldLock):
    def __init__(self, store: GcsStore, stack: str, info: LockInfo, generation: int) -> None:
        super().__init__(stack, info, store._release)
        self.lock_generation = generation
        self.state_generation = 0  # of the state object when last seen; 0 = none
        self.version = 0  # writes so far (the state's veil-version)


class GcsStore(StateStore):
    """Stacks as objects in a Google Cloud Storage bucket (``gs://BUCKET/PREFIX``).

    The caller needs ``storage.objects.get``, ``storage.objects.create``,
    ``storage.objects.delete`` and ``storage.objects.list`` on the bucket: the role
    ``roles/storage.objectUser`` grants them.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        history_size: int = DEFAULT_HISTORY_SIZE,
        client: Any = None,
    ) -> None:
        _require_sdk()
        if (
            not bucket
            or "/" in bucket
            or not bucket.replace("-", "").replace("_", "").replace(".", "").isalnum()
        ):
            raise StateError(f"not a bucket name: {bucket!r}; for example gs://my-state-bucket")
        if isinstance(history_size, bool) or not isinstance(history_size, int) or history_size < 0:
            raise StateError(f"history_size must be a whole number >= 0, not {history_size!r}")
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.history_size = history_size
        self._client = client
        self._credentials: Any = None
        self._held: dict[str, _GcsStackLock] = {}
        self._mutex = threading.RLock()

    @classmethod
    def from_url(cls, url: str) -> Self:
        """``gs://BUCKET[/PREFIX][?history=N]``."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "gs" or not parts.netloc:
            raise StateError(f"a GCS state URL looks like gs://BUCKET[/PREFIX], got {url!r}")
        history = DEFAULT_HISTORY_SIZE
        for key, values in parse_qs(parts.query, keep_blank_values=True).items():
            if key != "history":
                raise StateError(f"unknown parameter {key!r} in state URL {url!r}; known: history")
            try:
                history = int(values[-1])
            except ValueError:
                raise StateError(f"history= in {url!r} must be a whole number") from None
        return cls(parts.netloc, unquote(parts.path), history_size=history)

    @property
    def url(self) -> str:
        url = f"gs://{self.bucket_name}"
        if self.prefix:
            url += "/" + quote(self.prefix)
        if self.history_size != DEFAULT_HISTORY_SIZE:
            url += f"?history={self.history_size}"
        return url

    def __repr__(self) -> str:
        return f"GcsStore({self.url!r})"

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise SecretPickleError(
            "a GcsStore holds credentials and cannot be pickled; build one from its URL "
            "in the other process: veil.state.store_from_url(store.url)"
        )

    # --- names -------------------------------------------------------------------------

    def _name(self, *parts: str) -> str:
        return "/".join(([self.prefix] if self.prefix else []) + list(parts))

    def _state(self, stack: str) -> str:
        return self._name("stacks", f"{validate_stack_name(stack)}.json")

    def _lock_name(self, stack: str) -> str:
        return self._name("locks", f"{validate_stack_name(stack)}.lock")

    def _history_prefix(self, stack: str) -> str:
        return self._name("history", validate_stack_name(stack)) + "/"

    # --- calls ---------------------------------------------------------------------------

    def _bucket(self) -> Any:
        with self._mutex:
            if self._client is None:
                self._client = self._build_client()
            return self._client.bucket(self.bucket_name)

    def _build_client(self) -> Any:
        if os.environ.get("STORAGE_EMULATOR_HOST"):
            return _sdk.Client()  # the library uses no credentials with an emulator
        failure: VeilError | None = None
        try:
            # Scoped here, so the client keeps this very object and _refresh can
            # renew it with a timeout before the library would (it has none).
            credentials, project = google.auth.default(scopes=[SCOPE])
        except google.auth.exceptions.GoogleAuthError:
            failure = StoreAccessError(
                f"no Google Cloud credentials found for {self.url}: {_ADC_HELP}"
            )
        if failure is not None:
            raise failure
        self._credentials = credentials
        return _sdk.Client(project=project or "-", credentials=credentials)

    def _refresh(self) -> None:
        credentials = self._credentials
        if credentials is not None and not credentials.valid:
            credentials.refresh(functools.partial(_AuthRequest(), timeout=ATTEMPT_TIMEOUT))

    def _calling(self, what: str, operation: str, call: Callable[[], _T]) -> _T:
        """``call()``, with the client library's exceptions turned into typed errors.

        The error is raised after the ``except`` block: the library's exception holds
        the HTTP request (and its Authorization header) and must not become
        ``__context__``.
        """
        failure: BaseException | None = None
        self._bucket()  # the client and its credentials first, so _refresh sees them
        try:
            self._refresh()
            return call()
        except (VeilError, _Conflict, _Missing):
            raise
        except Exception as exc:
            failure = self._classify(exc, what, operation)
        raise failure

    def _classify(self, exc: Exception, what: str, operation: str) -> BaseException:
        where = f"{self.url}: {what}"
        if isinstance(exc, google.auth.exceptions.RefreshError):
            return StoreAccessError(
                f"{where}: the Google Cloud credentials are expired, revoked or invalid; "
                f"{_ADC_HELP}"
            )
        if isinstance(exc, google.auth.exceptions.TransportError):
            return StoreUnavailableError(
                f"{where}: the Google token endpoint could not be reached; check the network"
            )
        if isinstance(exc, google.auth.exceptions.InvalidOperation):
            # Anonymous credentials asked to refresh: the service wants a token.
            return StoreAccessError(
                f"{where}: not authenticated: the service asks for credentials and none are "
                "sent (with STORAGE_EMULATOR_HOST set the client library sends none)"
            )
        if isinstance(exc, google.auth.exceptions.GoogleAuthError):
            return StoreAccessError(
                f"{where}: the Google Cloud credentials cannot be used; {_ADC_HELP}"
            )
        if isinstance(exc, _api_exceptions.RetryError):
            return self._unreachable(where, type(exc.cause).__name__ if exc.cause else "")
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return self._unreachable(where, type(exc).__name__)
        if isinstance(exc, _media_common.InvalidResponse):
            code = exc.response.status_code
            return self._from_status(code, _message(exc.response), where, operation)
        if isinstance(exc, _api_exceptions.GoogleAPICallError) and exc.code is not None:
            return self._from_status(int(exc.code), _message(exc.response), where, operation)
        return StateError(f"{where} failed unexpectedly ({type(exc).__name__})")

    def _from_status(self, code: int, message: str, where: str, operation: str) -> BaseException:
        said = f" GCS said: {message[:300]}" if message else ""
        if code == 412:
            return _Conflict()
        if code == 404:
            if "bucket does not exist" in message.lower():
                return StoreAccessError(
                    f"{where}: the bucket {self.bucket_name!r} does not exist; create it "
                    f"(gcloud storage buckets create gs://{self.bucket_name}) or fix the URL."
                    f"{said}"
                )
            return _Missing()
        if code == 401:
            return StoreAccessError(
                f"{where}: not authenticated (missing, expired or invalid credentials); "
                f"{_ADC_HELP}.{said}"
            )
        if code == 403:
            return StoreAccessError(
                f"{where}: permission {_PERMISSIONS[operation]} denied on bucket "
                f"{self.bucket_name!r}; grant the caller {ROLE} on the bucket.{said}"
            )
        if code in (408, 429) or code >= 500:
            return self._unreachable(where, f"HTTP {code}")
        return StateError(f"{where} failed with HTTP {code}.{said}")

    def _unreachable(self, where: str, reason: str) -> StoreUnavailableError:
        return StoreUnavailableError(
            f"{where}: Google Cloud Storage could not be reached within {RETRY_DEADLINE:.0f} s "
            f"({reason}); check the network, proxy settings and STORAGE_EMULATOR_HOST"
        )

    def _retry(self) -> Any:
        return _DEFAULT_RETRY.with_timeout(RETRY_DEADLINE).with_delay(
            initial=0.25, maximum=2.0, multiplier=2.0
        )

    def _download(self, name: str, what: str, **kw: Any) -> tuple[bytes, int, dict[str, str]]:
        """Bytes, generation and custom metadata of object ``name``; _Missing if none."""
        blob = self._bucket().blob(name)
        data = self._calling(
            what,
            "read",
            lambda: blob.download_as_bytes(timeout=ATTEMPT_TIMEOUT, retry=self._retry(), **kw),
        )
        return bytes(data), int(blob.generation or 0), dict(blob.metadata or {})

    def _stat(self, name: str, what: str) -> Any:
        """The object's resource (generation, metadata, size...) or None."""
        return self._calling(
            what,
            "read",
            lambda: self._bucket().get_blob(name, timeout=ATTEMPT_TIMEOUT, retry=self._retry()),
        )

    def _upload(
        self, name: str, data: bytes, what: str, *, generation: int | None, version: int = 0
    ) -> int:
        blob = self._bucket().blob(name)
        if version:
            blob.metadata = {VERSION_KEY: str(version)}
        self._calling(
            what,
            "write",
            lambda: blob.upload_from_string(
                data,
                content_type="application/json",
                if_generation_match=generation,
                timeout=ATTEMPT_TIMEOUT,
                retry=self._retry(),
            ),
        )
        return int(blob.generation or 0)

    def _delete(self, name: str, what: str, *, generation: int | None) -> None:
        self._calling(
            what,
            "delete",
            lambda: (
                self._bucket()
                .blob(name)
                .delete(
                    if_generation_match=generation, timeout=ATTEMPT_TIMEOUT, retry=self._retry()
                )
            ),
        )

    def _list(self, prefix: str, what: str) -> list[Any]:
        return self._calling(
            what,
            "list",
            lambda: list(
                self._bucket().list_blobs(
                    prefix=prefix, timeout=ATTEMPT_TIMEOUT, retry=self._retry()
                )
            ),
        )

    # --- reading -------------------------------------------------------------------------

    def read(self, stack: str) -> bytes:
        name = self._state(stack)
        try:
            return self._download(name, f"reading stack {stack!r}")[0]
        except _Missing:
            pass
        raise StackNotFoundError(
            f"no stack {stack!r} in {self.url}; known stacks: "
            f"{', '.join(self.list_stacks()) or '(none)'}"
        )

    def exists(self, stack: str) -> bool:
        try:
            return self._stat(self._state(stack), f"looking for stack {stack!r}") is not None
        except _Missing:
            return False

    def list_stacks(self) -> list[str]:
        prefix = self._name("stacks") + "/"
        try:
            blobs = self._list(prefix, "listing stacks")
        except _Missing:
            return []
        out = []
        for blob in blobs:
            rest = blob.name[len(prefix) :]
            if rest.endswith(".json"):
                with contextlib.suppress(InvalidStackNameError):
                    out.append(validate_stack_name(rest[:-5]))
        return sorted(out)

    # --- locking -------------------------------------------------------------------------

    def lock(self, stack: str, *, owner: str | None = None) -> StackLock:
        name = self._lock_name(stack)
        with self._mutex:
            if stack in self._held:
                raise StateLockedError(
                    f"stack {stack!r} is already locked by this store object "
                    f"({self._held[stack].info.describe()}); release that lock first"
                )
            info = LockInfo.current(owner)
            try:
                generation = self._upload(
                    name, info.to_json(), f"locking stack {stack!r}", generation=0
                )
            except _Conflict:
                raise self._locked_error(stack) from None
            held = _GcsStackLock(self, stack, info, generation)
            try:
                self._observe(held)
            except BaseException:
                held.release()
                raise
            self._held[stack] = held
            return held

    def _observe(self, held: _GcsStackLock) -> None:
        """Remember the state object's generation and write count, under the lock."""
        blob = self._stat(self._state(held.stack), f"reading stack {held.stack!r}")
        if blob is None:
            held.state_generation, held.version = 0, 0
            return
        held.state_generation = int(blob.generation)
        try:
            held.version = int((blob.metadata or {}).get(VERSION_KEY, "0"))
        except ValueError:
            held.version = 0

    def _locked_error(self, stack: str) -> StateLockedError:
        holder = self.lock_info(stack)
        who = holder.describe() if holder else "another writer (record unreadable)"
        return StateLockedError(
            f"stack {stack!r} in {self.url} is locked by {who}. Wait for that run to "
            f"finish. If it crashed, break the lock with 'veil stack unlock {stack}' or "
            f"GcsStore.from_url({self.url!r}).break_lock({stack!r})."
        )

    def _release(self, held: _GcsStackLock) -> None:
        with self._mutex:
            if self._held.get(held.stack) is held:
                del self._held[held.stack]
        # Only our own record: conditional on the generation this lock created.
        with contextlib.suppress(_Conflict, _Missing):
            self._delete(
                self._lock_name(held.stack),
                f"releasing the lock of stack {held.stack!r}",
                generation=held.lock_generation,
            )

    def lock_info(self, stack: str) -> LockInfo | None:
        try:
            data = self._download(self._lock_name(stack), f"reading the lock of {stack!r}")[0]
        except _Missing:
            return None
        return LockInfo.from_json(data)

    def break_lock(self, stack: str) -> LockInfo | None:
        name = self._lock_name(stack)
        what = f"breaking the lock of stack {stack!r}"
        for _ in range(5):
            try:
                data, generation, _ = self._download(name, what)
                self._delete(name, what, generation=generation)
            except _Missing:
                return None
            except _Conflict:
                continue  # replaced meanwhile: look again
            return LockInfo.from_json(data)
        raise StateLockedError(f"the lock of stack {stack!r} in {self.url} keeps changing; retry")

    @contextlib.contextmanager
    def _writing(self, stack: str) -> Iterator[_GcsStackLock]:
        """Our held lock (checked to be still ours), or a short one for this call."""
        with self._mutex:
            held = self._held.get(stack)
        if held is None:
            with self.lock(stack) as short:
                assert isinstance(short, _GcsStackLock)
                yield short
            return
        current = self._stat(self._lock_name(stack), f"checking the lock of {stack!r}")
        if current is None or int(current.generation) != held.lock_generation:
            now = self.lock_info(stack)
            who = f"; it is now held by {now.describe()}" if now else ""
            raise StateLockedError(
                f"the lock of stack {stack!r} in {self.url} was broken while this process "
                f"held it{who}. Nothing was written; reopen the stack and retry."
            )
        yield held

    def _conflict(self, stack: str) -> StateLockedError:
        holder = self.lock_info(stack)
        who = f" It is locked by {holder.describe()}." if holder else ""
        return StateLockedError(
            f"stack {stack!r} in {self.url} was written by another writer since this lock "
            f"was taken (its lock was broken).{who} Nothing was written; reopen the stack "
            "and retry."
        )

    # --- writing -------------------------------------------------------------------------

    def write(self, stack: str, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StateError(f"state data must be bytes, not {type(data).__name__}")
        data = bytes(data)
        name = self._state(stack)
        with self._writing(stack) as held:
            version = held.version + 1
            try:
                held.state_generation = self._upload(
                    name,
                    data,
                    f"writing stack {stack!r}",
                    generation=held.state_generation,
                    version=version,
                )
            except _Conflict:
                raise self._conflict(stack) from None
            held.version = version
            if self.history_size:
                self._record_history(stack, version, data)

    def _record_history(self, stack: str, version: int, data: bytes) -> None:
        prefix = self._history_prefix(stack)
        what = f"keeping history of stack {stack!r}"
        self._upload(f"{prefix}{version:010d}.json", data, what, generation=None)
        for blob in self._list(prefix, what):
            number = _version_of(blob.name, prefix)
            if number is not None and number <= version - self.history_size:
                with contextlib.suppress(_Missing, _Conflict):
                    self._delete(blob.name, what, generation=None)

    def delete(self, stack: str) -> None:
        name = self._state(stack)
        with self._writing(stack) as held:
            if not held.state_generation:
                raise StackNotFoundError(f"no stack {stack!r} in {self.url}")
            try:
                self._delete(name, f"deleting stack {stack!r}", generation=held.state_generation)
            except _Missing:
                raise StackNotFoundError(f"no stack {stack!r} in {self.url}") from None
            except _Conflict:
                raise self._conflict(stack) from None
            held.state_generation, held.version = 0, 0
            prefix = self._history_prefix(stack)
            for blob in self._list(prefix, f"deleting history of stack {stack!r}"):
                with contextlib.suppress(_Missing, _Conflict):
                    self._delete(blob.name, f"deleting history of {stack!r}", generation=None)

    # --- history -------------------------------------------------------------------------

    def history(self, stack: str) -> list[HistoryEntry]:
        prefix = self._history_prefix(stack)
        try:
            blobs = self._list(prefix, f"listing history of stack {stack!r}")
        except _Missing:
            return []
        out = []
        for blob in blobs:
            number = _version_of(blob.name, prefix)
            if number is None:
                continue
            when = blob.time_created or blob.updated
            if isinstance(when, _dt.datetime):
                stamp = when.astimezone(_dt.timezone.utc).isoformat(timespec="milliseconds")
            else:
                stamp = ""
            out.append(
                HistoryEntry(stack=stack, version=number, time=stamp, size=int(blob.size or 0))
            )
        return sorted(out, key=lambda e: e.version, reverse=True)

    def read_version(self, stack: str, version: int) -> bytes:
        if isinstance(version, bool) or not isinstance(version, int):
            raise StateError(f"a version is an int from history(), not {version!r}")
        name = f"{self._history_prefix(stack)}{version:010d}.json"
        try:
            return self._download(name, f"reading version {version} of {stack!r}")[0]
        except _Missing:
            pass
        raise StackNotFoundError(
            f"version {version} of stack {stack!r} is not kept in {self.url}; "
            "see history() for the kept versions"
        )


def _version_of(name: str, prefix: str) -> int | None:
    rest = name[len(prefix) :]
    if rest.endswith(".json") and rest[:-5].isdigit():
        return int(rest[:-5])
    return None


def _message(response: Any) -> str:
    try:
        message = response.json()["error"]["message"]
        return message if isinstance(message, str) else ""
    except Exception:
        return ""
