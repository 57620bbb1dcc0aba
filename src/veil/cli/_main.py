"""The parser of every command, and ``main``: errors become one line and an exit code."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Sequence
from typing import TextIO

from .. import __version__, install_log_filter
from ..errors import ConfigMissingError, StackNotFoundError, StateLockedError, VeilError
from . import _completion, _config, _history, _keys, _stacks
from ._base import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_USAGE,
    CommandError,
    IntermixedParser,
    NotFound,
    Parser,
    UsageError,
    fail,
)
from ._parsers import add_common, parents, seconds
from ._project import Context

__all__ = ["build_parser", "main"]


@functools.lru_cache(maxsize=1)
def build_parser() -> argparse.ArgumentParser:
    """The ``veil`` parser: every command, with its help (built once per process)."""
    shared = parents()
    parser = Parser(
        prog="veil",
        description="Keep secrets secret in infrastructure-as-code programs: stacks, their "
        "config and outputs, their keys, history and locks.",
        epilog="Exit codes: 0 done, 1 error, 2 usage error, 3 not found (stack, config "
        "file, key, output, version), 130 interrupted. Run 'veil COMMAND --help' for more.",
    )
    add_common(parser, None)
    parser.add_argument(
        "--lock-timeout",
        type=seconds,
        default=None,
        metavar="SECONDS",
        help="wait up to SECONDS for another run's lock (default: $VEIL_LOCK_TIMEOUT, else 0)",
    )
    parser.add_argument("--version", action="version", version=f"veil {__version__}")
    groups = parser.add_subparsers(
        dest="group", metavar="{stack,config,completion}", parser_class=Parser
    )
    groups.required = True

    stack = groups.add_parser(
        "stack",
        help="create, list, select and remove stacks; keys, history, export and import",
        description="Operate stacks: create, list, select, remove; rotate keys and manage "
        "recipients; history, export and import; break a lock.",
    )
    commands = stack.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True
    _stacks.register(commands, shared)
    _keys.register(commands, shared)
    _history.register(commands, shared)

    config = groups.add_parser(
        "config",
        help="get and set the stack's configuration",
        description="Get and set the stack's configuration (veil.<stack>.json).",
    )
    # Config commands take VALUE after options too: 'config set KEY --secret VALUE'.
    config_commands = config.add_subparsers(
        dest="command", metavar="COMMAND", parser_class=IntermixedParser
    )
    config_commands.required = True
    _config.register(config_commands, shared)

    _completion.register(groups, shared)
    parser.set_defaults(root_parser=parser)
    return parser


def _quiet_stdout() -> None:
    """After a closed pipe: send what is still buffered nowhere, so that the
    interpreter's final flush reports no error either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _run(args: argparse.Namespace, out: TextIO) -> int:
    handler = args.handler
    code = handler(Context(args), out)
    out.flush()
    return int(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``veil`` command; returns the exit code (see ``veil --help``).

    A closed pipe (``veil stack output --json | head -1``) ends the command quietly with
    exit code 0: the reader had what it wanted."""
    # A program calling main() keeps its logging as it was afterwards.
    handle = install_log_filter()
    try:
        return _main(argv)
    finally:
        handle.uninstall()


def _main(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return _run(args, sys.stdout)
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_OK
    except UsageError as exc:
        fail(str(exc), EXIT_USAGE)
    except (NotFound, StackNotFoundError, ConfigMissingError) as exc:
        fail(exc.args[0] if exc.args else str(exc), EXIT_NOT_FOUND)
    except StateLockedError as exc:
        hint = "" if "this process" in str(exc) else " From the shell: 'veil stack unlock'."
        fail(f"{exc}{hint}", EXIT_ERROR)
    except (CommandError, VeilError) as exc:
        fail(str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        fail(f"{exc.strerror or type(exc).__name__}{where}", EXIT_ERROR)
    except Exception as exc:  # never a traceback: one line, redacted
        fail(f"unexpected {type(exc).__name__}: {exc}", EXIT_ERROR)
