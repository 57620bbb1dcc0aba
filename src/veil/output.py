"""`Output`: a value that may arrive later, may be unknown, and may be secret.

The API is Pulumi's Python ``Output`` (``apply``, lifting, ``all``, ``concat``,
``format``, ``json_dumps``, ``secret``/``unsecret``, ``UNKNOWN``, ...), with the same
known/secret/resources semantics: *known* is AND, *secret* is OR, *resources* are the
union. The differences are documented in ``docs/outputs.md``; the main ones:

- An Output whose value is already known is resolved on the spot. Building, combining
  and reading known values needs no event loop and no asyncio machinery at all. Only
  awaitables (and outputs waiting on them) are resolved by the event loop.
- A function passed to ``apply`` on a known value runs at once, so its exception is
  raised at the call site instead of surfacing at program exit.
- ``str()`` of an Output raises :class:`veil.OutputToStringError`; ``repr`` never shows
  a secret; pickling a secret is refused.
- An ``apply`` whose function returns an awaitable that resolves to an Output is
  flattened and keeps that Output's secretness.

Internally a resolved Output is five plain fields. A pending one holds a cell that
collects callbacks, settled by the machinery in ``veil._settle``; ``from_input`` walks
nested inputs with the walker in ``veil._inputs``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    NoReturn,
    TypeVar,
    cast,
    overload,
)

if TYPE_CHECKING:
    import asyncio

from ._declared import declares_secret, field_is_secret
from ._inputs import (
    EPHEMERAL,
    NO_RESOURCES,
    SCALARS,
    SECRET,
    UNKNOWN,
    Acc,
    Input,
    Inputs,
    InputType,
    NotPlain,
    OutputKind,
    Resources,
    Unknown,
    contains_unknowns,
    copy_plain,
    declassified,
    isawaitable,
    walk,
)
from ._json import Found, NeedsAwait, dumps_found
from ._known import remember
from ._scrub import scrub_exception
from ._secret import Secret
from ._settle import (
    Cell,
    cells_lock,
    describe_failure,
    fire,
    note_unobserved,
    observe,
    schedule,
    start,
    start_unstarted,
    take,
)
from .errors import (
    OutputToStringError,
    PendingOutputError,
    SecretPickleError,
    UnknownValueError,
    UsageError,
    VeilError,
)

__all__ = [
    "UNKNOWN",
    "Input",
    "InputType",
    "Inputs",
    "Output",
    "Unknown",
    "contains_unknowns",
    "deferred_output",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
U = TypeVar("U")
# For the overloads of from_input, secret and unsecret: a dict or list of Outputs gives
# an Output of a dict or list of their values; of scalars, of those scalars; else Any,
# as from_input unwraps nested inputs at any depth.
K = TypeVar("K")
V = TypeVar("V")
S = TypeVar("S", bound="str | bytes | int | float | bool | None")


def _scan(val: Any) -> tuple[bool, int, Output[Any] | None]:
    """Whether ``val`` holds, in nested dicts, lists or tuples, an ``Unknown``; the
    secret level of the ``Secret``s and resolved secret Outputs it holds (a value a
    function returned: it stays as it is, but its secretness must not be lost); and an
    Output in it that is still pending (whose level is not known yet), if any."""
    unknown = False
    secret = 0
    pending: Output[Any] | None = None
    seen: set[int] = set()
    todo: list[Any] = [val]
    while todo:
        v = todo.pop()
        if type(v) in SCALARS:
            continue
        if type(v) not in (dict, list) and declares_secret(type(v)):
            secret |= True  # an instance of a class that declares a secret field
        if isinstance(v, Unknown):
            unknown = True
        elif isinstance(v, Secret):
            secret |= SECRET
        elif isinstance(v, Output):
            cell = v._pending
            if cell is None:
                secret |= v._secret
            elif not cell.failed:
                pending = v
        elif isinstance(v, (dict, list, tuple)) and id(v) not in seen:
            seen.add(id(v))
            todo.extend(dict.values(v) if isinstance(v, dict) else v)
        if unknown and secret == EPHEMERAL:
            break
    return unknown, secret, pending


_Data = tuple[Any, bool, int, Resources]  # value, known, secret level, resources


class Output(Generic[T_co]):
    """A value of type ``T`` that may be pending, unknown or secret, and that depends
    on a set of resources. API-compatible with ``pulumi.Output``."""

    __slots__ = ("__weakref__", "_clean", "_known", "_pending", "_resources", "_secret", "_value")

    _value: Any
    _known: bool
    # The secret level (veil._inputs): 0 plain, 1 (or True) secret, 3 ephemeral.
    _secret: int
    _resources: Resources
    # True when the value holds no Output, Secret or awaitable: from_input need not walk it.
    _clean: bool
    _pending: Cell | None

    # --- construction ------------------------------------------------------------------

    def __init__(
        self,
        resources: Awaitable[set[Any]] | set[Any],
        future: Awaitable[T_co],
        is_known: Awaitable[bool],
        is_secret: Awaitable[bool] | None = None,
    ) -> None:
        """Pulumi's constructor: an Output from awaitables of its parts.

        Most code never calls this; use :meth:`from_input`, :meth:`secret` or
        :func:`deferred_output`.
        """
        self._init_pending()

        async def gather() -> _Data:
            res = resources if isinstance(resources, (set, frozenset)) else await resources
            value = await future
            known = bool(await is_known)
            secret = bool(await is_secret) if is_secret is not None else False
            return value, known, secret, frozenset(res)

        self._settle_from(gather)

    def _init_pending(self) -> None:
        self._value = None
        self._known = False
        self._secret = False
        self._resources = NO_RESOURCES
        self._clean = False
        self._pending = Cell()

    def _settle(
        self, value: Any, known: bool, secret: int, resources: Resources, clean: bool
    ) -> None:
        with cells_lock:
            cell = self._pending
            if cell is None or cell.failed:
                return
            # Field assignments, like Stack.__init__'s: alike in shape only.
            self._value = value
            self._known = known
            self._secret = secret
            self._resources = resources
            self._clean = clean
            self._pending = None
            waiters, callbacks = take(cell)
        fire(waiters, callbacks)

    def _fail(self, exc: BaseException) -> None:
        # Not for cancellation or an interrupt. Described outside the lock: str(exc)
        # runs the exception's own code.
        report = describe_failure(exc) if isinstance(exc, Exception) else None
        with cells_lock:
            cell = self._pending
            if cell is None or cell.failed:
                return
            cell.failed = True
            cell.exc = exc
            if report is not None:
                note_unobserved(cell, report)
            waiters, callbacks = take(cell)
        fire(waiters, callbacks)

    def _on_settled(self, cb: Callable[[], None]) -> None:
        with cells_lock:
            cell = self._pending
            if cell is not None and not cell.failed:
                cell.callbacks.append(cb)
                return
        schedule(cb)

    def _follow(self, src: Output[Any]) -> None:
        """Settle this pending Output with ``src``'s data, now or when it settles."""
        cell = src._pending
        if cell is None:
            self._settle(src._value, src._known, src._secret, src._resources, src._clean)
        elif cell.failed:
            assert cell.exc is not None
            observe(cell)
            self._fail(cell.exc)
        else:
            src._on_settled(lambda: self._follow(src))

    def _then(self, fn: Callable[[Output[Any]], Output[Any]]) -> Output[Any]:
        """A pending Output that becomes ``fn(self)`` once this one is resolved.

        A failure of this Output propagates without calling ``fn``.
        """
        out = _new_pending()

        def run() -> None:
            cell = self._pending
            if cell is not None:  # failed
                assert cell.exc is not None
                observe(cell)
                out._fail(cell.exc)
                return
            try:
                res = fn(self)
            except BaseException as exc:
                out._fail(exc)
                return
            out._follow(res)

        self._on_settled(run)
        return out

    def _settle_from(self, make: Callable[[], Awaitable[_Data]]) -> None:
        """Settle this pending Output from a coroutine run on the event loop."""

        async def run() -> None:
            try:
                value, known, secret, resources = await make()
            except BaseException as exc:
                self._fail(exc)
                return
            known = known and not contains_unknowns(value)
            self._settle(value, known, secret, resources, type(value) in SCALARS)

        start(run)

    @classmethod
    def _from_awaitable(cls, aw: Awaitable[Any]) -> Output[Any]:
        """A pending Output of an awaitable's (unwalked) result, known and not secret."""
        out = _new_pending()

        async def get() -> _Data:
            return await aw, True, False, NO_RESOURCES

        out._settle_from(get)
        return out

    # --- private accessors used by the rest of veil ---------------------------------------

    def _veil_snapshot_(self) -> tuple[bool, Any, bool, int, Resources]:
        """``(resolved, value, known, secret, resources)`` without waiting.

        ``resolved`` is False while pending. A failed Output raises its exception.
        ``secret`` is a level: 0 plain, 1 secret, 3 ephemeral (truthy when secret).
        """
        cell = self._pending
        if cell is None:
            return True, self._value, self._known, self._secret, self._resources
        if cell.failed:
            assert cell.exc is not None
            observe(cell)
            raise cell.exc
        return False, None, False, False, NO_RESOURCES

    async def _veil_resolve_(self) -> _Data:
        """``(value, known, secret level, resources)``, awaiting a pending Output."""
        cell = self._pending
        if cell is not None:
            import asyncio

            loop = asyncio.get_running_loop()
            start_unstarted(loop)
            fut: asyncio.Future[None] = loop.create_future()
            with cells_lock:
                waiting = self._pending is cell and not cell.failed
                if waiting:
                    cell.waiters.append(fut)
            if waiting:
                await fut
            if cell.failed:
                assert cell.exc is not None
                observe(cell)
                raise cell.exc
        return self._value, self._known, self._secret, self._resources

    def _veil_reveal_(self) -> Any:
        if self._pending is None and self._known:
            return self._value
        resolved, value, known, _secret, _res = self._veil_snapshot_()
        if not resolved:
            raise PendingOutputError(
                "this Output is still pending: await o.future() in async code, or save "
                "with the async API, instead of reading it synchronously"
            )
        if not known:
            raise UnknownValueError(
                "this Output is unknown (a preview value): it has no value to reveal"
            )
        return value

    def _veil_is_secret_(self) -> bool:
        resolved, _v, _k, secret, _r = self._veil_snapshot_()
        if not resolved:
            raise PendingOutputError(
                "this Output is still pending: use 'await o.is_secret()' instead"
            )
        return bool(secret)

    def _veil_is_ephemeral_(self) -> bool:
        resolved, _v, _k, secret, _r = self._veil_snapshot_()
        if not resolved:
            raise PendingOutputError(
                "this Output is still pending: use 'await o.is_ephemeral()' instead"
            )
        return secret == EPHEMERAL

    # --- Pulumi's awaitable accessors ------------------------------------------------------

    async def future(self, with_unknowns: bool | None = None) -> T_co | None:
        """The value; ``None`` if it holds unknowns, unless ``with_unknowns``."""
        value, _known, _secret, _res = await self._veil_resolve_()
        if not with_unknowns and contains_unknowns(value):
            return None
        return cast("T_co", value)

    async def is_known(self) -> bool:
        """Whether the value is known (False during a preview for computed values)."""
        return (await self._veil_resolve_())[1]

    async def is_secret(self) -> bool:
        """Whether the value is secret (an ephemeral value is)."""
        return bool((await self._veil_resolve_())[2])

    async def is_ephemeral(self) -> bool:
        """Whether the value is ephemeral: usable, but never written anywhere."""
        return (await self._veil_resolve_())[2] == EPHEMERAL

    async def resources(self) -> set[Any]:
        """The resources this value depends on."""
        return set((await self._veil_resolve_())[3])

    def get(self) -> T_co:
        """Refused, as in Pulumi: use :meth:`apply` (or :func:`veil.reveal`)."""
        raise VeilError(
            "Cannot call '.get' during update or preview. To manipulate the value of this "
            "Output, use '.apply' instead (or veil.reveal(o) to take the plaintext out)."
        )

    # --- transformations ------------------------------------------------------------------

    @overload
    def apply(
        self, func: Callable[[T_co], Output[U]], run_with_unknowns: bool = False
    ) -> Output[U]: ...
    @overload
    def apply(
        self, func: Callable[[T_co], Awaitable[U]], run_with_unknowns: bool = False
    ) -> Output[U]: ...
    @overload
    def apply(self, func: Callable[[T_co], U], run_with_unknowns: bool = False) -> Output[U]: ...

    def apply(self, func: Callable[[T_co], Input[U]], run_with_unknowns: bool = False) -> Output[U]:
        """An Output of ``func(value)``, carrying this Output's secretness and resources.

        ``func`` runs only when the value is known (or when ``run_with_unknowns``); on
        an unknown value the result is unknown and keeps the secret flag. ``func`` may
        return a value, an awaitable or an Output; an Output (also one an awaitable
        resolves to) is flattened and its secretness and resources are added.
        """
        if self._pending is not None:
            return self._then(lambda src: src.apply(func, run_with_unknowns))
        if self._known:
            try:
                result = func(self._value)
            except Exception as exc:
                # The exception must not print a secret value (int("hunter2") would).
                if self._secret:
                    scrub_exception(exc, self._value)
                raise
        elif run_with_unknowns:
            value = self._value
            arg = value if contains_unknowns(value) else cast("T_co", UNKNOWN)
            try:
                result = func(arg)
            except Exception as exc:
                if self._secret:
                    scrub_exception(exc, arg)
                raise
        else:
            return _make(None, False, self._secret, self._resources, True)
        if type(result) in SCALARS:
            # The hot path, inlined: a plain value is known and needs no walking.
            out: Output[Any] = _new(Output)
            out._value = result
            out._known = True
            out._secret = self._secret
            out._resources = self._resources
            out._clean = True
            out._pending = None
            return out
        return self._absorb(result)

    def _absorb(self, result: Any) -> Output[Any]:
        """Combine this Output's secretness and resources with ``func``'s result."""
        if isinstance(result, Output):
            if result._pending is not None:
                return result._then(self._absorb)
            return _make(
                result._value,
                result._known,
                result._secret | self._secret,
                self._resources | result._resources if result._resources else self._resources,
                result._clean,
            )
        if isawaitable(result):
            return Output._from_awaitable(result)._then(lambda src: self._absorb(src._value))
        if isinstance(result, Secret):
            inner = result.reveal()
            return _make(
                inner, not contains_unknowns(inner), self._secret | SECRET, self._resources, False
            )
        unknown, secret, pending = _scan(result)
        if pending is not None and secret != EPHEMERAL:
            # Its level counts too: settle once it has (failed or not), then look again.
            out = _new_pending()
            pending._on_settled(lambda: out._follow(self._absorb(result)))
            return out
        return _make(result, not unknown, self._secret | secret, self._resources, False)

    def recover(self, func: Callable[[Exception], Input[T_co]]) -> Output[T_co]:
        """This Output, or, if it failed, an Output of ``func(exception)``.

        As in Pulumi. Only a pending Output can fail: a function given to ``apply`` on
        a known value raises at the call site instead.
        """
        cell = self._pending
        if cell is None:
            return self
        out = _new_pending()

        def run() -> None:
            cell = self._pending
            if cell is None:
                out._follow(self)
                return
            exc = cell.exc
            observe(cell)
            if not isinstance(exc, Exception):
                out._fail(cast(BaseException, exc))
                return
            try:
                out._follow(Output.from_input(func(exc)))
            except BaseException as err:
                out._fail(err)

        self._on_settled(run)
        return cast("Output[T_co]", out)

    def __getattr__(self, item: str) -> Output[Any]:
        """Lift an attribute: ``o.x`` is ``o.apply(lambda v: v.x)`` (unknowns stay unknown)."""
        if item.startswith("__"):
            raise AttributeError(f"'Output' object has no attribute '{item}'")

        def lift(v: Any) -> Any:
            if isinstance(v, Unknown):
                return UNKNOWN
            got = getattr(v, item)
            if type(v) not in SCALARS and field_is_secret(type(v), item):
                return Output.secret(got)  # a field its class declares secret
            return got

        return self.apply(lift, True)

    def __getitem__(self, key: Any) -> Output[Any]:
        """Lift an item: ``o[k]`` is ``o.apply(lambda v: v[k])`` (unknowns stay unknown)."""

        def lift(v: Any) -> Any:
            return UNKNOWN if isinstance(v, Unknown) else v[key]

        return self.apply(lift, True)

    # --- leak-proofing ------------------------------------------------------------------

    def __iter__(self) -> NoReturn:
        raise TypeError(
            "'Output' object is not iterable, consider iterating the underlying value "
            "inside an 'apply'"
        )

    def __str__(self) -> str:
        raise OutputToStringError(_TO_STRING_MESSAGE)

    def __format__(self, format_spec: str) -> str:
        raise OutputToStringError(_TO_STRING_MESSAGE)

    def __bytes__(self) -> bytes:
        raise OutputToStringError(_TO_STRING_MESSAGE)

    def __repr__(self) -> str:
        cell = self._pending
        if cell is not None:
            return "Output(<failed>)" if cell.failed else "Output(<pending>)"
        if self._secret:
            return "Output([ephemeral])" if self._secret == EPHEMERAL else "Output([secret])"
        if not self._known:
            return "Output(<unknown>)"
        try:
            return f"Output({self._value!r})"
        except Exception:
            return "Output(<unrepresentable>)"

    def __reduce__(self) -> Any:
        cell = self._pending
        if cell is not None:
            raise PendingOutputError("a pending Output cannot be pickled; await it first")
        if self._secret:
            raise SecretPickleError(
                "a secret or ephemeral Output cannot be pickled: the pickle would hold its "
                "plaintext. Store it with veil.state.dumps, which encrypts it."
            )
        return (
            _make,
            (self._value, self._known, False, self._resources, self._clean),
        )

    def __copy__(self) -> Output[T_co]:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Output[T_co]:
        return self

    # --- constructors and combinators --------------------------------------------------
    # from_input, secret and unsecret take the same inputs: the same overload list each.

    @overload
    @staticmethod
    def from_input(val: Output[U]) -> Output[U]: ...
    @overload
    @staticmethod
    def from_input(val: Secret[U]) -> Output[U]: ...
    @overload
    @staticmethod
    def from_input(val: Awaitable[U]) -> Output[U]: ...
    @overload
    @staticmethod
    def from_input(val: Mapping[K, Output[V]]) -> Output[dict[K, V]]: ...
    @overload
    @staticmethod
    def from_input(val: Mapping[K, S]) -> Output[dict[K, S]]: ...
    @overload
    @staticmethod
    def from_input(val: Mapping[K, Any]) -> Output[dict[K, Any]]: ...
    @overload
    @staticmethod
    def from_input(val: list[Output[V]]) -> Output[list[V]]: ...
    @overload
    @staticmethod
    def from_input(val: list[S]) -> Output[list[S]]: ...
    @overload
    @staticmethod
    def from_input(val: list[Any]) -> Output[list[Any]]: ...
    @overload
    @staticmethod
    def from_input(val: Input[U]) -> Output[U]: ...
    @staticmethod
    def from_input(val: Input[U]) -> Output[U]:
        """An Output of ``val`` with every nested input unwrapped.

        Unwraps Outputs, awaitables and :class:`veil.Secret` anywhere inside dicts
        (their keys too), lists, tuples, dataclasses, attrs instances and Pulumi input
        classes. The result is secret if anything inside was, unknown if anything was
        unknown, and depends on the union of all resources.
        """
        if isinstance(val, Output):
            if val._clean:
                return val
        elif type(val) in SCALARS:
            return _make(val, True, False, NO_RESOURCES, True)
        elif type(val) is dict:
            got = _gather(dict.values(val)) if SCALARS.issuperset(map(type, val)) else None
            if got is not None:
                values, known, secret, resources = got
                return _make(dict(zip(val, values, strict=True)), known, secret, resources, True)
            try:
                return _make(copy_plain(val, 0), True, False, NO_RESOURCES, True)
            except NotPlain:
                pass
        elif type(val) is list:
            try:
                return _make(copy_plain(val, 0), True, False, NO_RESOURCES, True)
            except NotPlain:
                pass
        return _unwrap(val)

    @overload
    @staticmethod
    def secret(val: Output[U]) -> Output[U]: ...
    @overload
    @staticmethod
    def secret(val: Secret[U]) -> Output[U]: ...
    @overload
    @staticmethod
    def secret(val: Awaitable[U]) -> Output[U]: ...
    @overload
    @staticmethod
    def secret(val: Mapping[K, Output[V]]) -> Output[dict[K, V]]: ...
    @overload
    @staticmethod
    def secret(val: Mapping[K, S]) -> Output[dict[K, S]]: ...
    @overload
    @staticmethod
    def secret(val: Mapping[K, Any]) -> Output[dict[K, Any]]: ...
    @overload
    @staticmethod
    def secret(val: list[Output[V]]) -> Output[list[V]]: ...
    @overload
    @staticmethod
    def secret(val: list[S]) -> Output[list[S]]: ...
    @overload
    @staticmethod
    def secret(val: list[Any]) -> Output[list[Any]]: ...
    @overload
    @staticmethod
    def secret(val: Input[U]) -> Output[U]: ...
    @staticmethod
    def secret(val: Input[U]) -> Output[U]:
        """An Output of ``val`` (unwrapped as by :meth:`from_input`) marked secret."""
        if type(val) in SCALARS:
            if type(val) is str:
                remember(val)
            return _make(val, True, True, NO_RESOURCES, True)
        return _mark(val, SECRET)

    @overload
    @staticmethod
    def ephemeral(val: Output[U]) -> Output[U]: ...
    @overload
    @staticmethod
    def ephemeral(val: Secret[U]) -> Output[U]: ...
    @overload
    @staticmethod
    def ephemeral(val: Awaitable[U]) -> Output[U]: ...
    @overload
    @staticmethod
    def ephemeral(val: Mapping[K, Output[V]]) -> Output[dict[K, V]]: ...
    @overload
    @staticmethod
    def ephemeral(val: Mapping[K, S]) -> Output[dict[K, S]]: ...
    @overload
    @staticmethod
    def ephemeral(val: Mapping[K, Any]) -> Output[dict[K, Any]]: ...
    @overload
    @staticmethod
    def ephemeral(val: list[Output[V]]) -> Output[list[V]]: ...
    @overload
    @staticmethod
    def ephemeral(val: list[S]) -> Output[list[S]]: ...
    @overload
    @staticmethod
    def ephemeral(val: list[Any]) -> Output[list[Any]]: ...
    @overload
    @staticmethod
    def ephemeral(val: Input[U]) -> Output[U]: ...
    @staticmethod
    def ephemeral(val: Input[U]) -> Output[U]:
        """An Output of ``val`` (unwrapped as by :meth:`from_input`) marked ephemeral:
        secret, and never written anywhere.

        Everything derived from it is ephemeral too; :meth:`unsecret` does not remove
        the mark. Saving it (state, config, a Pulumi checkpoint) raises
        :class:`veil.EphemeralValueError`; :func:`veil.fingerprint` stores a keyed token
        of it instead.
        """
        if type(val) in SCALARS:
            if type(val) is str:
                remember(val)
            return _make(val, True, EPHEMERAL, NO_RESOURCES, True)
        return _mark(val, EPHEMERAL)

    @overload
    @staticmethod
    def unsecret(val: Output[U]) -> Output[U]: ...
    @overload
    @staticmethod
    def unsecret(val: Secret[U]) -> Output[U]: ...
    @overload
    @staticmethod
    def unsecret(val: Awaitable[U]) -> Output[U]: ...
    @overload
    @staticmethod
    def unsecret(val: Mapping[K, Output[V]]) -> Output[dict[K, V]]: ...
    @overload
    @staticmethod
    def unsecret(val: Mapping[K, S]) -> Output[dict[K, S]]: ...
    @overload
    @staticmethod
    def unsecret(val: Mapping[K, Any]) -> Output[dict[K, Any]]: ...
    @overload
    @staticmethod
    def unsecret(val: list[Output[V]]) -> Output[list[V]]: ...
    @overload
    @staticmethod
    def unsecret(val: list[S]) -> Output[list[S]]: ...
    @overload
    @staticmethod
    def unsecret(val: list[Any]) -> Output[list[Any]]: ...
    @overload
    @staticmethod
    def unsecret(val: Input[U]) -> Output[U]: ...
    @staticmethod
    def unsecret(val: Input[U]) -> Output[U]:
        """The same Output, no longer marked secret. The explicit way to declassify.

        An ephemeral value stays ephemeral (and so secret): nothing removes that mark."""
        out = Output.from_input(val)
        if out._pending is None:
            return _make(
                out._value, out._known, declassified(out._secret), out._resources, out._clean
            )
        return out._then(
            lambda src: _make(
                src._value, src._known, declassified(src._secret), src._resources, src._clean
            )
        )

    @overload
    @staticmethod
    def all(*args: Output[Any]) -> Output[list[Any]]: ...
    @overload
    @staticmethod
    def all(**kwargs: Output[Any]) -> Output[dict[str, Any]]: ...
    @overload
    @staticmethod
    def all(*args: Input[Any]) -> Output[list[Any]]: ...
    @overload
    @staticmethod
    def all(**kwargs: Input[Any]) -> Output[dict[str, Any]]: ...
    @staticmethod
    def all(*args: Input[Any], **kwargs: Input[Any]) -> Output[list[Any]] | Output[dict[str, Any]]:
        """An Output of the list of ``args`` (or the dict of ``kwargs``), each unwrapped.

        Known if all are, secret if any is, with the union of their resources. Mixing
        positional and keyword inputs raises :class:`veil.UsageError` (a ``ValueError``).
        """
        if args and kwargs:
            raise UsageError("Output.all() was supplied a mix of named and unnamed inputs")
        if kwargs:
            return cast("Output[dict[str, Any]]", _all_fast(list(kwargs.values()), list(kwargs)))
        return cast("Output[list[Any]]", _all_fast(list(args), None))

    @staticmethod
    def concat(*args: Input[str]) -> Output[str]:
        """An Output of the concatenation of string inputs."""
        got = _gather(args)
        if got is not None:
            parts, known, secret, resources = got
            if not known:
                return _make(None, False, secret, resources, True)
            return _make("".join(parts), True, secret, resources, True)
        return Output.all(*args).apply("".join)

    @staticmethod
    def format(
        format_string: Input[str], *args: Input[object], **kwargs: Input[object]
    ) -> Output[str]:
        """``str.format`` over inputs; the format string may itself be an Output."""
        names = list(kwargs)
        n = len(args)
        got = _gather((format_string, *args, *kwargs.values()))
        if got is not None:
            parts, known, secret, resources = got
            if not known:
                return _make(None, False, secret, resources, True)
            fs = parts[0]
            try:
                if names:
                    kw = dict(zip(names, parts[n + 1 :], strict=True))
                    text = fs.format(*parts[1 : n + 1], **kw)
                else:
                    text = fs.format(*parts[1:])
            except Exception as exc:
                if secret:
                    scrub_exception(exc, parts)
                raise
            return _make(text, True, secret, resources, True)
        joined = Output.all(format_string, *args, *kwargs.values())

        def fmt(parts: list[Any]) -> str:
            fs = cast(str, parts[0])
            if names:
                return fs.format(*parts[1 : n + 1], **dict(zip(names, parts[n + 1 :], strict=True)))
            return fs.format(*parts[1:])

        return joined.apply(fmt)

    @staticmethod
    def json_dumps(
        obj: Input[Any],
        *,
        skipkeys: bool = False,
        ensure_ascii: bool = True,
        check_circular: bool = True,
        allow_nan: bool = True,
        cls: type[json.JSONEncoder] | None = None,
        indent: int | str | None = None,
        separators: tuple[str, str] | None = None,
        default: Callable[[Any], Any] | None = None,
        sort_keys: bool = False,
        **kw: Any,
    ) -> Output[str]:
        """``json.dumps`` of an input; Outputs and Secrets anywhere inside are resolved
        and their secretness, unknownness and resources carried over."""
        out = Output.from_input(obj)
        plain = (
            not (skipkeys or kw or sort_keys)
            and ensure_ascii
            and check_circular
            and allow_nan
            and cls is None
            and default is None
            and indent is None
            and separators is None
        )
        if plain and out._pending is None and out._known:
            try:
                # Unwrapped values hold no Output or Secret: json's C encoder.
                text = json.dumps(out._value)
            except TypeError:
                pass  # an object json does not know: go through the hook below
            else:
                return _make(text, True, out._secret, out._resources, True)

        def dump(src: Output[Any]) -> Output[str]:
            if not src._known:
                return _make(None, False, src._secret, src._resources, True)
            seen = Found()
            try:
                text = dumps_found(
                    src._value,
                    seen,
                    skipkeys=skipkeys,
                    ensure_ascii=ensure_ascii,
                    check_circular=check_circular,
                    allow_nan=allow_nan,
                    cls=cls,
                    indent=indent,
                    separators=separators,
                    default=default,
                    sort_keys=sort_keys,
                    **kw,
                )
            except NeedsAwait as need:
                # An Output hidden inside an opaque object is still pending: wait for it
                # and dump again.
                pending: Output[Any] = need.output
                return pending._then(lambda _o: dump(src))
            except Exception as exc:
                if src._secret or seen.secret:
                    scrub_exception(exc, src._value)
                raise
            secret = src._secret | seen.secret
            resources = src._resources | seen.resources
            if seen.unknown:
                return _make(None, False, secret, resources, True)
            return _make(text, True, secret, resources, True)

        if out._pending is None:
            return dump(out)
        return out._then(dump)

    @staticmethod
    def json_loads(
        s: Input[str | bytes | bytearray],
        *,
        cls: type[json.JSONDecoder] | None = None,
        object_hook: Callable[[dict[Any, Any]], Any] | None = None,
        parse_float: Callable[[str], Any] | None = None,
        parse_int: Callable[[str], Any] | None = None,
        parse_constant: Callable[[str], Any] | None = None,
        object_pairs_hook: Callable[[list[tuple[Any, Any]]], Any] | None = None,
        **kwds: Any,
    ) -> Output[Any]:
        """``json.loads`` of a string input, keeping its secretness."""

        def loads(text: str | bytes | bytearray) -> Any:
            return json.loads(
                text,
                cls=cls,
                object_hook=object_hook,
                parse_float=parse_float,
                parse_int=parse_int,
                parse_constant=parse_constant,
                object_pairs_hook=object_pairs_hook,
                **kwds,
            )

        text: Output[str | bytes | bytearray] = Output.from_input(s)
        return text.apply(loads)


