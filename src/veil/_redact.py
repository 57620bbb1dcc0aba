"""Keep secrets out of logs: replace every known secret's plaintext with ``[secret]``.

"Known" means every secret string this process has handled: made with ``Secret``,
``veil.secret``/``Output.secret``, read from secure config or loaded from state
(strings of at least 4 characters; shorter ones would mask ordinary words).

:func:`redact` masks a string. :func:`install_log_filter` masks every log record of the
process as it is created (its message with its arguments, its exception text, its stack
text) and returns a handle that takes it out again. :class:`SecretRedactingFilter` is
the same masking as a ``logging.Filter`` for one handler or logger; it also masks string
fields passed with ``extra=``. Neither replaces a handler's formatter: each formatter
formats the record its own way, from masked parts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any

from ._known import MASK, plaintexts_since, plaintexts_version
from ._known import MIN_REMEMBERED as _MIN_REMEMBERED

__all__ = ["LogFilterHandle", "SecretRedactingFilter", "install_log_filter", "redact"]


_ONE: dict[tuple[int, int], tuple[tuple[int, int], ...]] = {}


def _one(offset: int, length: int) -> tuple[tuple[int, int], ...]:
    """The shared ``((offset, length),)``."""
    pair = (offset, length)
    return _ONE.setdefault(pair, (pair,))


class _Anchors:
    """Secrets of at least ``width + stride - 1`` characters, found by looking up only
    every ``stride``-th window of ``width`` characters of a line.

    Wherever such a secret starts in a line, one of those windows lies inside it, at an
    offset below ``stride``; so each secret is filed under its windows at offsets
    ``0 .. stride - 1``, as (offset, length). A scan costs one lookup per window
    (len(line) / stride of them), plus one set lookup per (offset, length) filed
    under a window that matches: it depends on the line and on how many lengths share
    a window, never on how many secrets there are.
    """

    def __init__(self, width: int, stride: int) -> None:
        self.width = width
        self.stride = stride
        self.filed: dict[str, tuple[tuple[int, int], ...]] = {}

    def add(self, secret: str) -> None:
        length = len(secret)
        for offset in range(self.stride):
            window = secret[offset : offset + self.width]
            known = self.filed.get(window)
            if known is None:
                # Most windows file one (offset, length): share those tuples (100,000
                # random 24-character secrets: 82 MB of index without, 41 MB with).
                self.filed[window] = _one(offset, length)
            elif (offset, length) not in known:
                self.filed[window] = (*known, (offset, length))

    def candidates(self, text: str, out: list[tuple[int, int]]) -> None:
        """Append (start, -length) for each place in ``text`` where a secret filed here
        may start (negative lengths: sorted, the longest comes first)."""
        filed, width, stride = self.filed, self.width, self.stride
        if not filed:
            return
        windows = [text[i : i + width] for i in range(0, len(text) - width + 1, stride)]
        if filed.keys().isdisjoint(windows):  # the common case
            return
        for j, window in enumerate(windows):
            for offset, length in filed.get(window, ()):
                out.append((j * stride - offset, -length))


class _Index:
    """Every known secret, in a set and filed by :class:`_Anchors`: secrets of 7
    characters or more under every 4th window of 4 characters of a line, shorter ones
    under every 2nd window of 3 (bench_redact.py: looking at a quarter of the windows
    instead of all of them made a 115-character line 3-4x cheaper to scan).

    Adding a secret files it under a few windows; nothing is copied or rebuilt. The
    index only grows, and one writer at a time (under ``_index_lock``) adds a secret
    to ``secrets`` before it files it: a reader, which takes no lock, always sees a
    complete index of some of the secrets (all those registered before its call),
    never a half-added one.
    """

    def __init__(self) -> None:
        self.secrets: set[str] = set()
        self.short = _Anchors(width=_MIN_REMEMBERED - 1, stride=2)
        self.long = _Anchors(width=4, stride=4)
        self.position = 0  # how many of the registry's plaintexts are in
        self.version = -1  # the registry's version when they were taken

    def add(self, secret: str) -> None:
        self.secrets.add(secret)
        anchors = self.long if len(secret) >= 7 else self.short
        anchors.add(secret)


_index = _Index()
_index_lock = threading.Lock()


def _synced() -> _Index:
    """The index, with every secret registered so far: only the new ones are added."""
    index = _index
    if plaintexts_version() != index.version:
        with _index_lock:
            version = plaintexts_version()
            if version != index.version:
                added = plaintexts_since(index.position)
                for secret in added:
                    index.add(secret)
                index.position += len(added)
                index.version = version
    return index


def redact(text: str) -> str:
    """``text`` with the plaintext of every known secret replaced by ``[secret]``;
    where secrets overlap, the longest one starting first is masked."""
    index = _synced()
    candidates: list[tuple[int, int]] = []
    index.long.candidates(text, candidates)
    index.short.candidates(text, candidates)
    if not candidates:
        return text
    candidates.sort()
    secrets = index.secrets
    parts: list[str] = []
    last = 0  # text[:last] is done
    for start, negative_length in candidates:
        end = start - negative_length
        if start >= last and text[start:end] in secrets:
            parts.append(text[last:start])
            parts.append(MASK)
            last = end
    if not parts:
        return text
    parts.append(text[last:])
    return "".join(parts)


# --- log records ------------------------------------------------------------------------

# Attributes every LogRecord has; the others came with ``extra=``.
_STANDARD_FIELDS = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


class _RedactedRecord:
    """Mixed into a record's class: the exception text is masked as it is stored.

    ``logging.Formatter.format`` stores its ``formatException(record.exc_info)`` in
    ``record.exc_text`` and writes that: each formatter renders the exception its own
    way (its own ``formatException``), and what it writes is masked.
    """

    # No __slots__ here or in the made classes: a record's class can then be swapped
    # for one of them (CPython requires the same instance layout).

    @property
    def exc_text(self) -> str | None:
        text: str | None = self.__dict__.get("exc_text")
        return text

    @exc_text.setter
    def exc_text(self, text: str | None) -> None:
        self.__dict__["exc_text"] = redact(text) if isinstance(text, str) else text

    def __reduce__(self) -> tuple[Any, ...]:
        # The class is made at run time: pickle (QueueHandler, multiprocessing) and
        # copy rebuild the record from its own class and state instead.
        base = type(self).__mro__[2]
        return _rebuild, (base, dict(self.__dict__))


_redacted_classes: dict[type[logging.LogRecord], type[logging.LogRecord]] = {}
_redacted_classes_lock = threading.Lock()


def _redacted_class(cls: type[logging.LogRecord]) -> type[logging.LogRecord]:
    found = _redacted_classes.get(cls)
    if found is None:
        with _redacted_classes_lock:
            found = _redacted_classes.get(cls)
            if found is None:
                namespace = {"__module__": cls.__module__}
                found = type(cls.__name__, (_RedactedRecord, cls), namespace)
                _redacted_classes[cls] = found
    return found


def _rebuild(cls: type[logging.LogRecord], state: dict[str, Any]) -> logging.LogRecord:
    record = cls.__new__(cls)
    record.__dict__.update(state)
    record.__class__ = _redacted_class(cls)
    return record


def _masked_args(args: Any) -> Any:
    if isinstance(args, Mapping):
        return {key: redact(str(value)) for key, value in args.items()}
    if isinstance(args, tuple):
        return tuple(redact(str(value)) for value in args)
    return args if args is None else redact(str(args))


def _redact_record(record: logging.LogRecord) -> None:
    """Mask the message (rendered with its arguments), the exception text (as any
    formatter stores it) and the stack text of ``record``. Running it again masks what
    was set since (``logging.makeLogRecord`` fills a record after the factory made it)."""
    try:
        message = record.getMessage()
    except Exception:
        # A bad format string: logging reports it with msg and args; give it them masked.
        record.msg = redact(str(record.msg))
        record.args = _masked_args(record.args)
    else:
        clean = redact(message)
        if clean != message:
            record.msg = clean
            record.args = None
    try:
        if not isinstance(record, _RedactedRecord):
            record.__class__ = _redacted_class(type(record))
    except TypeError:
        # A record class that takes no subclass or no other class: render the exception
        # now, the default way, and mask that instead.
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
    else:
        if record.exc_text is not None:
            record.exc_text = record.exc_text  # stored before: mask it now
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def _redact_extra(record: logging.LogRecord) -> None:
    fields = record.__dict__
    for key in [k for k, v in fields.items() if isinstance(v, str) and k not in _STANDARD_FIELDS]:
        fields[key] = redact(fields[key])


class SecretRedactingFilter(logging.Filter):
    """A filter that masks every known secret in each record it sees: the message
    (with its arguments), the exception text as the handler's formatter renders it,
    the stack text, and string fields passed with ``extra=``. It never drops a record
    and never touches a formatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        _redact_record(record)
        _redact_extra(record)
        return True


