"""A PostgreSQL server from the machine's own binaries (``initdb``, ``pg_ctl``), started
once per test session on 127.0.0.1 with a free port and password authentication.

As root, the server runs as the ``postgres`` user (``runuser -u postgres --``), with
its data folder in a fresh temporary folder owned by that user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def postgres_bin_dir() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


class Postgres:
    """A running server: its superuser URL and helpers to make roles and databases."""

    def __init__(self, port: int, password: str) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.superuser = "postgres"
        self.password = password

    def url(
        self,
        db: str = "postgres",
        user: str | None = None,
        password: str | None = None,
        query: str = "",
    ) -> str:
        user = user or self.superuser
        password = self.password if password is None and user == self.superuser else password
        auth = user if password is None else f"{user}:{password}"
        return f"postgres://{auth}@{self.host}:{self.port}/{db}{query}"

    def connect(self, db: str = "postgres") -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(
            host=self.host,
            port=self.port,
            user=self.superuser,
            password=self.password,
            dbname=db,
            autocommit=True,
        )

    def create_database(self, name: str | None = None) -> str:
        name = name or "db_" + secrets.token_hex(6)
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def create_role(self, name: str | None = None, password: str | None = None) -> tuple[str, str]:
        name = name or "role_" + secrets.token_hex(6)
        password = password or secrets.token_hex(12)
        with self.connect() as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )
        return name, password

    def execute(self, db: str, statement: str) -> None:
        with self.connect(db) as conn:
            conn.execute(statement.encode())


def _run(command: list[str], as_postgres: bool) -> None:
    if as_postgres:
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, capture_output=True, timeout=120)


def bin_dir_or_skip() -> Path:
    bin_dir = postgres_bin_dir()
    if bin_dir is None:
        reason = "PostgreSQL's initdb and pg_ctl are missing: apt-get install postgresql"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return bin_dir


@contextlib.contextmanager
def running_postgres(bin_dir: Path, *, durable: bool = False) -> Iterator[Postgres]:
    """Start a server in a fresh temporary folder; stop it and remove the folder on exit.

    ``durable=False`` (for tests) turns fsync off; benchmarks keep PostgreSQL's defaults.
    """
    as_postgres = os.geteuid() == 0
    # Not under pytest's temporary folder: its parents are private to root.
    folder = Path(tempfile.mkdtemp(prefix="veil-pg-"))
    data, sockets, log = folder / "data", folder / "sock", folder / "server.log"
    sockets.mkdir()
    password = secrets.token_hex(16)
    pwfile = folder / "pw"
    pwfile.write_text(password + "\n")
    if as_postgres:
        for path in (folder, sockets, pwfile):
            shutil.chown(path, "postgres", "postgres")
    port = free_port()
    pg_ctl = str(bin_dir / "pg_ctl")
    try:
        _run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "--encoding=UTF8",
                "--no-sync",
            ],
            as_postgres,
        )
        options = f"-k {sockets} -h 127.0.0.1 -p {port} -c max_connections=200"
        if not durable:
            # Speed over durability: the server's own crash safety is not under test.
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        _run([pg_ctl, "-D", str(data), "-l", str(log), "-o", options, "-w", "start"], as_postgres)
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise RuntimeError(
            f"PostgreSQL did not start: {exc.stderr.decode(errors='replace')[-2000:]}"
        ) from None
    try:
        yield Postgres(port, password)
    finally:
        try:
            _run([pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"], as_postgres)
        finally:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    with running_postgres(bin_dir_or_skip()) as server:
        yield server
