"""The specification of ``veil.Output``: one behaviour per test."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import pickle
import threading
import traceback
from collections.abc import Callable
from typing import Any

import attrs
import pytest

import veil
from veil import UNKNOWN, Output, Secret, Unknown, contains_unknowns, deferred_output

# --- helpers -------------------------------------------------------------------------


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def later(value: Any) -> Any:
    """An awaitable that yields to the loop once before producing ``value``."""
    await asyncio.sleep(0)
    return value


async def data(o: Output[Any]) -> tuple[Any, bool, bool]:
    return await o.future(with_unknowns=True), await o.is_known(), await o.is_secret()


def unknown_output(secret: bool = False) -> Output[Any]:
    """An unknown Output, as a preview gives for a computed property."""
    return Output.secret(UNKNOWN) if secret else Output.from_input(UNKNOWN)


def sync_state(o: Output[Any]) -> tuple[Any, bool, bool]:
    """(value or None, known, secret) of a resolved Output, without an event loop."""
    secret = veil.is_secret(o)
    try:
        return veil.reveal(o), True, secret
    except veil.UnknownValueError:
        return None, False, secret


def in_thread_without_loop(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a fresh thread, which has no event loop at all."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            with pytest.raises(RuntimeError):
                asyncio.get_event_loop()  # proves there is no loop here
            box["result"] = fn()
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


class Res:
    """A stand-in resource (anything hashable)."""

    def __init__(self, name: str) -> None:
        self.name = name


def with_resources(value: Any, *res: Res, secret: bool = False) -> Output[Any]:
    async def resources() -> set[Any]:
        return set(res)

    return Output(resources(), later(value), later(True), later(secret))


# --- from_input ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["s", 1, 2.5, True, None, b"b"])
def test_from_input_scalar_is_known_plain_and_equal(value: Any) -> None:
    assert sync_state(Output.from_input(value)) == (value, True, False)


def test_from_input_of_output_returns_equivalent_output() -> None:
    o = veil.secret("x")
    assert sync_state(Output.from_input(o)) == ("x", True, True)


def test_from_input_unwraps_nested_dicts() -> None:
    o = Output.from_input({"a": {"b": Output.from_input(1)}, "c": 2})
    assert sync_state(o) == ({"a": {"b": 1}, "c": 2}, True, False)


def test_from_input_unwraps_output_dict_keys() -> None:
    o = Output.from_input({Output.from_input("k"): 1, veil.secret("s"): 2})
    assert sync_state(o) == ({"k": 1, "s": 2}, True, True)


def test_from_input_unwraps_lists() -> None:
    o = Output.from_input([1, [Output.from_input(2)], veil.secret(3)])
    assert sync_state(o) == ([1, [2], 3], True, True)


def test_from_input_keeps_tuples_as_tuples() -> None:
    value = veil.reveal(Output.from_input((1, (Output.from_input(2), 3))))
    assert value == (1, (2, 3))
    assert type(value) is tuple
    assert type(value[1]) is tuple


def test_from_input_unwraps_awaitables_inside_asyncio() -> None:
    async def main() -> tuple[Any, bool, bool]:
        return await data(Output.from_input({"a": later(1), "b": [later(veil.secret(2))]}))

    assert run(main()) == ({"a": 1, "b": [2]}, True, True)


def test_from_input_unwraps_secret_leaf_and_marks_result_secret() -> None:
    o = Output.from_input({"pw": Secret("hunter2")})
    assert sync_state(o) == ({"pw": "hunter2"}, True, True)


@dataclasses.dataclass
class DC:
    a: Any
    b: Any = 0


@attrs.define
class AT:
    a: Any
    _b: Any = 0


class PulumiArgs:
    """Shaped like a class decorated with ``@pulumi.input_type``."""

    _pulumi_input_type = True

    def __init__(self, name: Any, size: Any = None) -> None:
        self.name = name
        self.size = size


def test_from_input_rebuilds_dataclass_with_unwrapped_fields() -> None:
    o = Output.from_input(DC(veil.secret("x"), Output.from_input(2)))
    assert sync_state(o) == (DC("x", 2), True, True)


def test_from_input_returns_unchanged_dataclass_as_same_object() -> None:
    d = DC("x", [1, 2])
    assert veil.reveal(Output.from_input(d)) is d


def test_from_input_returns_dataclass_with_plain_nested_containers_as_same_object() -> None:
    d = DC({"tags": ["a", "b"]}, ([1], (2,)))
    assert veil.reveal(Output.from_input(d)) is d


def test_from_input_unwraps_output_of_container_inside_tuple_and_dataclass() -> None:
    inner = Output.from_input(0).apply(lambda v: [v, 1])  # an Output holding a list
    assert veil.reveal(Output.from_input((inner,))) == ([0, 1],)
    assert veil.reveal(Output.from_input(DC(inner))) == DC([0, 1])


def test_from_input_does_not_rerun_attrs_converter_on_unchanged_instance() -> None:
    def times_ten(v: list[int]) -> list[int]:
        return [x * 10 for x in v]

    @attrs.define
    class Scaled:
        n: list[int] = attrs.field(converter=times_ten)

    s = Scaled([1])
    assert veil.reveal(Output.from_input({"s": s}))["s"].n == [10]


def test_from_input_rebuilds_attrs_instance_including_private_field() -> None:
    o = Output.from_input(AT(Output.from_input(1), veil.secret(2)))
    value, known, secret = sync_state(o)
    assert (value, known, secret) == (AT(1, 2), True, True)
    assert value._b == 2


def test_from_input_returns_unchanged_attrs_instance_as_same_object() -> None:
    a = AT("x", "y")
    assert veil.reveal(Output.from_input(a)) is a


def test_from_input_rebuilds_pulumi_input_type() -> None:
    value, known, secret = sync_state(Output.from_input(PulumiArgs(veil.secret("n"), 3)))
    assert isinstance(value, PulumiArgs)
    assert (value.name, value.size, known, secret) == ("n", 3, True, True)


class Shadowed(dict[str, Any]):
    """Like Pulumi's output types: properties shadow dict methods."""

    @property
    def keys(self) -> Any:
        return self["keys"]

    @property
    def values(self) -> Any:
        return self["values"]

    @property
    def items(self) -> Any:
        return self["items"]


