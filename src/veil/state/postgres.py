"""`postgres://USER[:PASS]@HOST[:PORT]/DB[?table=T&history=N]`: stacks in PostgreSQL.

Needs the optional extra ``veil[postgres]`` (psycopg 3). Also ``postgresql://``. What
the URL leaves out comes from libpq's usual sources: ``PGHOST``, ``PGPORT``,
``PGUSER``, ``PGPASSWORD``, ``PGDATABASE``, ``~/.pgpass``, ``PGSSLMODE``, ... libpq
settings may be given as query parameters too (``sslmode``, ``sslrootcert``,
``sslcert``, ``sslkey``, ``application_name``, ``connect_timeout``, ``host`` for a
Unix socket folder).

Three tables, named after ``table`` (default ``veil_state``), created on first use
when missing:

- ``T`` (stack, data, version, updated_at): the current state of each stack; ``version``
  counts the writes.
- ``T_history`` (stack, version, data, written_at): the last ``history`` versions, the
  current one included, in rows of their own.
- ``T_locks`` (stack, token, info, acquired_at): one row per locked stack, inserted
  only if absent; ``info`` is the holder's :class:`~veil.state.store.LockInfo` record.

A save is one transaction: it checks that the lock row is still this writer's, updates
the state row on the condition that its version is the one the writer saw when it took
the lock (a compare-and-swap: a writer whose lock was broken writes nothing), inserts
the history row and prunes old ones. A reader sees the old state or the new one.
"""

from __future__ import annotations

import datetime as _dt
import re
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Final, NoReturn, TypeVar
from urllib.parse import parse_qsl, quote, unquote, urlsplit

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

try:
    import psycopg
    from psycopg import sql

    _HAVE_PSYCOPG = True
except ImportError:  # pragma: no cover - exercised only without the extra
    _HAVE_PSYCOPG = False

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["PostgresStore"]

DEFAULT_TABLE: Final = "veil_state"
CONNECT_TIMEOUT: Final = 10
"""Seconds to connect; with the statement and lock timeouts below, an unreachable or
stuck server fails in < 30 s."""
STATEMENT_TIMEOUT_MS: Final = 15_000
LOCK_TIMEOUT_MS: Final = 10_000

_MISSING: Final = "the postgres:// state store needs psycopg: pip install 'veil[postgres]'"
_TABLE_NAME = re.compile(r"(?:([a-z_][a-z0-9_]{0,62})\.)?([a-z_][a-z0-9_]{0,50})")
_LIBPQ_PARAMS: Final = frozenset(
    {
        "sslmode",
        "sslrootcert",
        "sslcert",
        "sslkey",
        "application_name",
        "connect_timeout",
        "host",
        "target_session_attrs",
    }
)

_T = TypeVar("_T")


def _require_psycopg() -> None:
    if not _HAVE_PSYCOPG:
        raise StateError(_MISSING)


def _iso(when: _dt.datetime) -> str:
    return when.astimezone(_dt.timezone.utc).isoformat(timespec="milliseconds")


def _public_url(params: dict[str, Any], table: str, history: int) -> str:
    """A ``postgres://`` URL for connection parameters, without the password."""
    user, host = str(params.get("user") or ""), str(params.get("host") or "")
    port, dbname = str(params.get("port") or ""), str(params.get("dbname") or "")
    netloc = quote(user, safe="") + "@" if user else ""
    query = [(k, str(params[k])) for k in sorted(_LIBPQ_PARAMS - {"host"}) if params.get(k)]
    if host.startswith("/") or "," in host:  # a Unix socket folder, or several hosts
        query.insert(0, ("host", host))
    elif host:
        netloc += f"[{host}]" if ":" in host else quote(host, safe="")
    if port:
        netloc += f":{port}"
    if table != DEFAULT_TABLE:
        query.append(("table", table))
    if history != DEFAULT_HISTORY_SIZE:
        query.append(("history", str(history)))
    url = f"postgres://{netloc}/{quote(dbname, safe='')}"
    if query:
        url += "?" + "&".join(f"{k}={quote(v, safe='/')}" for k, v in query)
    return url


