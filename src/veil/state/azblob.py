"""`azblob://CONTAINER[/PREFIX][?history=N]`: stacks as blobs in Azure Blob Storage.

Needs the optional extra ``veil[azure]`` (``azure-storage-blob``, ``azure-identity``).
The storage account comes from the environment, as for Pulumi's azblob backend:

- ``AZURE_STORAGE_CONNECTION_STRING`` (an account key or SAS connection string, or
  Azurite's development string); or
- ``AZURE_STORAGE_ACCOUNT`` (or ``?storage_account=NAME`` in the URL) with
  ``AZURE_STORAGE_KEY``, or ``AZURE_STORAGE_SAS_TOKEN``, or else ``DefaultAzureCredential``
  (Microsoft Entra ID: environment, workload or managed identity, ``az login``).

Layout under ``PREFIX/``: ``stacks/<stack>.json`` (the current state; its metadata
``veilversion`` counts the writes), ``locks/<stack>.lock`` (the holder's
:class:`~veil.state.store.LockInfo` JSON), ``history/<stack>/<version>.json`` (copies of
the last ``history`` versions, each its own blob).

Concurrency, with ETags alone (no blob leases, so a crashed holder never blocks for a
lease period): the lock blob is created with ``If-None-Match: *``; while a lock is held
the store remembers the state blob's ETag and writes with ``If-Match`` on it (a stack
that did not exist with ``If-None-Match: *``), so a writer whose lock was broken and
whose stack was written meanwhile fails with :class:`veil.StateLockedError` and writes
nothing. Each write also checks that its lock blob is still its own. Releasing deletes
the lock blob with ``If-Match`` on its own ETag. A lock is only broken explicitly
(:meth:`AzureBlobStore.break_lock`, ``veil stack unlock``).

One Put Blob replaces the state: readers see the old bytes or the new ones. The history
copy is written after the state; a writer killed between the two leaves that one version
out of the history.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import re
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final, NoReturn
from urllib.parse import parse_qsl, quote, urlsplit

from ..errors import (
    InvalidStackNameError,
    StackNotFoundError,
    StateError,
    StateLockedError,
    StoreAccessError,
    StoreUnavailableError,
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
    from azure.core import exceptions as _azure_errors
    from azure.storage.blob import BlobServiceClient

    _sdk = True
except ImportError:  # pragma: no cover - exercised only without the extra
    _sdk = None

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["AzureBlobStore"]

_MISSING: Final = "the azblob:// state store needs the Azure SDK: pip install 'veil[azure]'"
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}\Z")
_ACCOUNT = re.compile(r"[a-z0-9]{3,24}\Z")
_VERSION_KEY: Final = "veilversion"
IN_FLIGHT_GRACE: Final = 0.5
"""Seconds :meth:`AzureBlobStore.break_lock` waits for requests of a killed writer."""
# Bounded time: an unreachable account fails in well under 30 s (3 attempts of at most
# 4 s to connect and 10 s to read, with short backoff).
_CLIENT_OPTIONS: Final[dict[str, Any]] = {"connection_timeout": 4, "read_timeout": 10}


def _client_options() -> dict[str, Any]:
    from azure.storage.blob import ExponentialRetry

    # The SDK's default waits 15 s, then 18 s, ... between attempts.
    # Here: at most 1 s, then at most 2 s.
    retry = ExponentialRetry(
        initial_backoff=0, increment_base=1, retry_total=2, random_jitter_range=1
    )
    return {**_CLIENT_OPTIONS, "retry_policy": retry}


def _require_sdk() -> None:
    if _sdk is None:
        raise StoreAccessError(_MISSING)


class _BlobStackLock(HeldLock):
    def __init__(self, store: AzureBlobStore, stack: str, info: LockInfo, etag: str) -> None:
        super().__init__(stack, info, store._release)
        self._etag = etag  # of the lock blob we created
        # The state blob as this holder last saw or wrote it.
        self.state_etag: str | None = None
        self.state_version = 0


class AzureBlobStore(StateStore):
    """Stacks as blobs in one container of an Azure storage account."""

    def __init__(
        self,
        container: str,
        prefix: str = "",
        *,
        history_size: int = DEFAULT_HISTORY_SIZE,
        account: str | None = None,
        service: Any = None,
    ) -> None:
        _require_sdk()
        if not isinstance(container, str) or not _CONTAINER.match(container):
            raise StateError(
                f"not an Azure container name: {container!r} (3 to 63 lower-case letters, "
                "digits and single hyphens)"
            )
        if isinstance(history_size, bool) or not isinstance(history_size, int) or history_size < 0:
            raise StateError(f"history_size must be a whole number >= 0, not {history_size!r}")
        prefix = prefix.strip("/")
        if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
            raise StateError(f"the prefix {prefix!r} has an empty, '.' or '..' segment")
        if account is not None and not _ACCOUNT.match(account):
            raise StateError(f"not an Azure storage account name: {account!r}")
        self.container = container
        self.prefix = prefix
        self.history_size = history_size
        self._account = account
        self._service = service if service is not None else _service_from_environment(account)
        self._client = self._service.get_container_client(container)
        self._held: dict[str, _BlobStackLock] = {}
        self._mutex = threading.RLock()

    @classmethod
    def from_url(cls, url: str) -> Self:
        """``azblob://CONTAINER[/PREFIX][?history=N][&storage_account=NAME]``."""
        _require_sdk()
        parts = urlsplit(url)
        if parts.scheme.lower() != "azblob" or not parts.netloc:
            raise StateError(
                f"an Azure Blob state URL looks like azblob://CONTAINER[/PREFIX], got {url!r}"
            )
        if "@" in parts.netloc or ":" in parts.netloc:
            raise StateError(
                f"{url!r}: put no account, key or port in an azblob:// URL; the account comes "
                "from AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT"
            )
        history = DEFAULT_HISTORY_SIZE
        account = None
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "history":
                if not value.isdigit():
                    raise StateError(f"history= in {url!r} must be a whole number >= 0")
                history = int(value)
            elif key == "storage_account":
                account = value
            else:
                raise StateError(
                    f"unknown parameter {key!r} in state URL {url!r}; known: history, "
                    "storage_account"
                )
        return cls(parts.netloc, parts.path, history_size=history, account=account)

    @property
    def url(self) -> str:
        url = f"azblob://{self.container}"
        if self.prefix:
            url += "/" + quote(self.prefix)
        query = []
        if self.history_size != DEFAULT_HISTORY_SIZE:
            query.append(f"history={self.history_size}")
        if self._account:
            query.append(f"storage_account={self._account}")
        return url + ("?" + "&".join(query) if query else "")

    def __repr__(self) -> str:
        return f"AzureBlobStore({self.url!r})"

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        from ..errors import SecretPickleError

        raise SecretPickleError(
            "an AzureBlobStore holds storage credentials and is not pickled; pass its url"
        )

    # --- names ----------------------------------------------------------------------

    def _name(self, *parts: str) -> str:
        return "/".join(([self.prefix] if self.prefix else []) + list(parts))

    def _state_blob(self, stack: str) -> str:
        return self._name("stacks", validate_stack_name(stack) + ".json")

    def _lock_blob(self, stack: str) -> str:
        return self._name("locks", validate_stack_name(stack) + ".lock")

    def _history_prefix(self, stack: str) -> str:
        return self._name("history", validate_stack_name(stack)) + "/"

    def _history_blob(self, stack: str, version: int) -> str:
        return f"{self._history_prefix(stack)}{version:010d}.json"

    # --- errors ---------------------------------------------------------------------

    def _error(self, exc: Exception, doing: str) -> Exception:
        where = f"{self.url} (container {self.container!r} of {self._service_account()})"
        if isinstance(exc, (_azure_errors.ServiceRequestError, _azure_errors.ServiceResponseError)):
            return StoreUnavailableError(
                f"cannot reach Azure Blob Storage for {where} while {doing} "
                f"({type(exc).__name__}); check the account name or endpoint in "
                "AZURE_STORAGE_CONNECTION_STRING / AZURE_STORAGE_ACCOUNT, the network and "
                "the account's firewall"
            )
        code = str(getattr(exc, "error_code", "") or "")
        status = getattr(exc, "status_code", None)
        if code == "ContainerNotFound":
            return StoreAccessError(
                f"the container {self.container!r} does not exist in {self._service_account()}; "
                f"create it (az storage container create --name {self.container}) or fix the "
                "azblob:// URL"
            )
        if isinstance(exc, _azure_errors.ClientAuthenticationError) or status in (401, 403):
            return StoreAccessError(
                f"Azure Blob Storage refused {doing} for {where} ({code or status}): check "
                "AZURE_STORAGE_KEY or the connection string, or give the signed-in identity "
                "the role 'Storage Blob Data Contributor' on the container"
            )
        if status is not None and status >= 500:
            return StoreUnavailableError(
                f"Azure Blob Storage failed {doing} for {where} (HTTP {status} {code}); "
                "try again later"
            )
        what = code or status or type(exc).__name__
        return StoreAccessError(f"Azure Blob Storage failed {doing} for {where} ({what})")

    def _service_account(self) -> str:
        name = getattr(self._service, "account_name", None)
        return f"storage account {name!r}" if name else "the storage account"

    @contextlib.contextmanager
    def _calls(self, doing: str) -> Iterator[None]:
        """Translate SDK failures of the calls inside into typed, secret-free errors."""
        failure: Exception | None = None
        try:
            yield
        except (StateError, InvalidStackNameError):
            raise
        except _azure_errors.AzureError as exc:
            failure = self._error(exc, doing)
        if failure is not None:
            raise failure

    # --- reading --------------------------------------------------------------------

    def read(self, stack: str) -> bytes:
        name = self._state_blob(stack)
        missing = False
        with self._calls(f"reading stack {stack!r}"):
            try:
                return bytes(self._client.download_blob(name).readall())
            except _azure_errors.ResourceNotFoundError as exc:
                if getattr(exc, "error_code", "") == "ContainerNotFound":
                    raise
                missing = True
        assert missing
        raise StackNotFoundError(f"no stack {stack!r} in {self.url}")

    def _properties(self, name: str) -> Any:
        """The blob's properties, or None if it does not exist."""
        try:
            return self._client.get_blob_client(name).get_blob_properties()
        except _azure_errors.ResourceNotFoundError as exc:
            if getattr(exc, "error_code", "") == "ContainerNotFound":  # x-ms-error-code
                raise
            return None

    def exists(self, stack: str) -> bool:
        name = self._state_blob(stack)
        with self._calls(f"looking for stack {stack!r}"):
            return self._properties(name) is not None
        raise AssertionError("unreachable")  # pragma: no cover

    def list_stacks(self) -> list[str]:
        prefix = self._name("stacks") + "/"
        names = []
        with self._calls("listing stacks"):
            for blob in self._client.list_blobs(name_starts_with=prefix):
                rest = blob.name[len(prefix) :]
                if rest.endswith(".json") and "/" not in rest:
                    with contextlib.suppress(InvalidStackNameError):
                        names.append(validate_stack_name(rest[: -len(".json")]))
        return sorted(names)

    # --- locking --------------------------------------------------------------------

    def lock(self, stack: str, *, owner: str | None = None) -> StackLock:
        name = self._lock_blob(stack)
        with self._mutex:
            if stack in self._held:
                raise StateLockedError(
                    f"stack {stack!r} is already locked by this store object "
                    f"({self._held[stack].info.describe()}); release that lock first"
                )
            info = LockInfo.current(owner)
            lock = self._acquire(stack, name, info)
            self._held[stack] = lock
            return lock

    def _acquire(self, stack: str, name: str, info: LockInfo) -> _BlobStackLock:
        blob = self._client.get_blob_client(name)
        for _ in range(5):
            taken = False
            holder: LockInfo | None = None
            with self._calls(f"locking stack {stack!r}"):
                try:
                    result = blob.upload_blob(info.to_json(), overwrite=False)
                except _azure_errors.ResourceExistsError:
                    taken = True
                if taken:
                    holder = self._read_lock(stack)
            if taken:
                if holder is None:
                    continue  # released meanwhile: try again
                raise self._locked_error(stack, holder)
            with self._calls(f"locking stack {stack!r}"):
                lock = _BlobStackLock(self, stack, info, result["etag"])
                try:
                    state = self._properties(self._state_blob(stack))
                except BaseException:
                    lock.release()
                    raise
                if state is not None:
                    lock.state_etag = state.etag
                    lock.state_version = _version_of(state)
                return lock
        raise StateLockedError(f"could not take the lock of stack {stack!r} (contended); try again")

    def _locked_error(self, stack: str, holder: LockInfo) -> StateLockedError:
        return StateLockedError(
            f"stack {stack!r} is locked by {holder.describe()}. Wait for that run to finish. "
            f"If it crashed, break the lock with 'veil stack unlock {stack}' or "
            f"store_from_url({self.url!r}).break_lock({stack!r})."
        )

    def _read_lock_blob(self, stack: str) -> tuple[LockInfo | None, str | None]:
        """The lock record and its ETag; (None, None) if there is no lock blob."""
        try:
            downloader = self._client.download_blob(self._lock_blob(stack))
            data = downloader.readall()
        except _azure_errors.ResourceNotFoundError as exc:
            if getattr(exc, "error_code", "") == "ContainerNotFound":
                raise
            return None, None
        info = LockInfo.from_json(data)
        if info is None:  # not ours to interpret: report it as held by someone unknown
            info = LockInfo("unknown (unreadable lock record)", "unknown", 0, "unknown")
        return info, downloader.properties.etag

    def _read_lock(self, stack: str) -> LockInfo | None:
        return self._read_lock_blob(stack)[0]

    def lock_info(self, stack: str) -> LockInfo | None:
        validate_stack_name(stack)
        with self._calls(f"reading the lock of stack {stack!r}"):
            return self._read_lock(stack)
        raise AssertionError("unreachable")  # pragma: no cover

    def break_lock(self, stack: str) -> LockInfo | None:
        """Remove the lock of ``stack``; return the removed holder (None if unlocked).

        A writer killed a moment ago may still have requests in flight that the service
        completes after its lock was removed (Azure finishes a request whose client has
        gone). So this waits :data:`IN_FLIGHT_GRACE` seconds and also removes a lock
        record that appears meanwhile if it was made before the break began.
        """
        validate_stack_name(stack)
        started = _dt.datetime.now(_dt.timezone.utc)
        with self._calls(f"breaking the lock of stack {stack!r}"):
            removed = self._remove_lock(stack, None)
            deadline = time.monotonic() + IN_FLIGHT_GRACE
            while time.monotonic() < deadline:
                time.sleep(0.05)
                late = self._remove_lock(stack, started)
                removed = removed or late
        return removed

    def _remove_lock(self, stack: str, made_before: _dt.datetime | None) -> LockInfo | None:
        name = self._lock_blob(stack)
        for _ in range(5):
            info, etag = self._read_lock_blob(stack)
            if info is None:
                return None
            if made_before is not None and not _made_before(info, made_before):
                return None  # a new holder: not ours to break
            try:
                self._client.get_blob_client(name).delete_blob(
                    etag=etag, match_condition=_if_match()
                )
            except _azure_errors.ResourceNotFoundError:
                return None
            except _azure_errors.ResourceModifiedError:
                continue  # replaced meanwhile: read the new holder
            return info
        raise StateLockedError(f"the lock of stack {stack!r} keeps changing; try again")

    def _release(self, lock: _BlobStackLock) -> None:
        with self._mutex:
            if self._held.get(lock.stack) is lock:
                del self._held[lock.stack]
        # Only our own record: the lock may have been broken and retaken.
        with (
            self._calls(f"releasing the lock of stack {lock.stack!r}"),
            contextlib.suppress(
                _azure_errors.ResourceNotFoundError, _azure_errors.ResourceModifiedError
            ),
        ):
            self._client.get_blob_client(self._lock_blob(lock.stack)).delete_blob(
                etag=lock._etag, match_condition=_if_match()
            )

    @contextlib.contextmanager
    def _writing(self, stack: str) -> Iterator[_BlobStackLock]:
        """The held lock of ``stack``, checked to be still ours; else a short one."""
        with self._mutex:
            held = self._held.get(stack)
        if held is None:
            with self.lock(stack) as short:
                assert isinstance(short, _BlobStackLock)
                yield short
            return
        with self._calls(f"checking the lock of stack {stack!r}"):
            current = self._properties(self._lock_blob(stack))
        if current is None or current.etag != held._etag:
            holder = self.lock_info(stack)
            who = f"; it is now held by {holder.describe()}" if holder else ""
            raise StateLockedError(
                f"the lock of stack {stack!r} was broken while this process held it{who}. "
                "Nothing was written; reopen the stack and retry."
            )
        yield held

    def _conflict(self, stack: str) -> StateLockedError:
        holder = self.lock_info(stack)
        who = f"; the lock is now held by {holder.describe()}" if holder else ""
        return StateLockedError(
            f"stack {stack!r} was written by another writer after this one took its lock "
            f"(the lock was broken){who}. Nothing was written; reopen the stack and retry."
        )

    # --- writing --------------------------------------------------------------------

    def write(self, stack: str, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StateError(f"state data must be bytes, not {type(data).__name__}")
        body = bytes(data)
        name = self._state_blob(stack)
        with self._writing(stack) as lock:
            version = lock.state_version + 1
            conflict = False
            with self._calls(f"writing stack {stack!r}"):
                # If-Match on the ETag seen under the lock; If-None-Match: * for a new stack.
                conditions: dict[str, Any] = (
                    {"overwrite": True, "etag": lock.state_etag, "match_condition": _if_match()}
                    if lock.state_etag is not None
                    else {"overwrite": False}
                )
                try:
                    result = self._client.get_blob_client(name).upload_blob(
                        body, metadata={_VERSION_KEY: str(version)}, **conditions
                    )
                except (_azure_errors.ResourceModifiedError, _azure_errors.ResourceExistsError):
                    conflict = True
                if not conflict:
                    lock.state_etag, lock.state_version = result["etag"], version
                    self._record_history(stack, version, body)
            if conflict:
                raise self._conflict(stack)

    def _record_history(self, stack: str, version: int, body: bytes) -> None:
        if self.history_size:
            self._client.get_blob_client(self._history_blob(stack, version)).upload_blob(
                body, overwrite=True
            )
        for old in self._kept_versions(stack):
            if old <= version - self.history_size:
                with contextlib.suppress(_azure_errors.ResourceNotFoundError):
                    self._client.delete_blob(self._history_blob(stack, old))

    def _kept_versions(self, stack: str) -> list[int]:
        return [v for v, _ in self._history_blobs(stack)]

    def _history_blobs(self, stack: str) -> list[tuple[int, Any]]:
        prefix = self._history_prefix(stack)
        found = []
        for blob in self._client.list_blobs(name_starts_with=prefix):
            rest = blob.name[len(prefix) :]
            if rest.endswith(".json") and rest[:-5].isdigit():
                found.append((int(rest[:-5]), blob))
        return sorted(found, key=lambda item: item[0])

    def delete(self, stack: str) -> None:
        name = self._state_blob(stack)
        with self._writing(stack) as lock:
            missing = conflict = False
            with self._calls(f"deleting stack {stack!r}"):
                if lock.state_etag is None:
                    missing = self._properties(name) is None
                    conflict = not missing
                else:
                    try:
                        self._client.delete_blob(
                            name, etag=lock.state_etag, match_condition=_if_match()
                        )
                    except _azure_errors.ResourceModifiedError:
                        conflict = True
                    except _azure_errors.ResourceNotFoundError:
                        conflict = True  # deleted by another writer after our lock was broken
                if not (missing or conflict):
                    lock.state_etag, lock.state_version = None, 0
                    for old in self._kept_versions(stack):
                        with contextlib.suppress(_azure_errors.ResourceNotFoundError):
                            self._client.delete_blob(self._history_blob(stack, old))
            if missing:
                raise StackNotFoundError(f"no stack {stack!r} in {self.url}")
            if conflict:
                raise self._conflict(stack)

    # --- history --------------------------------------------------------------------

    def history(self, stack: str) -> list[HistoryEntry]:
        validate_stack_name(stack)
        out = []
        with self._calls(f"listing the history of stack {stack!r}"):
            for version, blob in reversed(self._history_blobs(stack)):
                when = blob.last_modified
                if isinstance(when, _dt.datetime):
                    when = when.astimezone(_dt.timezone.utc).isoformat(timespec="milliseconds")
                out.append(HistoryEntry(stack, version, str(when), blob.size))
        return out

    def read_version(self, stack: str, version: int) -> bytes:
        if isinstance(version, bool) or not isinstance(version, int):
            raise StateError(f"a version is an int from history(), not {version!r}")
        name = self._history_blob(stack, version)
        missing = False
        with self._calls(f"reading version {version} of stack {stack!r}"):
            try:
                return bytes(self._client.download_blob(name).readall())
            except _azure_errors.ResourceNotFoundError as exc:
                if getattr(exc, "error_code", "") == "ContainerNotFound":
                    raise
                missing = True
        assert missing
        raise StackNotFoundError(
            f"version {version} of stack {stack!r} is not kept in {self.url}; see history()"
        )


def _if_match() -> Any:
    from azure.core import MatchConditions

    return MatchConditions.IfNotModified


def _made_before(info: LockInfo, moment: _dt.datetime) -> bool:
    try:
        when = _dt.datetime.fromisoformat(info.time)
    except ValueError:
        return True  # an unreadable record: left by a broken writer
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    return when <= moment


def _version_of(properties: Any) -> int:
    raw = (properties.metadata or {}).get(_VERSION_KEY, "0")
    return int(raw) if str(raw).isdigit() else 0


def _service_from_environment(account: str | None) -> Any:
    """A BlobServiceClient from the environment's usual Azure Storage settings."""
    connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    account = account or os.environ.get("AZURE_STORAGE_ACCOUNT")
    try:
        if connection and not account:
            return BlobServiceClient.from_connection_string(connection, **_client_options())
        if connection:
            service = BlobServiceClient.from_connection_string(connection, **_client_options())
            if service.account_name == account:
                return service
        if not account:
            raise StoreAccessError(
                "the azblob:// store needs a storage account: set "
                "AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT (with "
                "AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN, or a Microsoft Entra sign-in)"
            )
        if not _ACCOUNT.match(account):
            raise StoreAccessError(f"not an Azure storage account name: {account!r}")
        endpoint = f"https://{account}.blob.core.windows.net"
        key = os.environ.get("AZURE_STORAGE_KEY")
        sas = os.environ.get("AZURE_STORAGE_SAS_TOKEN")
        if key:
            credential: Any = {"account_name": account, "account_key": key}
        elif sas:
            credential = sas
        else:
            from azure.identity import DefaultAzureCredential

            credential = DefaultAzureCredential()
        return BlobServiceClient(endpoint, credential=credential, **_client_options())
    except ValueError:
        # The SDK's own message may quote the connection string, key included.
        raise StoreAccessError(
            "AZURE_STORAGE_CONNECTION_STRING (or AZURE_STORAGE_KEY) is malformed; copy it "
            "again from the portal or 'az storage account show-connection-string'"
        ) from None