def test_from_input_unwraps_dict_subclass_with_shadowed_methods() -> None:
    o = Output.from_input(
        Shadowed(keys=Output.from_input(1), values=veil.secret(2), items=[Output.from_input(3)])
    )
    assert sync_state(o) == ({"keys": 1, "values": 2, "items": [3]}, True, True)


def test_from_input_reproduces_dict_cycle() -> None:
    d: dict[str, Any] = {"s": veil.secret(1)}
    d["self"] = d
    value, _known, secret = sync_state(Output.from_input(d))
    assert secret
    assert value["s"] == 1
    assert value["self"] is value


def test_from_input_reproduces_list_cycle() -> None:
    lst: list[Any] = [Output.from_input(1)]
    lst.append(lst)
    value = veil.reveal(Output.from_input(lst))
    assert value[0] == 1
    assert value[1] is value


def test_from_input_handles_100000_deep_nesting() -> None:
    deep: Any = veil.secret("leaf")
    for i in range(100_000):
        deep = [deep] if i % 2 else {"k": deep}
    value, known, secret = sync_state(Output.from_input(deep))
    assert known
    assert secret
    for i in reversed(range(100_000)):
        value = value[0] if i % 2 else value["k"]
    assert value == "leaf"


def test_from_input_of_unknown_nested_is_unknown() -> None:
    o = Output.from_input({"a": [UNKNOWN]})
    assert sync_state(o)[1:] == (False, False)


# --- apply ---------------------------------------------------------------------------


def test_apply_on_known_value_needs_no_event_loop() -> None:
    def program() -> tuple[Any, bool, bool]:
        o = veil.secret(2).apply(lambda v: v + 1)
        joined = Output.all(o, Output.format("{}", o), Output.json_dumps({"o": o}))
        return sync_state(joined)

    assert in_thread_without_loop(program) == ([3, "3", '{"o": 3}'], True, True)