# --- the process-wide hook --------------------------------------------------------------


class _Installation:
    """One record factory of ours, on top of the factory that was there before."""

    def __init__(self, previous: Callable[..., logging.LogRecord]) -> None:
        self.previous = previous
        self.active = True
        self.handles: set[LogFilterHandle] = set()

    def factory(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record = self.previous(*args, **kwargs)
        if self.active:
            _redact_record(record)
        return record


_installed: _Installation | None = None
_install_lock = threading.Lock()


class LogFilterHandle:
    """What :func:`install_log_filter` returns: :meth:`uninstall` takes the filter out
    once no other handle holds it. Also a context manager that uninstalls on exit."""

    def __init__(self, installation: _Installation) -> None:
        self._installation = installation

    def uninstall(self) -> None:
        """Release this handle; the last one released puts back the record factory
        that was there before. Calling it again does nothing.

        If another record factory was set on top of veil's since, it stays, and veil's
        underneath only passes records through.
        """
        global _installed
        with _install_lock:
            installation = self._installation
            if self not in installation.handles:
                return
            installation.handles.discard(self)
            if installation.handles:
                return
            installation.active = False
            if logging.getLogRecordFactory() == installation.factory:
                logging.setLogRecordFactory(installation.previous)
            if _installed is installation:
                _installed = None

    def __enter__(self) -> LogFilterHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()


def install_log_filter() -> LogFilterHandle:
    """Mask every known secret in every log record of this process, whichever logger
    or handler writes it, until the returned handle is uninstalled.

    A record factory wraps the current one and masks each record as it is made: its
    message with its arguments, its stack text, and its exception text as each
    handler's own formatter renders it. Fields passed with ``extra=`` are added after
    the factory; :class:`SecretRedactingFilter` on a handler masks those too.

    Installing again while installed changes nothing and returns another handle: the
    filter stays until every handle is uninstalled.
    """
    global _installed
    with _install_lock:
        installation = _installed
        if installation is None or logging.getLogRecordFactory() != installation.factory:
            # First install, or someone replaced the factory since: wrap what is there.
            installation = _Installation(logging.getLogRecordFactory())
            logging.setLogRecordFactory(installation.factory)
            _installed = installation
        handle = LogFilterHandle(installation)
        installation.handles.add(handle)
        return handle
