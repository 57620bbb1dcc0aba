"""Where state documents live: the :class:`StateStore` interface and :class:`FileStore`.

A store moves opaque bytes per stack name; it never parses a document. Everything a
store promises is in :class:`StateStore`: atomic writes, one writer per stack at a time
(:meth:`StateStore.lock`), and the last few versions kept as history. A store for S3 or
a database implements the same few methods.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as _dt
import getpass
import glob
import json
import os
import re
import secrets
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

from .._files import create_new, fsync_dir, write_atomic
from ..errors import (
    InvalidStackNameError,
    StackNotFoundError,
    StateError,
    StateLockedError,
    StoreAccessError,
)

__all__ = [
    "DEFAULT_HISTORY_SIZE",
    "DEFAULT_STATE_URL",
    "STORE_ENTRY_POINT_GROUP",
    "FileStore",
    "HeldLock",
    "HistoryEntry",
    "LockInfo",
    "StackLock",
    "StateStore",
    "known_store_schemes",
    "register_store_scheme",
    "store_from_url",
    "validate_stack_name",
]

DEFAULT_STATE_URL = "file://./.veil"
"""The store used when none is configured: a ``.veil`` folder in the current directory."""

DEFAULT_HISTORY_SIZE = 10
"""How many versions of each stack a store keeps by default (the current one included)."""

_STACK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def validate_stack_name(stack: object) -> str:
    """Return ``stack`` if it is a valid stack name, else raise :class:`InvalidStackNameError`.

    A valid name is 1 to 100 characters from ``A-Z a-z 0-9 . _ -`` and starts with a
    letter or digit, so it is safe as a file name and as an object-store key: no path
    separators, no ``..``, no hidden files.
    """
    if not isinstance(stack, str):
        raise InvalidStackNameError(f"a stack name must be a str, not {type(stack).__name__}")
    if not _STACK_NAME.fullmatch(stack):
        shown = stack if len(stack) <= 120 else stack[:120] + "..."
        raise InvalidStackNameError(
            f"invalid stack name {shown!r}: use 1 to 100 characters from A-Z a-z 0-9 . _ - "
            "starting with a letter or digit (no '/', no '..')"
        )
    return stack


class LockInfo(NamedTuple):
    """Who holds a stack's lock: what a :class:`StateLockedError` message reports."""

    owner: str
    host: str
    pid: int
    time: str  # ISO 8601, UTC
    token: str = ""  # tells two holders apart

    def __repr__(self) -> str:
        return (
            f"LockInfo(owner={self.owner!r}, host={self.host!r}, pid={self.pid!r}, "
            f"time={self.time!r})"
        )

    def describe(self) -> str:
        """A one-line human description of the holder."""
        return f"{self.owner} on host {self.host} (pid {self.pid}) since {self.time}"

    def to_json(self) -> bytes:
        return json.dumps(
            {
                "owner": self.owner,
                "host": self.host,
                "pid": self.pid,
                "time": self.time,
                "token": self.token,
            },
            sort_keys=True,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> LockInfo | None:
        """Parse a lock record; None if it is not one (for example half written)."""
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None
        if not isinstance(raw, dict):
            return None
        owner, host, pid, time = (raw.get(k) for k in ("owner", "host", "pid", "time"))
        token = raw.get("token", "")
        if not (
            isinstance(owner, str)
            and isinstance(host, str)
            and isinstance(pid, int)
            and not isinstance(pid, bool)
            and isinstance(time, str)
            and isinstance(token, str)
        ):
            return None
        return cls(owner=owner, host=host, pid=pid, time=time, token=token)

    @classmethod
    def current(cls, owner: str | None = None) -> LockInfo:
        """A record for this process, now."""
        return cls(
            owner=owner if owner is not None else _default_owner(),
            host=_hostname(),
            pid=os.getpid(),
            time=_now(),
            token=secrets.token_hex(16),
        )


class HistoryEntry(NamedTuple):
    """One kept version of a stack. ``version`` grows by one on every write."""

    stack: str
    version: int
    time: str  # ISO 8601, UTC, when it was written
    size: int


class StackLock(abc.ABC):
    """A held lock on one stack. Release it with :meth:`release` or a ``with`` block.

    While it is held, writes to the stack through the store that made it succeed and
    every other writer (another store object, thread or process) gets
    :class:`StateLockedError`.
    """

    stack: str
    info: LockInfo

    @property
    @abc.abstractmethod
    def held(self) -> bool:
        """Whether this object still holds the lock (False after :meth:`release`)."""

    @abc.abstractmethod
    def release(self) -> None:
        """Give the lock up. Calling it again does nothing."""

    # The context-manager protocol as Stack's: each releases its own resource.
    def __enter__(self) -> StackLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


# The stores (this file's FileStore and s3, gcs, azblob, postgres) share the shape of
# lock(), the "already locked by this store object" and "written by another writer"
# messages and their URL parsing, by design: each keeps the same contract with its own
# service's primitives (rename, If-Match, generations, ETags, a version column), and a
# shared template would hide the one line per store that makes it correct. What is the
# same code, not just the same shape, lives here (HeldLock, LockInfo, validate_stack_name).
class HeldLock(StackLock):
    """The lock a store hands out: held until :meth:`release`, which calls the store's
    ``release`` function once. Stores subclass it to keep what their compare-and-swap
    needs (an ETag, a generation, a row version); users' own stores may too."""

    def __init__(self, stack: str, info: LockInfo, release: Callable[[Any], None]) -> None:
        self.stack = stack
        self.info = info
        self._release = release
        self._held = True

    @property
    def held(self) -> bool:
        return self._held

    def release(self) -> None:
        if not self._held:
            return
        self._held = False
        self._release(self)

    def __repr__(self) -> str:
        return f"<StackLock {self.stack!r} held={self._held}>"


class StateStore(abc.ABC):
    """Stores the bytes of each stack's state document.

    Implementations promise:

    - :meth:`write` is atomic: a reader (or a crash) sees the old bytes or the new ones.
    - :meth:`lock` gives one writer a stack at a time; :meth:`write` and :meth:`delete`
      outside a held lock take the lock for their own duration, so a conflicting writer
      always gets :class:`StateLockedError` naming the holder.
    - :meth:`history` lists the kept versions, newest first; the current one is first.
    - Stack names are checked with :func:`validate_stack_name`
      (:class:`InvalidStackNameError`).
    """

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """A URL that :func:`store_from_url` accepts for this store."""

    @abc.abstractmethod
    def read(self, stack: str) -> bytes:
        """The current bytes of ``stack``; :class:`StackNotFoundError` if there are none."""

    @abc.abstractmethod
    def write(self, stack: str, data: bytes) -> None:
        """Replace the bytes of ``stack`` atomically, creating it if needed."""

    @abc.abstractmethod
    def exists(self, stack: str) -> bool:
        """Whether ``stack`` has been written and not deleted."""

    @abc.abstractmethod
    def list_stacks(self) -> list[str]:
        """The names of all stacks, sorted."""

    @abc.abstractmethod
    def delete(self, stack: str) -> None:
        """Remove ``stack`` and its history; :class:`StackNotFoundError` if missing."""

    @abc.abstractmethod
    def lock(self, stack: str, *, owner: str | None = None) -> StackLock:
        """Take the write lock of ``stack`` or raise :class:`StateLockedError`.

        ``owner`` names the holder in other writers' errors (default: the user name).
        """

    @abc.abstractmethod
    def lock_info(self, stack: str) -> LockInfo | None:
        """Who holds the lock of ``stack`` now, or None."""

    @abc.abstractmethod
    def break_lock(self, stack: str) -> LockInfo | None:
        """Remove the lock of ``stack`` whoever holds it; return the removed holder.

        For a lock left by a crashed process on another host. The holder's next
        write fails with :class:`StateLockedError` instead of overwriting.
        """

    @abc.abstractmethod
    def history(self, stack: str) -> list[HistoryEntry]:
        """The kept versions of ``stack``, newest (current) first."""

    @abc.abstractmethod
    def read_version(self, stack: str, version: int) -> bytes:
        """The bytes of one kept version; :class:`StackNotFoundError` if not kept."""


# --- the file store ------------------------------------------------------------------


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _default_owner() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in this environment (containers)
        return "unknown"


def _hostname() -> str:
    import socket  # here: only locks need it, and it costs at import time

    return socket.gethostname()


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; no such pid at all
        return False
    except PermissionError:  # exists, owned by another user
        return True
    except OSError:
        return True
    return True


@contextlib.contextmanager
def _os_errors(action: str, where: Path) -> Iterator[None]:
    """Turn an ``OSError`` (no space, permission denied, not a folder) into a
    :class:`StoreAccessError` naming what failed and where."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
    else:
        return
    raise StoreAccessError(
        f"cannot {action} in the state folder {where}: {reason}. Check that the folder "
        "exists, is writable by this user and that the disk is not full."
    )


class _FileStackLock(HeldLock):
    def __init__(self, store: FileStore, stack: str, info: LockInfo) -> None:
        super().__init__(stack, info, store._release)


class FileStore(StateStore):
    """Stacks as files in a local folder.

    Layout under ``root``: ``stacks/<stack>.json`` (current state, mode 0600),
    ``locks/<stack>.lock`` (JSON holder record, created with ``O_CREAT|O_EXCL``),
    ``history/<stack>/<version>.json`` (the last ``history_size`` versions). Folders
    are created with mode 0700.

    A lock whose holder process is dead on this same host is taken over
    automatically; a lock from another host must be broken with :meth:`break_lock`.
    """

    def __init__(self, root: str | os.PathLike[str], *, history_size: int = DEFAULT_HISTORY_SIZE):
        if history_size < 0:
            raise StateError(f"history_size must be >= 0, not {history_size}")
        self.root = Path(root).expanduser().absolute()
        self.history_size = history_size
        self._held: dict[str, _FileStackLock] = {}
        self._mutex = threading.RLock()

    def __repr__(self) -> str:
        return f"FileStore({str(self.root)!r}, history_size={self.history_size})"

    @property
    def url(self) -> str:
        import urllib.parse  # here: only URLs need it, and it costs at import time

        url = "file://" + urllib.parse.quote(str(self.root), safe="/~")
        if self.history_size != DEFAULT_HISTORY_SIZE:
            url += f"?history={self.history_size}"
        return url

    # paths

    def _state_path(self, stack: str) -> Path:
        return self.root / "stacks" / f"{validate_stack_name(stack)}.json"

    def _lock_path(self, stack: str) -> Path:
        return self.root / "locks" / f"{validate_stack_name(stack)}.lock"

    def _history_dir(self, stack: str) -> Path:
        return self.root / "history" / validate_stack_name(stack)

    def _ensure_dir(self, path: Path) -> None:
        # Only new folders get 0700 (parents too): a user's own existing folder stays
        # as they made it.
        if path.is_dir():
            return
        missing = []
        while not path.exists():
            missing.append(path)
            path = path.parent
        for folder in reversed(missing):
            with contextlib.suppress(FileExistsError):
                folder.mkdir(mode=0o700)

    # reading

    def read(self, stack: str) -> bytes:
        path = self._state_path(stack)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StackNotFoundError(
                f"no stack {stack!r} in {self.url}; known stacks: "
                f"{', '.join(self.list_stacks()) or '(none)'}"
            ) from None
        except OSError as exc:
            raise StateError(
                f"cannot read the state of stack {stack!r} at {path}: "
                f"{exc.strerror or type(exc).__name__}"
            ) from None

    def exists(self, stack: str) -> bool:
        return self._state_path(stack).is_file()

    def list_stacks(self) -> list[str]:
        folder = self.root / "stacks"
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if name.endswith(".json") and _STACK_NAME.fullmatch(name[:-5]):
                out.append(name[:-5])
        return sorted(out)

    # locking

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
            with _os_errors(f"take the lock of stack {stack!r}", self.root):
                self._acquire(stack, info)
            lock = _FileStackLock(self, stack, info)
            self._held[stack] = lock
            return lock

    def _acquire(self, stack: str, info: LockInfo) -> None:
        path = self._lock_path(stack)
        self._ensure_dir(path.parent)
        # Three tries at most: a stale lock taken over, or an empty record removed,
        # leads to one more try each.
        for _ in range(3):
            if create_new(path, info.to_json()):
                self._remove_old_lock_leftovers(path)
                return
            holder = self._read_lock(path)
            if holder is None:
                # Being written right now, or an empty record from a crash mid-write.
                holder = self._wait_for_record(path)
                if holder is None:
                    continue
            if holder.host == _hostname() and not _pid_alive(holder.pid):
                self._take_over_stale(path, holder)
                continue
            raise self._locked_error(stack, holder)
        holder = self._read_lock(path)
        if holder is not None:
            raise self._locked_error(stack, holder)
        raise StateLockedError(f"could not take the lock of stack {stack!r} (contended); try again")

    @staticmethod
    def _remove_old_lock_leftovers(path: Path) -> None:
        # Records of takers killed between writing and linking; a live one is
        # younger than a second.
        import time

        for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                if time.time() - leftover.stat().st_mtime > 60:
                    leftover.unlink()

    def _locked_error(self, stack: str, holder: LockInfo) -> StateLockedError:
        return StateLockedError(
            f"stack {stack!r} is locked by {holder.describe()}. "
            "Wait for that run to finish. If it crashed on another host, break the lock "
            f"with FileStore({str(self.root)!r}).break_lock({stack!r}) "
            f"(or delete {self._lock_path(stack)})."
        )

    @staticmethod
    def _read_lock(path: Path) -> LockInfo | None:
        try:
            return LockInfo.from_json(path.read_bytes())
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(
                f"cannot read the lock file {path}: {exc.strerror or type(exc).__name__}; "
                "if it is not a file, remove it"
            ) from None

    def _wait_for_record(self, path: Path) -> LockInfo | None:
        """A lock file without a valid record: give its writer a moment, then judge it.

        A record is written right after the file is created; one that stays empty or
        unreadable comes from a crash between the two and is removed.
        """
        import time

        for _ in range(20):
            time.sleep(0.005)
            if not path.exists():
                return None
            info = self._read_lock(path)
            if info is not None:
                return info
        with contextlib.suppress(FileNotFoundError):
            age = time.time() - path.stat().st_mtime
            if age > 0.1:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        return None

    def _take_over_stale(self, path: Path, stale: LockInfo) -> None:
        """Remove ``stale`` from ``path`` unless someone else replaced it meanwhile.

        A second lock file (``.break``) serialises takers-over, so that one of them
        cannot remove the fresh lock another has just created.
        """
        guard = path.with_name(path.name + ".break")
        me = LockInfo.current("takeover")
        if not create_new(guard, me.to_json()):
            holder = self._read_lock(guard)
            if holder is not None and holder.host == me.host and not _pid_alive(holder.pid):
                with contextlib.suppress(FileNotFoundError):
                    guard.unlink()
            return  # another process is taking it over; the caller retries
        try:
            current = self._read_lock(path)
            if current is not None and current.token == stale.token:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
        finally:
            with contextlib.suppress(FileNotFoundError):
                guard.unlink()

    def _release(self, lock: _FileStackLock) -> None:
        with self._mutex:
            if self._held.get(lock.stack) is lock:
                del self._held[lock.stack]
        path = self._lock_path(lock.stack)
        current = self._read_lock(path)
        # Only remove our own record: the lock may have been broken and retaken.
        if current is not None and current.token == lock.info.token:
            with (
                _os_errors(f"release the lock of stack {lock.stack!r}", self.root),
                contextlib.suppress(FileNotFoundError),
            ):
                path.unlink()

    def lock_info(self, stack: str) -> LockInfo | None:
        return self._read_lock(self._lock_path(stack))

    def break_lock(self, stack: str) -> LockInfo | None:
        path = self._lock_path(stack)
        info = self._read_lock(path)
        with _os_errors(f"break the lock of stack {stack!r}", self.root):
            try:
                path.unlink()
            except FileNotFoundError:
                return None
        return info

    @contextlib.contextmanager
    def _writing(self, stack: str) -> Iterator[None]:
        """Hold the stack's lock for one operation: ours if held, else a short one."""
        with self._mutex:
            held = self._held.get(stack)
        if held is not None:
            current = self._read_lock(self._lock_path(stack))
            if current is None or current.token != held.info.token:
                who = f"; it is now held by {current.describe()}" if current else ""
                raise StateLockedError(
                    f"the lock of stack {stack!r} was broken while this process held it"
                    f"{who}. Nothing was written; reopen the stack and retry."
                )
            yield
            return
        with self.lock(stack):
            yield

    # writing

    def write(self, stack: str, data: bytes) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StateError(f"state data must be bytes, not {type(data).__name__}")
        path = self._state_path(stack)
        data = bytes(data)
        with self._writing(stack), _os_errors(f"write stack {stack!r}", self.root):
            self._ensure_dir(path.parent)
            self._remove_leftovers(path)
            write_atomic(path, data)
            if self.history_size:
                self._record_history(stack, data)

    @staticmethod
    def _remove_leftovers(path: Path) -> None:
        """Remove temporary files of writers killed mid-write (SIGKILL, power loss).

        Called under the stack's lock, so no live writer owns one of them.
        """
        for leftover in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()

    def _record_history(self, stack: str, data: bytes) -> None:
        folder = self._history_dir(stack)
        self._ensure_dir(folder)
        versions = self._versions(folder)
        target = folder / f"{(versions[-1] + 1) if versions else 1:010d}.json"
        # A copy of its own, never a hard link: the live file and a kept version share
        # no storage, so whatever happens to one cannot change the other.
        write_atomic(target, data)
        versions.append(int(target.stem))
        for old in versions[: -self.history_size]:
            with contextlib.suppress(FileNotFoundError):
                (folder / f"{old:010d}.json").unlink()

    @staticmethod
    def _versions(folder: Path) -> list[int]:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        return sorted(int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit())

    def delete(self, stack: str) -> None:
        path = self._state_path(stack)
        with self._writing(stack):
            with _os_errors(f"delete stack {stack!r}", self.root):
                try:
                    path.unlink()
                except FileNotFoundError:
                    missing = True
                else:
                    missing = False
                    fsync_dir(path.parent)
                    shutil.rmtree(self._history_dir(stack), ignore_errors=True)
            if missing:
                raise StackNotFoundError(f"no stack {stack!r} in {self.url}")

    # history

    def history(self, stack: str) -> list[HistoryEntry]:
        folder = self._history_dir(stack)
        out = []
        for v in reversed(self._versions(folder)):
            try:
                st = (folder / f"{v:010d}.json").stat()
            except FileNotFoundError:  # pruned meanwhile
                continue
            when = _dt.datetime.fromtimestamp(st.st_mtime, _dt.timezone.utc)
            out.append(
                HistoryEntry(
                    stack=stack,
                    version=v,
                    time=when.isoformat(timespec="milliseconds"),
                    size=st.st_size,
                )
            )
        return out

    def read_version(self, stack: str, version: int) -> bytes:
        if isinstance(version, bool) or not isinstance(version, int):
            raise StateError(f"a version is an int from history(), not {version!r}")
        path = self._history_dir(stack) / f"{version:010d}.json"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise StackNotFoundError(
                f"version {version} of stack {stack!r} is not kept in {self.url}; "
                "see history() for the kept versions"
            ) from None


# --- URLs ----------------------------------------------------------------------------

_SCHEMES: dict[str, Callable[[str], StateStore]] = {}


def register_store_scheme(scheme: str, factory: Callable[[str], StateStore]) -> None:
    """Make :func:`store_from_url` build stores for ``scheme://...`` URLs with ``factory``."""
    _SCHEMES[scheme] = factory


def _file_store_from_url(url: str) -> StateStore:
    import urllib.parse  # here: only URLs need it, and it costs at import time

    parsed = urllib.parse.urlsplit(url)
    # "file://./x" and "file://x" put "." or "x" in netloc: keep it as part of the path.
    raw = urllib.parse.unquote(parsed.netloc + parsed.path)
    if not raw:
        raise StateError(f"state URL {url!r} names no folder; for example file://./.veil")
    if "\x00" in raw:
        raise StateError(f"state URL {url!r} holds a NUL character, which no path can")
    params = urllib.parse.parse_qs(parsed.query)
    history = DEFAULT_HISTORY_SIZE
    for key, values in params.items():
        if key != "history":
            raise StateError(f"unknown parameter {key!r} in state URL {url!r}; known: history")
        try:
            history = int(values[-1])
        except ValueError:
            raise StateError(f"history= in {url!r} must be a whole number") from None
    return FileStore(Path(raw), history_size=history)


register_store_scheme("file", _file_store_from_url)


STORE_ENTRY_POINT_GROUP = "veil.state_stores"
"""Entry-point group of third-party stores: name = URL scheme, value = ``"module:factory"``
where ``factory(url) -> StateStore`` (a :class:`StateStore` subclass with a ``from_url``
classmethod works too)."""

# Built-in stores whose client library is an optional extra: imported on first use, so
# ``import veil`` imports no cloud SDK. Each class has a ``from_url(url)`` classmethod.
_BUILTIN_STORES: dict[str, str] = {
    "s3": "veil.state.s3:S3Store",
    "postgres": "veil.state.postgres:PostgresStore",
    "postgresql": "veil.state.postgres:PostgresStore",
    "gs": "veil.state.gcs:GcsStore",
    "azblob": "veil.state.azblob:AzureBlobStore",
}


def _load_factory(target: str, where: str) -> Callable[[str], StateStore]:
    import importlib

    module_name, _, attr = target.partition(":")
    obj: object = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if isinstance(obj, type) and issubclass(obj, StateStore):
        from_url = getattr(obj, "from_url", None)
        if not callable(from_url):
            raise StateError(f"{where}: {obj.__name__} has no from_url(url) classmethod")
        return from_url  # type: ignore[no-any-return]
    if not callable(obj):
        raise StateError(f"{where} is neither a StateStore subclass nor a callable")
    return obj


def _entry_point_factory(scheme: str) -> Callable[[str], StateStore] | None:
    from importlib import metadata  # costs at import time; only unknown schemes need it

    for ep in metadata.entry_points(group=STORE_ENTRY_POINT_GROUP):
        if ep.name.lower() == scheme:
            where = f"entry point '{ep.name} = {ep.value}' (group {STORE_ENTRY_POINT_GROUP})"
            try:
                return _load_factory(ep.value, where)
            except StateError:
                raise
            except Exception as exc:
                raise StateError(f"cannot load {where}: {type(exc).__name__}: {exc}") from None
    return None


def known_store_schemes() -> list[str]:
    """Every scheme :func:`store_from_url` accepts, sorted."""
    from importlib import metadata

    names = set(_SCHEMES) | set(_BUILTIN_STORES)
    names.update(ep.name.lower() for ep in metadata.entry_points(group=STORE_ENTRY_POINT_GROUP))
    return sorted(names)


def store_from_url(url: str = DEFAULT_STATE_URL) -> StateStore:
    """The store a URL names.

    ``file://PATH`` is a :class:`FileStore`; a relative PATH (``file://./.veil``,
    ``file://state``) is taken relative to the current directory, ``file:///abs``
    is absolute, ``~`` is expanded. ``?history=N`` sets how many versions are kept.
    A plain path without a scheme means ``file://`` too. ``s3://``, ``postgres://``,
    ``gs://`` and ``azblob://`` need their extras (``pip install 'veil[aws]'``, ...);
    other schemes come from :func:`register_store_scheme` or the ``veil.state_stores``
    entry-point group.
    """
    if not isinstance(url, str):
        raise StateError(f"a state URL is a str such as 'file://./.veil', not {type(url).__name__}")
    if "://" not in url:
        return _file_store_from_url("file://" + url)
    scheme = url.split("://", 1)[0].lower()
    factory = _SCHEMES.get(scheme)
    if factory is None and scheme in _BUILTIN_STORES:
        factory = _load_factory(_BUILTIN_STORES[scheme], f"the built-in store for {scheme}://")
    if factory is None:
        factory = _entry_point_factory(scheme)
    if factory is None:
        raise StateError(
            f"no state store for URL scheme {scheme!r}; known: "
            f"{', '.join(known_store_schemes())}. Third-party stores register under the "
            f"entry-point group '{STORE_ENTRY_POINT_GROUP}'."
        )
    return factory(url)