def test_apply_result_is_an_output() -> None:
    assert isinstance(Output.from_input(1).apply(str), Output)


def test_apply_keeps_secret() -> None:
    assert sync_state(veil.secret(2).apply(lambda v: v * 2)) == (4, True, True)


def test_apply_unions_resources() -> None:
    r1, r2 = Res("a"), Res("b")

    async def main() -> set[Any]:
        a = with_resources(1, r1)
        return await a.apply(lambda v: with_resources(v, r2)).resources()

    assert run(main()) == {r1, r2}


def test_apply_on_unknown_does_not_call_func_and_keeps_secret() -> None:
    calls: list[Any] = []
    o = unknown_output(secret=True).apply(calls.append)
    assert calls == []
    assert sync_state(o) == (None, False, True)


def test_apply_run_with_unknowns_passes_unknown() -> None:
    seen: list[Any] = []
    Output.from_input(UNKNOWN).apply(seen.append, run_with_unknowns=True)
    assert len(seen) == 1
    assert isinstance(seen[0], Unknown)


def test_apply_returning_output_is_flattened_with_its_secretness() -> None:
    o = Output.from_input(1).apply(lambda v: veil.secret(v + 1))
    assert sync_state(o) == (2, True, True)


def test_apply_returning_awaitable_of_secret_output_is_flattened_and_secret() -> None:
    async def main() -> tuple[Any, bool, bool]:
        return await data(Output.from_input(1).apply(lambda v: later(veil.secret(v + 1))))

    assert run(main()) == (2, True, True)


def test_apply_returning_awaitable_of_value() -> None:
    async def main() -> tuple[Any, bool, bool]:
        return await data(veil.secret(1).apply(lambda v: later(v + 1)))

    assert run(main()) == (2, True, True)


def test_apply_exception_on_known_value_raises_at_call_site() -> None:
    class Boom(Exception):
        pass

    err = Boom("boom")

    def fail(_v: Any) -> Any:
        raise err

    with pytest.raises(Boom) as info:
        Output.from_input(1).apply(fail)
    assert info.value is err


def test_async_apply_exception_surfaces_when_awaited() -> None:
    async def main() -> None:
        o = Output.from_input(later(0)).apply(lambda v: 1 // v)
        with pytest.raises(ZeroDivisionError):
            await o.future()
        with pytest.raises(ZeroDivisionError):
            veil.reveal(o)

    run(main())


def test_exception_in_awaitable_returned_by_apply_surfaces_when_awaited() -> None:
    async def failing(_v: Any) -> Any:
        await asyncio.sleep(0)
        raise KeyError("missing")

    async def main() -> None:
        o = Output.from_input(1).apply(failing)
        with pytest.raises(KeyError):
            await o.is_known()
        with pytest.raises(KeyError):
            veil.reveal(o)

    run(main())


# --- lifting -------------------------------------------------------------------------


def test_attribute_lifting() -> None:
    assert sync_state(Output.from_input(DC(5)).a) == (5, True, False)


def test_attribute_lifting_keeps_secret() -> None:
    assert sync_state(veil.secret(DC(5)).a) == (5, True, True)


def test_attribute_lifting_on_unknown_is_unknown() -> None:
    assert sync_state(unknown_output(secret=True).anything) == (None, False, True)


def test_attribute_lifting_refuses_dunder_names() -> None:
    with pytest.raises(AttributeError):
        _ = Output.from_input(DC(1)).__wrapped__


def test_item_lifting() -> None:
    assert sync_state(Output.from_input({"k": [1, 2]})["k"][1]) == (2, True, False)


def test_item_lifting_keeps_secret() -> None:
    assert sync_state(veil.secret({"k": "v"})["k"]) == ("v", True, True)


def test_item_lifting_on_unknown_is_unknown() -> None:
    assert sync_state(unknown_output()["k"]) == (None, False, False)


def test_item_lifting_missing_key_raises_key_error() -> None:
    with pytest.raises(KeyError):
        Output.from_input({"k": 1})["missing"]


# --- all -----------------------------------------------------------------------------


def test_all_positional_gives_list() -> None:
    o = Output.all(1, Output.from_input("a"), [veil.secret(2)])
    assert sync_state(o) == ([1, "a", [2]], True, True)


def test_all_keyword_gives_dict() -> None:
    assert sync_state(Output.all(x=1, y=veil.secret("s"))) == ({"x": 1, "y": "s"}, True, True)


def test_all_empty_gives_empty_list() -> None:
    assert sync_state(Output.all()) == ([], True, False)


def test_all_unknown_member_makes_result_unknown() -> None:
    assert sync_state(Output.all(1, unknown_output())) == (None, False, False)


def test_all_mixing_positional_and_keyword_raises_usage_error() -> None:
    with pytest.raises(veil.UsageError) as info:
        Output.all(1, x=2)  # type: ignore[call-overload]  # refused by the types too
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, veil.VeilError)


