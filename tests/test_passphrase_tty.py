"""The passphrase prompt on a real terminal (a pseudo-terminal): asked twice when a
stack is created, once when it is opened, and a mismatch writes nothing."""

from __future__ import annotations

import os
import select
import signal
import sys
import time
from pathlib import Path

import pytest

pty = pytest.importorskip("pty")


def _run_on_terminal(argv: list[str], cwd: Path, answers: list[str]) -> tuple[int, str]:
    """Run ``python -m veil.cli ARGV`` on a pseudo-terminal, typing each answer after
    the next prompt that ends in ': '. Returns the exit code and everything shown."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VEIL_PASSPHRASE")}
    env["VEIL_STACK"] = "dev"
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its stdin, stdout and stderr
        os.chdir(cwd)
        os.execve(sys.executable, [sys.executable, "-m", "veil.cli", *argv], env)  # noqa: S606
    shown = b""
    pending = list(answers)
    deadline = time.monotonic() + float(os.environ.get("TTY_TEST_TIMEOUT", "60"))
    status: int | None = None
    while status is None and time.monotonic() < deadline:
        chunk = _read_ready(fd, 0.2)
        if chunk:
            shown += chunk
            if pending and shown.rstrip().endswith(b":"):
                # getpass flushes pending input when it turns echo off (TCSAFLUSH):
                # give it time to do so before typing.
                time.sleep(0.3)
                answer = pending.pop(0)
                # "\x04" alone is Ctrl-D: end of input, without a newline.
                os.write(fd, answer.encode() + (b"" if answer == "\x04" else b"\n"))
                shown += b"\n"
            continue
        done, code = os.waitpid(pid, os.WNOHANG)
        if done:
            status = code
    if status is None:
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
    while chunk := _read_ready(fd, 0):
        shown += chunk
    os.close(fd)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def _read_ready(fd: int, timeout: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return b""
    try:
        return os.read(fd, 4096)
    except OSError:  # the child has closed the terminal
        return b""


def test_creating_a_stack_asks_for_the_passphrase_twice(tmp_path: Path) -> None:
    code, shown = _run_on_terminal(["stack", "init", "dev"], tmp_path, ["tty-pass-1", "tty-pass-1"])
    assert code == 0, shown
    assert "Enter a passphrase to protect this stack:" in shown
    assert "Re-enter the passphrase:" in shown
    assert "tty-pass-1" not in shown  # not echoed
    code, shown = _run_on_terminal(["config", "ls"], tmp_path, ["tty-pass-1"])
    assert code == 0, shown
    assert shown.count("passphrase") == 1  # opening asks once
    code, shown = _run_on_terminal(["config", "ls"], tmp_path, ["not-the-one"])
    assert code == 1
    assert "the passphrase does not open this stack" in shown


def test_two_different_passphrases_create_nothing(tmp_path: Path) -> None:
    code, shown = _run_on_terminal(["stack", "init", "dev"], tmp_path, ["first-pass", "other-pass"])
    assert code == 1
    assert "the two passphrases differ" in shown
    assert not (tmp_path / "veil.dev.json").exists()
    assert not (tmp_path / ".veil" / "stacks" / "dev.json").exists()


def test_end_of_input_at_the_prompt_is_a_clean_error(tmp_path: Path) -> None:
    code, shown = _run_on_terminal(["stack", "init", "dev"], tmp_path, ["\x04"])
    assert code == 1, shown
    assert "no passphrase was entered (end of input)" in shown
    assert "Traceback" not in shown
    assert not (tmp_path / "veil.dev.json").exists()
