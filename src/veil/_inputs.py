"""What Outputs are made from: the ``Input`` types, the unknown value, and the
``from_input`` walker that unwraps Outputs, Secrets and awaitables nested anywhere in
dicts, lists, tuples, dataclasses, attrs and Pulumi input classes.

The walker knows Outputs only through :class:`OutputKind`, which ``veil.output``
gives it: this module is below ``veil.output`` and does not import it.
"""

from __future__ import annotations

import types
from collections.abc import Awaitable, Callable, Generator, Mapping
from collections.abc import Awaitable as _AwaitableABC
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, TypeVar, Union

from ._declared import declares_secret
from ._secret import Secret
from .errors import UsageError

if TYPE_CHECKING:
    from .output import Output  # for the Input alias only

__all__ = [
    "EPHEMERAL",
    "NO_RESOURCES",
    "PLAIN",
    "SCALARS",
    "SECRET",
    "UNKNOWN",
    "Acc",
    "Input",
    "InputType",
    "Inputs",
    "NotPlain",
    "OutputKind",
    "Resources",
    "Unknown",
    "contains_unknowns",
    "copy_plain",
    "declassified",
    "isawaitable",
    "walk",
]

T = TypeVar("T")

# Pulumi's aliases, subscriptable at run time (Input[str]) as in Pulumi.
Input = Union[T, Awaitable[T], "Output[T]"]
Inputs = Mapping[str, "Input[Any]"]
InputType = Union[T, Mapping[str, Any]]  # noqa: UP007

Resources = frozenset[Any]
NO_RESOURCES: Resources = frozenset()

# How secret a value is: its Output's ``_secret`` field holds one of these levels.
# Combining values ORs their levels (so the strongest wins: 0 | 1 | 3 == 3), which keeps
# the ephemeral mark in the same field, and the same single operation, as secretness:
# a known Output stays five plain fields and every combinator stays as cheap as it was.
PLAIN = 0
SECRET = 1  # True counts as SECRET: levels are ints, and bool is one
EPHEMERAL = 3  # used, never written anywhere; implies SECRET (its bit is set)


def declassified(level: int) -> int:
    """The level after ``unsecret``: plain, unless ephemeral (nothing removes that)."""
    return EPHEMERAL if level == EPHEMERAL else PLAIN


# Leaf types that need no walking, no unknown check and no copying.
SCALARS: frozenset[type] = frozenset({str, int, float, bool, type(None), bytes})


class Unknown:
    """A value that is not known yet (during a preview). Any instance counts."""

    __slots__ = ()
    __module__ = "veil.output"  # its public home: pickles name it there

    def __repr__(self) -> str:
        return "UNKNOWN"

    def __reduce__(self) -> str:
        return "UNKNOWN"


UNKNOWN = Unknown()
"""The singleton unknown value."""


def contains_unknowns(val: Any) -> bool:
    """Whether ``val`` is, or holds in nested dicts, lists or tuples, an ``Unknown``.

    Safe on cycles and on nesting of any depth.
    """
    t = type(val)
    if t in SCALARS:
        return False
    if isinstance(val, Unknown):
        return True
    if not isinstance(val, (dict, list, tuple)):
        return False
    seen: set[int] = set()
    todo: list[Any] = [val]
    while todo:
        v = todo.pop()
        if isinstance(v, Unknown):
            return True
        if type(v) in SCALARS:
            continue
        if isinstance(v, dict):
            if id(v) in seen:
                continue
            seen.add(id(v))
            todo.extend(dict.values(v))
        elif isinstance(v, (list, tuple)):
            if id(v) in seen:
                continue
            seen.add(id(v))
            todo.extend(v)
    return False


_CO_ITERABLE_COROUTINE = 0x100


def isawaitable(obj: object) -> bool:
    """``inspect.isawaitable`` without importing inspect."""
    return isinstance(obj, (types.CoroutineType, _AwaitableABC)) or (
        isinstance(obj, types.GeneratorType) and bool(obj.gi_code.co_flags & _CO_ITERABLE_COROUTINE)
    )


class NotPlain(Exception):
    pass


_PLAIN_DEPTH = 100


def copy_plain(val: Any, depth: int) -> Any:
    """A copy of a tree of exact dicts and lists with scalar leaves (the common case of
    from_input), in comprehensions; anything else raises NotPlain and takes the walk."""
    if depth > _PLAIN_DEPTH:
        raise NotPlain  # deep or cyclic: the iterative walk handles it
    t = type(val)
    if t is dict:
        d = depth + 1
        return {
            k if type(k) in SCALARS else _not_plain(): v if type(v) in SCALARS else copy_plain(v, d)
            for k, v in val.items()
        }
    if t is list:
        d = depth + 1
        return [v if type(v) in SCALARS else copy_plain(v, d) for v in val]
    raise NotPlain


