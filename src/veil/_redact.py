"""Keep secrets out of logs: replace every known secret's plaintext with ``[secret]``.

"Known" means every secret string this process has handled: made with ``Secret``,
``veil.secret``/``Output.secret``, read from secure config or loaded from state
(strings of at least 4 characters; shorter ones would mask ordinary words).

:class:`SecretRedactingFilter` is a ``logging.Filter``; :func:`install_log_filter`
applies it to every record of every logger in the process.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from ._known import MASK, known_plaintexts, plaintexts_version
from ._known import MIN_REMEMBERED as _MIN_REMEMBERED

__all__ = ["SecretRedactingFilter", "install_log_filter", "redact"]

_PREFIX = _MIN_REMEMBERED


class _Index:
    """Secrets by their first characters, with the lengths found under each prefix.

    A scan checks, at each position whose first characters start some secret, one set
    lookup per distinct length under that prefix: O(text length x distinct lengths),
    however many secrets share a prefix (tokens often do: ``tok_...``, ``sk_live_...``).
    """

    def __init__(self, version: int, secrets: frozenset[str]) -> None:
        self.version = version
        self.secrets = secrets
        lengths: dict[str, set[int]] = {}
        for s in secrets:
            lengths.setdefault(s[:_PREFIX], set()).add(len(s))
        # Longest first: the longest match wins.
        self.by_prefix = {p: sorted(ls, reverse=True) for p, ls in lengths.items()}


_index = _Index(-1, frozenset())
_index_lock = threading.Lock()


def _current() -> _Index:
    global _index
    # The snapshot copies every known secret: taken only when the set has grown, not
    # for every log record.
    if plaintexts_version() != _index.version:
        with _index_lock:
            version, secrets = known_plaintexts()
            if version != _index.version:
                _index = _Index(version, secrets)
    return _index


def redact(text: str) -> str:
    """``text`` with the plaintext of every known secret replaced by ``[secret]``."""
    index = _current()
    by_prefix = index.by_prefix
    if not by_prefix or len(text) < _PREFIX:
        return text
    parts: list[str] = []
    last = 0
    i = 0
    end = len(text) - _PREFIX
    get = by_prefix.get
    secrets = index.secrets
    while i <= end:
        lengths = get(text[i : i + _PREFIX])
        if lengths:
            for n in lengths:
                if text[i : i + n] in secrets:
                    parts.append(text[last:i])
                    parts.append(MASK)
                    i += n
                    last = i
                    break
            else:
                i += 1
        else:
            i += 1
    if not parts:
        return text
    parts.append(text[last:])
    return "".join(parts)


class SecretRedactingFilter(logging.Filter):
    """A filter that rewrites each record's message (with its arguments), exception
    text and stack text with every known secret masked. It never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        return True


def _redact_record(record: logging.LogRecord) -> None:
    if getattr(record, "_veil_redacted", False):
        return
    try:
        message = record.getMessage()
    except Exception:  # a bad format string: leave it to logging's own error path
        return
    clean = redact(message)
    if clean != message:
        record.msg = clean
        record.args = None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    record._veil_redacted = True


_installed = False
_install_lock = threading.Lock()


def install_log_filter() -> None:
    """Redact every log record of this process, whichever logger or handler.

    Installs a record factory (so records are clean however they are handled) and
    the filter on the root logger's handlers. Calling it again does nothing.
    """
    global _installed
    with _install_lock:
        if _installed:
            return
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            _redact_record(record)
            return record

        logging.setLogRecordFactory(factory)
        flt = SecretRedactingFilter()
        for handler in logging.getLogger().handlers:
            handler.addFilter(flt)
        _installed = True