class _PostgresStackLock(HeldLock):
    def __init__(self, store: PostgresStore, stack: str, info: LockInfo, version: int) -> None:
        super().__init__(stack, info, store._release)
        self.version = version  # the state row's version this holder last saw or wrote


class PostgresStore(StateStore):
    """Stacks in three PostgreSQL tables (see the module docstring).

    ``conninfo`` is a libpq connection string or URL (it may hold a password; it is
    never shown: :attr:`url` and ``repr`` leave it out). ``table`` names the state
    table (``name`` or ``schema.name``); ``history_size`` how many versions are kept
    (0: none).
    """

    def __init__(
        self,
        conninfo: str,
        *,
        table: str = DEFAULT_TABLE,
        history_size: int = DEFAULT_HISTORY_SIZE,
    ) -> None:
        _require_psycopg()
        if isinstance(history_size, bool) or not isinstance(history_size, int) or history_size < 0:
            raise StateError(f"history_size must be a whole number >= 0, not {history_size!r}")
        match = _TABLE_NAME.fullmatch(table) if isinstance(table, str) else None
        if match is None:
            raise StateError(
                f"table={table!r} is not a table name: use lower-case letters, digits and _ "
                "(optionally schema.name), starting with a letter or _"
            )
        self._conninfo = conninfo
        self._schema, self._table = match.group(1), match.group(2)
        self.table = table
        self.history_size = history_size
        try:
            params = psycopg.conninfo.conninfo_to_dict(conninfo)
        except psycopg.Error:
            raise StateError("not a libpq connection string or postgres:// URL") from None
        self._public_url = _public_url(params, table, history_size)
        self._conn: Any = None
        self._ready = False
        self._mutex = threading.RLock()
        self._held: dict[str, _PostgresStackLock] = {}

    # --- URLs -------------------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str) -> Self:
        """``postgres://USER[:PASS]@HOST[:PORT]/DB[?table=T&history=N&sslmode=...]``."""
        _require_psycopg()
        parts = urlsplit(url)
        if parts.scheme.lower() not in ("postgres", "postgresql"):
            raise StateError(f"PostgresStore takes postgres:// or postgresql:// URLs, not {url!r}")
        table, history = DEFAULT_TABLE, DEFAULT_HISTORY_SIZE
        libpq: list[tuple[str, str]] = []
        for key, value in parse_qsl(parts.query, keep_blank_values=True):
            if key == "table":
                table = value
            elif key == "history":
                if not value.isascii() or not value.isdigit():
                    raise StateError("history= in a postgres:// URL must be a whole number >= 0")
                history = int(value)
            elif key in _LIBPQ_PARAMS:
                libpq.append((key, value))
            else:
                raise StateError(
                    f"unknown parameter {key!r} in a postgres:// URL; known: table, history, "
                    + ", ".join(sorted(_LIBPQ_PARAMS))
                )
        try:
            port = parts.port
        except ValueError:
            raise StateError("the port in a postgres:// URL must be a number") from None
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password is not None else None
        host = unquote(parts.hostname or "")
        dbname = unquote(parts.path.lstrip("/"))
        params: dict[str, Any] = {}
        if host:
            params["host"] = host
        if port:
            params["port"] = str(port)
        if user:
            params["user"] = user
        if password is not None:
            params["password"] = password
        if dbname:
            params["dbname"] = dbname
        params.update(libpq)
        return cls(psycopg.conninfo.make_conninfo(**params), table=table, history_size=history)

    @property
    def url(self) -> str:
        """This store's URL without the password (libpq finds it in ``PGPASSWORD`` or
        ``~/.pgpass``)."""
        return self._public_url

    def __repr__(self) -> str:
        return f"PostgresStore({self._public_url!r})"

    def __reduce__(self) -> NoReturn:
        raise SecretPickleError(
            "a PostgresStore may hold a database password and is not pickled; rebuild it "
            "with store_from_url in the other process"
        )

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        self.__reduce__()

    def close(self) -> None:
        """Close the database connection (a later call opens a new one)."""
        with self._mutex:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # --- the connection ---------------------------------------------------------------

    def _ident(self, suffix: str = "") -> Any:
        name = self._table + suffix
        if self._schema:
            return sql.Identifier(self._schema, name)
        return sql.Identifier(name)

    def _connection(self) -> Any:
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self._conn = None
        failure: tuple[str, str] | None = None
        try:
            given = psycopg.conninfo.conninfo_to_dict(self._conninfo)
            self._conn = psycopg.connect(
                self._conninfo,
                connect_timeout=given.get("connect_timeout", CONNECT_TIMEOUT),
                options=(
                    f"-c statement_timeout={STATEMENT_TIMEOUT_MS} "
                    f"-c lock_timeout={LOCK_TIMEOUT_MS} "
                    "-c idle_in_transaction_session_timeout=60000"
                ),
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=3,
                tcp_user_timeout=20_000,
                application_name="veil",
                autocommit=True,  # every statement runs in an explicit transaction block
            )
        except psycopg.Error as exc:
            failure = (getattr(exc, "sqlstate", None) or "", str(exc))
        if failure is not None:
            self._connect_failed(*failure)
        return self._conn

    def _connect_failed(self, sqlstate: str, text: str) -> NoReturn:
        where = self._public_url
        lowered = text.lower()
        if sqlstate in ("28P01", "28000") or "password authentication failed" in lowered:
            raise StoreAccessError(
                f"PostgreSQL at {where} refused the login: check the user name and the "
                "password (in the URL, PGPASSWORD or ~/.pgpass)"
            )
        if "no password supplied" in lowered:
            raise StoreAccessError(
                f"PostgreSQL at {where} asks for a password and none was given: set "
                "PGPASSWORD, add it to ~/.pgpass, or put it in the URL"
            )
        if sqlstate == "3D000" or ("database" in lowered and "does not exist" in lowered):
            raise StoreAccessError(
                f"the database named in {where} does not exist: create it "
                "(CREATE DATABASE ...; or createdb) or fix the URL"
            )
        if sqlstate == "42501" or "permission denied for database" in lowered:
            raise StoreAccessError(
                f"the user of {where} may not connect to its database: "
                "GRANT CONNECT ON DATABASE ... TO ..."
            )
        if "role" in lowered and "does not exist" in lowered:
            raise StoreAccessError(f"the user named in {where} does not exist on the server")
        if "timeout" in lowered or "timed out" in lowered:
            raise StoreUnavailableError(
                f"PostgreSQL at {where} did not answer in time; check the host, the port "
                "and the network"
            )
        reason = "connection refused" if "refused" in lowered else "cannot connect"
        raise StoreUnavailableError(
            f"PostgreSQL at {where} is unreachable ({reason}); check the host and port "
            "(or PGHOST/PGPORT) and that the server is running"
        )

    def _tables_missing(self, conn: Any) -> bool:
        names = [self._qualified(s) for s in ("", "_history", "_locks")]
        row = conn.execute(
            "SELECT to_regclass(%s) IS NULL OR to_regclass(%s) IS NULL OR to_regclass(%s) IS NULL",
            names,
        ).fetchone()
        return bool(row[0])

    def _qualified(self, suffix: str) -> str:
        name = '"' + self._table + suffix + '"'
        return f'"{self._schema}".{name}' if self._schema else name

    def _ensure_tables(self, conn: Any) -> None:
        if self._ready:
            return
        with conn.transaction():
            if self._tables_missing(conn):
                # One creator at a time; IF NOT EXISTS alone races in the catalog.
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", [self.table])
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} ("
                        " stack text PRIMARY KEY,"
                        " data bytea NOT NULL,"
                        " version bigint NOT NULL,"
                        " updated_at timestamptz NOT NULL DEFAULT now())"
                    ).format(self._ident())
                )
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} ("
                        " stack text NOT NULL,"
                        " version bigint NOT NULL,"
                        " data bytea NOT NULL,"
                        " written_at timestamptz NOT NULL DEFAULT now(),"
                        " PRIMARY KEY (stack, version))"
                    ).format(self._ident("_history"))
                )
                # Sealed documents are mostly ciphertext: not compressing them makes a
                # save of 10,000 secrets 373 -> 237 ms (bench_backends.py, fsync on).
                for suffix in ("", "_history"):
                    conn.execute(
                        sql.SQL("ALTER TABLE {} ALTER COLUMN data SET STORAGE EXTERNAL").format(
                            self._ident(suffix)
                        )
                    )
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} ("
                        " stack text PRIMARY KEY,"
                        " token text NOT NULL,"
                        " info text NOT NULL,"
                        " acquired_at timestamptz NOT NULL DEFAULT now())"
                    ).format(self._ident("_locks"))
                )
        self._ready = True

    def _grants(self) -> str:
        tables = ", ".join(self._qualified(s) for s in ("", "_history", "_locks"))
        return f"GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO <user>"

    def _query_failed(self, sqlstate: str, text: str, creating: bool) -> NoReturn:
        where = self._public_url
        if sqlstate == "42501":
            if creating:
                schema = self._schema or "public"
                raise StoreAccessError(
                    f"the user of {where} may not create veil's tables: GRANT CREATE ON "
                    f"SCHEMA {schema} TO <user>, or have an owner create them once "
                    f"(see docs/backends.md), then {self._grants()}"
                )
            raise StoreAccessError(f"the user of {where} lacks privileges: {self._grants()}")
        if sqlstate == "3F000":
            raise StoreAccessError(
                f"the schema {self._schema!r} named by table= in {where} does not exist: "
                f"CREATE SCHEMA {self._schema}"
            )
        if sqlstate == "42P01":
            self._ready = False  # the next call creates them again
            raise StoreAccessError(
                f"veil's tables {self._qualified('')}, {self._qualified('_history')} and "
                f"{self._qualified('_locks')} at {where} are gone (dropped while in use?); "
                "the next call creates them again if the user may"
            )
        if sqlstate == "55P03":
            raise StateLockedError(
                f"a row of {self._qualified('')} at {where} stayed locked by another "
                f"transaction for {LOCK_TIMEOUT_MS // 1000} s; try again"
            )
        if sqlstate == "57014":
            raise StoreUnavailableError(
                f"PostgreSQL at {where} did not finish a statement within "
                f"{STATEMENT_TIMEOUT_MS // 1000} s"
            )
        if sqlstate.startswith("08") or sqlstate.startswith("57P") or not sqlstate:
            raise StoreUnavailableError(
                f"the connection to PostgreSQL at {where} failed; check that the server is "
                "running and reachable"
            )
        raise StateError(f"PostgreSQL at {where} failed (SQLSTATE {sqlstate}); see its log")

    def _run(self, work: Callable[[Any], _T]) -> _T:
        """Run ``work(conn)`` in one transaction, with typed errors (raised outside the
        ``except`` block: psycopg's exceptions may carry connection details)."""
        with self._mutex:
            conn = self._connection()
            failure: tuple[str, str, bool] | None = None
            creating = not self._ready
            try:
                self._ensure_tables(conn)
                creating = False
                with conn.transaction():
                    return work(conn)
            except psycopg.Error as exc:
                failure = (getattr(exc, "sqlstate", None) or "", str(exc), creating)
            assert failure is not None
            if conn.broken:
                self._conn = None
            self._query_failed(*failure)

    # --- reading ----------------------------------------------------------------------

    def read(self, stack: str) -> bytes:
        validate_stack_name(stack)
        row = self._run(
            lambda c: c.execute(
                sql.SQL("SELECT data FROM {} WHERE stack = %s").format(self._ident()), [stack]
            ).fetchone()
        )
        if row is None:
            raise StackNotFoundError(
                f"no stack {stack!r} in {self._public_url}; known stacks: "
                f"{', '.join(self.list_stacks()) or '(none)'}"
            )
        return bytes(row[0])

    def exists(self, stack: str) -> bool:
        validate_stack_name(stack)
        row = self._run(
            lambda c: c.execute(
                sql.SQL("SELECT 1 FROM {} WHERE stack = %s").format(self._ident()), [stack]
            ).fetchone()
        )
        return row is not None

    def list_stacks(self) -> list[str]:
        rows = self._run(
            lambda c: c.execute(
                sql.SQL("SELECT stack FROM {} ORDER BY stack").format(self._ident())
            ).fetchall()
        )
        return sorted(str(r[0]) for r in rows)

    # --- locking ----------------------------------------------------------------------

    def _holder(self, conn: Any, stack: str) -> LockInfo | None:
        row = conn.execute(
            sql.SQL("SELECT info FROM {} WHERE stack = %s").format(self._ident("_locks")), [stack]
        ).fetchone()
        return None if row is None else LockInfo.from_json(str(row[0]).encode())

    def _locked_error(self, stack: str, holder: LockInfo | None) -> StateLockedError:
        who = holder.describe() if holder is not None else "an unreadable lock record"
        return StateLockedError(
            f"stack {stack!r} is locked by {who}. Wait for that run to finish. If it "
            "crashed, break the lock with "
            f"veil.state.store_from_url({self._public_url!r}).break_lock({stack!r})."
        )

    def lock(self, stack: str, *, owner: str | None = None) -> StackLock:
        validate_stack_name(stack)
        with self._mutex:
            if stack in self._held:
                raise StateLockedError(
                    f"stack {stack!r} is already locked by this store object "
                    f"({self._held[stack].info.describe()}); release that lock first"
                )
            info = LockInfo.current(owner)

            def take(conn: Any) -> tuple[bool, LockInfo | None, int]:
                taken = conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (stack, token, info) VALUES (%s, %s, %s) "
                        "ON CONFLICT (stack) DO NOTHING"
                    ).format(self._ident("_locks")),
                    [stack, info.token, info.to_json().decode()],
                ).rowcount
                if taken != 1:
                    return False, self._holder(conn, stack), 0
                row = conn.execute(
                    sql.SQL("SELECT version FROM {} WHERE stack = %s").format(self._ident()),
                    [stack],
                ).fetchone()
                return True, None, 0 if row is None else int(row[0])

            ok, holder, version = self._run(take)
            if not ok:
                raise self._locked_error(stack, holder)
            lock = _PostgresStackLock(self, stack, info, version)
            self._held[stack] = lock
            return lock

    def _release(self, lock: _PostgresStackLock) -> None:
        with self._mutex:
            if self._held.get(lock.stack) is lock:
                del self._held[lock.stack]
            self._run(
                lambda c: c.execute(
                    sql.SQL("DELETE FROM {} WHERE stack = %s AND token = %s").format(
                        self._ident("_locks")
                    ),
                    [lock.stack, lock.info.token],
                )
            )

    def lock_info(self, stack: str) -> LockInfo | None:
        validate_stack_name(stack)
        return self._run(lambda c: self._holder(c, stack))

    def break_lock(self, stack: str) -> LockInfo | None:
        validate_stack_name(stack)
        row = self._run(
            lambda c: c.execute(
                sql.SQL("DELETE FROM {} WHERE stack = %s RETURNING info").format(
                    self._ident("_locks")
                ),
                [stack],
            ).fetchone()
        )
        return None if row is None else LockInfo.from_json(str(row[0]).encode())

    @contextmanager
    def _writing(self, stack: str) -> Iterator[_PostgresStackLock]:
        with self._mutex:
            held = self._held.get(stack)
        if held is not None:
            yield held
            return
        lock = self.lock(stack)
        assert isinstance(lock, _PostgresStackLock)
        with lock:
            yield lock

    def _check_still_held(self, conn: Any, lock: _PostgresStackLock) -> None:
        row = conn.execute(
            sql.SQL("SELECT token, info FROM {} WHERE stack = %s FOR UPDATE").format(
                self._ident("_locks")
            ),
            [lock.stack],
        ).fetchone()
        if row is None or row[0] != lock.info.token:
            holder = None if row is None else LockInfo.from_json(str(row[1]).encode())
            who = f"; it is now held by {holder.describe()}" if holder else ""
            raise StateLockedError(
                f"the lock of stack {lock.stack!r} was broken while this process held it{who}. "
                "Nothing was written; reopen the stack and retry."
            )

    def _conflict(self, stack: str) -> StateLockedError:
        return StateLockedError(
            f"stack {stack!r} was written by another writer since this one took its lock "
            "(the lock was broken). Nothing was written; reopen the stack and retry."
        )

    # --- writing ----------------------------------------------------------------------

    def write(self, stack: str, data: bytes) -> None:
        validate_stack_name(stack)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise StateError(f"state data must be bytes, not {type(data).__name__}")
        payload = bytes(data)
        with self._writing(stack) as lock:

            def save(conn: Any) -> int:
                self._check_still_held(conn, lock)
                if lock.version == 0:
                    row = conn.execute(
                        sql.SQL(
                            "INSERT INTO {} (stack, data, version) VALUES (%s, %b, 1) "
                            "ON CONFLICT (stack) DO NOTHING RETURNING version"
                        ).format(self._ident()),
                        [stack, payload],
                    ).fetchone()
                else:
                    row = conn.execute(
                        sql.SQL(
                            "UPDATE {} SET data = %b, version = version + 1, updated_at = now() "
                            "WHERE stack = %s AND version = %s RETURNING version"
                        ).format(self._ident()),
                        [payload, stack, lock.version],
                    ).fetchone()
                if row is None:
                    raise self._conflict(stack)
                version = int(row[0])
                if self.history_size:
                    # A copy made by the server: the bytes cross the network once.
                    conn.execute(
                        sql.SQL(
                            "INSERT INTO {} (stack, version, data) "
                            "SELECT stack, version, data FROM {} WHERE stack = %s "
                            "ON CONFLICT (stack, version) DO UPDATE SET data = EXCLUDED.data, "
                            "written_at = now()"
                        ).format(self._ident("_history"), self._ident()),
                        [stack],
                    )
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE stack = %s AND version <= %s").format(
                        self._ident("_history")
                    ),
                    [stack, version - self.history_size],
                )
                return version

            lock.version = self._run(save)

    def delete(self, stack: str) -> None:
        validate_stack_name(stack)
        with self._writing(stack) as lock:

            def remove(conn: Any) -> None:
                self._check_still_held(conn, lock)
                row = conn.execute(
                    sql.SQL("SELECT version FROM {} WHERE stack = %s FOR UPDATE").format(
                        self._ident()
                    ),
                    [stack],
                ).fetchone()
                if row is None:
                    raise StackNotFoundError(f"no stack {stack!r} in {self._public_url}")
                if int(row[0]) != lock.version:
                    raise self._conflict(stack)
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE stack = %s").format(self._ident()), [stack]
                )
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE stack = %s").format(self._ident("_history")),
                    [stack],
                )

            self._run(remove)
            lock.version = 0

    # --- history ----------------------------------------------------------------------

    def history(self, stack: str) -> list[HistoryEntry]:
        validate_stack_name(stack)
        rows = self._run(
            lambda c: c.execute(
                sql.SQL(
                    "SELECT version, written_at, octet_length(data) FROM {} "
                    "WHERE stack = %s ORDER BY version DESC"
                ).format(self._ident("_history")),
                [stack],
            ).fetchall()
        )
        return [
            HistoryEntry(stack=stack, version=int(v), time=_iso(t), size=int(n)) for v, t, n in rows
        ]

    def read_version(self, stack: str, version: int) -> bytes:
        validate_stack_name(stack)
        if isinstance(version, bool) or not isinstance(version, int):
            raise StateError(f"a version is an int from history(), not {version!r}")
        row = self._run(
            lambda c: c.execute(
                sql.SQL("SELECT data FROM {} WHERE stack = %s AND version = %s").format(
                    self._ident("_history")
                ),
                [stack, version],
            ).fetchone()
        )
        if row is None:
            raise StackNotFoundError(
                f"version {version} of stack {stack!r} is not kept in {self._public_url}; "
                "see history() for the kept versions"
            )
        return bytes(row[0])
