"""`postgres://`: PostgresStore against a real PostgreSQL server from this machine's
binaries."""

from __future__ import annotations

import os
import pickle
import secrets
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

if not os.environ.get("CI"):
    pytest.importorskip("psycopg", reason="pip install 'veil[postgres]'")

import veil
from servers.postgres import Postgres, free_port, postgres_server
from veil import Secret, Stack
from veil.state import store_from_url
from veil.state.postgres import PostgresStore
from veil.testing import StateStoreComplianceSuite

__all__ = ["postgres_server"]  # the session fixture, imported for pytest

GRANTS = "GRANT SELECT, INSERT, UPDATE, DELETE ON {t}, {t}_history, {t}_locks TO {role}"


class Database:
    """A test database with an owner role that may create tables in it."""

    def __init__(self, server: Postgres) -> None:
        self.server = server
        self.name = server.create_database()
        self.owner, self.owner_password = server.create_role()
        server.execute(self.name, f"GRANT CREATE, USAGE ON SCHEMA public TO {self.owner}")

    def url(self, table: str | None = None, *, with_password: bool = False) -> str:
        query = f"?table={table}" if table else ""
        password = self.owner_password if with_password else None
        return self.server.url(self.name, self.owner, password, query)

    def rows(self, table: str) -> list[tuple[object, ...]]:
        with self.server.connect(self.name) as conn:
            return list(conn.execute(f"SELECT * FROM {table}").fetchall())  # noqa: S608


@pytest.fixture(scope="session")
def database(postgres_server: Postgres) -> Database:
    return Database(postgres_server)