def test_all_unions_resources() -> None:
    r1, r2 = Res("a"), Res("b")

    async def main() -> set[Any]:
        return await Output.all(with_resources(1, r1), with_resources(2, r2)).resources()

    assert run(main()) == {r1, r2}


# --- concat and format ---------------------------------------------------------------


def test_concat() -> None:
    o = Output.concat("postgres://", veil.secret("pw"), "@", Output.from_input("db"))
    assert sync_state(o) == ("postgres://pw@db", True, True)


def test_concat_of_unknown_is_unknown() -> None:
    assert sync_state(Output.concat("a", unknown_output(secret=True))) == (None, False, True)


def test_format_positional() -> None:
    assert sync_state(Output.format("{}:{}", "h", Output.from_input(5))) == ("h:5", True, False)


def test_format_keyword() -> None:
    assert sync_state(Output.format("{u}@{h}", u=veil.secret("me"), h="db")) == (
        "me@db",
        True,
        True,
    )


def test_format_mixing_positional_and_keyword() -> None:
    assert sync_state(Output.format("{}-{k}", 1, k=Output.from_input(2))) == ("1-2", True, False)


def test_format_string_itself_an_output() -> None:
    assert sync_state(Output.format(Output.from_input("<{}>"), 1)) == ("<1>", True, False)


def test_format_with_secret_format_string_is_secret() -> None:
    assert sync_state(Output.format(veil.secret("{}!"), 1)) == ("1!", True, True)


def test_format_with_pending_input() -> None:
    async def main() -> tuple[Any, bool, bool]:
        return await data(Output.format("{}{x}", later("a"), x=later(veil.secret("b"))))

    assert run(main()) == ("ab", True, True)


def test_format_of_unknown_is_unknown_with_none_value() -> None:
    async def main() -> tuple[Any, bool, bool]:
        return await data(Output.format("{}", unknown_output()))

    assert run(main()) == (None, False, False)


# --- json ----------------------------------------------------------------------------


def test_json_dumps_resolves_nested_outputs() -> None:
    o = Output.json_dumps({"a": Output.from_input(1), "b": [Output.from_input("x")]})
    assert sync_state(o) == ('{"a": 1, "b": ["x"]}', True, False)


def test_json_dumps_with_nested_secret_output_is_secret() -> None:
    assert sync_state(Output.json_dumps({"a": [veil.secret(1)]})) == ('{"a": [1]}', True, True)


def test_json_dumps_with_nested_secret_value_is_secret() -> None:
    assert sync_state(Output.json_dumps({"a": Secret("pw")})) == ('{"a": "pw"}', True, True)


def test_json_dumps_with_nested_unknown_is_unknown() -> None:
    assert sync_state(Output.json_dumps({"a": unknown_output(secret=True)})) == (
        None,
        False,
        True,
    )


def test_json_dumps_custom_cls() -> None:
    class SetEncoder(json.JSONEncoder):
        def default(self, o: Any) -> Any:
            if isinstance(o, set):
                return sorted(o)
            return super().default(o)

    o = Output.json_dumps({"s": {2, 1}, "p": veil.secret("x")}, cls=SetEncoder)
    assert sync_state(o) == ('{"s": [1, 2], "p": "x"}', True, True)


