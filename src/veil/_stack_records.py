"""What a stack keeps in its state and asks of its store, below :class:`veil.Stack`.

- The error when the config file and the state disagree; a recipient as a URL.

- The state's ``veil`` member: digests of the secure config values, the key before an
  unfinished rotation, and who wrote each version.
- Taking a stack's lock, waiting up to a timeout, and saying so when this very process
  holds it.
- The kept versions of a stack with who wrote each (``veil stack history``).
"""

from __future__ import annotations

import datetime
import json
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

from ._secret import Secret
from .errors import ConfigError, ConfigStateMismatchError, StateLockedError, VeilError
from .providers import provider_from_description
from .state.document import Document, read_header
from .state.store import StackLock, StateStore

__all__ = [
    "META",
    "StackVersion",
    "ledger",
    "meta",
    "mismatch_error",
    "now",
    "recipient_url",
    "retired_keys",
    "stack_history",
    "take_lock",
]

META = "veil"


def meta(document: Document) -> dict[str, Any]:
    tree = document.tree
    meta = tree.get(META) if isinstance(tree, dict) else None
    return meta if isinstance(meta, dict) else {}


def retired_keys(document: Document) -> dict[str, bytes]:
    """The keys the state vouches for as used before its current one (only while a
    rotation's config write is unconfirmed)."""
    out: dict[str, bytes] = {}
    retired = meta(document).get("retired_keys")
    if isinstance(retired, dict):
        for kid, sealed in retired.items():
            if isinstance(sealed, Secret) and isinstance(sealed.reveal(), str):
                try:
                    out[kid] = bytes.fromhex(sealed.reveal())
                except ValueError:
                    continue
    return out


def ledger(document: Document) -> dict[str, list[str]]:
    ledger = meta(document).get("config")
    if not isinstance(ledger, dict):
        return {}
    return {
        k: [d for d in v if isinstance(d, str)]
        for k, v in ledger.items()
        if isinstance(k, str) and isinstance(v, list)
    }


def _lock_timeout(value: float | None) -> float:
    if value is not None:
        return max(0.0, float(value))
    raw = os.environ.get("VEIL_LOCK_TIMEOUT", "").strip()
    if not raw:
        return 0.0
    try:
        return max(0.0, float(raw))
    except ValueError:
        raise ConfigError(f"VEIL_LOCK_TIMEOUT must be a number of seconds, not {raw!r}") from None


def take_lock(store: StateStore, name: str, timeout: float | None) -> StackLock:
    """The stack's lock, waiting up to ``timeout`` seconds while another holds it."""
    deadline = time.monotonic() + _lock_timeout(timeout)
    delay = 0.05
    while True:
        try:
            return store.lock(name)
        except StateLockedError:
            holder = store.lock_info(name)
            if holder is not None and holder.pid == os.getpid() and holder.host == _hostname():
                raise StateLockedError(
                    f"this process already has stack {name!r} open; close it (stack.close()) "
                    "or use a with block before opening it again"
                ) from None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise
        time.sleep(min(delay, remaining))
        delay = min(delay * 2, 1.0)


def _hostname() -> str:
    import socket  # on use: it costs at import time

    return socket.gethostname()


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class StackVersion(NamedTuple):
    """One kept version of a stack's state, for ``veil stack history``.

    ``owner``, ``host`` and ``time`` are what the writer recorded (informational:
    read without a key, so only as trustworthy as the backend)."""

    version: int
    serial: int
    time: str
    owner: str
    host: str
    key_id: str
    size: int


def stack_history(store: StateStore, name: str) -> list[StackVersion]:
    """The kept versions of stack ``name``, newest first; needs no key."""
    out = []
    for entry in store.history(name):
        try:
            data = store.read_version(name, entry.version)
            header = read_header(data)
            raw = json.loads(data)
            meta = raw.get("tree", {}).get(META, {}) if isinstance(raw.get("tree"), dict) else {}
            who = meta.get("written_by") if isinstance(meta, dict) else None
        except (VeilError, ValueError):
            continue  # a damaged copy: listed by the store, not here
        who = who if isinstance(who, dict) else {}
        out.append(
            StackVersion(
                version=entry.version,
                serial=header.serial,
                time=str(who.get("time") or entry.time),
                owner=str(who.get("owner") or ""),
                host=str(who.get("host") or ""),
                key_id=header.key_id,
                size=entry.size,
            )
        )
    return out


def mismatch_error(name: str, path: Path, what: str) -> ConfigStateMismatchError:
    return ConfigStateMismatchError(
        f"the config file {path} and the state of stack {name!r} disagree: {what}. If "
        "someone changed the stack elsewhere (a rotation, a new provider, a new value), "
        "pull the latest config file (git pull) and retry; if nobody did, one of the two "
        "was replaced, and nothing was used or written."
    )


def recipient_url(scheme: str, description: Mapping[str, Any]) -> str:
    """A recipient as a URL (its non-secret settings), or ``scheme://`` if its provider
    cannot be built here."""
    try:
        return provider_from_description(scheme, dict(description)).url
    except VeilError:
        return f"{scheme}://"
