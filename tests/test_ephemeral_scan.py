# mypy: disable-error-code="var-annotated"
# (deferred_output() pairs are typed by use, as in a program)
"""Nothing a program writes holds the plaintext of an ephemeral value: not the state,
its history, the config file, the lock, the CLI's output (secrets shown) or the logs
(through veil's filter), also after saves that were refused."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import veil
from veil import EphemeralValueError, Output, Stack

TOKEN = "tok-scan-8c1e55d0a7b24f39"
PASSWORD = "pw-scan-3b96f0e2c4d17a85"
PASSPHRASE = "correct horse battery staple"
FAST_URL = "passphrase://?memory_cost=8&iterations=1&lanes=1"
PLAINTEXTS = (TOKEN, PASSWORD, TOKEN.upper())


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VEIL_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("VEIL_INSECURE_WEAK_KDF", "1")
    monkeypatch.delenv("VEIL_PASSPHRASE_FILE", raising=False)
    monkeypatch.delenv("VEIL_STACK", raising=False)
    monkeypatch.setenv("VEIL_BACKEND_URL", f"file://{tmp_path / 'state'}")
    return tmp_path


def _cli(project: Path, *argv: str) -> str:
    script = shutil.which("veil", path=str(Path(sys.executable).parent))
    command = (
        [script, *argv]
        if script
        else [
            sys.executable,
            "-c",
            "import sys; from veil.cli import main; sys.exit(main())",
            *argv,
        ]
    )
    done = subprocess.run(
        command, cwd=project, capture_output=True, text=True, env=dict(os.environ), check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def _written(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _assert_clean(where: str, data: bytes | str) -> None:
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    for plaintext in PLAINTEXTS:
        assert plaintext not in text, f"{where} holds an ephemeral plaintext"


def test_nothing_written_holds_an_ephemeral_plaintext(project: Path) -> None:
    log_path = project / "program.log"
    handler = logging.FileHandler(log_path)
    handler.addFilter(veil.SecretRedactingFilter())
    log = logging.getLogger("test.ephemeral.scan")
    log.setLevel(logging.INFO)
    log.addHandler(handler)
    errors: list[str] = []
    try:
        with Stack.create("dev", secrets_provider=FAST_URL, project_dir=project) as stack:
            stack.config.set("db:user", "app")
            stack.config.set("db:admin", "admin-password-1234", secret=True)
            stack.save()

            token = veil.ephemeral(TOKEN)  # fetched for this run
            password = veil.ephemeral(PASSWORD)  # generated, delivered to a resource
            header = Output.format("Bearer {}", token.apply(str.upper))
            log.info("using token %s and password %s", TOKEN, PASSWORD)

            # Every way of writing them is refused, and the refusal names paths only.
            attempts: list[Callable[[], object]] = [
                lambda: stack.export("header", header),
                lambda: stack.config.set("api:token", token, secret=True),
                lambda: stack.config.set("api:header", header),
            ]
            for attempt in attempts:
                with pytest.raises(EphemeralValueError) as info:
                    attempt()
                errors.append(str(info.value))
            later, resolve = veil.deferred_output()
            stack.export("db", {"password": later, "user": "app"})
            resolve(password)
            with pytest.raises(EphemeralValueError) as info:
                stack.save()
            errors.append(str(info.value))

            async def fetch() -> str:
                return TOKEN

            stack.export("db", {"user": "app", "token": veil.ephemeral(fetch())})
            with pytest.raises(EphemeralValueError) as info:
                asyncio.run(stack.save_async())
            errors.append(str(info.value))
            log.error("save refused: %s", errors[-1])

            # What is stored instead: fingerprints.
            stack.export(
                "db",
                {"user": "app", "password_version": veil.fingerprint(password)},
            )
            stack.export("token_version", veil.fingerprint(token))
            stack.save()
            # The lock is held while the stack is open: it is written too.
            _assert_clean("files with the lock held", b"".join(_written(project).values()))
            stack.export("token_version", veil.fingerprint(veil.ephemeral(TOKEN + "-2")))
            stack.save()
    finally:
        log.removeHandler(handler)
        handler.close()

    for message in errors:
        _assert_clean("an error message", message)
    files = _written(project)
    assert any("history" in name or name.count("/") > 2 for name in files), sorted(files)
    for name, data in files.items():
        _assert_clean(name, data)
    assert veil.MASK in log_path.read_text()

    for argv in (
        ("-s", "dev", "stack", "output", "--show-secrets", "--json"),
        ("-s", "dev", "stack", "export", "--show-secrets"),
        ("-s", "dev", "stack", "export"),
        ("-s", "dev", "config", "ls", "--show-secrets", "--json"),
    ):
        _assert_clean(" ".join(argv), _cli(project, *argv))
    shown = _cli(project, "-s", "dev", "stack", "output", "--show-secrets", "--json")
    assert "fp:v1:" in shown
    assert "admin" not in shown
