"""Property tests: for any program of Output transformations over any inputs, the
result is secret iff a secret input flowed into it (unless ``unsecret`` came after),
known iff every input that flowed in was known, and, when known, equal to the same
program run on plain Python values.

A program is an expression tree whose leaves are inputs, so every leaf flows into the
root. Each leaf is randomly secret or not, known or not, and resolved or async.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable
from typing import Any

import attrs
from hypothesis import given, settings
from hypothesis import strategies as st

import veil
from veil import UNKNOWN, Output, Secret

# --- the program description ---------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Leaf:
    value: Any
    known: bool
    secret: bool
    is_async: bool
    form: int  # which of the equivalent spellings of this input to use


@dataclasses.dataclass(frozen=True)
class Node:
    op: str
    children: tuple[Any, ...]
    arg: Any = None


@dataclasses.dataclass
class DBox:
    x: Any


@attrs.define
class ABox:
    x: Any


async def later(value: Any) -> Any:
    await asyncio.sleep(0)
    return value


def escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


# apply functions: (veil function, plain function, async?, adds secret?)
APPLIES: dict[str, tuple[Callable[[Any], Any], Callable[[Any], Any], bool, bool]] = {
    "wrap": (lambda v: [v, 1], lambda v: [v, 1], False, False),
    "output": (lambda v: Output.from_input((v,)), lambda v: (v,), False, False),
    "secret_output": (lambda v: Output.secret({"v": v}), lambda v: {"v": v}, False, True),
    "awaitable": (lambda v: later([v]), lambda v: [v], True, False),
    "awaitable_output": (lambda v: later(Output.from_input(v)), lambda v: v, True, False),
    "awaitable_secret_output": (lambda v: later(veil.secret(v)), lambda v: v, True, True),
}

leaves = st.builds(
    Leaf,
    value=st.one_of(st.integers(-3, 3), st.text("ab{}", max_size=3)),
    known=st.booleans(),
    secret=st.booleans(),
    is_async=st.booleans(),
    form=st.integers(0, 1),
)


def extend(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Node]:
    some = st.lists(children, min_size=1, max_size=3).map(tuple)
    one = children.map(lambda c: (c,))
    return st.one_of(
        st.builds(Node, st.just("apply"), one, st.sampled_from(sorted(APPLIES))),
        st.builds(Node, st.just("all"), some),
        st.builds(Node, st.just("all_kw"), some),
        st.builds(Node, st.just("concat"), some),
        st.builds(Node, st.just("format"), some, st.sampled_from(["args", "kwargs", "mixed"])),
        st.builds(
            Node, st.just("format_fs"), st.lists(children, min_size=2, max_size=3).map(tuple)
        ),
        st.builds(Node, st.just("json"), some, st.booleans()),
        st.builds(Node, st.just("attr"), one, st.sampled_from(["dataclass", "attrs"])),
        st.builds(Node, st.just("item"), one, st.sampled_from(["dict", "all"])),
        st.builds(Node, st.just("nest"), some, st.sampled_from(["list", "tuple", "dict"])),
        st.builds(Node, st.just("secret"), one),
        st.builds(Node, st.just("unsecret"), one),
    )


programs = st.recursive(leaves, extend, max_leaves=8)


# --- expectations --------------------------------------------------------------------


def expected_known(p: Any) -> bool:
    if isinstance(p, Leaf):
        return p.known
    return all(expected_known(c) for c in p.children)


def expected_secret(p: Any) -> bool:
    if isinstance(p, Leaf):
        return p.secret
    if p.op == "secret":
        return True
    if p.op == "unsecret":
        return False
    secret = any(expected_secret(c) for c in p.children)
    if p.op == "apply" and APPLIES[p.arg][3]:
        # The function (which adds a secret) runs only on a known value.
        secret = secret or expected_known(p.children[0])
    return secret


def uses_async(p: Any) -> bool:
    if isinstance(p, Leaf):
        return p.is_async
    if p.op == "apply" and APPLIES[p.arg][2]:
        return True
    return any(uses_async(c) for c in p.children)


def is_str_leaf(p: Any) -> bool:
    return isinstance(p, Leaf) and isinstance(p.value, str)


def format_string(n_args: int, names: list[str]) -> str:
    return "|".join(["{}"] * n_args + ["{%s}" % k for k in names])  # noqa: UP031


def split(p: Node) -> tuple[list[Any], list[Any]]:
    """Positional and keyword children of a format node."""
    cs = list(p.children)
    if p.arg == "args":
        return cs, []
    if p.arg == "kwargs":
        return [], cs
    return cs[:1], cs[1:]


# --- the program on plain values -----------------------------------------------------


def plain(p: Any) -> Any:
    if isinstance(p, Leaf):
        return p.value
    vs = [plain(c) for c in p.children]
    op = p.op
    if op == "apply":
        return APPLIES[p.arg][1](vs[0])
    if op == "all":
        return vs
    if op == "all_kw":
        return {f"k{i}": v for i, v in enumerate(vs)}
    if op == "concat":
        return "".join(
            v if is_str_leaf(c) else json.dumps(v) for c, v in zip(p.children, vs, strict=True)
        )
    if op == "format":
        pos, kw = split(p)
        pv, kv = vs[: len(pos)], vs[len(pos) :]
        names = [f"k{i}" for i in range(len(kw))]
        return format_string(len(pos), names).format(*pv, **dict(zip(names, kv, strict=True)))
    if op == "format_fs":
        fs = escape(json.dumps(vs[0])) + ":" + format_string(len(vs) - 1, [])
        return fs.format(*vs[1:])
    if op == "json":
        return json.dumps({f"k{i}": v for i, v in enumerate(vs)}, sort_keys=p.arg)
    if op in ("attr", "item", "secret", "unsecret"):
        return vs[0]
    if op == "nest":
        if p.arg == "list":
            return vs
        if p.arg == "tuple":
            return tuple(vs)
        return {f"k{i}": v for i, v in enumerate(vs)}
    raise AssertionError(op)


# --- the program on veil inputs ------------------------------------------------------


def build_leaf(p: Leaf) -> Any:
    if p.known:
        if p.secret:
            inp: Any = veil.secret(p.value) if p.form else Secret(p.value)
        else:
            inp = Output.from_input(p.value) if p.form else p.value
    elif p.secret:
        inp = Output.secret(UNKNOWN)
    else:
        inp = Output.from_input(UNKNOWN) if p.form else UNKNOWN
    if p.is_async:
        return Output.from_input(later(inp)) if p.form else later(inp)
    return inp


def as_str(c: Any) -> Any:
    """A string input for concat: a string leaf as it is, anything else as JSON."""
    if is_str_leaf(c):
        return build(c)
    return Output.from_input(build(c)).apply(json.dumps)


def build(p: Any) -> Any:
    """The veil input for ``p``: an Output, or a raw input (leaves, nested containers)."""
    if isinstance(p, Leaf):
        return build_leaf(p)
    op = p.op
    if op == "nest":
        vs = [build(c) for c in p.children]
        if p.arg == "list":
            return vs
        if p.arg == "tuple":
            return tuple(vs)
        return {f"k{i}": v for i, v in enumerate(vs)}
    if op == "apply":
        return Output.from_input(build(p.children[0])).apply(APPLIES[p.arg][0])
    if op == "all":
        return Output.all(*[build(c) for c in p.children])
    if op == "all_kw":
        return Output.all(**{f"k{i}": build(c) for i, c in enumerate(p.children)})
    if op == "concat":
        return Output.concat(*[as_str(c) for c in p.children])
    if op == "format":
        pos, kw = split(p)
        names = [f"k{i}" for i in range(len(kw))]
        return Output.format(
            format_string(len(pos), names),
            *[build(c) for c in pos],
            **{n: build(c) for n, c in zip(names, kw, strict=True)},
        )
    if op == "format_fs":
        rest = format_string(len(p.children) - 1, [])
        head = Output.from_input(build(p.children[0])).apply(
            lambda v: escape(json.dumps(v)) + ":" + rest
        )
        return Output.format(head, *[build(c) for c in p.children[1:]])
    if op == "json":
        return Output.json_dumps(
            {f"k{i}": build(c) for i, c in enumerate(p.children)}, sort_keys=p.arg
        )
    if op == "attr":
        box = DBox if p.arg == "dataclass" else ABox
        return Output.from_input(box(build(p.children[0]))).x
    if op == "item":
        if p.arg == "dict":
            return Output.from_input({"k": build(p.children[0])})["k"]
        return Output.all(build(p.children[0]))[0]
    if op == "secret":
        return Output.secret(build(p.children[0]))
    if op == "unsecret":
        return Output.unsecret(build(p.children[0]))
    raise AssertionError(op)


# --- the properties ------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(programs)
def test_program_result_matches_flow_of_secret_and_known(program: Any) -> None:
    async def evaluate() -> tuple[Any, bool, bool]:
        out = Output.from_input(build(program))
        return await out.future(), await out.is_known(), await out.is_secret()

    value, known, secret = asyncio.run(evaluate())
    assert known == expected_known(program)
    assert secret == expected_secret(program)
    if known:
        assert value == plain(program)
    else:
        assert value is None


@settings(max_examples=200, deadline=None)
@given(programs.filter(lambda p: not uses_async(p)))
def test_program_without_awaitables_resolves_synchronously(program: Any) -> None:
    out = Output.from_input(build(program))
    assert veil.is_secret(out) == expected_secret(program)
    if expected_known(program):
        assert veil.reveal(out) == plain(program)
    else:
        try:
            veil.reveal(out)
        except veil.UnknownValueError:
            pass
        else:
            raise AssertionError("an unknown result revealed a value")
