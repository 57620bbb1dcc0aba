"""Where a value is secret by declaration: secret paths, and the secret fields of
typed classes.

Both compile to one form, a :class:`Spec`: a tree (a graph, for recursive types) that
says member by member where a value is secret. A path list (``conn.password``,
``users[*].token``) compiles with :func:`compile_paths`; a class's declarations
(``Annotated[str, veil.Secret]``, a field whose metadata holds ``{"veil.secret": True}``)
with :func:`shape_of`, once per class: type hints are resolved the first time a class
is met and kept in a weak cache, so classes can still be collected.

This module is below ``veil.output`` and ``veil.state`` (both use it) and imports
neither: Outputs are recognised by their hooks.
"""

from __future__ import annotations

import collections.abc as cabc
import json
import re
import sys
import types
import typing
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, NamedTuple

from ._secret import Secret, is_output
from .errors import SecretPathError

__all__ = [
    "ANY",
    "SECRET",
    "SECRET_METADATA",
    "Shape",
    "Spec",
    "apply",
    "compile_paths",
    "declares_secret",
    "field_is_secret",
    "fields_mapping",
    "parse_path",
    "shape_of",
    "spec_of_type",
]

SECRET_METADATA: Final = "veil.secret"  # noqa: S105  (a metadata key, not a password)
"""The field metadata key that declares a field secret: ``{"veil.secret": True}``."""


class _Any:
    __slots__ = ()

    def __repr__(self) -> str:
        return "*"


ANY: Final = _Any()
"""A path element that matches every member: ``users[*]``, ``zones.*``."""

Element = typing.Union[str, int, _Any]  # noqa: UP007  (a runtime alias on Python 3.10)


# --- specs -------------------------------------------------------------------------------


class Spec:
    """Where a value is secret. ``secret``: the whole value. Otherwise ``keys`` (members
    of a mapping or fields of an instance by name), ``indices`` (elements of a list or
    tuple) and ``any`` (every member) say it for the members. A spec is never changed
    once built; ``keys`` and ``indices`` already include what ``any`` says."""

    __slots__ = ("__weakref__", "any", "indices", "keys", "secret")

    def __init__(self) -> None:
        self.secret = False
        self.keys: dict[str, Spec] = {}
        self.indices: dict[int, Spec] = {}
        self.any: Spec | None = None

    def child_key(self, key: object) -> Spec | None:
        """The spec of a mapping member or a field."""
        if type(key) is str:
            return self.keys.get(key, self.any)
        return self.any

    def child_index(self, i: int, n: int) -> Spec | None:
        """The spec of element ``i`` of a sequence of length ``n``."""
        if not self.indices:
            return self.any
        a = self.indices.get(i)
        b = self.indices.get(i - n)
        if a is None:
            return b if b is not None else self.any
        return a if b is None else merge(a, b)

    def __repr__(self) -> str:
        if self.secret:
            return "Spec(secret)"
        return f"Spec(keys={sorted(self.keys)!r}, indices={sorted(self.indices)!r})"


SECRET: Final = Spec()
SECRET.secret = True


def merge(
    a: Spec | None, b: Spec | None, memo: dict[tuple[int, int], Spec] | None = None
) -> Spec | None:
    """A spec that marks what either marks (terminates on recursive specs)."""
    if a is None:
        return b
    if b is None or a is b:
        return a
    if a.secret:
        return a
    if b.secret:
        return b
    if memo is None:
        memo = {}
    done = memo.get((id(a), id(b)))
    if done is not None:
        return done
    out = Spec()
    memo[(id(a), id(b))] = out
    out.any = merge(a.any, b.any, memo)
    for k in {*a.keys, *b.keys}:
        child = merge(a.child_key(k), b.child_key(k), memo)
        if child is not None:
            out.keys[k] = child
    for i in {*a.indices, *b.indices}:
        child = merge(a.indices.get(i, a.any), b.indices.get(i, b.any), memo)
        if child is not None:
            out.indices[i] = child
    return out


# --- paths -------------------------------------------------------------------------------

_NAME: Final = re.compile(r"[^\s.\[\]*\"'\\]+")
_INDEX: Final = re.compile(r"(-?[0-9]+)\]")
_QUOTED: Final = re.compile(r'"(?:[^"\\]|\\.)*"')


def _path_error(text: str, what: str, at: int) -> SecretPathError:
    return SecretPathError(
        f"malformed secret path {text!r}: {what} at position {at}. Paths look like "
        "'conn.password', 'hosts[0]', 'users[*].token', 'zones.*.apiKey' or 'tags[\"a.b\"]'"
    )