def _not_plain() -> NoReturn:
    raise NotPlain


# --- from_input: one iterative walker, driven synchronously or by callbacks ---------------


class Acc:
    """What the walk has seen so far."""

    __slots__ = ("known", "resources", "secret")

    def __init__(self) -> None:
        self.known = True
        self.secret: int = PLAIN  # a level: PLAIN, SECRET or EPHEMERAL
        self.resources: Resources = NO_RESOURCES

    def merge(self, known: bool, secret: int, resources: Resources) -> None:
        if not known:
            self.known = False
        if secret:
            self.secret |= secret
        if resources:
            self.resources = self.resources | resources


_IN_PROGRESS = object()

# Frame kinds.
_DICT, _LIST, _TUPLE, _OBJ = 0, 1, 2, 3


def _rebuildable_fields(val: Any) -> list[str] | None:
    """Field names to unwrap for dataclasses, attrs classes and Pulumi input classes."""
    cls = type(val)
    if hasattr(cls, "__dataclass_fields__"):
        # A dataclass instance means the program imported dataclasses already.
        import dataclasses

        return [f.name for f in dataclasses.fields(val) if f.init]
    attrs_fields = getattr(cls, "__attrs_attrs__", None)
    if attrs_fields is not None:
        return [
            a.alias if getattr(a, "alias", None) else a.name.lstrip("_")
            for a in attrs_fields
            if a.init
        ]
    if hasattr(cls, "_pulumi_input_type") and hasattr(val, "__dict__"):
        return list(vars(val))
    return None


def _get_field(val: Any, name: str) -> Any:
    cls = type(val)
    attrs_fields = getattr(cls, "__attrs_attrs__", None)
    if attrs_fields is not None:
        for a in attrs_fields:
            alias = a.alias if getattr(a, "alias", None) else a.name.lstrip("_")
            if alias == name:
                return getattr(val, a.name)
    if hasattr(cls, "_pulumi_input_type") and not hasattr(cls, "__dataclass_fields__"):
        return vars(val)[name]
    return getattr(val, name)


class _Frame:
    __slots__ = ("changed", "index", "items", "key", "kind", "orig", "result")

    def __init__(self, kind: int, orig: Any, items: list[Any], result: Any) -> None:
        self.kind = kind
        self.orig = orig
        self.items = items
        self.index = 0
        self.result = result
        self.key: Any = None
        self.changed = False


class OutputKind(NamedTuple):
    """How the walker reads Outputs; given by ``veil.output``."""

    type: type
    """The Output class."""
    state: Callable[[Any], tuple[Any, bool, int, Resources, bool] | None]
    """``(value, known, secret level, resources, clean)`` of an Output, None while it is
    pending; raises the exception of a failed one. ``clean``: the value holds no
    Output, Secret or awaitable, so it needs no walking."""
    from_awaitable: Callable[[Awaitable[Any]], Any]
    """A pending Output of an awaitable's result."""


