"""Azurite, Microsoft's Azure Storage emulator (blob service), once per test session.

Found as ``azurite-blob`` on PATH (``.ci/run`` installs it with ``npm install -g azurite``)
or in ``~/.cache/veil-tests/azurite`` (installed there with npm when missing and npm is
present). Started on 127.0.0.1 with a free port and a temporary folder, with the
well-known development account ``devstoreaccount1`` and its telemetry switched off
(``--disableTelemetry``: by default Azurite reports usage to a Microsoft host).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ACCOUNT = "devstoreaccount1"
# Azurite's published development key (the same in every installation; not a secret).
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
CACHE = Path(os.environ.get("VEIL_TEST_CACHE", Path.home() / ".cache" / "veil-tests")) / "azurite"


@dataclass
class Azurite:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}/{ACCOUNT}"

    def connection_string(self, key: str = KEY) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={key};"
            f"BlobEndpoint={self.endpoint};"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"Azurite is required in CI: {reason}")
    pytest.skip(reason)


def find_azurite() -> str | None:
    found = shutil.which("azurite-blob")
    if found:
        return found
    cached = CACHE / "node_modules" / ".bin" / "azurite-blob"
    if cached.exists():
        return str(cached)
    npm = shutil.which("npm")
    if npm is None:
        return None
    CACHE.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [npm, "install", "--no-audit", "--no-fund", "--prefix", str(CACHE), "azurite@3"],
        capture_output=True,
        timeout=600,
        check=False,
    )
    return str(cached) if result.returncode == 0 and cached.exists() else None


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    binary = find_azurite()
    if binary is None:
        _unavailable("Azurite not found: npm install -g azurite (needs Node.js and npm)")
        raise AssertionError("unreachable")
    port = free_port()
    folder = tmp_path_factory.mktemp("azurite")
    log = (folder / "azurite.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(folder),
            "--skipApiVersionCheck",
            "--loose",
            "--silent",
            "--disableTelemetry",  # Azurite reports usage to Microsoft unless told not to
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            log.close()
            text = (folder / "azurite.log").read_text(errors="replace")[-2000:]
            _unavailable(f"Azurite did not start on port {port}: {text}")
        time.sleep(0.1)
    try:
        yield Azurite(port, process)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