def test_json_dumps_custom_cls_sees_output_hidden_in_opaque_object() -> None:
    class Box:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

    class BoxEncoder(json.JSONEncoder):
        def default(self, o: Any) -> Any:
            if isinstance(o, Box):
                return {"inner": o.inner}
            return super().default(o)

    o = Output.json_dumps([Box(veil.secret(1))], cls=BoxEncoder)
    assert sync_state(o) == ('[{"inner": 1}]', True, True)


def test_json_dumps_indent() -> None:
    o = Output.json_dumps({"a": [Output.from_input(1)]}, indent=2)
    assert veil.reveal(o) == json.dumps({"a": [1]}, indent=2)


def test_json_dumps_sort_keys() -> None:
    assert veil.reveal(Output.json_dumps({"b": 1, "a": veil.secret(2)}, sort_keys=True)) == (
        '{"a": 2, "b": 1}'
    )


def test_json_dumps_default() -> None:
    o = Output.json_dumps({"d": DC(1, 2)}, default=dataclasses.asdict)
    assert veil.reveal(o) == '{"d": {"a": 1, "b": 2}}'


def test_json_dumps_unserializable_raises_type_error() -> None:
    with pytest.raises(TypeError):
        Output.json_dumps({"x": object()})


def test_json_loads() -> None:
    assert sync_state(Output.json_loads(veil.secret('{"a": [1]}'))) == ({"a": [1]}, True, True)


# --- secret / unsecret ---------------------------------------------------------------


def test_output_secret_marks_secret() -> None:
    assert sync_state(Output.secret({"a": Output.from_input(1)})) == ({"a": 1}, True, True)


def test_veil_secret_marks_secret() -> None:
    assert sync_state(veil.secret("x")) == ("x", True, True)


def test_output_unsecret_removes_secret() -> None:
    assert sync_state(Output.unsecret(veil.secret("x"))) == ("x", True, False)


def test_veil_unsecret_removes_secret() -> None:
    assert sync_state(veil.unsecret(veil.secret("x").apply(str.upper))) == ("X", True, False)


def test_secret_of_pending_value_is_secret_when_resolved() -> None:
    async def main() -> tuple[Any, bool, bool]:
        return await data(Output.secret(later("x")))

    assert run(main()) == ("x", True, True)


# --- UNKNOWN -------------------------------------------------------------------------


def test_unknown_is_an_unknown() -> None:
    assert isinstance(UNKNOWN, Unknown)


def test_any_unknown_instance_counts_as_unknown() -> None:
    assert contains_unknowns(Unknown())
    assert sync_state(Output.from_input([Unknown()]))[1] is False


def test_contains_unknowns_nested() -> None:
    assert contains_unknowns({"a": [(1, {"b": UNKNOWN})]})
    assert not contains_unknowns({"a": [(1, {"b": None})]})


def test_contains_unknowns_on_cycles() -> None:
    d: dict[str, Any] = {}
    d["d"] = d
    assert not contains_unknowns(d)
    d["u"] = [UNKNOWN]
    assert contains_unknowns(d)


# --- deferred_output -----------------------------------------------------------------


def test_deferred_output_resolves_synchronously_from_resolved_output() -> None:
    out: Output[str]
    resolve: Callable[[Output[str]], None]
    out, resolve = deferred_output()
    resolve(veil.secret("v"))
    assert sync_state(out) == ("v", True, True)


def test_deferred_output_is_pending_before_resolve() -> None:
    out: Output[int]
    _resolve: Callable[[Output[int]], None]
    out, _resolve = deferred_output()
    with pytest.raises(veil.PendingOutputError):
        veil.reveal(out)


def test_deferred_output_chain_of_10000_applies_settles() -> None:
    out: Output[int]
    resolve: Callable[[Output[int]], None]
    out, resolve = deferred_output()
    o: Output[Any] = out
    for _ in range(10_000):
        o = o.apply(lambda v: v + 1)
    resolve(Output.from_input(0))
    assert veil.reveal(o) == 10_000