def walk(root: Any, acc: Acc, outputs: OutputKind) -> Generator[Any, None, Any]:
    """Unwrap ``root``; yields each pending Output it needs, and is resumed once that
    Output has settled. Returns the unwrapped value. Iterative, so any depth works;
    shared and cyclic dicts and lists are reproduced, not walked twice or forever."""
    output_type = outputs.type
    state = outputs.state
    memo: dict[int, Any] = {}
    # Containers whose walk unwrapped nothing: an object holding them need not be rebuilt.
    unchanged: set[int] = set()
    stack: list[_Frame] = []
    cur = root
    while True:
        # 1. Turn `cur` into a finished value, or push a frame for it.
        pushed = False
        orig = cur
        while True:
            if type(cur) in SCALARS:
                break
            if isinstance(cur, output_type):
                got = state(cur)
                if got is None:
                    yield cur
                    got = state(cur)
                    assert got is not None
                value, known, secret, res, clean = got
                acc.merge(known, secret, res)
                if not known and not contains_unknowns(value):
                    cur = UNKNOWN
                    break
                cur = value
                if clean:
                    break
                continue
            if isinstance(cur, Secret):
                acc.secret |= SECRET
                cur = cur.reveal()
                continue
            if isinstance(cur, Unknown):
                acc.known = False
                break
            names = None
            if isinstance(cur, dict):
                kind = _DICT
            elif isinstance(cur, list):
                kind = _LIST
            elif isinstance(cur, tuple):
                kind = _TUPLE
                if type(cur) is not tuple and declares_secret(type(cur)):
                    acc.secret |= True  # a NamedTuple with a secret field
            elif isawaitable(cur):
                cur = outputs.from_awaitable(cur)
                continue
            else:
                names = _rebuildable_fields(cur)
                if names is None:
                    break  # any other object is a leaf
                kind = _OBJ
                if declares_secret(type(cur)):
                    acc.secret |= True  # its class declares a secret field
            seen = memo.get(id(cur))
            if seen is not None:
                if seen is _IN_PROGRESS:
                    raise UsageError(
                        "from_input: a reference cycle runs through a tuple or an object; "
                        "only dicts and lists may refer back to themselves"
                    )
                cur = seen
                if id(orig) in unchanged:
                    orig = cur
                break
            if kind == _DICT:
                frame = _Frame(kind, cur, list(dict.items(cur)), {})
                memo[id(cur)] = frame.result
            elif kind == _LIST:
                frame = _Frame(kind, cur, list.copy(cur), [])
                memo[id(cur)] = frame.result
            elif kind == _TUPLE:
                frame = _Frame(kind, cur, list(cur), [])
                memo[id(cur)] = _IN_PROGRESS
            else:
                assert names is not None
                frame = _Frame(kind, cur, [(n, _get_field(cur, n)) for n in names], {})
                memo[id(cur)] = _IN_PROGRESS
            if cur is not orig:
                frame.changed = True  # it came out of an Output, a Secret or an awaitable
            stack.append(frame)
            pushed = True
            break

        # 2. Hand a finished value to the frame above.
        if not pushed:
            if not stack:
                return cur
            _store(stack[-1], cur, cur is not orig)

        # 3. Find the next value to visit, finishing frames on the way.
        while True:
            frame = stack[-1]
            nxt = _next_child(frame, output_type)
            if nxt is not _FRAME_DONE:
                cur = nxt
                break
            stack.pop()
            value = _finish(frame, memo)
            if not stack:
                return value
            if not frame.changed:
                unchanged.add(id(frame.orig))
            _store(stack[-1], value, frame.changed)


_FRAME_DONE = object()
_KEY_PENDING = object()


class _Key:
    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _store(frame: _Frame, value: Any, changed: bool) -> None:
    """Record a finished child value in its frame; ``changed`` if the walk unwrapped
    something in it."""
    if changed:
        frame.changed = True
    kind = frame.kind
    if kind == _DICT:
        if frame.key is _KEY_PENDING:
            frame.key = _Key(value)
            return
        key = frame.key
        frame.key = None
        frame.result[key.value] = value
    elif kind == _OBJ:
        frame.result[frame.items[frame.index - 1][0]] = value
    else:
        frame.result.append(value)


def _next_child(frame: _Frame, output_type: type) -> Any:
    """The next child of a frame to visit; plain children are stored on the way."""
    kind = frame.kind
    items = frame.items
    n = len(items)
    i = frame.index
    if kind == _DICT:
        result = frame.result
        if isinstance(frame.key, _Key):
            return items[i - 1][1]  # the key is done; now its value
        while i < n:
            k, v = items[i]
            i += 1
            if type(k) in SCALARS or not _needs_walk(k, output_type):
                if type(v) in SCALARS:
                    result[k] = v
                    continue
                frame.index = i
                frame.key = _Key(k)
                return v
            frame.index = i
            frame.key = _KEY_PENDING
            return k
        frame.index = i
        return _FRAME_DONE
    if kind == _OBJ:
        if i < n:
            frame.index = i + 1
            return items[i][1]
        return _FRAME_DONE
    append = frame.result.append
    while i < n:
        v = items[i]
        i += 1
        if type(v) in SCALARS:
            append(v)
            continue
        frame.index = i
        return v
    frame.index = i
    return _FRAME_DONE


def _needs_walk(k: Any, output_type: type) -> bool:
    return isinstance(k, (output_type, Secret)) or isawaitable(k)


def _finish(frame: _Frame, memo: dict[int, Any]) -> Any:
    kind = frame.kind
    if kind in (_DICT, _LIST):
        return frame.result
    orig = frame.orig
    if not frame.changed:
        value = orig
    elif kind == _TUPLE:
        value = tuple(frame.result)
    else:
        value = type(orig)(**frame.result)
    memo[id(orig)] = value
    return value
