"""Running the real ``veil`` console script in a temporary project, for the CLI tests."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

PASSPHRASE = "correct horse battery staple"
# Below OWASP's minimums, to keep the tests fast: every run opts out explicitly with
# VEIL_INSECURE_WEAK_KDF=1 in its environment.
FAST_URL = "passphrase://?memory_cost=8&iterations=1&lanes=1"
DB_PASSWORD = "pw-0123456789-db"
TOKEN = "tok-abcdef-98765"


class Result:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"Result(code={self.code}, out={self.out!r}, err={self.err!r})"


def veil_script() -> list[str]:
    script = Path(sys.executable).with_name("veil")
    return [str(script)] if script.exists() else [sys.executable, "-m", "veil.cli"]


def environment(home: Path, **env: str) -> dict[str, str]:
    """The test process's environment without any VEIL_/PULUMI_ setting, with veil's
    home in ``home`` and weak KDF settings allowed, plus ``env``."""
    out = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VEIL_", "PULUMI_CONFIG_PASSPHRASE"))
    }
    out.update(VEIL_HOME=str(home), VEIL_INSECURE_WEAK_KDF="1")
    out.update(env)
    return out


def run(
    cwd: Path,
    *argv: str,
    stdin: str | None = "",
    home: Path | None = None,
    timeout: float = 60,
    **env: str,
) -> Result:
    """``veil ARGV`` in ``cwd``; stdin is a pipe holding ``stdin`` (not a terminal)."""
    proc = subprocess.run(
        [*veil_script(), *argv],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment(home or cwd / ".home", **env),
        timeout=timeout,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def assert_one_error_line(result: Result, *fragments: str, code: int | None = None) -> None:
    assert result.code != 0, result
    if code is not None:
        assert result.code == code, result
    assert result.err.startswith("veil: error: "), result
    assert result.err.count("\n") == 1, result.err
    assert "Traceback" not in result.err
    for fragment in fragments:
        assert fragment in result.err, result.err


def call(
    cwd: Path,
    *argv: str,
    stdin: str | None = "",
    home: Path | None = None,
    timeout: float = 60,
    **env: str,
) -> Result:
    """``veil.cli.main(ARGV)`` in this process, with the environment, folder and stdin
    :func:`run` would give the console script: the same command, without the start-up
    cost of a process (most tests; each command also runs as a process somewhere)."""
    from veil.cli import main

    with pytest.MonkeyPatch.context() as m:
        for name in list(os.environ):
            if name.startswith(("VEIL_", "PULUMI_CONFIG_PASSPHRASE")):
                m.delenv(name)
        for name, value in environment(home or cwd / ".home", **env).items():
            m.setenv(name, value)
        m.chdir(cwd)
        out = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
        err = io.StringIO()
        m.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO((stdin or "").encode())))
        m.setattr(sys, "stdout", out)
        m.setattr(sys, "stderr", err)
        try:
            code = main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        out.flush()
        assert isinstance(out.buffer, io.BytesIO)
        return Result(code, out.buffer.getvalue().decode("utf-8"), err.getvalue())