def test_deferred_output_second_resolve_raises_usage_error() -> None:
    _out: Output[int]
    resolve: Callable[[Output[int]], None]
    _out, resolve = deferred_output()
    resolve(Output.from_input(1))
    with pytest.raises(veil.UsageError):
        resolve(Output.from_input(2))


def test_deferred_output_resolved_from_pending_output() -> None:
    async def main() -> tuple[Any, bool, bool]:
        out: Output[int]
        resolve: Callable[[Output[int]], None]
        out, resolve = deferred_output()
        resolve(Output.secret(later(3)))
        return await data(out)

    assert run(main()) == (3, True, True)


# --- awaitable accessors and the Pulumi constructor ----------------------------------


def test_future_returns_value() -> None:
    async def main() -> Any:
        return await Output.from_input([1]).future()

    assert run(main()) == [1]


def test_future_returns_none_when_value_holds_unknowns() -> None:
    async def main() -> Any:
        return await Output.from_input([UNKNOWN]).future()

    assert run(main()) is None


def test_future_with_unknowns_returns_value_holding_unknowns() -> None:
    async def main() -> Any:
        return await Output.from_input([UNKNOWN]).future(with_unknowns=True)

    assert run(main()) == [UNKNOWN]


def test_is_known_is_secret_resources_accessors() -> None:
    r = Res("r")

    async def main() -> tuple[bool, bool, set[Any]]:
        o = with_resources("v", r, secret=True)
        return await o.is_known(), await o.is_secret(), await o.resources()

    assert run(main()) == (True, True, {r})


def test_pulumi_constructor_with_awaitables() -> None:
    async def main() -> tuple[Any, bool, bool]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str] = loop.create_future()
        loop.call_soon(fut.set_result, "v")
        return await data(Output(set(), fut, later(True), later(True)))

    assert run(main()) == ("v", True, True)


def test_pulumi_constructor_without_is_secret_is_not_secret() -> None:
    async def main() -> tuple[Any, bool, bool]:
        return await data(Output(set(), later(1), later(True)))

    assert run(main()) == (1, True, False)


def test_pulumi_constructor_known_false_is_unknown() -> None:
    async def main() -> tuple[Any, bool, bool]:
        return await data(Output(set(), later(None), later(False)))

    assert run(main()) == (None, False, False)


def test_get_raises_veil_error_pointing_to_apply() -> None:
    with pytest.raises(veil.VeilError, match="apply"):
        Output.from_input(1).get()


# --- sync accessors ------------------------------------------------------------------


def test_is_secret_sync() -> None:
    assert veil.is_secret(veil.secret(1))
    assert not veil.is_secret(Output.from_input(1))
    assert veil.is_secret(Secret(1))
    assert not veil.is_secret(1)


def test_is_secret_on_pending_output_raises_pending_output_error() -> None:
    async def main() -> None:
        with pytest.raises(veil.PendingOutputError):
            veil.is_secret(Output.from_input(later(1)))

    run(main())


def test_reveal_resolved_output() -> None:
    assert veil.reveal(veil.secret({"a": 1})) == {"a": 1}


def test_reveal_secret() -> None:
    assert veil.reveal(Secret("x")) == "x"


def test_reveal_plain_value_returns_it() -> None:
    assert veil.reveal(5) == 5


def test_reveal_pending_output_raises_pending_output_error() -> None:
    async def main() -> None:
        with pytest.raises(veil.PendingOutputError):
            veil.reveal(Output.from_input(later(1)))

    run(main())


def test_reveal_unknown_output_raises_unknown_value_error() -> None:
    with pytest.raises(veil.UnknownValueError):
        veil.reveal(unknown_output())


# --- Secret --------------------------------------------------------------------------


def test_secret_reveal() -> None:
    assert Secret("pw").reveal() == "pw"


def test_secret_str_repr_format_fstring_are_masked() -> None:
    s = Secret("hunter2")
    assert str(s) == "[secret]"
    assert "hunter2" not in repr(s)
    assert "[secret]" in repr(s)
    assert format(s) == "[secret]"
    assert f"{s}" == "[secret]"
    assert "%s" % s == "[secret]"  # noqa: UP031