@pytest.fixture
def pg_env(database: Database, monkeypatch: pytest.MonkeyPatch) -> Database:
    """PGPASSWORD set for the owner, as libpq's users do; children inherit it."""
    for name in list(os.environ):
        if name.startswith("PG"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PGPASSWORD", database.owner_password)
    return database


def table_name() -> str:
    return "t_" + secrets.token_hex(6)


class TestPostgresStore(StateStoreComplianceSuite):
    @pytest.fixture
    def store(self, pg_env: Database) -> Iterator[PostgresStore]:
        store = store_from_url(pg_env.url(table_name()))
        assert isinstance(store, PostgresStore)
        yield store
        store.close()


# --- URLs and credentials --------------------------------------------------------------


def test_url_never_holds_the_password(database: Database) -> None:
    store = store_from_url(database.url(table_name(), with_password=True))
    assert isinstance(store, PostgresStore)
    store.write("dev", b"x")  # the password in the URL works
    assert database.owner_password not in store.url
    assert database.owner_password not in repr(store)
    assert store.url.startswith(f"postgres://{database.owner}@127.0.0.1:")
    with pytest.raises(veil.SecretPickleError):
        pickle.dumps(store)


def test_url_round_trips_its_settings(pg_env: Database) -> None:
    url = pg_env.url(table_name()) + "&history=3&sslmode=disable"
    store = store_from_url(url)
    assert isinstance(store, PostgresStore)
    again = store_from_url(store.url)
    assert isinstance(again, PostgresStore)
    assert (again.table, again.history_size) == (store.table, 3)
    assert "sslmode=disable" in again.url


def test_postgresql_scheme_too(pg_env: Database) -> None:
    url = pg_env.url(table_name()).replace("postgres://", "postgresql://", 1)
    store = store_from_url(url)
    store.write("dev", b"x")
    assert store.read("dev") == b"x"


def test_libpq_environment_variables_fill_in_the_url(
    pg_env: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGHOST", "127.0.0.1")
    monkeypatch.setenv("PGPORT", str(pg_env.server.port))
    monkeypatch.setenv("PGUSER", pg_env.owner)
    monkeypatch.setenv("PGDATABASE", pg_env.name)
    store = store_from_url(f"postgres://?table={table_name()}")
    store.write("dev", b"from the environment")
    assert store.read("dev") == b"from the environment"


def test_pgpass_file_is_read(
    pg_env: Database, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PGPASSWORD")
    pgpass = tmp_path / "pgpass"
    pgpass.write_text(f"127.0.0.1:*:*:{pg_env.owner}:{pg_env.owner_password}\n")
    pgpass.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(pgpass))
    store_from_url(pg_env.url(table_name())).write("dev", b"x")


@pytest.mark.parametrize(
    "query",
    ["?table=Bad-Name", "?table=a;drop", "?history=-1", "?history=x", "?password=p", "?nope=1"],
)
def test_bad_url_settings_are_refused(pg_env: Database, query: str) -> None:
    with pytest.raises(veil.StateError):
        store_from_url(pg_env.server.url(pg_env.name, pg_env.owner, None, query))


def test_schema_qualified_table(pg_env: Database) -> None:
    pg_env.server.execute(
        pg_env.name, f"CREATE SCHEMA IF NOT EXISTS veil AUTHORIZATION {pg_env.owner}"
    )
    store = store_from_url(pg_env.url("veil.stacks"))
    store.write("dev", b"x")
    assert pg_env.rows("veil.stacks")[0][:2] == ("dev", b"x")


def test_import_veil_imports_no_psycopg() -> None:
    code = "import sys, veil, veil.state\nassert 'psycopg' not in sys.modules, 'psycopg imported'\n"
    subprocess.run([sys.executable, "-c", code], check=True)


# --- what lands in the database ----------------------------------------------------------


def test_tables_rows_and_lock_record(pg_env: Database) -> None:
    table = table_name()
    store = store_from_url(pg_env.url(table))
    store.write("dev", b"one")
    with store.lock("dev", owner="alice") as lock:
        store.write("dev", b"two")
        (locked,) = pg_env.rows(f"{table}_locks")
        assert locked[0] == "dev"
        assert veil.state.LockInfo.from_json(str(locked[2]).encode()) == lock.info
    (state,) = pg_env.rows(table)
    assert state[:3] == ("dev", b"two", 2)
    history = sorted(pg_env.rows(f"{table}_history"))
    assert [(r[0], r[1], r[2]) for r in history] == [("dev", 1, b"one"), ("dev", 2, b"two")]
    assert pg_env.rows(f"{table}_locks") == []


def test_a_save_is_one_transaction(pg_env: Database) -> None:
    """If the history row cannot be written, the state row is not changed either."""
    table = table_name()
    store = store_from_url(pg_env.url(table))
    store.write("dev", b"before")
    role, password = pg_env.server.create_role()
    pg_env.server.execute(pg_env.name, GRANTS.format(t=table, role=role))
    pg_env.server.execute(pg_env.name, f"REVOKE INSERT ON {table}_history FROM {role}")
    limited = store_from_url(pg_env.server.url(pg_env.name, role, password, f"?table={table}"))
    with pytest.raises(veil.StoreAccessError, match="GRANT SELECT, INSERT, UPDATE, DELETE"):
        limited.write("dev", b"after")
    assert store.read("dev") == b"before"
    assert [e.version for e in store.history("dev")] == [1]
    assert store.lock_info("dev") is None


def test_no_plaintext_of_a_secret_in_any_row(pg_env: Database, tmp_path: Path) -> None:
    table = table_name()
    url = pg_env.url(table)
    plaintexts = [f"pg-secret-{i}-{secrets.token_hex(8)}" for i in range(50)]
    key_file = tmp_path / "dev.key"
    with Stack.create(
        "dev", backend=url, secrets_provider=f"file://{key_file}", project_dir=tmp_path
    ) as s:
        for i, p in enumerate(plaintexts):
            s.export(f"s{i}", Secret(p))
        s.export("nested", {"db": {"password": Secret(plaintexts[0])}})
        s.save()
        s.export("late", Secret(plaintexts[1]))
        s.save()
    with Stack.open("dev", backend=url, project_dir=tmp_path) as s:
        assert veil.reveal(s.outputs["s7"]) == plaintexts[7]
    dumped = b""
    for suffix in ("", "_history", "_locks"):
        for row in pg_env.rows(table + suffix):
            dumped += repr(row).encode() + b"".join(
                bytes(v) for v in row if isinstance(v, (bytes, memoryview))
            )
    assert len(pg_env.rows(table + "_history")) == 3
    for p in plaintexts:
        assert p.encode() not in dumped
    assert key_file.read_bytes() not in dumped


# --- failures ---------------------------------------------------------------------------


def _assert_clean(exc: BaseException, *secret_texts: str) -> None:
    assert exc.__cause__ is None
    assert exc.__context__ is None
    text = str(exc) + repr(exc.args)
    for s in secret_texts:
        assert s not in text


def test_unreachable_server_fails_fast(pg_env: Database) -> None:
    store = store_from_url(f"postgres://u:pw-123456@127.0.0.1:{free_port()}/db")
    start = time.monotonic()
    with pytest.raises(veil.StoreUnavailableError, match="unreachable") as info:
        store.read("dev")
    assert time.monotonic() - start < 30
    _assert_clean(info.value, "pw-123456")


@pytest.fixture
def silent_server() -> Iterator[int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for s in held:
        s.close()
    listener.close()


def test_server_that_never_answers_times_out(pg_env: Database, silent_server: int) -> None:
    store = store_from_url(f"postgres://u@127.0.0.1:{silent_server}/db?connect_timeout=2")
    start = time.monotonic()
    with pytest.raises(veil.StoreUnavailableError, match="did not answer in time"):
        store.exists("dev")
    assert time.monotonic() - start < 10


def test_default_timeouts_are_bounded() -> None:
    from veil.state import postgres

    assert postgres.CONNECT_TIMEOUT + postgres.STATEMENT_TIMEOUT_MS / 1000 < 30


def test_bad_password(pg_env: Database) -> None:
    url = pg_env.server.url(pg_env.name, pg_env.owner, "wrong-pass-987", f"?table={table_name()}")
    with pytest.raises(veil.StoreAccessError, match="refused the login") as info:
        store_from_url(url).read("dev")
    _assert_clean(info.value, "wrong-pass-987")


def test_no_password_at_all(pg_env: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD")
    monkeypatch.setenv("PGPASSFILE", "/nonexistent")
    with pytest.raises(veil.StoreAccessError, match="PGPASSWORD"):
        store_from_url(pg_env.url(table_name())).read("dev")


def test_missing_database(pg_env: Database) -> None:
    url = pg_env.server.url("no_such_db", pg_env.owner, None, "")
    with pytest.raises(veil.StoreAccessError, match="does not exist"):
        store_from_url(url).read("dev")


def test_missing_schema(pg_env: Database) -> None:
    with pytest.raises(veil.StoreAccessError, match="CREATE SCHEMA nowhere"):
        store_from_url(pg_env.url("nowhere.stacks")).read("dev")


def test_user_who_may_not_create_tables_is_told_the_grant(pg_env: Database) -> None:
    role, password = pg_env.server.create_role()  # PostgreSQL 15+: no CREATE on public
    url = pg_env.server.url(pg_env.name, role, password, f"?table={table_name()}")
    with pytest.raises(veil.StoreAccessError, match="GRANT CREATE ON SCHEMA public"):
        store_from_url(url).write("dev", b"x")


def test_user_without_table_privileges_is_told_the_grant(pg_env: Database) -> None:
    table = table_name()
    store_from_url(pg_env.url(table)).write("dev", b"x")  # the owner creates the tables
    role, password = pg_env.server.create_role()
    url = pg_env.server.url(pg_env.name, role, password, f"?table={table}")
    with pytest.raises(
        veil.StoreAccessError,
        match=f"GRANT SELECT, INSERT, UPDATE, DELETE ON "
        f'"{table}", "{table}_history", "{table}_locks"',
    ):
        store_from_url(url).read("dev")


def test_documented_grants_are_enough(pg_env: Database) -> None:
    table = table_name()
    store_from_url(pg_env.url(table)).write("dev", b"x")
    role, password = pg_env.server.create_role()
    pg_env.server.execute(pg_env.name, GRANTS.format(t=table, role=role))
    store = store_from_url(pg_env.server.url(pg_env.name, role, password, f"?table={table}"))
    with store.lock("dev"):
        assert store.read("dev") == b"x"
        store.write("dev", b"y")
    store.write("prod", b"z")
    assert [e.version for e in store.history("dev")] == [2, 1]
    assert store.list_stacks() == ["dev", "prod"]
    store.delete("prod")
    assert store.break_lock("dev") is None


def test_tables_dropped_while_in_use(pg_env: Database) -> None:
    table = table_name()
    store = store_from_url(pg_env.url(table))
    store.write("dev", b"x")
    pg_env.server.execute(pg_env.name, f"DROP TABLE {table}, {table}_history, {table}_locks")
    with pytest.raises(veil.StoreAccessError, match="are gone"):
        store.read("dev")
    assert not store.exists("dev")  # created again, empty
    store.write("dev", b"y")
    assert [e.version for e in store.history("dev")] == [1]


def test_server_restart_is_survived_by_the_next_call(pg_env: Database) -> None:
    store = store_from_url(pg_env.url(table_name()))
    assert isinstance(store, PostgresStore)
    store.write("dev", b"x")
    with pg_env.server.connect() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'veil' AND pid <> pg_backend_pid()"
        )
    with pytest.raises(veil.StoreUnavailableError):
        store.read("dev")
    assert store.read("dev") == b"x"  # a new connection


def test_stack_through_veil_on_postgres(pg_env: Database, tmp_path: Path) -> None:
    url = pg_env.url(table_name())
    key = f"file://{tmp_path / 'k.key'}"
    with Stack.create("dev", backend=url, secrets_provider=key, project_dir=tmp_path) as s:
        s.export("pw", Secret("hunter2"))
        s.save()
        with pytest.raises(
            veil.StateLockedError, match="this process already has stack 'dev' open"
        ):
            Stack.open("dev", backend=url, project_dir=tmp_path)
    with Stack.open("dev", backend=url, project_dir=tmp_path) as s:
        assert veil.reveal(s.outputs["pw"]) == "hunter2"
        assert s.serial >= 1


def test_a_connection_string_gives_a_url_without_the_password(pg_env: Database) -> None:
    store = PostgresStore(
        f"host=127.0.0.1 port={pg_env.server.port} user={pg_env.owner} "
        f"password={pg_env.owner_password} dbname={pg_env.name}",
        table=table_name(),
        history_size=4,
    )
    store.write("dev", b"x")
    assert pg_env.owner_password not in store.url
    again = store_from_url(store.url)
    assert isinstance(again, PostgresStore)
    assert again.read("dev") == b"x"  # with PGPASSWORD
    assert again.history_size == 4


def test_unix_socket_folder_stays_in_the_url() -> None:
    store = store_from_url("postgres://me@/infra?host=/var/run/postgresql&sslmode=disable")
    assert store.url == "postgres://me@/infra?host=/var/run/postgresql&sslmode=disable"


def test_tables_created_from_the_documented_sql_work(pg_env: Database) -> None:
    """docs/backends.md's CREATE TABLE and GRANT statements, run by an administrator,
    are all a user without CREATE needs."""
    doc = (Path(__file__).resolve().parent.parent / "docs" / "backends.md").read_text()
    blocks = [b.split("\n", 1)[1] for b in doc.split("```")[1::2] if b.startswith("sql\n")]
    create = next(b for b in blocks if "CREATE TABLE veil_state (" in b)
    grants = next(b for b in blocks if "GRANT SELECT, INSERT" in b)
    role, password = pg_env.server.create_role()
    table = table_name()
    pg_env.server.execute(pg_env.name, create.replace("veil_state", table))
    pg_env.server.execute(
        pg_env.name,
        grants.replace("veil_state", table)
        .replace("TO veil", f"TO {role}")
        .replace("DATABASE infra", f"DATABASE {pg_env.name}"),
    )
    store = store_from_url(pg_env.server.url(pg_env.name, role, password, f"?table={table}"))
    with store.lock("dev"):
        store.write("dev", b"x")
    assert store.read_version("dev", 1) == b"x"
