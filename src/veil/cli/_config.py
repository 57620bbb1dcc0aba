"""``veil config set | get | ls | rm``: the stack's configuration."""

from __future__ import annotations

import getpass
import json
import sys
import warnings
from typing import Any, TextIO

from ..config import split_key_path
from ..errors import LeakWarning
from ._base import CommandError, NotFound, UsageError, print_table, shown, text, warn, write_json
from ._parsers import Parents
from ._project import Context

__all__ = ["register"]

_PATH_HELP = (
    "KEY is a path: its first part is the config key, the rest a place inside the "
    "value ('app:hosts[0]', 'db.password', '[\"a.b\"].c'), as Pulumi's --path"
)


def register(commands: Any, parents: Parents) -> None:
    cset = commands.add_parser(
        "set",
        parents=[parents.locking],
        help="set a value",
        description="Set a config value. Omit VALUE to type it (hidden for --secret) or "
        "pipe it on stdin, which keeps a secret out of the shell's history. An empty "
        "value from stdin or a prompt is refused (an unset variable, most likely) "
        "unless --allow-empty.",
    )
    cset.add_argument("key")
    cset.add_argument("value", nargs="?", help="the value (default: read from stdin)")
    cset.add_argument("--secret", action="store_true", help="store the value encrypted")
    cset.add_argument("--json", action="store_true", help="parse the value as JSON")
    cset.add_argument("--path", action="store_true", help=_PATH_HELP)
    cset.add_argument("--allow-empty", action="store_true", help="accept an empty value from stdin")
    cset.set_defaults(handler=set_value)

    cget = commands.add_parser(
        "get", parents=[parents.opening], help="print a value", description="Print a value."
    )
    cget.add_argument("key")
    cget.add_argument("--show-secrets", action="store_true", help="print secrets in plaintext")
    cget.add_argument("--json", action="store_true", help="print JSON")
    cget.add_argument("--path", action="store_true", help=_PATH_HELP)
    cget.set_defaults(handler=get_value)

    cls = commands.add_parser(
        "ls",
        parents=[parents.opening],
        help="list the configuration",
        description="List every config value; secrets as [secret] unless --show-secrets.",
    )
    cls.add_argument("--show-secrets", action="store_true", help="print secrets in plaintext")
    cls.add_argument("--json", action="store_true", help="print JSON")
    cls.set_defaults(handler=list_values)

    crm = commands.add_parser(
        "rm", parents=[parents.locking], help="remove a value", description="Remove a value."
    )
    crm.add_argument("key")
    crm.add_argument("--path", action="store_true", help=_PATH_HELP)
    crm.set_defaults(handler=remove_value)


def _key_path(args: Any) -> tuple[str, list[str | int] | None]:
    if not args.path:
        return args.key, None
    key, steps = split_key_path(args.key)
    return key, (steps or None)


def _read_value(args: Any) -> str:
    if args.value is not None:
        if args.value == "" and args.secret and not args.allow_empty:
            raise UsageError(
                f"the value for {args.key!r} is empty (an unset shell variable?); pass "
                "--allow-empty if an empty secret is meant"
            )
        return str(args.value)
    stdin = sys.stdin
    if stdin is None:
        raise UsageError(f"no value for {args.key!r}: give VALUE or pipe it on stdin")
    if stdin.isatty():
        prompt = f"value for {args.key}: "
        try:
            value = getpass.getpass(prompt) if args.secret else input(prompt)
        except EOFError:
            raise CommandError(f"no value for {args.key!r} was entered (end of input)") from None
        where = "typed"
    else:
        data = stdin.read()
        value = data[:-1] if data.endswith("\n") else data
        where = "read from stdin"
    if value == "" and not args.allow_empty:
        raise UsageError(
            f"the value for {args.key!r} {where} is empty (an unset shell variable?); nothing "
            "was changed. Pass --allow-empty if an empty value is meant"
        )
    return value


def set_value(ctx: Context, out: TextIO) -> int:
    args = ctx.args
    key, path = _key_path(args)
    raw = _read_value(args)
    value: Any = raw
    if args.json:
        try:
            value = json.loads(raw)
        except ValueError:
            raise UsageError(f"the value for {args.key!r} is not valid JSON") from None
    # Writers hold the stack's lock: a program saving the stack meanwhile would
    # otherwise write its own copy of the config over this change.
    with ctx.open(lock=True) as stack:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LeakWarning)
            stack.config.set(key, value, secret=args.secret, path=path)
        for warning in caught:
            warn(str(warning.message))
        # The state records a digest of each secure value, so that an older value
        # copied back into the committed file is recognised: save both.
        stack.save()
    if args.secret and args.value is not None:
        warn(
            "a secret given on the command line stays in the shell's history; omit VALUE "
            "to type it or pipe it on stdin"
        )
    return 0


def _at(value: Any, path: list[str | int], where: str) -> Any:
    for step in path:
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            raise NotFound(f"the config has no value at {where!r}") from None
    return value


def get_value(ctx: Context, out: TextIO) -> int:
    args = ctx.args
    key, path = _key_path(args)
    with ctx.open(lock=False) as stack:
        value = stack.config.value(key)
    value = shown(_at(value, path or [], args.key), args.show_secrets)
    out.write((json.dumps(value, ensure_ascii=False) if args.json else text(value)) + "\n")
    return 0


def list_values(ctx: Context, out: TextIO) -> int:
    args = ctx.args
    with ctx.open(lock=False) as stack:
        config = stack.config
        values = {k: shown(config.value(k), args.show_secrets) for k in config}
    if args.json:
        write_json(out, values)
    else:
        print_table(out, ("KEY", "VALUE"), [(k, text(v)) for k, v in values.items()])
    return 0


def remove_value(ctx: Context, out: TextIO) -> int:
    key, path = _key_path(ctx.args)
    with ctx.open(lock=True) as stack:
        stack.config.remove(key, path=path)
        stack.save()
    return 0
