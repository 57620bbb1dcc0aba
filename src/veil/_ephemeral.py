"""Ephemeral values: finding them where something is about to be written, the error
that refuses the write, and :func:`fingerprint`, what is written in their place.

An Output marked with ``veil.ephemeral`` (and everything derived from it) may be used
by the program but never written: not to state, config, a Pulumi checkpoint or a stack
export. Each writer collects the paths of every ephemeral value first and raises one
:class:`veil.EphemeralValueError` naming them all, before a byte is written.

This module knows Outputs only through their ``_veil_snapshot_`` hook.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

from ._inputs import EPHEMERAL
from ._secret import is_output
from .errors import EphemeralValueError, SecretPickleError

__all__ = ["Fingerprint", "bind_export", "ephemeral_refusal", "find_ephemeral", "fingerprint"]

_SHOWN = 20  # paths listed in a message; the error's .paths holds all of them
# Deeper values are left to the writers, which refuse them with a typed error anyway.
_MAX_DEPTH = 256

Path = tuple[str | int, ...]


def ephemeral_refusal(paths: Sequence[str], what: str) -> EphemeralValueError:
    """The error for ``what`` (``"state"``, ``"config"``, ...) holding ephemeral values
    at ``paths`` (already formatted). Names paths only, never a value."""
    listing = ", ".join(paths[:_SHOWN])
    if len(paths) > _SHOWN:
        listing += f" and {len(paths) - _SHOWN} more"
    return EphemeralValueError(
        f"ephemeral values may be used but never written, and {what} would hold one at: "
        f"{listing}. Nothing was written. Leave them out, or store "
        "veil.fingerprint(value) there to detect a change",
        tuple(paths),
    )


class Fingerprint:
    """A request for the fingerprint of a value, made by :func:`fingerprint`.

    It becomes a plain token (``fp:v1:<key id>:<hex>``) where it is exported:
    :meth:`veil.Stack.export` replaces it by ``stack.fingerprint(value, path)`` for the
    path it is exported at. It holds the value itself, so it shows no value and cannot
    be pickled.
    """

    __slots__ = ("_value",)
    _value: Any

    def __init__(self, value: Any) -> None:
        object.__setattr__(self, "_value", value)

    @property
    def value(self) -> Any:
        """The value to fingerprint (an Output, a Secret or a plain value)."""
        return self._value

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("Fingerprint is immutable")

    def __repr__(self) -> str:
        return "veil.fingerprint([secret])"

    def __reduce__(self) -> NoReturn:
        raise SecretPickleError(
            "a fingerprint request holds the value it fingerprints and cannot be pickled; "
            "export it (Stack.export) to turn it into its token"
        )

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        self.__reduce__()


def fingerprint(value: Any) -> Fingerprint:
    """The fingerprint of ``value``, to store instead of the value (an ephemeral one
    above all): a plain token, keyed by the stack's data key, for the path it is
    exported at.

    ``stack.export("db", {"password_version": veil.fingerprint(password)})`` stores
    ``stack.fingerprint(password, "db.password_version")``: equal on every run while
    the password is equal, different once it changes. The token names the data key
    it was made with (``fp:v1:<key id>:...``), so a new key id tells a key rotation
    from a changed value.
    """
    return Fingerprint(value)


def find_ephemeral(value: Any, path: Path = ()) -> list[Path]:
    """The paths of every known ephemeral value in ``value`` (nested dicts, lists and
    tuples; pending Outputs are not waited for)."""
    return bind_export(value, path, None)[1]


def bind_export(
    value: Any, path: Path, token: Callable[[Any, Path], Any] | None
) -> tuple[Any, list[Path]]:
    """``value`` with every :class:`Fingerprint` replaced by ``token(its value, path)``
    (left as they are if ``token`` is None), and the paths of every known ephemeral
    value in it.

    Containers (dicts, lists, tuples) are copied only where something is replaced;
    Outputs still pending are left for the save to check.
    """
    found: list[Path] = []
    seen: set[int] = set()

    def walk(v: Any, p: Path) -> Any:
        if isinstance(v, Fingerprint):
            return v if token is None else token(v.value, p)
        if is_output(v):
            try:
                resolved, _inner, _known, level, _res = v._veil_snapshot_()
            except Exception:
                return v  # a failed Output: the save reports it
            if resolved and level == EPHEMERAL:
                found.append(p)
            return v
        if isinstance(v, (Mapping, list, tuple)):
            if id(v) in seen or len(p) > _MAX_DEPTH:
                return v  # a cycle: state refuses it when saving
            seen.add(id(v))
            if isinstance(v, Mapping):
                d = {k: walk(m, (*p, k)) for k, m in v.items()}
                changed = any(d[k] is not m for k, m in v.items())
                return d if changed else v
            items = [walk(m, (*p, i)) for i, m in enumerate(v)]
            if any(a is not b for a, b in zip(items, v, strict=True)):
                return items if isinstance(v, list) else tuple(items)
            return v
        return v

    return walk(value, path), found
