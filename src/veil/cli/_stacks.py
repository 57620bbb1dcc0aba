"""``veil stack init | ls | select | rm | output``: stacks as a whole."""

from __future__ import annotations

import json
import os
import re
import shlex
from typing import Any, TextIO

from ..errors import VeilError
from ..providers import provider_from_description
from ..stack import DEFAULT_SECRETS_PROVIDER, Stack, remove_stack, stack_history
from ..state import StateStore, read_header, validate_stack_name
from ..workspace import Workspace
from ._base import (
    NotFound,
    UsageError,
    confirm,
    count_secrets,
    print_table,
    shown,
    text,
    warn,
    write_json,
)
from ._parsers import Parents
from ._project import Context

__all__ = ["register", "shell_name"]


def register(commands: Any, parents: Parents) -> None:
    init = commands.add_parser(
        "init",
        parents=[parents.common],
        help="create a stack",
        description="Create a stack: a new data key, an empty state in the backend and "
        "the config file veil.NAME.json in the current folder (or -C FOLDER).",
    )
    init.add_argument("name", help="the new stack's name")
    init.add_argument(
        "--secrets-provider",
        default=DEFAULT_SECRETS_PROVIDER,
        metavar="URL",
        help="passphrase://, file://PATH, age://RECIPIENT, awskms://..., ... "
        "(default: passphrase://)",
    )
    init.add_argument(
        "--from-pulumi",
        metavar="FILE",
        help="copy the config of a Pulumi stack (Pulumi.NAME.yaml), secure values "
        "included, decrypted with $PULUMI_CONFIG_PASSPHRASE; all or nothing",
    )
    init.add_argument("--json", action="store_true", help="print what was created as JSON")
    init.set_defaults(handler=init_stack)

    ls = commands.add_parser(
        "ls",
        parents=[parents.common],
        help="list the stacks in the backend",
        description="List the stacks in the backend with their serial, last update and "
        "secrets providers; the current stack is marked with '*'. Needs no key.",
    )
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=list_stacks)

    select = commands.add_parser(
        "select",
        parents=[parents.common],
        help="make a stack this project folder's current stack",
        description="Remember NAME as the current stack of the project folder, outside "
        "version control. --stack and $VEIL_STACK still win over it.",
    )
    select.add_argument("name", help="the stack to select")
    select.set_defaults(handler=select_stack)

    rm = commands.add_parser(
        "rm",
        parents=[parents.common],
        help="remove a stack: its state, history and lock",
        description="Remove stack NAME from the backend: its state, every kept version and "
        "its lock. The config file stays unless --remove-config. Asks on a terminal; "
        "elsewhere needs --yes.",
    )
    rm.add_argument("name", help="the stack to remove")
    rm.add_argument("--yes", "-y", action="store_true", help="do not ask")
    rm.add_argument("--remove-config", action="store_true", help="remove veil.NAME.json as well")
    rm.set_defaults(handler=remove)

    out = commands.add_parser(
        "output",
        parents=[parents.opening],
        help="show the stack's outputs",
        description="Print the stack's outputs; secrets as [secret] unless --show-secrets.",
    )
    out.add_argument("name", nargs="?", help="one output to print")
    out.add_argument("--show-secrets", action="store_true", help="print secrets in plaintext")
    form = out.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print JSON")
    form.add_argument(
        "--shell",
        action="store_true",
        help="print 'export NAME=VALUE' lines for eval; secret outputs only with --show-secrets",
    )
    out.set_defaults(handler=show_outputs)


# --- init ---------------------------------------------------------------------------------


def init_stack(ctx: Context, out: TextIO) -> int:
    args = ctx.args
    name = validate_stack_name(args.name)
    ctx.use(name, ctx.start)
    store = ctx.store()
    if args.from_pulumi:
        from ._pulumi import migrate  # ruamel.yaml: imported only when asked for

        stack = migrate(
            name,
            args.from_pulumi,
            store=store,
            project=ctx.start,
            secrets_provider=args.secrets_provider,
        )
    else:
        stack = Stack.create(
            name, backend=store, secrets_provider=args.secrets_provider, project_dir=ctx.start
        )
    with stack:
        if args.json:
            config = stack.config
            write_json(
                out,
                {
                    "stack": name,
                    "secrets_provider": stack.provider.url,
                    "backend": store.url,
                    "config_file": str(config.path),
                    "key_id": stack.key_id,
                    "config_values": len(config.keys()),
                    "secure_values": sum(1 for k in config if config.is_secret(k)),
                },
            )
            return 0
        out.write(f"Created stack {name!r}\n")
        out.write(f"  secrets provider: {stack.provider.url}\n")
        out.write(f"  backend:          {store.url}\n")
        out.write(f"  config:           {stack.config.path}\n")
        if args.from_pulumi:
            secure = sum(1 for k in stack.config if stack.config.is_secret(k))
            out.write(
                f"  copied {len(stack.config.keys())} config values ({secure} secure) "
                f"from {args.from_pulumi}\n"
            )
    return 0


# --- ls -----------------------------------------------------------------------------------


def _recipient_url(scheme: str, description: Any) -> str:
    try:
        return provider_from_description(scheme, dict(description)).url
    except VeilError:
        return f"{scheme}://"


