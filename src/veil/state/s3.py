"""`s3://BUCKET[/PREFIX]`: stacks as objects in an S3 bucket (or an S3-compatible service).

Needs the optional extra ``veil[aws]`` (boto3). URL parameters: ``region=R``,
``endpoint=URL`` (S3-compatible services; ``AWS_ENDPOINT_URL_S3`` and
``AWS_ENDPOINT_URL`` are honoured too), ``profile=P``, ``history=N``. Credentials come
from boto3's usual chain and are never stored.

Layout under the prefix: ``stacks/<stack>.json`` (the current state; its user metadata
``veil-version`` counts the writes), ``locks/<stack>.lock`` (the holder's record) and
``history/<stack>/<version>.json`` (the last ``history`` versions, each an object of
its own).

One writer at a time with S3's conditional writes alone, no lock table:

- the lock object is created with ``If-None-Match: *``, so exactly one taker succeeds,
  and removed by its holder with ``If-Match`` on its ETag;
- while a lock is held the store remembers the state object's ETag, and every write is
  a ``PutObject`` with ``If-Match`` on it (``If-None-Match: *`` for a new stack): if the
  lock was broken and someone else wrote meanwhile, the write fails with
  :class:`~veil.StateLockedError` and nothing is overwritten.

A lock left by a crashed writer is never broken automatically (a process id means
nothing across hosts): ``veil stack unlock`` or :meth:`S3Store.break_lock` does it.
"""

from __future__ import annotations

import datetime as _dt
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NoReturn

from .. import _aws
from ..errors import (
    SecretPickleError,
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

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["S3Store"]

_PARAMS = ("region", "endpoint", "profile", "history")
_VERSION_META = "veil-version"
_CONFLICT = ("PreconditionFailed", "ConditionalRequestConflict", "412", "409")
_MISSING = ("NoSuchKey", "404", "NotFound")
_BAD_CREDENTIALS = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidToken",
}
_WRONG_REGION = {
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "301",
    "IllegalLocationConstraintException",
}


class _S3StackLock(HeldLock):
    def __init__(self, store: S3Store, stack: str, info: LockInfo) -> None:
        super().__init__(stack, info, store._release)
        # The state object as this holder last saw it: compare-and-swap on every write.
        self.etag: str | None = None
        self.version = 0