def test_secret_equal_values_are_equal() -> None:
    assert Secret("a") == Secret("a")
    assert Secret({"k": [1, 2]}) == Secret({"k": [1, 2]})


def test_secret_unequal_values_are_unequal() -> None:
    assert Secret("a") != Secret("b")
    assert Secret({"k": [1, 2]}) != Secret({"k": [1, 3]})


def test_secret_never_equals_plain_value() -> None:
    assert Secret("a") != "a"
    assert "a" != Secret("a")  # noqa: SIM300 (the reflected comparison is the point)


def test_secret_is_not_hashable() -> None:
    with pytest.raises(TypeError):
        hash(Secret("a"))


def test_secret_pickle_refused() -> None:
    with pytest.raises(veil.SecretPickleError) as info:
        pickle.dumps(Secret("hunter2"))
    assert isinstance(info.value, TypeError)
    assert "hunter2" not in str(info.value)


def test_secret_copy_and_deepcopy() -> None:
    s = Secret(["x"])
    assert copy.copy(s) == s
    assert copy.deepcopy(s) == s


def test_secret_of_output_refused() -> None:
    with pytest.raises(veil.InvalidValueError):
        Secret(Output.from_input(1))


# --- leak-proofing -------------------------------------------------------------------

TO_STRING: list[tuple[str, Callable[[Output[Any]], Any]]] = [
    ("str", str),
    ("format", format),
    ("fstring", lambda o: f"{o}"),
    ("percent", lambda o: "%s" % o),  # noqa: UP031
]


@pytest.mark.parametrize(("how", "convert"), TO_STRING, ids=[name for name, _ in TO_STRING])
def test_output_to_string_raises_output_to_string_error(
    how: str, convert: Callable[[Output[Any]], Any]
) -> None:
    with pytest.raises(veil.OutputToStringError) as info:
        convert(veil.secret("hunter2"))
    assert isinstance(info.value, TypeError)
    message = str(info.value)
    assert "apply" in message
    assert "Output.format" in message
    assert "Output.concat" in message
    assert "hunter2" not in message


def test_repr_of_secret_output_hides_value() -> None:
    text = repr(veil.secret("hunter2"))
    assert "hunter2" not in text
    assert "[secret]" in text


def test_repr_of_containers_holding_secret_outputs_hides_value() -> None:
    holder = {"a": [veil.secret("hunter2")], "b": (Output.secret({"pw": "hunter2"}),)}
    assert "hunter2" not in repr(holder)


def test_repr_of_plain_output_shows_value() -> None:
    assert repr(Output.from_input(5)) == "Output(5)"


def test_pickle_secret_output_refused() -> None:
    with pytest.raises(veil.SecretPickleError):
        pickle.dumps(veil.secret("hunter2"))


def test_pickle_container_holding_secret_output_refused() -> None:
    with pytest.raises(veil.SecretPickleError):
        pickle.dumps({"a": [veil.secret("hunter2")]})


def test_pickle_plain_known_output_round_trips() -> None:
    o = pickle.loads(pickle.dumps(Output.from_input({"a": 1})))  # noqa: S301
    assert sync_state(o) == ({"a": 1}, True, False)


def test_iterating_output_raises_type_error() -> None:
    with pytest.raises(TypeError):
        iter(Output.from_input([1, 2]))


def test_membership_test_on_output_raises_type_error() -> None:
    o = veil.secret(["hunter2"])
    with pytest.raises(TypeError):
        _ = "hunter2" in o  # type: ignore[operator]  # refused by the types too


def test_exception_in_apply_on_secret_carries_no_added_secret() -> None:
    err = RuntimeError("boom")

    def fail(_v: Any) -> Any:
        raise err

    pw = "hunter" + str(2)  # not spelled out, so no source line in a traceback holds it
    with pytest.raises(RuntimeError) as info:
        veil.secret(pw).apply(fail)
    exc = info.value
    assert exc is err
    assert str(exc) == "boom"
    assert not getattr(exc, "__notes__", None)
    assert exc.__cause__ is None
    assert "hunter2" not in "".join(traceback.format_exception(exc))