_new = object.__new__


def _make(value: Any, known: bool, secret: int, resources: Resources, clean: bool) -> Output[Any]:
    """A resolved Output (the hot path: no __init__, no checks)."""
    out: Output[Any] = _new(Output)
    out._value = value
    out._known = known
    out._secret = secret
    out._resources = resources
    out._clean = clean
    out._pending = None
    return out


def one_way(val: Input[Any], token: Callable[[Any], str]) -> Output[str]:
    """An Output of ``token(value)`` that is plain, neither secret nor ephemeral, with
    ``val``'s resources; unknown while ``val`` is.

    The one derivation that drops the marks, so ``token`` must be a keyed one-way
    function of the value (:func:`veil.fingerprint` is the use); anything else would
    leak what the marks protect.
    """
    out = Output.from_input(val)

    def run(src: Output[Any]) -> Output[str]:
        if not src._known:
            return _make(None, False, 0, src._resources, True)
        try:
            text = token(src._value)
        except Exception as exc:
            if src._secret:
                scrub_exception(exc, src._value)
            raise
        return _make(text, True, 0, src._resources, True)

    if out._pending is None:
        return run(out)
    return out._then(run)


def _mark(val: Any, level: int) -> Output[Any]:
    """``val`` unwrapped and raised to at least ``level``, its strings remembered for
    the log filter."""
    out = Output.from_input(val)
    if out._pending is None:
        if out._known:
            remember(out._value)
        return _make(out._value, out._known, out._secret | level, out._resources, out._clean)

    def mark(src: Output[Any]) -> Output[Any]:
        if src._known:
            remember(src._value)
        return _make(src._value, src._known, src._secret | level, src._resources, src._clean)

    return out._then(mark)