def parse_path(text: str) -> tuple[Element, ...]:
    """The elements of a secret path: str keys, int indices and :data:`ANY`.

    ``a.b`` and ``a["b"]`` name a member (the quoted form takes any key, as JSON
    text); ``[0]`` (or ``[-1]``, from the end) an element; ``.*`` and ``[*]`` every
    member. A malformed path raises :class:`veil.SecretPathError`, which quotes it.
    """
    if not isinstance(text, str):
        raise SecretPathError(
            f"a secret path is a str such as 'conn.password', not {type(text).__name__}"
        )
    if not text:
        raise SecretPathError("a secret path is empty; name a member, as in 'conn.password'")
    out: list[Element] = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "." and out:
            i += 1
            if i < n and text[i] == "*":
                out.append(ANY)
                i += 1
                continue
            m = _NAME.match(text, i)
            if m is None:
                raise _path_error(text, "a name or '*' must follow '.'", i)
            out.append(m.group())
            i = m.end()
        elif c == "[":
            j = i + 1
            if text.startswith("*]", j):
                out.append(ANY)
                i = j + 2
            elif text.startswith('"', j):
                quoted = _QUOTED.match(text, j)
                try:
                    if quoted is None:
                        raise ValueError
                    key = json.loads(quoted.group())
                except ValueError:
                    raise _path_error(text, "a quoted key is not a valid JSON string", j) from None
                end = quoted.end()
                if not text.startswith("]", end):
                    raise _path_error(text, "']' must close a quoted key", end)
                out.append(key)
                i = end + 1
            else:
                m = _INDEX.match(text, j)
                if m is None:
                    raise _path_error(text, "'[' takes an index, '*' or a quoted key, then ']'", j)
                out.append(int(m.group(1)))
                i = m.end()
        elif not out and c == "*":
            out.append(ANY)
            i += 1
        elif not out:
            m = _NAME.match(text, i)
            if m is None:
                raise _path_error(text, f"unexpected {c!r}", i)
            out.append(m.group())
            i = m.end()
        else:
            raise _path_error(text, f"unexpected {c!r} (a member starts with '.' or '[')", i)
    return tuple(out)


def _chain(elements: tuple[Element, ...]) -> Spec:
    spec = SECRET
    for e in reversed(elements):
        node = Spec()
        if isinstance(e, _Any):
            node.any = spec
        elif isinstance(e, int):
            node.indices[e] = spec
        else:
            node.keys[e] = spec
        spec = node
    return spec


def compile_paths(paths: str | Iterable[str]) -> Spec | None:
    """The spec of a list of secret paths (a str is one path); None for no paths."""
    if isinstance(paths, str):
        paths = [paths]
    spec: Spec | None = None
    for path in paths:
        spec = merge(spec, _chain(parse_path(path)))
    return spec


# --- typed classes -------------------------------------------------------------------------

_DATACLASS, _ATTRS, _NAMEDTUPLE, _PULUMI = range(4)


class Shape(NamedTuple):
    """How an instance of a typed class is read as a mapping of its fields."""

    kind: int
    fields: tuple[tuple[str, str], ...] | None
    """(key, attribute) of each field; None: the instance's ``vars()``."""
    spec: Spec | None
    """Where the fields are secret by declaration (keys: field names); None: nowhere."""
    secret_attrs: frozenset[str]
    """Attributes that are (or hold something) secret by declaration."""


_PLAIN_TYPES: Final = frozenset(
    {dict, list, tuple, str, int, float, bool, type(None), bytes, set, frozenset}
)
_SHAPES: dict[int, tuple[weakref.ref[type], Shape | None]] = {}
_TYPED_DICTS: weakref.WeakKeyDictionary[type, Spec | None] = weakref.WeakKeyDictionary()

# Annotations that wrap a type without changing what the value is (typing's or
# typing_extensions', by name: veil does not import typing_extensions at start).
_WRAPPER_NAMES: Final = frozenset({"Required", "NotRequired", "ReadOnly", "ClassVar", "Final"})
_SEQUENCES: Final = frozenset(
    {list, set, frozenset, cabc.Sequence, cabc.MutableSequence, cabc.Set, cabc.MutableSet}
    | {cabc.Iterable, cabc.Collection}
)
_MAPPINGS: Final = frozenset({dict, cabc.Mapping, cabc.MutableMapping})
_UNIONS: Final = frozenset({typing.Union, getattr(types, "UnionType", typing.Union)})
# An annotation that could not be resolved is read as text: mentioning Secret inside
# Annotated[...] counts as a declaration (erring on the sealed side).
_SECRET_TEXT: Final = re.compile(r"Annotated\[.*\bSecret\b", re.DOTALL)


