"""The ``veil`` command: stacks, config and outputs from the shell.

Secrets print as ``[secret]`` unless ``--show-secrets``. Errors are one line on
stderr and a non-zero exit code, never a traceback. The stack comes from ``--stack``
or ``VEIL_STACK``, the backend from ``--backend`` or ``VEIL_BACKEND_URL``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn, TextIO

from . import __version__
from ._files import write_atomic
from ._redact import install_log_filter, redact
from ._secret import MASK, Secret
from .errors import ConfigMissingError, LeakWarning, StateFormatError, VeilError
from .stack import DEFAULT_SECRETS_PROVIDER, Stack, _store

__all__ = ["main"]

# How a secret leaf is written by 'stack export --show-secrets' (and read by import).
_PLAIN_SECRET = "$veil:secret"  # noqa: S105 - a marker, not a password
_PLAIN_ESCAPE = "$veil:escape"

EXIT_ERROR = 1
EXIT_USAGE = 2


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("veil").strip()
        hint = f"; see 'veil {command + ' ' if command else ''}--help'"
        _fail(message + hint, EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    def add_common(p: argparse.ArgumentParser, default: Any) -> None:
        # Accepted before and after the command; the sub-command's copies must not
        # overwrite a value given before it, hence SUPPRESS there.
        same = default is argparse.SUPPRESS
        p.add_argument("--stack", "-s", default=default, help="stack name (default: $VEIL_STACK)")
        p.add_argument(
            "--backend",
            default=default,
            help="state backend URL (default: $VEIL_BACKEND_URL or file://./.veil)",
        )
        p.add_argument(
            "--cwd",
            "-C",
            default=default if same else ".",
            help="project folder holding veil.<stack>.json (default: .)",
        )

    common = _Parser(add_help=False)
    add_common(common, argparse.SUPPRESS)

    parser = _Parser(
        prog="veil", description="Keep secrets secret in infrastructure-as-code programs."
    )
    add_common(parser, None)
    parser.add_argument("--version", action="version", version=f"veil {__version__}")
    groups = parser.add_subparsers(dest="group", metavar="{stack,config}", parser_class=_Parser)
    groups.required = True

    stack = groups.add_parser("stack", help="create, list, export and import stacks")
    stack_cmds = stack.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    stack_cmds.required = True
    init = stack_cmds.add_parser("init", parents=[common], help="create a stack")
    init.add_argument("name", help="the new stack's name")
    init.add_argument(
        "--secrets-provider",
        default=DEFAULT_SECRETS_PROVIDER,
        help="provider URL: passphrase://, file://PATH, age://RECIPIENT, ... (default: passphrase://)",
    )
    stack_cmds.add_parser("ls", parents=[common], help="list the stacks in the backend")
    out = stack_cmds.add_parser("output", parents=[common], help="show the stack's outputs")
    out.add_argument("name", nargs="?", help="one output to print")
    out.add_argument("--show-secrets", action="store_true", help="print secrets in plaintext")
    out.add_argument("--json", action="store_true", help="print JSON")
    exp = stack_cmds.add_parser(
        "export",
        parents=[common],
        help="print the state document (encrypted unless --show-secrets)",
    )
    exp.add_argument(
        "--show-secrets",
        action="store_true",
        help="print a plaintext export instead of the document",
    )
    exp.add_argument("--file", help="write to this file instead of stdout")
    imp = stack_cmds.add_parser(
        "import", parents=[common], help="replace the stack's state with an export read from stdin"
    )
    imp.add_argument("--file", help="read from this file instead of stdin")

    config = groups.add_parser("config", help="get and set the stack's configuration")
    config_cmds = config.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    config_cmds.required = True
    cset = config_cmds.add_parser("set", parents=[common], help="set a value")
    cset.add_argument("key")
    cset.add_argument(
        "value",
        nargs="?",
        help="the value; omit it to read from stdin (keeps secrets out of shell history)",
    )
    cset.add_argument("--secret", action="store_true", help="store the value encrypted")
    cset.add_argument("--json", action="store_true", help="parse the value as JSON")
    cget = config_cmds.add_parser("get", parents=[common], help="print a value")
    cget.add_argument("key")
    cget.add_argument("--show-secrets", action="store_true", help="print secrets in plaintext")
    cget.add_argument("--json", action="store_true", help="print JSON")
    cls = config_cmds.add_parser("ls", parents=[common], help="list the configuration")
    cls.add_argument("--show-secrets", action="store_true", help="print secrets in plaintext")
    cls.add_argument("--json", action="store_true", help="print JSON")
    crm = config_cmds.add_parser("rm", parents=[common], help="remove a value")
    crm.add_argument("key")
    return parser


def _stack_name(args: argparse.Namespace) -> str:
    name = args.stack or os.environ.get("VEIL_STACK")
    if not name:
        raise _UsageError("no stack selected: pass --stack NAME or set VEIL_STACK")
    return str(name)


def _open(args: argparse.Namespace, *, lock: bool = False) -> Stack:
    return Stack.open(_stack_name(args), backend=args.backend, project_dir=args.cwd, lock=lock)


def _shown(value: Any, show: bool) -> Any:
    """``value`` for printing: secrets masked unless ``show``."""
    if isinstance(value, Secret):
        return _shown(value.reveal(), True) if show else MASK
    if isinstance(value, dict):
        return {k: _shown(v, show) for k, v in value.items()}
    if isinstance(value, list):
        return [_shown(v, show) for v in value]
    return value


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _print_table(rows: list[tuple[str, str]], out: TextIO, header: tuple[str, str]) -> None:
    if not rows:
        return
    width = max(len(header[0]), *(len(k) for k, _ in rows))
    out.write(f"{header[0]:<{width}}  {header[1]}\n")
    for key, value in rows:
        out.write(f"{key:<{width}}  {value}\n")


def _read_value(args: argparse.Namespace) -> str:
    if args.value is not None:
        return str(args.value)
    if sys.stdin.isatty():
        prompt = f"value for {args.key}: "
        return getpass.getpass(prompt) if args.secret else input(prompt)
    data = sys.stdin.read()
    return data[:-1] if data.endswith("\n") else data


# --- plaintext export ---------------------------------------------------------------


def _to_plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return {_PLAIN_SECRET: _to_plain(value.reveal())}
    if isinstance(value, dict):
        out = {k: _to_plain(v) for k, v in value.items()}
        if len(out) == 1 and (_PLAIN_SECRET in out or _PLAIN_ESCAPE in out):
            return {_PLAIN_ESCAPE: out}
        return out
    if isinstance(value, list):
        return [_to_plain(v) for v in value]
    return value


def _from_plain(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _PLAIN_SECRET in value:
            return Secret(value[_PLAIN_SECRET])
        if len(value) == 1 and _PLAIN_ESCAPE in value and isinstance(value[_PLAIN_ESCAPE], dict):
            return {k: _from_plain(v) for k, v in value[_PLAIN_ESCAPE].items()}
        return {k: _from_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_plain(v) for v in value]
    return value


# --- commands -----------------------------------------------------------------------


def _run(args: argparse.Namespace, out: TextIO) -> int:
    group, command = args.group, args.command
    if group == "stack" and command == "init":
        with Stack.create(
            args.name,
            backend=args.backend,
            secrets_provider=args.secrets_provider,
            project_dir=args.cwd,
        ) as stack:
            out.write(
                f"Created stack {stack.name!r} in {stack.backend.url} "
                f"(secrets provider: {stack.provider.scheme}://); config: {stack.config.path}\n"
            )
        return 0
    if group == "stack" and command == "ls":
        for name in _store(args.backend).list_stacks():
            out.write(name + "\n")
        return 0
    if group == "stack" and command == "output":
        with _open(args) as stack:
            outputs = stack.outputs
        if args.name is not None:
            if args.name not in outputs:
                raise ConfigMissingError(f"stack has no output named {args.name!r}")
            value = _shown(outputs[args.name], args.show_secrets)
            out.write((json.dumps(value) if args.json else _text(value)) + "\n")
            return 0
        shown = {k: _shown(v, args.show_secrets) for k, v in outputs.items()}
        if args.json:
            out.write(json.dumps(shown, indent=2, ensure_ascii=False) + "\n")
        else:
            _print_table(sorted((k, _text(v)) for k, v in shown.items()), out, ("OUTPUT", "VALUE"))
        return 0
    if group == "stack" and command == "export":
        name = _stack_name(args)
        if args.show_secrets:
            with _open(args) as stack:
                doc = stack._document
                text = json.dumps(
                    {
                        "veil_export": 1,
                        "stack": name,
                        "serial": doc.serial,
                        "tree": _to_plain(doc.tree),
                    },
                    indent=2,
                    ensure_ascii=False,
                )
            data = (text + "\n").encode("utf-8")
        else:
            data = _store(args.backend).read(name)
        if args.file:
            write_atomic(Path(args.file), data, mode=0o600)
        else:
            out.flush()
            if out is sys.stdout:
                sys.stdout.buffer.write(data)
            else:
                out.write(data.decode("utf-8"))
        return 0
    if group == "stack" and command == "import":
        data = Path(args.file).read_bytes() if args.file else sys.stdin.buffer.read()
        with _open(args, lock=True) as stack:
            tree = _imported_tree(data, stack)
            imported = tree.get("outputs") if isinstance(tree, dict) else None
            if not isinstance(imported, dict):
                raise StateFormatError("the import holds no 'outputs' object")
            stack._exports = dict(imported)
            stack.save()
            out.write(
                f"Imported {len(imported)} outputs into stack {stack.name!r} "
                f"(serial {stack.serial})\n"
            )
        return 0
    if group == "config":
        return _config(args, out)
    raise _UsageError(f"unknown command {group} {command}")


def _imported_tree(data: bytes, stack: Stack) -> Any:
    from .state.document import load_document

    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise StateFormatError(
            "the import is not JSON: expected the output of 'veil stack export'"
        ) from None
    if isinstance(raw, dict) and raw.get("veil_export") == 1:
        return _from_plain(raw.get("tree"))
    # An encrypted document: it must open with this stack's provider.
    return load_document(data, provider=stack.provider).tree


def _config(args: argparse.Namespace, out: TextIO) -> int:
    command = args.command
    # Writers hold the stack's lock: a program saving the stack meanwhile would
    # otherwise write its own copy of the config over this change.
    with _open(args, lock=command in ("set", "rm")) as stack:
        config = stack.config
        if command == "set":
            raw = _read_value(args)
            value: Any = raw
            if args.json:
                try:
                    value = json.loads(raw)
                except ValueError:
                    raise _UsageError(f"the value for {args.key!r} is not valid JSON") from None
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", LeakWarning)
                config.set(args.key, Secret(value) if args.secret else value, secret=args.secret)
            for warning in caught:
                sys.stderr.write(f"veil: warning: {redact(str(warning.message))}\n")
            # The state records a digest of each secure value, so that an older value
            # copied back into the committed file is recognised: save both.
            stack.save()
            if args.secret and args.value is not None:
                sys.stderr.write(
                    "veil: warning: a secret given on the command line stays in the shell's "
                    "history; omit VALUE to type it or pipe it on stdin\n"
                )
            return 0
        if command == "rm":
            config.remove(args.key)
            stack.save()
            return 0
        if command == "get":
            value = _shown(config.value(args.key), args.show_secrets)
            out.write((json.dumps(value) if args.json else _text(value)) + "\n")
            return 0
        if command == "ls":
            shown = {k: _shown(config.value(k), args.show_secrets) for k in config}
            if args.json:
                out.write(json.dumps(shown, indent=2, ensure_ascii=False) + "\n")
            else:
                rows = [(k, _text(v)) for k, v in shown.items()]
                _print_table(rows, out, ("KEY", "VALUE"))
            return 0
    raise _UsageError(f"unknown command config {command}")


def _fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"veil: error: {redact(message)}\n")
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``veil`` command; returns the exit code."""
    install_log_filter()
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return _run(args, sys.stdout)
    except _UsageError as exc:
        _fail(str(exc), EXIT_USAGE)
    except VeilError as exc:
        _fail(str(exc), EXIT_ERROR)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except OSError as exc:
        where = f": {exc.filename}" if exc.filename else ""
        _fail(f"{exc.strerror or type(exc).__name__}{where}", EXIT_ERROR)
    except Exception as exc:  # never a traceback: one line, redacted
        _fail(f"unexpected {type(exc).__name__}: {exc}", EXIT_ERROR)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