def test_exception_in_pending_apply_on_secret_carries_no_added_secret() -> None:
    err = RuntimeError("boom")

    def fail(_v: Any) -> Any:
        raise err

    pw = "hunter" + str(2)  # not spelled out, so no source line in a traceback holds it

    async def main() -> BaseException:
        o = Output.secret(later(pw)).apply(fail)
        with pytest.raises(RuntimeError) as info:
            await o.future()
        return info.value

    exc = run(main())
    assert exc is err
    assert not getattr(exc, "__notes__", None)
    assert "hunter2" not in "".join(traceback.format_exception(exc))


# --- every known/unknown x secret x nesting combination ------------------------------

NESTINGS: dict[str, Callable[[Any], Any]] = {
    "top": lambda leaf: leaf,
    "dict": lambda leaf: {"a": leaf},
    "list": lambda leaf: [leaf],
    "two_levels": lambda leaf: {"a": [leaf]},
}


def leaf_for(known: bool, secret: bool) -> Any:
    if known:
        return veil.secret("v") if secret else Output.from_input("v")
    return unknown_output(secret)


def combinations() -> list[Any]:
    return [
        pytest.param(
            known,
            secret,
            nest,
            id=f"{'known' if known else 'unknown'}-{'secret' if secret else 'plain'}-{nest}",
        )
        for known in (True, False)
        for secret in (True, False)
        for nest in NESTINGS
    ]


def flags(o: Output[Any]) -> tuple[bool, bool]:
    _value, known, secret = sync_state(o)
    return known, secret


@pytest.mark.parametrize(("known", "secret", "nest"), combinations())
def test_combination_from_input(known: bool, secret: bool, nest: str) -> None:
    assert flags(Output.from_input(NESTINGS[nest](leaf_for(known, secret)))) == (known, secret)


@pytest.mark.parametrize(("known", "secret", "nest"), combinations())
def test_combination_all(known: bool, secret: bool, nest: str) -> None:
    value = NESTINGS[nest](leaf_for(known, secret))
    assert flags(Output.all("x", value)) == (known, secret)
    assert flags(Output.all(k=value)) == (known, secret)


@pytest.mark.parametrize(("known", "secret", "nest"), combinations())
def test_combination_apply(known: bool, secret: bool, nest: str) -> None:
    o = Output.from_input(NESTINGS[nest](leaf_for(known, secret))).apply(lambda v: 1)
    assert flags(o) == (known, secret)


@pytest.mark.parametrize(("known", "secret", "nest"), combinations())
def test_combination_format(known: bool, secret: bool, nest: str) -> None:
    o = Output.format("<{}>", NESTINGS[nest](leaf_for(known, secret)))
    assert flags(o) == (known, secret)
    if known:
        assert veil.reveal(o) == "<" + str(NESTINGS[nest]("v")) + ">"


@pytest.mark.parametrize(("known", "secret", "nest"), combinations())
def test_combination_concat(known: bool, secret: bool, nest: str) -> None:
    as_text = Output.from_input(NESTINGS[nest](leaf_for(known, secret))).apply(json.dumps)
    o = Output.concat("<", as_text, ">")
    assert flags(o) == (known, secret)
    if known:
        assert veil.reveal(o) == "<" + json.dumps(NESTINGS[nest]("v")) + ">"


@pytest.mark.parametrize(("known", "secret", "nest"), combinations())
def test_combination_json_dumps(known: bool, secret: bool, nest: str) -> None:
    o = Output.json_dumps(NESTINGS[nest](leaf_for(known, secret)))
    assert flags(o) == (known, secret)
    if known:
        assert veil.reveal(o) == json.dumps(NESTINGS[nest]("v"))


def test_output_settles_after_an_awaiter_timed_out_in_a_closed_loop() -> None:
    out: Output[int]
    resolve: Callable[[Output[int]], None]
    out, resolve = deferred_output()

    async def give_up() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(out.future(), 0.001)

    run(give_up())  # leaves a waiter on a loop that is now closed
    resolve(Output.from_input(1))
    assert veil.reveal(out) == 1