class _Unresolved(NamedTuple):
    text: str


def _is_marker(meta: object) -> bool:
    return meta is Secret or (isinstance(meta, Mapping) and meta.get(SECRET_METADATA) is True)


def _text_spec(text: str) -> Spec | None:
    return SECRET if _SECRET_TEXT.search(text) else None


def _spec_of_hint(hint: Any) -> Spec | None:
    """Where a value of type ``hint`` is secret by declaration."""
    if hint is None or hint is Any:
        return None
    if isinstance(hint, _Unresolved):
        return _text_spec(hint.text)
    if isinstance(hint, str):
        return _text_spec(hint)
    if isinstance(hint, typing.ForwardRef):
        return _text_spec(hint.__forward_arg__)
    metadata = getattr(hint, "__metadata__", None)
    if metadata is not None:  # Annotated[T, ...]
        if any(_is_marker(m) for m in metadata):
            return SECRET
        return _spec_of_hint(hint.__origin__)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is None:
        if _is_typeddict(hint):
            return _typeddict_spec(hint)
        return None  # instances of typed classes are read by their own shape
    if getattr(origin, "_name", None) in _WRAPPER_NAMES:
        return _spec_of_hint(args[0]) if args else None
    if origin in _UNIONS:
        spec: Spec | None = None
        for arg in args:
            spec = merge(spec, _spec_of_hint(arg))
        return spec
    if origin in _SEQUENCES:
        inner = _spec_of_hint(args[0]) if args else None
        return _with_any(inner)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return _with_any(_spec_of_hint(args[0]))
        node = Spec()
        for i, arg in enumerate(args):
            child = _spec_of_hint(arg)
            if child is not None:
                node.indices[i] = child
        return node if node.indices else None
    if origin in _MAPPINGS:
        return _with_any(_spec_of_hint(args[1]) if len(args) == 2 else None)
    if args and (origin is cabc.Awaitable or hasattr(origin, "_veil_snapshot_")):
        return _spec_of_hint(args[0])  # Input[T]: an Output or awaitable of T
    return None


def _is_typeddict(hint: Any) -> bool:
    # By shape, so TypedDicts of typing and of typing_extensions both count.
    return (
        isinstance(hint, type)
        and issubclass(hint, dict)
        and hasattr(hint, "__total__")
        and hasattr(hint, "__required_keys__")
    )


def _with_any(inner: Spec | None) -> Spec | None:
    if inner is None:
        return None
    node = Spec()
    node.any = inner
    return node


def _typeddict_spec(td: type) -> Spec | None:
    try:
        return _TYPED_DICTS[td]
    except KeyError:
        pass
    node = Spec()
    _TYPED_DICTS[td] = node  # a recursive TypedDict refers to this node
    for key, hint in _hints(td).items():
        child = _spec_of_hint(hint)
        if child is not None:
            node.keys[key] = child
    if not node.keys:
        _TYPED_DICTS[td] = None
        return None
    return node


