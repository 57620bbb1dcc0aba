"""What every command shares: exit codes, the one-line error, the argument parser,
and how values are printed (secrets masked unless asked for)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from .. import MASK, Secret, redact

__all__ = [
    "EXIT_ERROR",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_USAGE",
    "CommandError",
    "IntermixedParser",
    "NotFound",
    "Parser",
    "UsageError",
    "confirm",
    "count_secrets",
    "fail",
    "print_table",
    "shown",
    "text",
    "warn",
    "write_json",
]

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_INTERRUPTED = 130


class CommandError(Exception):
    """A failure found by the command itself (exit 1)."""


class UsageError(Exception):
    """The command line asks for something impossible (exit 2)."""


class NotFound(Exception):
    """A stack, a project folder, a version or a value that is not there (exit 3)."""


def fail(message: str, code: int) -> NoReturn:
    """Print ``veil: error: MESSAGE`` (one line, redacted) and exit with ``code``."""
    line = " ".join(redact(message).split())
    sys.stderr.write(f"veil: error: {line}\n")
    raise SystemExit(code)


def warn(message: str) -> None:
    sys.stderr.write(f"veil: warning: {' '.join(redact(message).split())}\n")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error (exit 2)."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("veil").strip()
        hint = f"; see 'veil {command + ' ' if command else ''}--help'"
        fail(message + hint, EXIT_USAGE)


class IntermixedParser(Parser):
    """A leaf command whose positionals may come after its options
    (``veil config set KEY --secret VALUE``), which plain argparse refuses."""

    _inside = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._inside:
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def shown(value: Any, show: bool) -> Any:
    """``value`` for printing: secrets masked unless ``show``."""
    if isinstance(value, Secret):
        return shown(value.reveal(), True) if show else MASK
    if isinstance(value, dict):
        return {k: shown(v, show) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [shown(v, show) for v in value]
    return value


def count_secrets(value: Any) -> int:
    """How many secret leaves ``value`` holds."""
    if isinstance(value, Secret):
        return 1
    if isinstance(value, dict):
        return sum(count_secrets(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(count_secrets(v) for v in value)
    return 0


def text(value: Any) -> str:
    """A value on one line: a string as it is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def write_json(out: TextIO, value: Any) -> None:
    out.write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def print_table(out: TextIO, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Columns padded to their widest cell; nothing at all for no rows."""
    if not rows:
        return
    widths = [max(len(header[i]), *(len(r[i]) for r in rows)) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [f"{cell:<{widths[i]}}" for i, cell in enumerate(row)]
        out.write("  ".join(cells).rstrip() + "\n")


def confirm(question: str, *, yes: bool, answer: str, refused: str) -> None:
    """Ask on a terminal for ``answer``; without one, refuse unless ``yes``.

    ``refused`` says what to pass instead (``--yes``)."""
    if yes:
        return
    stdin = sys.stdin
    if stdin is None or not stdin.isatty():
        raise UsageError(f"{refused}; stdin is not a terminal, so pass --yes to confirm")
    sys.stderr.write(f"{question} Type {answer!r} to confirm: ")
    sys.stderr.flush()
    try:
        typed = stdin.readline()
    except EOFError:
        typed = ""
    if typed.strip() != answer:
        raise CommandError("not confirmed; nothing was changed")
