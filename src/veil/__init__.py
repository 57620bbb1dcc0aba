"""veil: keep secrets secret in infrastructure-as-code programs.

Mark a value secret and everything derived from it stays secret; write state and
config with every secret-marked value encrypted, and only those; take the keys from
pluggable providers. See the README and ``docs/``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any, TypeVar, overload

from . import providers, schema, state
from ._ephemeral import Fingerprint, fingerprint
from ._redact import LogFilterHandle, SecretRedactingFilter, install_log_filter, redact
from ._secret import MASK, Secret, is_ephemeral, is_secret, reveal
from .config import StackConfig
from .crypto import ValueCipher
from .errors import *  # noqa: F403
from .errors import __all__ as _errors_all
from .output import (
    UNKNOWN,
    Input,
    Inputs,
    InputType,
    Output,
    Unknown,
    contains_unknowns,
    deferred_output,
)
from .schema import mark_secret, register_secret_paths, secret_field
from .stack import Stack

__version__ = "0.1.0"

_T = TypeVar("_T")
_K = TypeVar("_K")
_V = TypeVar("_V")
_S = TypeVar("_S", bound="str | bytes | int | float | bool | None")


# secret and unsecret take the same inputs, so their overloads are the same list.
@overload
def secret(value: Output[_T]) -> Output[_T]: ...


@overload
def secret(value: Secret[_T]) -> Output[_T]: ...


@overload
def secret(value: Awaitable[_T]) -> Output[_T]: ...


@overload
def secret(value: Mapping[_K, Output[_V]]) -> Output[dict[_K, _V]]: ...


@overload
def secret(value: Mapping[_K, _S]) -> Output[dict[_K, _S]]: ...


@overload
def secret(value: Mapping[_K, Any]) -> Output[dict[_K, Any]]: ...


@overload
def secret(value: list[Output[_V]]) -> Output[list[_V]]: ...


@overload
def secret(value: list[_S]) -> Output[list[_S]]: ...


@overload
def secret(value: list[Any]) -> Output[list[Any]]: ...


@overload
def secret(value: Input[_T]) -> Output[_T]: ...


def secret(value: Input[_T]) -> Output[_T]:
    """Mark a value secret: ``Output.secret(value)``.

    Everything derived from the result (``apply``, ``all``, ``format``, lifting, ...)
    is secret too, and state and config encrypt it when they are written.
    """
    return Output.secret(value)


@overload
def unsecret(value: Output[_T]) -> Output[_T]: ...


@overload
def unsecret(value: Secret[_T]) -> Output[_T]: ...


@overload
def unsecret(value: Awaitable[_T]) -> Output[_T]: ...


@overload
def unsecret(value: Mapping[_K, Output[_V]]) -> Output[dict[_K, _V]]: ...


@overload
def unsecret(value: Mapping[_K, _S]) -> Output[dict[_K, _S]]: ...


@overload
def unsecret(value: Mapping[_K, Any]) -> Output[dict[_K, Any]]: ...


@overload
def unsecret(value: list[Output[_V]]) -> Output[list[_V]]: ...


@overload
def unsecret(value: list[_S]) -> Output[list[_S]]: ...


@overload
def unsecret(value: list[Any]) -> Output[list[Any]]: ...


@overload
def unsecret(value: Input[_T]) -> Output[_T]: ...


def unsecret(value: Input[_T]) -> Output[_T]:
    """Declassify: ``Output.unsecret(value)``. The explicit, greppable way.

    An ephemeral value stays ephemeral."""
    return Output.unsecret(value)


@overload
def ephemeral(value: Output[_T]) -> Output[_T]: ...


@overload
def ephemeral(value: Secret[_T]) -> Output[_T]: ...


@overload
def ephemeral(value: Awaitable[_T]) -> Output[_T]: ...


@overload
def ephemeral(value: Mapping[_K, Output[_V]]) -> Output[dict[_K, _V]]: ...


@overload
def ephemeral(value: Mapping[_K, _S]) -> Output[dict[_K, _S]]: ...


@overload
def ephemeral(value: Mapping[_K, Any]) -> Output[dict[_K, Any]]: ...


@overload
def ephemeral(value: list[Output[_V]]) -> Output[list[_V]]: ...


@overload
def ephemeral(value: list[_S]) -> Output[list[_S]]: ...


@overload
def ephemeral(value: list[Any]) -> Output[list[Any]]: ...


@overload
def ephemeral(value: Input[_T]) -> Output[_T]: ...


def ephemeral(value: Input[_T]) -> Output[_T]:
    """Mark a value ephemeral: ``Output.ephemeral(value)``.

    Secret, and more: it may be used by the program but never written. Everything
    derived from it is ephemeral; saving it raises :class:`veil.EphemeralValueError`.
    Store :func:`veil.fingerprint` of it to detect a change.
    """
    return Output.ephemeral(value)


__all__ = [
    "MASK",
    "UNKNOWN",
    "Input",
    "InputType",
    "Inputs",
    "Fingerprint",
    "LogFilterHandle",
    "Output",
    "Secret",
    "SecretRedactingFilter",
    "Stack",
    "StackConfig",
    "Unknown",
    "ValueCipher",
    "__version__",
    "contains_unknowns",
    "deferred_output",
    "ephemeral",
    "fingerprint",
    "install_log_filter",
    "is_ephemeral",
    "is_secret",
    "mark_secret",
    "providers",
    "redact",
    "register_secret_paths",
    "reveal",
    "schema",
    "secret",
    "secret_field",
    "state",
    "unsecret",
    *_errors_all,
]