class S3Store(StateStore):
    """Stacks as objects under ``s3://BUCKET/PREFIX``.

    Permissions on the bucket: ``s3:ListBucket``; on ``PREFIX/*``: ``s3:GetObject``,
    ``s3:PutObject``, ``s3:DeleteObject``.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        region: str | None = None,
        endpoint: str | None = None,
        profile: str | None = None,
        history_size: int = DEFAULT_HISTORY_SIZE,
    ) -> None:
        if not _aws.have_boto3():
            raise StateError(f"the s3:// store needs boto3: {_aws.INSTALL_HINT}")
        if not isinstance(bucket, str) or not bucket or "/" in bucket:
            raise StateError(f"an S3 bucket name is required, not {bucket!r}: s3://BUCKET[/PREFIX]")
        if isinstance(history_size, bool) or not isinstance(history_size, int) or history_size < 0:
            raise StateError(f"history_size must be a whole number >= 0, not {history_size!r}")
        prefix = prefix.strip("/")
        self.bucket = bucket
        self.prefix = prefix
        self.history_size = history_size
        self._base = f"{prefix}/" if prefix else ""
        self._endpoint = endpoint or None
        self._profile = profile or None
        failure = None
        try:
            self._session = _aws.make_session(profile=self._profile, region=region)
        except Exception as exc:
            failure = _aws.classify(exc)
            if failure is None:
                raise
        if failure is not None:
            raise StoreAccessError(
                f"s3://{bucket}: {failure.message}. Check the profile name in ~/.aws/config"
            )
        self.region: str | None = region or self._session.region_name
        if not self.region:
            raise StateError(
                f"s3://{bucket} names no region: add ?region=REGION to the URL or set AWS_REGION"
            )
        self._client: Any = None
        self._held: dict[str, _S3StackLock] = {}
        self._mutex = threading.RLock()

    @classmethod
    def from_url(cls, url: str) -> Self:
        """``s3://BUCKET[/PREFIX][?region=R&endpoint=URL&profile=P&history=N]``."""
        parts = urllib.parse.urlsplit(url)
        if parts.scheme.lower() != "s3" or not parts.netloc:
            raise StateError(f"an S3 state URL looks like s3://BUCKET[/PREFIX], not {url!r}")
        params: dict[str, str] = {}
        for name, value in urllib.parse.parse_qsl(parts.query, keep_blank_values=True):
            if name not in _PARAMS:
                raise StateError(
                    f"unknown parameter {name!r} in state URL {url!r}; known: {', '.join(_PARAMS)}"
                )
            params[name] = value
        history = DEFAULT_HISTORY_SIZE
        if "history" in params:
            try:
                history = int(params["history"])
            except ValueError:
                raise StateError(f"history= in {url!r} must be a whole number") from None
        return cls(
            parts.netloc,
            urllib.parse.unquote(parts.path),
            region=params.get("region") or None,
            endpoint=params.get("endpoint") or None,
            profile=params.get("profile") or None,
            history_size=history,
        )

    @property
    def url(self) -> str:
        path = f"/{urllib.parse.quote(self.prefix)}" if self.prefix else ""
        query: list[tuple[str, str]] = [("region", self.region or "")]
        if self._endpoint:
            query.append(("endpoint", self._endpoint))
        if self._profile:
            query.append(("profile", self._profile))
        if self.history_size != DEFAULT_HISTORY_SIZE:
            query.append(("history", str(self.history_size)))
        return f"s3://{self.bucket}{path}?{urllib.parse.urlencode(query)}"

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    def __reduce__(self) -> NoReturn:
        raise SecretPickleError(
            "an S3Store holds an AWS session with credentials and cannot be pickled; "
            "pickle its url and build it again with store_from_url"
        )

    # --- keys and calls ---------------------------------------------------------------

    def _state_key(self, stack: str) -> str:
        return f"{self._base}stacks/{validate_stack_name(stack)}.json"

    def _lock_key(self, stack: str) -> str:
        return f"{self._base}locks/{validate_stack_name(stack)}.lock"

    def _history_prefix(self, stack: str) -> str:
        return f"{self._base}history/{validate_stack_name(stack)}/"

    def _s3(self) -> Any:
        if self._client is None:
            self._client = _aws.make_client(
                self._session, "s3", region=self.region, endpoint=self._endpoint
            )
        return self._client

    def _call(
        self,
        permission: str,
        what: str,
        method: Callable[..., Any],
        /,
        *,
        allow: tuple[str, ...] = (),
        **kwargs: Any,
    ) -> tuple[Any, str]:
        """Call ``method``; return (response, "") or (None, code) for a code in ``allow``;
        raise a typed error for anything else."""
        failure: _aws.Failure | None = None
        try:
            return method(**kwargs), ""
        except Exception as exc:
            failure = _aws.classify(exc)
            if failure is None:
                raise
        if failure.kind == "client" and failure.code in allow:
            return None, failure.code
        self._fail(permission, what, failure)

    def _fail(self, permission: str, what: str, failure: _aws.Failure) -> NoReturn:
        where = f"S3 bucket {self.bucket!r}" + (f" at {self._endpoint}" if self._endpoint else "")
        code = failure.code
        if failure.kind == "unreachable":
            raise StoreUnavailableError(
                f"cannot {what}: {where} could not be reached ({code}). Check the network, "
                "the endpoint (endpoint=, AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL) and the "
                "region. Nothing was written."
            )
        if failure.kind == "credentials":
            raise StoreAccessError(
                f"cannot {what} in {where}: no usable AWS credentials ({code}). Set "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE or ?profile=, or "
                "sign in again (aws sso login)."
            )
        if failure.kind != "client":
            raise StateError(f"cannot {what} in {where}: {code}")
        if code == "NoSuchBucket":
            raise StoreAccessError(
                f"cannot {what}: {where} does not exist. Create it (aws s3 mb s3://{self.bucket}) "
                "or check the bucket name and the region."
            )
        if code in _BAD_CREDENTIALS:
            raise StoreAccessError(
                f"cannot {what} in {where}: the AWS credentials were refused ({code}): they "
                "are invalid or expired."
            )
        if code in _WRONG_REGION:
            raise StoreAccessError(
                f"cannot {what}: {where} is not in region {self.region} ({code}). Set "
                "?region= to the bucket's region."
            )
        if code in ("AccessDenied", "403", "AllAccessDisabled"):
            raise StoreAccessError(
                f"cannot {what} in {where}: access denied; the caller needs {permission}. "
                f"{failure.message}".strip()
            )
        if failure.status >= 500 or code in ("SlowDown", "ServiceUnavailable", "InternalError"):
            raise StoreUnavailableError(
                f"cannot {what} in {where}: the service failed ({code}); retry later."
            )
        raise StateError(f"cannot {what} in {where}: {code} {failure.message}".strip())

    def _get(self, key: str, permission: str, what: str) -> tuple[bytes, str] | None:
        """(body, ETag) of an object, or None if there is none."""
        response, code = self._call(
            permission, what, self._s3().get_object, allow=_MISSING, Bucket=self.bucket, Key=key
        )
        if code:
            return None
        failure = None
        try:
            return response["Body"].read(), str(response.get("ETag", ""))
        except Exception as exc:
            failure = _aws.classify(exc)
            if failure is None:
                raise
        self._fail(permission, what, failure)

    def _head_state(self, stack: str, *, check_bucket: bool = False) -> tuple[str | None, int, Any]:
        """(ETag, version, response) of the state object; (None, 0, None) if missing.

        A HEAD answers a missing bucket with a bare 404 too: with ``check_bucket`` that
        case is told apart (one more request, only when the object is missing).
        """
        what = f"read stack {stack!r}"
        response, code = self._call(
            "s3:GetObject",
            what,
            self._s3().head_object,
            allow=_MISSING,
            Bucket=self.bucket,
            Key=self._state_key(stack),
        )
        if code:
            if check_bucket:
                _, missing = self._call(
                    "s3:ListBucket",
                    what,
                    self._s3().head_bucket,
                    allow=_MISSING,
                    Bucket=self.bucket,
                )
                if missing:
                    self._fail(
                        "s3:ListBucket", what, _aws.Failure("client", "NoSuchBucket", "", 404)
                    )
            return None, 0, None
        return str(response.get("ETag", "")), _version_of(response), response

    # --- reading ------------------------------------------------------------------------

    def read(self, stack: str) -> bytes:
        found = self._get(self._state_key(stack), "s3:GetObject", f"read stack {stack!r}")
        if found is None:
            raise StackNotFoundError(
                f"no stack {stack!r} in {self.url}; known stacks: "
                f"{', '.join(self.list_stacks()) or '(none)'}"
            )
        return found[0]

    def exists(self, stack: str) -> bool:
        return self._head_state(stack, check_bucket=True)[0] is not None

    def _list(self, prefix: str, what: str) -> Iterator[dict[str, Any]]:
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
            if token:
                kwargs["ContinuationToken"] = token
            response, _ = self._call("s3:ListBucket", what, self._s3().list_objects_v2, **kwargs)
            yield from response.get("Contents", [])
            if not response.get("IsTruncated"):
                return
            token = response.get("NextContinuationToken")

    def list_stacks(self) -> list[str]:
        base = f"{self._base}stacks/"
        names = []
        for item in self._list(base, "list stacks"):
            name = str(item["Key"])[len(base) :]
            if name.endswith(".json") and "/" not in name:
                try:
                    names.append(validate_stack_name(name[:-5]))
                except StateError:
                    continue
        return sorted(names)

    # --- locking ------------------------------------------------------------------------

    def lock(self, stack: str, *, owner: str | None = None) -> StackLock:
        validate_stack_name(stack)
        with self._mutex:
            if stack in self._held:
                held = self._held[stack]
                raise StateLockedError(
                    f"stack {stack!r} is already locked by this store object "
                    f"({held.info.describe()}); release that lock first"
                )
            info = LockInfo.current(owner)
            lock = _S3StackLock(self, stack, info)
            self._acquire(lock)
            self._held[stack] = lock
            return lock

    def _acquire(self, lock: _S3StackLock) -> None:
        stack = lock.stack
        what = f"take the lock of stack {stack!r}"
        for _ in range(3):
            _, code = self._call(
                "s3:PutObject",
                what,
                self._s3().put_object,
                allow=_CONFLICT,
                Bucket=self.bucket,
                Key=self._lock_key(stack),
                Body=lock.info.to_json(),
                IfNoneMatch="*",
                ContentType="application/json",
            )
            if not code:
                break
            holder = self.lock_info(stack)
            if holder is not None:
                raise self._locked_error(stack, holder)
            # Released between our attempt and the read: try again.
        else:
            raise StateLockedError(f"could not take the lock of stack {stack!r} (contended); retry")
        try:
            lock.etag, lock.version, _ = self._head_state(stack)
        except BaseException:
            self._release(lock)
            raise

    def _locked_error(self, stack: str, holder: LockInfo) -> StateLockedError:
        return StateLockedError(
            f"stack {stack!r} in {self.url} is locked by {holder.describe()}. Wait for that "
            "run to finish. If it crashed, break the lock with 'veil stack unlock' or "
            f"store.break_lock({stack!r})."
        )

    def _read_lock(self, stack: str) -> tuple[LockInfo | None, str]:
        found = self._get(
            self._lock_key(stack), "s3:GetObject", f"read the lock of stack {stack!r}"
        )
        if found is None:
            return None, ""
        return LockInfo.from_json(found[0]), found[1]

    def lock_info(self, stack: str) -> LockInfo | None:
        return self._read_lock(stack)[0]

    def _release(self, lock: _S3StackLock) -> None:
        with self._mutex:
            if self._held.get(lock.stack) is lock:
                del self._held[lock.stack]
        info, etag = self._read_lock(lock.stack)
        # Only our own record, and only as we read it: it may have been broken and retaken.
        if info is not None and info.token == lock.info.token:
            self._call(
                "s3:DeleteObject",
                f"release the lock of stack {lock.stack!r}",
                self._s3().delete_object,
                allow=_CONFLICT + _MISSING,
                Bucket=self.bucket,
                Key=self._lock_key(lock.stack),
                IfMatch=etag,
            )

    def break_lock(self, stack: str) -> LockInfo | None:
        info, etag = self._read_lock(stack)
        if not etag:
            return None
        self._call(
            "s3:DeleteObject",
            f"break the lock of stack {stack!r}",
            self._s3().delete_object,
            allow=_MISSING,
            Bucket=self.bucket,
            Key=self._lock_key(stack),
        )
        return info

    def _writing(self, stack: str) -> _Writing:
        with self._mutex:
            held = self._held.get(stack)
        if held is not None:
            info = self.lock_info(stack)
            if info is None or info.token != held.info.token:
                raise self._broken_error(stack, info)
            return _Writing(held, None)
        short = self.lock(stack)
        assert isinstance(short, _S3StackLock)
        return _Writing(short, short)

    def _broken_error(self, stack: str, holder: LockInfo | None) -> StateLockedError:
        who = f"; it is now held by {holder.describe()}" if holder else ""
        return StateLockedError(
            f"the lock of stack {stack!r} in {self.url} was broken while this process held "
            f"it{who}. Nothing was written; reopen the stack and retry."
        )

    # --- writing ------------------------------------------------------------------------

    def write(self, stack: str, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StateError(f"state data must be bytes, not {type(data).__name__}")
        body = bytes(data)
        with self._writing(stack) as lock:
            version = lock.version + 1
            kept = self._keep_before(stack, version, body) if self.history_size else None
            condition = {"IfMatch": lock.etag} if lock.etag else {"IfNoneMatch": "*"}
            response, code = self._call(
                "s3:PutObject",
                f"write stack {stack!r}",
                self._s3().put_object,
                allow=_CONFLICT + _MISSING,
                Bucket=self.bucket,
                Key=self._state_key(stack),
                Body=body,
                ContentType="application/json",
                Metadata={_VERSION_META: str(version)},
                **condition,
            )
            if code:
                if kept is not None and kept[1]:  # ours, never confirmed: take it back
                    self._call(
                        "s3:DeleteObject",
                        f"write stack {stack!r}",
                        self._s3().delete_object,
                        allow=_CONFLICT + _MISSING,
                        Bucket=self.bucket,
                        Key=kept[0],
                        IfMatch=kept[1],
                    )
                raise self._changed_error(stack)
            lock.etag, lock.version = str(response.get("ETag", "")), version
            if kept is not None:
                if not kept[1]:  # an older writer's leftover held the name: ours now
                    self._put_history(kept[0], body, stack)
                self._prune(stack, version)

    def _changed_error(self, stack: str) -> StateLockedError:
        holder = self.lock_info(stack)
        who = f" The lock is now held by {holder.describe()}." if holder else ""
        return StateLockedError(
            f"stack {stack!r} in {self.url} was changed by another writer since this one "
            f"locked it (its lock was broken).{who} Nothing was written; reopen the stack "
            "and retry."
        )

    def _version_key(self, stack: str, version: int) -> str:
        return f"{self._history_prefix(stack)}{version:010d}.json"

    def _keep_before(self, stack: str, version: int, body: bytes) -> tuple[str, str]:
        """Write history object ``version`` if no object has that name yet.

        Returns (key, ETag), the ETag empty if the name was taken: by a writer killed
        between this step and its state write, whose object is replaced once this
        write has landed.
        """
        key = self._version_key(stack, version)
        response, code = self._call(
            "s3:PutObject",
            f"keep version {version} of stack {stack!r}",
            self._s3().put_object,
            allow=_CONFLICT,
            Bucket=self.bucket,
            Key=key,
            Body=body,
            IfNoneMatch="*",
        )
        return key, "" if code else str(response.get("ETag", ""))

    def _put_history(self, key: str, body: bytes, stack: str) -> None:
        self._call(
            "s3:PutObject",
            f"keep a version of stack {stack!r}",
            self._s3().put_object,
            Bucket=self.bucket,
            Key=key,
            Body=body,
        )

    def _prune(self, stack: str, version: int) -> None:
        oldest_kept = version - self.history_size + 1
        old = [
            {"Key": item["Key"]}
            for item in self._list(self._history_prefix(stack), f"prune stack {stack!r}")
            if (_version_from_key(str(item["Key"])) or 0) < oldest_kept
        ]
        self._delete_many(old, stack)

    def _delete_many(self, objects: list[dict[str, Any]], stack: str) -> None:
        for start in range(0, len(objects), 1000):
            self._call(
                "s3:DeleteObject",
                f"remove old versions of stack {stack!r}",
                self._s3().delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": objects[start : start + 1000], "Quiet": True},
            )

    def delete(self, stack: str) -> None:
        what = f"delete stack {stack!r}"
        with self._writing(stack) as lock:
            if lock.etag is None:
                etag, _, _ = self._head_state(stack)
                if etag is None:
                    raise StackNotFoundError(f"no stack {stack!r} in {self.url}")
                raise self._changed_error(stack)
            _, code = self._call(
                "s3:DeleteObject",
                what,
                self._s3().delete_object,
                allow=_CONFLICT + _MISSING,
                Bucket=self.bucket,
                Key=self._state_key(stack),
                IfMatch=lock.etag,
            )
            if code in _MISSING:
                raise StackNotFoundError(f"no stack {stack!r} in {self.url}")
            if code:
                raise self._changed_error(stack)
            lock.etag, lock.version = None, 0
            old = [{"Key": i["Key"]} for i in self._list(self._history_prefix(stack), what)]
            self._delete_many(old, stack)

    # --- history ------------------------------------------------------------------------

    def _kept_range(self, stack: str) -> tuple[int, int]:
        """The versions that may be read: (oldest, newest); (1, 0) if none."""
        etag, version, _ = self._head_state(stack, check_bucket=True)
        if etag is None or not self.history_size:
            return 1, 0
        return max(1, version - self.history_size + 1), version

    def history(self, stack: str) -> list[HistoryEntry]:
        oldest, newest = self._kept_range(stack)
        if newest < oldest:
            return []
        out = []
        for item in self._list(self._history_prefix(stack), f"list versions of {stack!r}"):
            version = _version_from_key(str(item["Key"]))
            if version is None or not oldest <= version <= newest:
                continue
            when = item["LastModified"]
            if isinstance(when, _dt.datetime):
                when = when.astimezone(_dt.timezone.utc).isoformat(timespec="milliseconds")
            out.append(
                HistoryEntry(stack=stack, version=version, time=str(when), size=int(item["Size"]))
            )
        return sorted(out, key=lambda e: e.version, reverse=True)

    def read_version(self, stack: str, version: int) -> bytes:
        if isinstance(version, bool) or not isinstance(version, int):
            raise StateError(f"a version is an int from history(), not {version!r}")
        oldest, newest = self._kept_range(stack)
        found = None
        if oldest <= version <= newest:
            found = self._get(
                self._version_key(stack, version),
                "s3:GetObject",
                f"read version {version} of stack {stack!r}",
            )
        if found is None:
            raise StackNotFoundError(
                f"version {version} of stack {stack!r} is not kept in {self.url}; "
                "see history() for the kept versions"
            )
        return found[0]


class _Writing:
    """The lock one write goes through: the held one, or a short one of its own."""

    def __init__(self, lock: _S3StackLock, short: _S3StackLock | None) -> None:
        self.lock = lock
        self._short = short

    def __enter__(self) -> _S3StackLock:
        return self.lock

    def __exit__(self, *exc: object) -> None:
        if self._short is not None:
            self._short.release()


def _version_of(response: Any) -> int:
    raw = (response.get("Metadata") or {}).get(_VERSION_META, "0")
    try:
        return max(0, int(raw))
    except ValueError:
        return 0


def _version_from_key(key: str) -> int | None:
    name = key.rsplit("/", 1)[-1]
    if name.endswith(".json") and name[:-5].isdigit():
        return int(name[:-5])
    return None