def _new_pending() -> Output[Any]:
    out: Output[Any] = _new(Output)
    out._init_pending()
    return out


_TO_STRING_MESSAGE = (
    "Calling __str__ on an Output[T] is not supported: its value may not exist yet and "
    "may be secret.\n"
    "To get the value of an Output[T] as an Output[str] consider:\n"
    '1. o.apply(lambda v: f"prefix{v}suffix")\n'
    '2. Output.format("prefix{0}suffix", o)\n'
    '3. Output.concat("prefix", o, "suffix")'
)


def deferred_output() -> tuple[Output[T], Callable[[Output[T]], None]]:
    """A pending Output and the function that resolves it from another Output.

    Resolving twice raises :class:`veil.UsageError`. When the given Output is already
    resolved, the deferred one resolves at once, without an event loop.
    """
    out = _new_pending()
    done = False

    def resolve(o: Output[T]) -> None:
        nonlocal done
        if done:
            raise UsageError("Deferred Output has already been resolved")
        done = True
        out._follow(Output.from_input(o))

    return cast("Output[T]", out), resolve


# --- fast paths of all, format, concat and from_input ---------------------------------------


def _gather(items: Any) -> tuple[list[Any], bool, int, Resources] | None:
    """Values and flags of resolved clean Outputs and scalars, or None for anything
    else (which then takes the general path). The tight loop behind all, format,
    concat and from_input of a flat dict."""
    values: list[Any] = []
    known = True
    secret = 0
    resources: Resources = NO_RESOURCES
    append = values.append
    for item in items:
        t = type(item)
        if t in SCALARS:
            append(item)
        elif t is Output and item._pending is None and item._clean:
            if item._known:
                append(item._value)
            else:
                known = False
                append(item._value if contains_unknowns(item._value) else UNKNOWN)
            # One read of the level (an Output's attribute reads are slow: it has
            # __getattr__); a second read for each secret item would cost more than
            # this local (valgrind instruction counts of Output.all/format/concat).
            level = item._secret
            if level and secret != EPHEMERAL:
                secret = level  # the larger level: level >= 1 >= secret here
            if item._resources:
                resources = resources | item._resources
        else:
            return None
    return values, known, secret, resources


