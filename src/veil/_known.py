"""The registry of known plaintexts: every secret string this process has handled.

``Secret``, ``Output.secret``, secure config and loaded state record the strings of
their secret values here; the log filter (:func:`veil.redact`) and the exception
scrubbing read them back. This module imports no other veil module, so every room
that marks or masks secrets can use it without a cycle.
"""

from __future__ import annotations

import threading

__all__ = [
    "MASK",
    "MIN_REMEMBERED",
    "collect_strings",
    "known_plaintexts",
    "plaintexts_since",
    "plaintexts_version",
    "remember",
]

MASK = "[secret]"
"""What a secret looks like wherever it is printed."""

MIN_REMEMBERED = 4
"""Shorter strings are not recorded: masking every "a" in a log line would destroy it
and protect nothing (see :func:`veil.install_log_filter`)."""

# A set: adding is O(1) and the log filter reads a snapshot.
_remembered: set[str] = set()
_remembered_order: list[str] = []  # the same strings in order of arrival, append-only
_remembered_lock = threading.Lock()
_remembered_version = 0


def remember(value: object) -> None:
    """Record the string leaves of a secret value for log redaction."""
    global _remembered_version
    if type(value) is str:  # the common case, kept cheap
        if len(value) >= MIN_REMEMBERED and value not in _remembered:
            with _remembered_lock:
                if value not in _remembered:
                    _remembered.add(value)
                    _remembered_order.append(value)
                    _remembered_version += 1
        return
    if type(value) in (int, float, bool, type(None), bytes):
        return
    found: list[str] = []
    collect_strings(value, found, 0)
    if not found:
        return
    with _remembered_lock:
        added = [s for s in dict.fromkeys(found) if s not in _remembered]
        if added:
            _remembered.update(added)
            _remembered_order.extend(added)
            _remembered_version += 1


def collect_strings(
    value: object, out: list[str], depth: int = 0, min_len: int = MIN_REMEMBERED
) -> None:
    """Append the str leaves of ``value`` (dicts, lists, tuples) of ``min_len`` or more."""
    if isinstance(value, str):
        if len(value) >= min_len:
            out.append(value)
    elif isinstance(value, bytes) or depth > 64:
        return
    elif isinstance(value, dict):
        for v in value.values():
            collect_strings(v, out, depth + 1, min_len)
    elif isinstance(value, (list, tuple)):
        for v in value:
            collect_strings(v, out, depth + 1, min_len)


def plaintexts_version() -> int:
    """A counter that changes whenever :func:`known_plaintexts` would return more;
    reading it copies nothing."""
    return _remembered_version


def known_plaintexts() -> tuple[int, frozenset[str]]:
    """The version counter and a snapshot of the secret strings seen so far.

    The counter changes whenever the set grows, so a consumer can cache work derived
    from the snapshot (the log filter rebuilds its index once per version).
    """
    with _remembered_lock:
        return _remembered_version, frozenset(_remembered)


def plaintexts_since(position: int) -> list[str]:
    """The secret strings remembered after the first ``position`` ones, in order of
    arrival; ask again from ``position + len(result)``. Copies only what is new."""
    with _remembered_lock:
        return _remembered_order[position:]
