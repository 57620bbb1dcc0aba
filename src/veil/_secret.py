"""`Secret`: a known value that is secret, and the two sync accessors.

``Secret`` is the form a secret takes once it is known and at rest in memory: what
``state.loads`` returns for a sealed leaf, what a secure config value decrypts to, and
what a program may build with ``veil.secret(value)``. Its ``str`` and ``repr`` are
``[secret]``; the only way out is :meth:`Secret.reveal` or :func:`reveal`.

This module imports nothing of outputs, state, crypto or providers. Outputs take part
through hooks, methods named ``_veil_..._`` (``_veil_snapshot_``, ``_veil_reveal_`` and
``_veil_is_secret_``, ``_veil_is_ephemeral_``), so that :func:`reveal`,
:func:`is_secret`, :func:`is_ephemeral` and :func:`is_output` work on them without an
import cycle.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterator
from typing import Any, Generic, NoReturn, TypeVar

from ._known import MASK, remember
from .errors import InvalidValueError, SecretPickleError

__all__ = ["MASK", "Secret", "is_ephemeral", "is_output", "is_secret", "reveal"]

T = TypeVar("T")


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
        remember(value)

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

    # Each class holding key material or plaintext refuses pickling in its own words
    # (PassphraseCrypter, Document, ValueCipher, ...): the message says what it holds.
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


def is_ephemeral(value: object) -> bool:
    """Whether a value is ephemeral: a resolved Output marked with ``veil.ephemeral``
    (or derived from one). Such a value may be used but is never written anywhere.

    A :class:`Secret` and plain values are not ephemeral. A pending Output raises
    :class:`veil.PendingOutputError` (use ``await o.is_ephemeral()`` instead).
    """
    hook = getattr(type(value), "_veil_is_ephemeral_", None)
    if hook is not None:
        return bool(hook(value))
    return False


def is_output(value: object) -> bool:
    """Whether ``value`` is an Output (any object with veil's ``_veil_snapshot_`` hook)."""
    return hasattr(type(value), "_veil_snapshot_")