def _hints(cls: type, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The type hints of ``cls`` (Annotated kept), forward references resolved against
    the module of the class that wrote each; one that does not resolve is kept as text."""
    try:
        hints = typing.get_type_hints(cls, include_extras=True)
    except Exception:  # an unresolvable forward reference: resolve one by one
        hints = {}
        for base in reversed(cls.__mro__):
            if base is object:
                continue
            import inspect  # only for annotations that do not all resolve

            try:
                own = inspect.get_annotations(base)
            except Exception:  # annotations that cannot even be read: none to use
                own = {}
            module = sys.modules.get(base.__module__)
            globalns = dict(vars(module)) if module is not None else {}
            localns = dict(vars(base))
            for name, hint in own.items():
                hints[name] = _resolve(hint, globalns, localns)
    return hints


def _function_hints(fn: Any) -> dict[str, Any]:
    """A function's type hints (Annotated kept), one by one where they do not all
    resolve (Pulumi's ``Input[T]`` names ``Output`` only in its own module)."""
    try:
        return typing.get_type_hints(fn, include_extras=True)
    except Exception:
        import inspect  # only for annotations that do not all resolve

        try:
            own = inspect.get_annotations(fn)
        except Exception:
            return {}
        globalns = getattr(fn, "__globals__", {})
        return {name: _resolve(hint, globalns, {}) for name, hint in own.items()}


def _merge_hints(a: Any, b: Any) -> Any:
    """Two hints of one field: the one that declares something secret wins."""
    if a is None:
        return b
    return a if _spec_of_hint(a) is not None else b


def _resolve(hint: Any, globalns: dict[str, Any], localns: dict[str, Any]) -> Any:
    if not isinstance(hint, str):
        return hint
    try:
        return eval(hint, globalns, localns)  # noqa: S307  (what get_type_hints does)
    except Exception:
        return _Unresolved(hint)


def _field_spec(metadata: Mapping[Any, Any] | None, hint: Any) -> Spec | None:
    if metadata and metadata.get(SECRET_METADATA) is True:
        return SECRET
    return _spec_of_hint(hint)


def _compute_shape(cls: type) -> Shape | None:
    kind: int
    fields: tuple[tuple[str, str], ...] | None
    specs: dict[str, Spec] = {}
    if hasattr(cls, "__dataclass_fields__"):
        import dataclasses  # a dataclass exists, so the module is loaded already

        if not dataclasses.is_dataclass(cls):
            return None
        kind = _DATACLASS
        hints = _hints(cls)
        dc_fields = dataclasses.fields(cls)
        fields = tuple((f.name, f.name) for f in dc_fields)
        for f in dc_fields:
            spec = _field_spec(f.metadata, hints.get(f.name, f.type))
            if spec is not None:
                specs[f.name] = spec
    elif getattr(cls, "__attrs_attrs__", None) is not None:
        kind = _ATTRS
        hints = _hints(cls)
        pairs = []
        for a in cls.__attrs_attrs__:  # type: ignore[attr-defined]
            key = a.alias if getattr(a, "alias", None) else a.name.lstrip("_")
            pairs.append((key, a.name))
            spec = _field_spec(a.metadata, hints.get(a.name, a.type))
            if spec is not None:
                specs[key] = spec
        fields = tuple(pairs)
    elif issubclass(cls, tuple) and isinstance(getattr(cls, "_fields", None), tuple):
        kind = _NAMEDTUPLE
        hints = _hints(cls)
        fields = tuple((name, name) for name in cls._fields)  # type: ignore[attr-defined]
        for name in cls._fields:  # type: ignore[attr-defined]
            spec = _spec_of_hint(hints.get(name))
            if spec is not None:
                specs[name] = spec
    elif hasattr(cls, "_pulumi_input_type"):
        kind = _PULUMI
        fields = None
        # Declared on the class, on __init__'s parameters or on a property's getter.
        hints = _hints(cls)
        for name, member in vars(cls).items():
            if name == "__init__" and callable(member):
                own = _function_hints(member)
                own.pop("return", None)
                hints.update(own)
            elif isinstance(member, property) and member.fget is not None:
                got = _function_hints(member.fget).get("return")
                if got is not None:
                    hints[name] = _merge_hints(hints.get(name), got)
        for name, hint in hints.items():
            spec = _spec_of_hint(hint)
            if spec is not None:
                specs[name] = spec
    else:
        return None
    spec_node: Spec | None = None
    if specs:
        spec_node = Spec()
        spec_node.keys.update(specs)
    if fields is None:
        attrs_ = frozenset(specs)
    else:
        attrs_ = frozenset(attr for key, attr in fields if key in specs)
    return Shape(kind, fields, spec_node, attrs_)


def shape_of(cls: type) -> Shape | None:
    """How instances of ``cls`` are read as a mapping of fields (dataclasses, attrs
    classes, NamedTuples, Pulumi input classes), or None for any other class.
    Computed once per class."""
    if cls in _PLAIN_TYPES:
        return None  # the common case
    # Keyed by id, with a weak reference that must still be the class: a lookup makes
    # no weak reference (as WeakKeyDictionary's does), and a collected class's entry
    # goes with it.
    entry = _SHAPES.get(id(cls))
    if entry is not None and entry[0]() is cls:
        return entry[1]
    shape = _compute_shape(cls)
    key = id(cls)
    try:
        ref = weakref.ref(cls, lambda r: _forget(key, r))
    except TypeError:  # a class that takes no weak reference: not cached
        return shape
    _SHAPES[key] = (ref, shape)
    return shape


def _forget(key: int, ref: weakref.ref[type]) -> None:
    entry = _SHAPES.get(key)
    if entry is not None and entry[0] is ref:
        del _SHAPES[key]


def declares_secret(cls: type) -> bool:
    """Whether ``cls`` declares any field secret."""
    shape = shape_of(cls)
    return shape is not None and shape.spec is not None


def field_is_secret(cls: type, attr: str) -> bool:
    """Whether the attribute ``attr`` of ``cls`` is declared secret (or holds
    something declared secret)."""
    shape = shape_of(cls)
    return shape is not None and attr in shape.secret_attrs


def spec_of_type(tp: Any) -> Spec | None:
    """Where a value of ``tp`` (a typed class, a TypedDict, or any type hint) is
    secret by declaration."""
    if isinstance(tp, type):
        shape = shape_of(tp)
        if shape is not None:
            return shape.spec
    return _spec_of_hint(tp)


_MISSING: Final = object()


def _items(value: Any, shape: Shape) -> list[tuple[str, str, Any]]:
    """(key, attribute, value) of each field an instance holds (a field that was never
    set, as ``field(init=False)`` can be, is left out)."""
    if shape.fields is None:
        return [(k, k, v) for k, v in vars(value).items()]
    got = [(key, attr, getattr(value, attr, _MISSING)) for key, attr in shape.fields]
    return [item for item in got if item[2] is not _MISSING]


# --- applying a spec --------------------------------------------------------------------------


def wrap_secret(value: Any) -> Any:
    """``value`` marked secret: a Secret, or a secret Output for an Output."""
    if isinstance(value, Secret):
        return value
    if is_output(value):
        return type(value).secret(value)
    return Secret(value)


def _output_default(value: Any, spec: Spec, whole: Callable[[Any], Any]) -> Any:
    return value.apply(lambda v: apply(v, spec, whole))


def apply(
    value: Any,
    spec: Spec | None,
    whole: Callable[[Any], Any] = wrap_secret,
    output: Callable[[Any, Spec, Callable[[Any], Any]], Any] = _output_default,
) -> Any:
    """A copy of ``value`` where ``spec`` marks it, each such part passed through
    ``whole`` (by default made a Secret); ``value`` itself is never changed and is
    returned as it is where nothing matched. Mappings, lists, tuples and typed
    instances are followed; an Output is given to ``output``."""
    if spec is None:
        return value
    if spec.secret:
        return whole(value)
    t = type(value)
    if t is str or t is int or t is float or t is bool or value is None:
        return value
    if isinstance(value, Secret):
        return value
    if is_output(value):
        return output(value, spec, whole)
    if isinstance(value, Mapping):
        out: dict[Any, Any] | None = None
        for k, v in value.items():
            child = spec.child_key(k)
            if child is None:
                continue
            r = apply(v, child, whole, output)
            if r is not v:
                if out is None:
                    out = dict(value)
                out[k] = r
        return value if out is None else out
    shape = shape_of(t)
    if shape is not None:
        changes: dict[str, Any] = {}
        for key, attr, v in _items(value, shape):
            child = spec.child_key(key)
            if child is None:
                continue
            r = apply(v, child, whole, output)
            if r is not v:
                changes[attr] = r
        return _replace(value, shape, changes) if changes else value
    if isinstance(value, (list, tuple)):
        items: list[Any] | None = None
        n = len(value)
        for i, v in enumerate(value):
            child = spec.child_index(i, n)
            if child is None:
                continue
            r = apply(v, child, whole, output)
            if r is not v:
                if items is None:
                    items = list(value)
                items[i] = r
        if items is None:
            return value
        return items if isinstance(value, list) else tuple(items)
    return value


def _replace(value: Any, shape: Shape, changes: dict[str, Any]) -> Any:
    """A shallow copy of a typed instance with some fields changed; validators and
    converters do not run again, frozen and slotted classes work."""
    if shape.kind == _NAMEDTUPLE:
        return value._replace(**changes)
    import copy  # only when mark_secret changes a typed instance

    new = copy.copy(value)
    for attr, v in changes.items():
        object.__setattr__(new, attr, v)
    return new


def fields_mapping(value: Any, shape: Shape) -> dict[str, Any]:
    """A typed instance as a dict of its fields, declared secret parts marked secret."""
    spec = shape.spec
    out: dict[str, Any] = {}
    for key, _attr, v in _items(value, shape):
        out[key] = v if spec is None else apply(v, spec.child_key(key))
    return out
