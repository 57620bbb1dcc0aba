"""The options several commands share, as argparse parent parsers."""

from __future__ import annotations

import argparse
from typing import Any, NamedTuple

from ._base import Parser

__all__ = ["Parents", "add_common", "parents", "seconds"]


def seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {raw!r}") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds: {raw!r}")
    return value


def add_common(p: argparse.ArgumentParser, default: Any) -> None:
    """--stack, --backend, --cwd, --lock-timeout: accepted before and after the command.

    A sub-command's copies use SUPPRESS so as not to overwrite a value given before it.
    """
    p.add_argument(
        "--stack",
        "-s",
        default=default,
        metavar="NAME",
        help="stack name (default: $VEIL_STACK, else the one 'veil stack select' chose)",
    )
    p.add_argument(
        "--backend",
        default=default,
        metavar="URL",
        help="state backend URL (default: $VEIL_BACKEND_URL, else .veil in the project folder)",
    )
    p.add_argument(
        "--cwd",
        "-C",
        default=default,
        metavar="FOLDER",
        help="where to start looking for veil.<stack>.json (default: the current folder)",
    )


class Parents(NamedTuple):
    common: argparse.ArgumentParser  # --stack, --backend, --cwd
    opening: argparse.ArgumentParser  # + --allow-rollback
    locking: argparse.ArgumentParser  # + --allow-rollback, --lock-timeout


def parents() -> Parents:
    common = Parser(add_help=False)
    add_common(common, argparse.SUPPRESS)
    opening = Parser(add_help=False, parents=[common])
    opening.add_argument(
        "--allow-rollback",
        action="store_true",
        default=argparse.SUPPRESS,
        help="open a state older than one this folder has seen (a deliberate restore)",
    )
    locking = Parser(add_help=False, parents=[opening])
    locking.add_argument(
        "--lock-timeout",
        type=seconds,
        default=argparse.SUPPRESS,
        metavar="SECONDS",
        help="wait up to SECONDS for another run's lock (default: $VEIL_LOCK_TIMEOUT, else 0)",
    )
    return Parents(common, opening, locking)
