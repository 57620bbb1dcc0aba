"""``veil stack rotate | change-secrets-provider | recipients``: what protects a stack.

Each is an explicit operation by someone who can open the stack (see
``docs/security.md``); each rewrites the config file's ``protection`` member, which is
then committed with the change.
"""

from __future__ import annotations

import getpass
import os
import sys
from typing import Any, TextIO
from urllib.parse import parse_qsl, urlsplit

from ..errors import ProviderConfigError
from ..providers import PassphraseProvider, SecretsProvider
from ..stack import Stack
from ._base import CommandError, count_secrets, print_table, write_json
from ._parsers import Parents
from ._project import Context

__all__ = ["register"]

ENV_NEW_PASSPHRASE = "VEIL_NEW_PASSPHRASE"  # noqa: S105 - a variable name
ENV_NEW_PASSPHRASE_FILE = "VEIL_NEW_PASSPHRASE_FILE"  # noqa: S105


def register(commands: Any, parents: Parents) -> None:
    rotate = commands.add_parser(
        "rotate",
        parents=[parents.locking],
        help="use a new data key; reseal every secret in state and config",
        description="Give the stack a new data key, wrapped for every current recipient, "
        "and seal every secret in the state and every secure config value under it. "
        "Versions already in history stay as they were (history goes forward only).",
    )
    rotate.add_argument("--json", action="store_true", help="print the summary as JSON")
    rotate.set_defaults(handler=rotate_key)

    change = commands.add_parser(
        "change-secrets-provider",
        parents=[parents.locking],
        help="protect the stack with another provider, dropping the others",
        description="Wrap the data key for the provider URL alone and drop every other "
        "recipient. The data key is rotated too (whoever held the old provider may have "
        "kept it) unless --keep-data-key. A new passphrase comes from "
        f"${ENV_NEW_PASSPHRASE} or ${ENV_NEW_PASSPHRASE_FILE}, or is asked for twice on a "
        "terminal.",
    )
    change.add_argument("url", help="the new provider's URL")
    change.add_argument(
        "--keep-data-key",
        action="store_true",
        help="only re-wrap the current data key (cheap; the old provider's holder may "
        "still know it)",
    )
    change.add_argument("--json", action="store_true", help="print the summary as JSON")
    change.set_defaults(handler=change_provider)

    recipients = commands.add_parser(
        "recipients",
        help="list, add and remove the providers that can open the stack",
        description="A stack's data key is wrapped once per recipient (at most one per "
        "scheme): a key service plus an age break-glass key, for example.",
    )
    sub = recipients.add_subparsers(dest="action", metavar="ACTION")
    sub.required = True
    ls = sub.add_parser("ls", parents=[parents.opening], help="list the recipients' URLs")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=list_recipients)
    add = sub.add_parser(
        "add",
        parents=[parents.locking],
        help="let another provider open the stack",
        description="Wrap the data key for URL too (nothing is re-encrypted).",
    )
    add.add_argument("url", help="the provider's URL")
    add.add_argument("--json", action="store_true", help="print the summary as JSON")
    add.set_defaults(handler=add_recipient)
    rm = sub.add_parser(
        "rm",
        parents=[parents.locking],
        help="stop a provider opening the stack (rotates the data key)",
        description="Stop wrapping the data key for a recipient: URL as 'recipients ls' "
        "prints it, or SCHEME:// when one recipient has that scheme. The data key is "
        "rotated too unless --keep-data-key. The last recipient cannot be removed.",
    )
    rm.add_argument("url", help="the recipient's URL, or SCHEME://")
    rm.add_argument(
        "--keep-data-key",
        action="store_true",
        help="do not rotate (the removed recipient's holder may still know the key)",
    )
    rm.add_argument("--json", action="store_true", help="print the summary as JSON")
    rm.set_defaults(handler=remove_recipient)


# --- providers from URLs ------------------------------------------------------------------


def _has_passphrase(stack: Stack) -> bool:
    return any(url.startswith("passphrase://") for url in stack.recipients)


def _new_passphrase() -> str | None:
    """The new passphrase from VEIL_NEW_PASSPHRASE(_FILE) or a terminal; None if none."""
    value = os.environ.get(ENV_NEW_PASSPHRASE)
    if value is not None:
        return value
    path = os.environ.get(ENV_NEW_PASSPHRASE_FILE)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(
                f"cannot read the passphrase file {path!r} named by {ENV_NEW_PASSPHRASE_FILE}: "
                f"{type(exc).__name__}"
            ) from None
        return text[:-1] if text.endswith("\n") else text
    if sys.stdin is None or not sys.stdin.isatty():
        return None
    try:
        first = getpass.getpass("Enter the new passphrase: ")
        second = getpass.getpass("Re-enter the new passphrase: ")
    except EOFError:
        raise CommandError(
            f"no new passphrase was entered (end of input); set {ENV_NEW_PASSPHRASE}"
        ) from None
    if first != second:
        raise CommandError("the two passphrases differ; nothing was changed")
    return first