def _all_fast(items: list[Any], names: list[str] | None) -> Output[Any]:
    """Output.all: the tight loop when it can, the general walk when it must."""
    got = _gather(items)
    if got is None:
        whole = _unwrap(items)
        if names is None:
            return whole
        return whole.apply(lambda vs: dict(zip(names, vs, strict=True)))
    values, known, secret, resources = got
    value: Any = values if names is None else dict(zip(names, values, strict=True))
    return _make(value, known, secret, resources, True)


def _walk_state(o: Output[Any]) -> tuple[Any, bool, int, Resources, bool] | None:
    cell = o._pending
    if cell is None:
        return o._value, o._known, o._secret, o._resources, o._clean
    if cell.failed:
        assert cell.exc is not None
        observe(cell)
        raise cell.exc
    return None


_OUTPUTS = OutputKind(Output, _walk_state, Output._from_awaitable)


def _unwrap(val: Any) -> Output[Any]:
    """from_input's general path: walk synchronously, continue by callbacks if needed."""
    acc = Acc()
    gen = walk(val, acc, _OUTPUTS)
    try:
        waiting = next(gen)
    except StopIteration as stop:
        return _make(stop.value, acc.known, acc.secret, acc.resources, True)
    out = _new_pending()

    def resume(src: Output[Any]) -> None:
        def step() -> None:
            try:
                nxt = gen.send(None)
            except StopIteration as stop:
                out._settle(stop.value, acc.known, acc.secret, acc.resources, True)
                return
            except BaseException as exc:
                out._fail(exc)
                return
            resume(nxt)

        src._on_settled(step)

    resume(waiting)
    return out
