"""``veil stack history | export | import | unlock``: kept versions, restore and
recovery, and the lock."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, TextIO

from .. import Secret
from .._files import write_atomic
from ..errors import StateFormatError
from ..stack import import_state, stack_history
from ._base import NotFound, UsageError, confirm, print_table, warn, write_json
from ._parsers import Parents
from ._project import Context

__all__ = ["from_plain", "register", "to_plain"]

# How a secret leaf is written by 'stack export --show-secrets' (and read by import).
_PLAIN_SECRET = "$veil:secret"  # noqa: S105 - a marker, not a password
_PLAIN_ESCAPE = "$veil:escape"


def register(commands: Any, parents: Parents) -> None:
    history = commands.add_parser(
        "history",
        parents=[parents.common],
        help="list the kept versions of the stack's state",
        description="The kept versions of the state, newest first: version, serial, when, "
        "who (the lock holder that wrote it) and data key id. Needs no key. How many are "
        "kept is the backend's history setting (default 10).",
    )
    history.add_argument("--json", action="store_true", help="print JSON")
    history.set_defaults(handler=show_history)

    export = commands.add_parser(
        "export",
        parents=[parents.common],
        help="print the state document, or a kept version of it",
        description="Print the encrypted state document (no key needed), or with "
        "--version N a version from 'veil stack history'. --show-secrets prints the "
        "outputs in plaintext instead (needs the key).",
    )
    export.add_argument("--version", type=int, metavar="N", help="a version from history")
    export.add_argument("--file", metavar="FILE", help="write to FILE (mode 0600)")
    export.add_argument(
        "--show-secrets",
        action="store_true",
        help="export the live outputs in plaintext (for 'veil stack import')",
    )
    export.set_defaults(handler=export_state)

    imp = commands.add_parser(
        "import",
        parents=[parents.common],
        help="replace the state with an export, as a new serial (the recovery path)",
        description="Replace the state of the stack with an export of the same stack (the "
        "document 'veil stack export' printed, or a plaintext export), as a new serial. "
        "Works when the live state is damaged or missing.",
    )
    imp.add_argument("--file", metavar="FILE", help="read FILE instead of stdin")
    imp.set_defaults(handler=import_export)

    unlock = commands.add_parser(
        "unlock",
        parents=[parents.common],
        help="break the stack's lock (Pulumi's 'cancel')",
        description="Remove the stack's lock, printing whose it was. The run holding it, if "
        "any is still going, can no longer save. Asks on a terminal; elsewhere needs --yes.",
    )
    unlock.add_argument("--yes", "-y", action="store_true", help="do not ask")
    unlock.add_argument("--json", action="store_true", help="print whose lock it was as JSON")
    unlock.set_defaults(handler=break_lock)


# --- history ------------------------------------------------------------------------------


def show_history(ctx: Context, out: TextIO) -> int:
    store = ctx.store()
    versions = stack_history(store, ctx.name)
    if not versions and not store.exists(ctx.name):
        raise NotFound(f"no stack {ctx.name!r} in {store.url}")
    if ctx.args.json:
        write_json(out, [v._asdict() for v in versions])
        return 0
    if not versions:
        warn(f"{store.url} keeps no versions of stack {ctx.name!r} (its history setting is 0)")
        return 0
    rows = [
        (
            str(v.version),
            str(v.serial),
            v.time,
            f"{v.owner}@{v.host}" if v.owner or v.host else "-",
            v.key_id,
        )
        for v in versions
    ]
    print_table(out, ("VERSION", "SERIAL", "TIME", "WHO", "KEY ID"), rows)
    return 0


# --- export -------------------------------------------------------------------------------


def to_plain(value: Any) -> Any:
    if isinstance(value, Secret):
        return {_PLAIN_SECRET: to_plain(value.reveal())}
    if isinstance(value, dict):
        out = {k: to_plain(v) for k, v in value.items()}
        if len(out) == 1 and (_PLAIN_SECRET in out or _PLAIN_ESCAPE in out):
            return {_PLAIN_ESCAPE: out}
        return out
    if isinstance(value, list):
        return [to_plain(v) for v in value]
    return value


def from_plain(value: Any) -> Any:
    if isinstance(value, dict):
        if len(value) == 1 and _PLAIN_SECRET in value:
            return Secret(value[_PLAIN_SECRET])
        if len(value) == 1 and _PLAIN_ESCAPE in value and isinstance(value[_PLAIN_ESCAPE], dict):
            return {k: from_plain(v) for k, v in value[_PLAIN_ESCAPE].items()}
        return {k: from_plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_plain(v) for v in value]
    return value


def export_state(ctx: Context, out: TextIO) -> int:
    args = ctx.args
    if args.show_secrets:
        if args.version is not None:
            raise UsageError(
                "--show-secrets exports the live outputs; export a version encrypted, "
                "import it, then export the outputs"
            )
        with ctx.open(lock=False) as stack:
            doc = {
                "veil_export": 1,
                "stack": stack.name,
                "serial": stack.serial,
                "tree": {"outputs": to_plain(stack.outputs)},
            }
        data = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
    else:
        store = ctx.store()
        if args.version is not None:
            data = store.read_version(ctx.name, args.version)
        else:
            data = store.read(ctx.name)
    if args.file:
        write_atomic(Path(args.file), data, mode=0o600)
        what = f"version {args.version}" if args.version is not None else "the state"
        out.write(f"Exported {what} of stack {ctx.name!r} to {args.file}\n")
    else:
        out.flush()
        if out is sys.stdout:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            out.write(data.decode("utf-8"))
    return 0


# --- import -------------------------------------------------------------------------------


def import_export(ctx: Context, out: TextIO) -> int:
    args = ctx.args
    if args.file:
        data = Path(args.file).read_bytes()
    else:
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("pass --file FILE, or pipe the export on stdin")
        data = sys.stdin.buffer.read()
    try:
        raw = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise StateFormatError(
            "the import is not JSON: expected the output of 'veil stack export'"
        ) from None
    if isinstance(raw, dict) and raw.get("veil_export") == 1:
        tree = raw.get("tree")
        outputs = tree.get("outputs") if isinstance(tree, dict) else None
        if not isinstance(outputs, dict):
            raise StateFormatError("the import holds no 'outputs' object")
        if raw.get("stack") != ctx.name:
            raise StateFormatError(
                f"the import is an export of stack {raw.get('stack')!r}, not {ctx.name!r}"
            )
        with ctx.open(lock=True) as stack:
            stack.replace_outputs(from_plain(outputs))
            stack.save()
            serial = stack.serial
        out.write(f"Imported {len(outputs)} outputs into stack {ctx.name!r} (serial {serial})\n")
        return 0
    project = ctx.project(need_config=False)
    serial = import_state(ctx.name, data, backend=ctx.store(), project_dir=project)
    out.write(f"Imported the export into stack {ctx.name!r} as serial {serial}\n")
    return 0


# --- unlock -------------------------------------------------------------------------------


def _holder(info: Any) -> dict[str, Any] | None:
    if info is None:
        return None
    return {"owner": info.owner, "host": info.host, "pid": info.pid, "since": info.time}


def break_lock(ctx: Context, out: TextIO) -> int:
    store = ctx.store()
    holder = store.lock_info(ctx.name)
    removed = None
    if holder is None and not store.exists(ctx.name):
        raise NotFound(f"no stack {ctx.name!r} in {store.url}")
    if holder is not None:
        confirm(
            f"Break the lock of stack {ctx.name!r} held by {holder.describe()}?",
            yes=ctx.args.yes,
            answer=ctx.name,
            refused="'veil stack unlock' breaks a lock another run may still hold",
        )
        removed = store.break_lock(ctx.name)
    if ctx.args.json:
        write_json(out, {"stack": ctx.name, "broken": _holder(removed)})
    elif holder is None:
        out.write(f"Stack {ctx.name!r} is not locked.\n")
    elif removed is None:
        out.write(f"The lock of stack {ctx.name!r} was released meanwhile.\n")
    else:
        out.write(f"Broke the lock of stack {ctx.name!r} held by {removed.describe()}.\n")
        out.write("  if that run is still going, it can no longer save\n")
    return 0