def provider_for(url: str, stack: Stack) -> str | SecretsProvider:
    """The provider a URL names, for a stack that may already use a passphrase (then
    the new passphrase cannot be $VEIL_PASSPHRASE, which opens the stack)."""
    if not url.lower().startswith("passphrase://"):
        return url
    new = _new_passphrase()
    if new is None:
        if _has_passphrase(stack):
            raise CommandError(
                f"a new passphrase is needed: set {ENV_NEW_PASSPHRASE} (or "
                f"{ENV_NEW_PASSPHRASE_FILE}), or run on a terminal to be asked; "
                "VEIL_PASSPHRASE is the one that opens the stack now"
            )
        return url
    PassphraseProvider.from_url(url)  # the URL's settings, checked
    settings: dict[str, Any] = {}
    for key, value in parse_qsl(urlsplit(url).query):
        settings[key] = value if key == "kdf" else int(value)
    try:
        return PassphraseProvider(passphrase=new, **settings)
    except TypeError:
        raise ProviderConfigError(f"unknown settings in {url!r}") from None


# --- summaries ----------------------------------------------------------------------------


def _secret_counts(stack: Stack) -> tuple[int, int]:
    config = stack.config
    in_config = sum(count_secrets(config.value(k)) for k in config if config.is_secret(k))
    return count_secrets(stack.outputs), in_config


def _summary(stack: Stack, before_key: str, before_serial: int) -> dict[str, Any]:
    in_state, in_config = _secret_counts(stack)
    return {
        "stack": stack.name,
        "rotated": stack.key_id != before_key,
        "previous_key_id": before_key,
        "key_id": stack.key_id,
        "previous_serial": before_serial,
        "serial": stack.serial,
        "state_secrets": in_state,
        "config_secrets": in_config,
        "recipients": stack.recipients,
        "config_file": str(stack.config.path),
    }


def _secrets(count: int) -> str:
    return f"{count} secret" + ("" if count == 1 else "s")


def _print_summary(out: TextIO, summary: dict[str, Any], headline: str) -> None:
    out.write(headline + "\n")
    if summary["rotated"]:
        out.write(
            f"  data key:   {summary['previous_key_id']} -> {summary['key_id']}; resealed "
            f"{_secrets(summary['state_secrets'])} in the state and "
            f"{summary['config_secrets']} in the config\n"
        )
    else:
        out.write(
            f"  data key:   {summary['key_id']}, kept (re-wrapped only): whoever kept the "
            "old provider's copy of it can still read new values; 'veil stack rotate' "
            "changes it\n"
        )
    out.write(f"  recipients: {', '.join(summary['recipients'])}\n")
    out.write(f"  serial:     {summary['previous_serial']} -> {summary['serial']}\n")
    out.write(f"Commit {summary['config_file']}: it records what protects the stack.\n")


# --- commands -----------------------------------------------------------------------------


def rotate_key(ctx: Context, out: TextIO) -> int:
    with ctx.open(lock=True) as stack:
        before = stack.key_id, stack.serial
        stack.rotate_key()
        stack.save()
        summary = _summary(stack, *before)
    if ctx.args.json:
        write_json(out, summary)
    else:
        _print_summary(out, summary, f"Rotated the data key of stack {ctx.name!r}.")
        out.write(
            "  versions already in history stay readable with the old key; new ones are not\n"
        )
    return 0


def change_provider(ctx: Context, out: TextIO) -> int:
    keep = ctx.args.keep_data_key
    with ctx.open(lock=True) as stack:
        before = stack.key_id, stack.serial
        stack.change_secrets_provider(provider_for(ctx.args.url, stack), rotate_key=not keep)
        stack.save()
        summary = _summary(stack, *before)
    if ctx.args.json:
        write_json(out, summary)
    else:
        _print_summary(
            out,
            summary,
            f"Stack {ctx.name!r} is now protected by {summary['recipients'][0]} alone"
            + ("." if keep else "; its data key was rotated too."),
        )
    return 0


def list_recipients(ctx: Context, out: TextIO) -> int:
    with ctx.open(lock=False) as stack:
        recipients = stack.recipients
        key_id = stack.key_id
    if ctx.args.json:
        write_json(out, {"key_id": key_id, "recipients": recipients})
    else:
        print_table(out, ("SCHEME", "URL"), [(u.split("://", 1)[0], u) for u in recipients])
    return 0


def add_recipient(ctx: Context, out: TextIO) -> int:
    with ctx.open(lock=True) as stack:
        before = stack.key_id, stack.serial
        known = set(stack.recipients)
        stack.add_recipient(provider_for(ctx.args.url, stack))
        stack.save()
        summary = _summary(stack, *before)
    added = ", ".join(u for u in summary["recipients"] if u not in known) or ctx.args.url
    if ctx.args.json:
        write_json(out, dict(summary, added=added))
        return 0
    out.write(
        f"Stack {ctx.name!r} can now be opened by {added} too "
        f"(the data key {summary['key_id']} wrapped for it; nothing re-encrypted).\n"
    )
    out.write(f"  recipients: {', '.join(summary['recipients'])}\n")
    out.write(f"Commit {summary['config_file']}: it records what protects the stack.\n")
    return 0


def remove_recipient(ctx: Context, out: TextIO) -> int:
    keep = ctx.args.keep_data_key
    with ctx.open(lock=True) as stack:
        before = stack.key_id, stack.serial
        removed = stack.remove_recipient(ctx.args.url, rotate_key=not keep)
        stack.save()
        summary = _summary(stack, *before)
    if ctx.args.json:
        write_json(out, dict(summary, removed=removed))
        return 0
    _print_summary(out, summary, f"Removed recipient {removed} from stack {ctx.name!r}.")
    return 0
