"""Secret by declaration: secret fields of types, secret paths, and the schema registry.

A resource type says which of its fields are secret, and veil keeps them secret
wherever it reads a typed value (``Output.from_input``, lifting, ``state.dumps``,
``Stack.export``):

- ``Annotated[str, veil.Secret]`` on a field's annotation (dataclasses, attrs,
  NamedTuple, TypedDict, Pulumi input classes);
- ``veil.secret_field(...)`` for attrs classes, an ``attrs.field`` whose metadata
  holds ``{"veil.secret": True}``;
- ``dataclasses.field(metadata={"veil.secret": True})``.

For untyped trees, :func:`mark_secret` marks the values at paths (``conn.password``,
``users[*].token``), given directly or registered for a type token
(:func:`register_secret_paths`, or the ``veil.secret_schemas`` entry-point group).
See ``docs/schemas.md``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeVar, overload

from ._declared import SECRET_METADATA, Spec, apply, compile_paths, merge, spec_of_type
from ._inputs import Unknown, isawaitable
from ._secret import Secret, is_output
from .errors import SchemaError, UnknownSchemaError, UsageError
from .output import Output

__all__ = [
    "ENTRY_POINT_GROUP",
    "SECRET_METADATA",
    "mark_secret",
    "register_secret_paths",
    "registered_secret_paths",
    "secret_field",
]

ENTRY_POINT_GROUP: Final = "veil.secret_schemas"
"""Entry points of this group are callables returning ``{type_token: [paths]}``."""

T = TypeVar("T")

_lock = threading.Lock()
_paths: dict[str, tuple[str, ...]] = {}
_specs: dict[str, Spec] = {}
_entry_points_loaded = False
_entry_point_failures: list[str] = []


# --- declaring fields ------------------------------------------------------------------------


def secret_field(**kwargs: Any) -> Any:
    """An ``attrs.field(**kwargs)`` declared secret (its metadata holds
    ``{"veil.secret": True}``, next to any metadata given)."""
    try:
        import attrs
    except ImportError:
        raise SchemaError(
            "veil.secret_field() makes an attrs field and attrs is not installed: "
            "pip install attrs, or declare the field with Annotated[..., veil.Secret] or "
            'dataclasses.field(metadata={"veil.secret": True})'
        ) from None
    metadata = dict(kwargs.pop("metadata", None) or {})
    metadata[SECRET_METADATA] = True
    return attrs.field(metadata=metadata, **kwargs)


# --- the registry ----------------------------------------------------------------------------


def register_secret_paths(type_token: str, paths: Iterable[str]) -> None:
    """Declare the secret paths of values of ``type_token`` (for example a resource
    type token ``"aws:rds/instance:Instance"``), for ``mark_secret(value,
    type=type_token)``. Registering a token again adds paths: a path once declared
    secret is never dropped. A malformed path raises :class:`veil.SecretPathError`
    and registers nothing."""
    if not isinstance(type_token, str) or not type_token:
        raise SchemaError(f"a type token is a non-empty str, not {type_token!r}")
    new = (paths,) if isinstance(paths, str) else tuple(paths)
    spec = compile_paths(new)  # checks every path before anything is registered
    with _lock:
        before = _paths.get(type_token, ())
        _paths[type_token] = tuple(dict.fromkeys((*before, *new)))
        merged = merge(_specs.get(type_token), spec)
        if merged is not None:
            _specs[type_token] = merged


def registered_secret_paths(type_token: str) -> tuple[str, ...]:
    """The secret paths registered for ``type_token`` (entry points loaded if it is
    not registered yet); :class:`veil.UnknownSchemaError` if there are none."""
    _spec_of_token(type_token)
    return _paths.get(type_token, ())


def _load_entry_points() -> None:
    global _entry_points_loaded
    with _lock:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            table = ep.load()()
            if not isinstance(table, Mapping):
                raise TypeError("it did not return a mapping")
            for token, paths in table.items():
                register_secret_paths(token, paths)
        except Exception as exc:
            _entry_point_failures.append(f"{ep.name} = {ep.value} ({type(exc).__name__}: {exc})")


def _spec_of_token(type_token: str) -> Spec:
    spec = _specs.get(type_token)
    if spec is None:
        _load_entry_points()
        spec = _specs.get(type_token)
    if spec is None:
        failed = (
            "; these entry points failed to load: " + "; ".join(_entry_point_failures)
            if _entry_point_failures
            else ""
        )
        raise UnknownSchemaError(
            f"no secret paths are registered for the type token {type_token!r}: register "
            f"them with veil.register_secret_paths, or install the package whose "
            f"{ENTRY_POINT_GROUP!r} entry point declares them{failed}"
        )
    return spec


# --- marking values --------------------------------------------------------------------------


def _whole(value: Any) -> Any:
    if isinstance(value, Secret):
        return value
    if is_output(value) or isawaitable(value):
        return Output.secret(value)
    return Secret(value)


def _mark_output(o: Output[Any], spec: Spec, whole: Callable[[Any], Any] = _whole) -> Output[Any]:
    def mark(v: Any) -> Output[Any]:
        if isinstance(v, Unknown):
            return Output.secret(v)  # unknown yet: it may hold what the paths mark
        return Output.from_input(apply(v, spec, whole, _mark_output))

    return o.apply(mark, True)


@overload
def mark_secret(
    value: Output[T], paths: str | Iterable[str] | None = None, *, type: Any = None
) -> Output[T]: ...
@overload
def mark_secret(value: T, paths: str | Iterable[str] | None = None, *, type: Any = None) -> T: ...


def mark_secret(value: Any, paths: str | Iterable[str] | None = None, *, type: Any = None) -> Any:
    """``value`` with the values at ``paths`` (and at the paths registered for
    ``type``) marked secret.

    - Paths: ``conn.password``, ``hosts[0]``, ``hosts[-1]``, ``users[*].token``,
      ``zones.*.apiKey``, ``tags["a.b"]``; ``*`` is every member of a mapping, list or
      typed instance. A path that does not occur in ``value`` marks nothing. A
      malformed one raises :class:`veil.SecretPathError`, which quotes it.
    - ``type``: a type token registered with :func:`register_secret_paths` (or by a
      ``veil.secret_schemas`` entry point; :class:`veil.UnknownSchemaError` if none),
      or a class whose declarations apply (a TypedDict, a dataclass or attrs class)
      to a plain dict or list.
    - ``value`` is never changed: containers and typed instances on the way to a marked
      value are copied, the rest is shared. A marked value becomes a
      :class:`veil.Secret` (an Output or awaitable a secret Output). For an Output
      the result is an Output, secret if anything in its value was marked.
    """
    if paths is None and type is None:
        raise UsageError("mark_secret needs paths, type=..., or both")
    spec = compile_paths(paths) if paths is not None else None
    if type is not None:
        spec = merge(spec, _spec_of_token(type) if isinstance(type, str) else spec_of_type(type))
    if spec is None:
        return value
    try:
        if is_output(value):
            return _mark_output(value, spec)
        return apply(value, spec, _whole, _mark_output)
    except RecursionError:
        raise UsageError(
            "mark_secret: the value is nested too deeply or refers to itself"
        ) from None
