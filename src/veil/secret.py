"""`Secret`: a known value that is secret, and the two sync accessors.

``Secret`` is the form a secret takes once it is known and at rest in memory: what
``state.loads`` returns for a sealed leaf, what a secure config value decrypts to, and
what a program may build with ``veil.secret(value)``. Its ``str`` and ``repr`` are
``[secret]``; the only way out is :meth:`Secret.reveal` or :func:`reveal`.

This module imports nothing of outputs, state, crypto or providers. Outputs take part
through two private hooks (``_veil_reveal_`` and ``_veil_is_secret_``), so that
:func:`reveal` and :func:`is_secret` work on them without an import cycle.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import threading
from collections.abc import Iterator
from typing import Any, Generic, NoReturn, TypeVar

from .errors import InvalidValueError, SecretPickleError

__all__ = ["MASK", "Secret", "is_secret", "known_plaintexts", "reveal"]

T = TypeVar("T")

MASK = "[secret]"
"""What a secret looks like wherever it is printed."""

# Plaintexts of secret strings this process has handled, for the log filter. Short
# strings are skipped: masking every "a" in a log line would destroy it and protect
# nothing (see veil.logging). A set: adding is O(1) and the filter reads a snapshot.
_MIN_REMEMBERED = 4
_remembered: set[str] = set()
_remembered_order: list[str] = []  # the same strings in order of arrival, append-only
_remembered_lock = threading.Lock()
_remembered_version = 0


def _remember(value: object) -> None:
    """Record the string leaves of a secret value for log redaction."""
    global _remembered_version
    if type(value) is str:  # the common case, kept cheap
        if len(value) >= _MIN_REMEMBERED and value not in _remembered:
            with _remembered_lock:
                if value not in _remembered:
                    _remembered.add(value)
                    _remembered_order.append(value)
                    _remembered_version += 1
        return
    if type(value) in (int, float, bool, type(None), bytes):
        return
    found: list[str] = []
    _collect_strings(value, found, 0)
    if not found:
        return
    with _remembered_lock:
        added = [s for s in dict.fromkeys(found) if s not in _remembered]
        if added:
            _remembered.update(added)
            _remembered_order.extend(added)
            _remembered_version += 1


def _collect_strings(
    value: object, out: list[str], depth: int = 0, min_len: int = _MIN_REMEMBERED
) -> None:
    """Append the str leaves of ``value`` (dicts, lists, tuples) of ``min_len`` or more."""
    if isinstance(value, str):
        if len(value) >= min_len:
            out.append(value)
    elif isinstance(value, bytes) or depth > 64:
        return
    elif isinstance(value, dict):
        for v in value.values():
            _collect_strings(v, out, depth + 1, min_len)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _collect_strings(v, out, depth + 1, min_len)


# Texts this short are masked in an exception only where they are a whole argument:
# masking every "ab" inside a message would garble it and hide nearly nothing.
_MIN_MASKED_INSIDE = 3


def _secret_texts(value: object, out: list[str], numbers: list[object], depth: int) -> None:
    """The str leaves and the numbers of a secret value, through nested Secrets."""
    if depth > 64:
        return
    if isinstance(value, Secret):
        value = value.reveal()
    if isinstance(value, str):
        out.append(str(value))
    elif type(value) is int or type(value) is float:
        numbers.append(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _secret_texts(k, out, numbers, depth + 1)
            _secret_texts(v, out, numbers, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _secret_texts(v, out, numbers, depth + 1)
    else:
        hook = getattr(type(value), "_veil_snapshot_", None)
        if hook is not None:  # a resolved Output inside the value
            try:
                resolved, inner, known, _secret, _res = hook(value)
            except Exception:
                return
            if resolved and known:
                _secret_texts(inner, out, numbers, depth + 1)


def scrub_exception(exc: BaseException, value: object) -> None:
    """Mask the plaintext of the secret ``value`` in ``exc`` and the exceptions it chains.

    For an exception raised by a function that was given a secret (``apply`` on a
    secret Output): its arguments, its string attributes (``JSONDecodeError.doc``,
    ``OSError.filename``, ...) and its notes lose every string leaf of ``value``, so
    ``str(exc)``, a traceback and a log line show ``[secret]`` instead; so does every
    other secret this process has handled (see :func:`veil.redact`). The type and
    traceback of the exception are kept.
    """
    found: list[str] = []
    numbers: list[object] = []
    _secret_texts(value, found, numbers, 0)
    whole = {s for s in found if s}
    inside: set[str] = set()
    for s in whole:
        if len(s) >= _MIN_MASKED_INSIDE:
            inside.add(s)
            # The forms a message shows a string in: repr() and JSON escapes.
            inside.add(repr(s)[1:-1])
            inside.add(json.dumps(s)[1:-1])
    texts = sorted(inside, key=len, reverse=True)
    from .redact import redact  # the log filter's index of every secret seen

    def mask_text(text: str) -> str:
        # A whole argument that is the secret or a piece of it (a format field name
        # cut out of a secret format string, say).
        if text in whole or (len(text) >= _MIN_MASKED_INSIDE and any(text in s for s in whole)):
            return MASK
        for s in texts:
            if s in text:
                text = text.replace(s, MASK)
        return redact(text)

    def mask(item: object) -> object:
        if isinstance(item, str):
            return mask_text(item)
        if type(item) in (int, float) and any(item == n for n in numbers):
            return MASK
        if item is None or isinstance(item, (bool, int, float, bytes)):
            return item
        try:
            text = repr(item)
        except Exception:
            return MASK
        masked = mask_text(text)
        return item if masked == text else masked

    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        # An exception class that refuses changes is left as it is.
        with contextlib.suppress(Exception):
            e.args = tuple(mask(a) for a in e.args)
            attrs = getattr(e, "__dict__", {})
            for name, item in list(attrs.items()):
                if name == "__notes__" and isinstance(item, list):
                    attrs[name] = [mask(n) for n in item]
                elif isinstance(item, str):
                    attrs[name] = mask_text(item)
            if isinstance(e, OSError):
                for name in ("filename", "filename2", "strerror"):
                    item = getattr(e, name, None)
                    if isinstance(item, str):
                        setattr(e, name, mask_text(item))
        for linked in (e.__cause__, e.__context__):
            if linked is not None:
                todo.append(linked)


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


def _canonical(value: object) -> bytes | None:
    """A byte encoding that is equal for equal JSON-like values, or None."""
    if isinstance(value, str):
        return b"s" + value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes):
        return b"b" + value
    try:
        return b"j" + json.dumps(value, sort_keys=True, separators=(",", ":")).encode()
    except (TypeError, ValueError):
        return None


class Secret(Generic[T]):
    """A known value that is secret.

    - ``str``/``repr``/``format`` show ``[secret]``; :meth:`reveal` returns the value.
    - Equality with another ``Secret`` compares the values in constant time (for str,
      bytes and JSON-like values); a ``Secret`` never equals a plain value, so a
      comparison cannot be used as an oracle. Secrets are not hashable.
    - ``pickle`` is refused (:class:`veil.SecretPickleError`); ``copy`` works.
    """

    __slots__ = ("_value",)
    _value: T

    def __init__(self, value: T) -> None:
        if isinstance(value, Secret):
            value = value.reveal()
        if hasattr(type(value), "_veil_reveal_"):
            raise InvalidValueError(
                "Secret() takes a known value, not an Output; use Output.secret(o) "
                "or o.apply(veil.secret) instead"
            )
        object.__setattr__(self, "_value", value)
        _remember(value)

    def reveal(self) -> T:
        """The plaintext value. The one explicit way to take it out."""
        return self._value

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __repr__(self) -> str:
        return f"Secret({MASK})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, format_spec: str) -> str:
        return format(MASK, format_spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        a, b = _canonical(self._value), _canonical(other._value)
        if a is None or b is None:
            return bool(self._value == other._value)
        return hmac.compare_digest(a, b)

    def __ne__(self, other: object) -> bool:
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    __hash__ = None  # type: ignore[assignment]

    def __reduce__(self) -> NoReturn:
        raise SecretPickleError(
            "a Secret cannot be pickled: the pickle would hold its plaintext. "
            "Store it with veil.state.dumps, which encrypts it."
        )

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        self.__reduce__()

    def __copy__(self) -> Secret[T]:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Secret[T]:
        return self

    def __iter__(self) -> Iterator[Any]:
        raise TypeError("a Secret is not iterable; reveal() it explicitly if you must")


def reveal(value: Any) -> Any:
    """The plaintext of a :class:`Secret` or of a resolved Output, synchronously.

    Plain values are returned as they are. A pending Output raises
    :class:`veil.PendingOutputError`; an unknown one :class:`veil.UnknownValueError`.
    """
    if isinstance(value, Secret):
        return value.reveal()
    hook = getattr(type(value), "_veil_reveal_", None)
    if hook is not None:
        return hook(value)
    return value


def is_secret(value: object) -> bool:
    """Whether a value is secret: a :class:`Secret`, or a resolved Output marked secret.

    Plain values are not secret. A pending Output raises :class:`veil.PendingOutputError`
    (use ``await o.is_secret()`` instead).
    """
    if isinstance(value, Secret):
        return True
    hook = getattr(type(value), "_veil_is_secret_", None)
    if hook is not None:
        return bool(hook(value))
    return False
