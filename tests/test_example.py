"""examples/quickstart.py runs as documented: exit 0, secrets masked, and a second run
opens the stack the first one created."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import veil
from veil import Stack
from veil.providers import PassphraseProvider

QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
DEMO_PASSPHRASE = "correct horse battery staple (demo only)"


def run(cwd: Path, passphrase: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_")}
    if passphrase is not None:
        env["VEIL_PASSPHRASE"] = passphrase
    return subprocess.run(
        [sys.executable, str(QUICKSTART)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def secret_plaintexts(project: Path, passphrase: str) -> list[str]:
    with Stack.open(
        "dev",
        backend=f"file://{project / '.veil'}",
        project_dir=project,
        secrets_provider=PassphraseProvider(passphrase=passphrase),
        lock=False,
    ) as stack:
        outputs = stack.outputs
        return [
            veil.reveal(outputs["api_token"]),
            veil.reveal(outputs["db_url"]),
            veil.reveal(outputs["settings"]["password"]),
        ]


@pytest.mark.parametrize("passphrase", [None, "a passphrase from the environment"])
def test_quickstart_runs_twice_and_masks_secrets(tmp_path: Path, passphrase: str | None) -> None:
    first = run(tmp_path, passphrase)
    assert first.returncode == 0, first.stderr
    assert "Created stack 'dev'" in first.stdout
    assert (passphrase is None) == ("using the demo passphrase" in first.stdout)
    assert "none found." in first.stdout
    assert "database password is [secret]" in first.stdout
    assert "db_url     [secret]" in first.stdout
    assert "'replicas': 2" in first.stdout

    second = run(tmp_path, passphrase)
    assert second.returncode == 0, second.stderr
    assert "Opened stack 'dev' (serial 2)" in second.stdout
    assert "Saved stack 'dev' (serial 3)" in second.stdout

    project = tmp_path / "veil-quickstart"
    for plaintext in secret_plaintexts(project, passphrase or DEMO_PASSPHRASE):
        for result in (first, second):
            assert plaintext not in result.stdout
            assert plaintext not in result.stderr


def test_quickstart_with_another_passphrase_fails_on_the_second_run(tmp_path: Path) -> None:
    assert run(tmp_path, "the first passphrase").returncode == 0
    second = run(tmp_path, "another passphrase")
    assert second.returncode != 0
    assert second.stderr.startswith("quickstart: error: the passphrase does not open")
    assert "Traceback" not in second.stderr
