# mypy: disable-error-code="var-annotated"
# (deferred_output() pairs are typed by use, as in a program)
"""For all programs: a value is ephemeral exactly when an input it derives from was,
and writing it to state always raises, naming exactly the paths that hold one.

A program is a random sequence of transformations (apply, all, concat, format,
json_dumps, json_loads, from_input, lifting, secret, unsecret) over a mix of plain,
secret and ephemeral inputs, given resolved or still pending.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import veil
from veil import EphemeralValueError, LeakWarning, Output, Secret
from veil.providers import PassphraseProvider

PROVIDER = PassphraseProvider(
    passphrase="correct horse battery staple",
    memory_cost=8,
    iterations=1,
    lanes=1,
    insecure_weak_kdf=True,
)

KINDS = ("plain", "secret", "secret-object", "ephemeral")


def _shown(o: Any) -> Any:
    try:
        return veil.reveal(o)
    except veil.PendingOutputError:
        return "<pending>"


def _text(v: Any) -> str:
    # A value a function returned may hold Outputs, pending ones too (they are not
    # unwrapped, as in Pulumi).
    return json.dumps(v, sort_keys=True, default=_shown)


# Each operation takes two operands (Outputs) and returns an Output.
OPS: dict[str, Callable[[Output[Any], Output[Any]], Output[Any]]] = {
    "apply": lambda a, _b: a.apply(_text),
    "apply-returns-output": lambda a, b: a.apply(lambda _v: b),
    "apply-returns-container": lambda a, b: a.apply(lambda v: {"v": v, "o": [b]}),
    "all": lambda a, b: Output.all(a, b),
    "all-kwargs": lambda a, b: Output.all(x=a, y=b),
    "concat": lambda a, b: Output.concat(a.apply(_text), "-", b.apply(_text)),
    "format": lambda a, b: Output.format("{}:{k}", a, k=b),
    "json_dumps": lambda a, b: Output.json_dumps({"a": a, "b": [b]}),
    "json_loads": lambda a, _b: Output.json_loads(Output.json_dumps([a])),
    "from_input": lambda a, b: Output.from_input({"x": a, "y": (b, 1)}),
    "lift": lambda a, _b: Output.from_input({"k": a})["k"],
    "secret": lambda a, _b: Output.secret(a),
    "unsecret": lambda a, _b: Output.unsecret(a),
}


def _input(kind: str, i: int) -> Any:
    value = f"input-{i}-{kind}-0123456789"
    if kind == "plain":
        return value
    if kind == "secret":
        return veil.secret(value)
    if kind == "secret-object":
        return Secret(value)
    return veil.ephemeral(value)


def _resolver(resolve: Callable[[Any], None], kind: str, i: int) -> Callable[[], None]:
    return lambda: resolve(Output.from_input(_input(kind, i)))


programs = st.tuples(
    st.lists(st.sampled_from(KINDS), min_size=1, max_size=4),
    st.lists(
        st.tuples(st.sampled_from(sorted(OPS)), st.integers(0, 50), st.integers(0, 50)),
        max_size=8,
    ),
    st.booleans(),  # inputs given through pending Outputs, resolved at the end
    st.lists(st.integers(0, 50), min_size=1, max_size=4, unique=True),  # what is saved
)


def _run(
    kinds: list[str], ops: list[tuple[str, int, int]], pending: bool
) -> tuple[list[Output[Any]], list[set[int]]]:
    resolvers: list[Callable[[], None]] = []
    values: list[Output[Any]] = []
    deps: list[set[int]] = []
    for i, kind in enumerate(kinds):
        if pending:
            out, resolve = veil.deferred_output()
            resolvers.append(_resolver(resolve, kind, i))
            values.append(out)
        else:
            values.append(Output.from_input(_input(kind, i)))
        deps.append({i})
    for name, x, y in ops:
        a, b = x % len(values), y % len(values)
        uses_b = name in {
            "apply-returns-output",
            "apply-returns-container",
            "all",
            "all-kwargs",
            "concat",
            "format",
            "json_dumps",
            "from_input",
        }
        values.append(OPS[name](values[a], values[b]))
        deps.append(deps[a] | deps[b] if uses_b else set(deps[a]))
    for resolve_input in resolvers:
        resolve_input()
    return values, deps


@settings(max_examples=150, deadline=None)
@given(programs)
@example(  # a function's result holding an Output still pending once it is ephemeral
    (
        ["plain", "plain", "plain", "ephemeral"],
        [
            ("apply-returns-container", 0, 3),
            ("all", 0, 48),
            ("apply-returns-container", 16, 29),
            ("concat", 0, 20),
        ],
        True,
        [0],
    )
)
def test_a_result_is_ephemeral_exactly_when_an_input_was(program: Any) -> None:
    kinds, ops, pending, _saved = program
    values, deps = _run(kinds, ops, pending)
    for out, used in zip(values, deps, strict=True):
        expected = any(kinds[i] == "ephemeral" for i in used)
        assert veil.is_ephemeral(out) == expected
        if expected:
            assert veil.is_secret(out)


@settings(max_examples=100, deadline=None)
@given(programs)
def test_saving_raises_with_exactly_the_ephemeral_paths(program: Any) -> None:
    kinds, ops, pending, saved = program
    values, deps = _run(kinds, ops, pending)
    chosen = sorted({i % len(values) for i in saved})
    tree = {"r": {f"n{i}": values[i] for i in chosen}, "plain": "x"}
    expected = {f"r.n{i}" for i in chosen if any(kinds[d] == "ephemeral" for d in deps[i])}
    if expected:
        with pytest.raises(EphemeralValueError) as info:
            veil.state.dumps(tree, provider=PROVIDER, stack="dev")
        assert set(info.value.paths) == expected
        message = str(info.value)
        for i in range(len(kinds)):
            assert f"input-{i}-" not in message
    else:
        with warnings.catch_warnings():
            # unsecret'ed copies of secrets are plain: the leak guard seals them, warning
            warnings.simplefilter("ignore", LeakWarning)
            veil.state.dumps(tree, provider=PROVIDER, stack="dev")