def _describe(store: StateStore, name: str) -> dict[str, Any]:
    row: dict[str, Any] = {"name": name}
    try:
        header = read_header(store.read(name))
    except VeilError as exc:
        row.update(serial=None, last_update=None, providers=[], error=str(exc))
        return row
    last = None
    try:
        for version in stack_history(store, name):
            if version.serial == header.serial:
                last = version.time
                break
    except VeilError:
        pass
    row.update(
        serial=header.serial,
        last_update=last,
        providers=[_recipient_url(e.scheme, e.description) for e in header.providers],
    )
    return row


def list_stacks(ctx: Context, out: TextIO) -> int:
    store = ctx.store_without_stack()
    current = ctx.given_name() or Workspace(ctx.folder()).current_stack
    rows = [_describe(store, name) for name in store.list_stacks()]
    for row in rows:
        row["current"] = row["name"] == current
    if ctx.args.json:
        write_json(out, rows)
        return 0
    table = []
    for row in rows:
        if "error" in row:
            detail = "damaged: " + " ".join(str(row["error"]).split())
            table.append((row["name"] + ("*" if row["current"] else ""), "?", "?", detail))
            continue
        table.append(
            (
                row["name"] + ("*" if row["current"] else ""),
                str(row["serial"]),
                row["last_update"] or "-",
                ", ".join(row["providers"]),
            )
        )
    print_table(out, ("NAME", "SERIAL", "LAST UPDATE", "SECRETS PROVIDERS"), table)
    return 0


# --- select ---------------------------------------------------------------------------------


def select_stack(ctx: Context, out: TextIO) -> int:
    name = validate_stack_name(ctx.args.name)
    ctx.use(name, None)
    folder = ctx.project(need_config=False)
    store = ctx.store()
    if not store.exists(name):
        raise NotFound(f"no stack {name!r} in {store.url}; 'veil stack ls' lists them")
    Workspace(folder).select(name)
    out.write(f"Selected stack {name!r} for {folder}\n")
    env = os.environ.get("VEIL_STACK")
    if env and env != name:
        warn(f"VEIL_STACK={env} is set and wins over the selection while it is")
    return 0


# --- rm -------------------------------------------------------------------------------------


def remove(ctx: Context, out: TextIO) -> int:
    args = ctx.args
    name = validate_stack_name(args.name)
    ctx.use(name, None)
    folder = ctx.project(need_config=False)
    store = ctx.store()
    if not store.exists(name):
        raise NotFound(f"no stack {name!r} in {store.url}; 'veil stack ls' lists them")
    kept = len(store.history(name))
    holder = store.lock_info(name)
    also = f" and its config file {folder / f'veil.{name}.json'}" if args.remove_config else ""
    confirm(
        f"Remove stack {name!r} from {store.url}: its state, {kept} kept versions and its "
        f"lock{also}? This cannot be undone.",
        yes=args.yes,
        answer=name,
        refused=f"'veil stack rm {name}' removes the stack's state and history for good",
    )
    remove_stack(name, backend=store, project_dir=folder, remove_config=args.remove_config)
    out.write(f"Removed stack {name!r} from {store.url} (state, {kept} kept versions, lock)\n")
    if holder is not None:
        out.write(f"  it was locked by {holder.describe()}\n")
    config = folder / f"veil.{name}.json"
    if not args.remove_config and config.exists():
        out.write(f"  kept the config file {config} (pass --remove-config to remove it)\n")
    return 0


# --- output ---------------------------------------------------------------------------------

_NOT_NAME = re.compile(r"[^A-Za-z0-9_]")


def shell_name(name: str) -> str:
    """An output name as a shell variable name: other characters become '_', and a
    leading digit gets a '_' in front."""
    out = _NOT_NAME.sub("_", name) or "_"
    return "_" + out if out[0].isdigit() else out


def show_outputs(ctx: Context, out: TextIO) -> int:
    args = ctx.args
    with ctx.open(lock=False) as stack:
        outputs = stack.outputs
    if args.name is not None:
        if args.name not in outputs:
            raise NotFound(
                f"stack {ctx.name!r} has no output named {args.name!r}; it has: "
                + (", ".join(sorted(outputs)) or "none")
            )
        outputs = {args.name: outputs[args.name]}
        if not args.shell:
            value = shown(outputs[args.name], args.show_secrets)
            out.write((json.dumps(value, ensure_ascii=False) if args.json else text(value)) + "\n")
            return 0
    if args.shell:
        return _shell(outputs, args.show_secrets, out)
    masked = {k: shown(v, args.show_secrets) for k, v in outputs.items()}
    if args.json:
        write_json(out, masked)
    else:
        print_table(out, ("OUTPUT", "VALUE"), sorted((k, text(v)) for k, v in masked.items()))
    return 0


def _shell(outputs: dict[str, Any], show_secrets: bool, out: TextIO) -> int:
    names: dict[str, str] = {}
    left_out = []
    lines = []
    for key in sorted(outputs):
        value = outputs[key]
        if count_secrets(value) and not show_secrets:
            left_out.append(key)
            continue
        var = shell_name(key)
        if var in names:
            raise UsageError(
                f"outputs {names[var]!r} and {key!r} both become shell variable {var}; "
                "print one of them by name"
            )
        names[var] = key
        lines.append(f"export {var}={shlex.quote(text(shown(value, True)))}\n")
    out.writelines(lines)
    if left_out:
        warn(
            f"left out {len(left_out)} secret output(s) ({', '.join(left_out)}); "
            "add --show-secrets to include them"
        )
    return 0
