"""Property tests: every tree round-trips; every corruption raises a typed error."""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from veil import Secret, VeilError
from veil.providers import LocalKeyProvider
from veil.state import dumps, loads

_KEY_DIR = Path(tempfile.mkdtemp(prefix="veil-props-"))
PROVIDER = LocalKeyProvider(_KEY_DIR / "props.key")

# Plain strings and secret strings come from alphabets that cannot meet, so that the
# leak guard (which seals plain copies of secrets) leaves the plain tree as it is.
plain_text = st.text(alphabet="abcdefgh $é_", max_size=12)
secret_text = st.text(alphabet="§XYZ019-", max_size=12)
keys = st.one_of(st.sampled_from(["$secret", "$escape", "a", "b", ""]), plain_text)
scalars = st.one_of(
    plain_text,
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
secret_values = st.one_of(
    secret_text,
    st.integers(),
    st.lists(secret_text, max_size=3),
    st.dictionaries(keys, secret_text, max_size=3),
).map(Secret)
trees = st.recursive(
    st.one_of(scalars, secret_values),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(keys, children, max_size=4)
    ),
    max_leaves=25,
)


def _typed(tree: Any) -> Any:
    """A form in which 1, 1.0 and True, and secret and plain, all differ."""
    if isinstance(tree, Secret):
        return {"secret": _typed(tree.reveal())}
    if isinstance(tree, dict):
        return {"dict": {k: _typed(v) for k, v in tree.items()}}
    if isinstance(tree, list):
        return {"list": [_typed(v) for v in tree]}
    return {type(tree).__name__: tree}


def _same(a: Any, b: Any) -> bool:
    return json.dumps(_typed(a), sort_keys=True) == json.dumps(_typed(b), sort_keys=True)


@settings(max_examples=300, deadline=None)
@given(trees)
def test_every_tree_round_trips_exactly(tree: Any) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no leak warning: the alphabets do not meet
        data = dumps(tree, provider=PROVIDER, stack="props")
    assert _same(loads(data, provider=PROVIDER), tree)


@settings(max_examples=100, deadline=None)
@given(trees)
def test_no_secret_plaintext_reaches_the_bytes(tree: Any) -> None:
    data = dumps(tree, provider=PROVIDER, stack="props")
    found: list[str] = []

    def collect(v: Any, inside: bool) -> None:
        if isinstance(v, Secret):
            collect(v.reveal(), True)
        elif isinstance(v, dict):
            for x in v.values():
                collect(x, inside)
        elif isinstance(v, list):
            for x in v:
                collect(x, inside)
        elif inside and isinstance(v, str) and len(v) >= 4:
            found.append(v)

    collect(tree, False)
    for s in found:
        assert json.dumps(s).encode() not in data


_BASE_TREE = {
    "outputs": {"host": "db", "password": Secret("hunter2"), "n": [1, 2.5, None]},
    "list": [Secret("first"), Secret({"k": "v"}), "clear", {"$secret": "lookalike"}],
}
_BASE = dumps(_BASE_TREE, provider=PROVIDER, stack="props")
_BASE_TYPED = json.dumps(_typed(loads(_BASE, provider=PROVIDER)), sort_keys=True)


def _loads_or_typed_error(data: bytes) -> None:
    try:
        back = loads(data, provider=PROVIDER)
    except VeilError:
        return
    # Only a change that keeps the document (insignificant whitespace) may load.
    assert json.dumps(_typed(back), sort_keys=True) == _BASE_TYPED


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.tuples(st.integers(0, len(_BASE) - 1), st.integers(1, 255)), min_size=1, max_size=4)
)
def test_byte_changes_raise_only_typed_errors(flips: list[tuple[int, int]]) -> None:
    data = bytearray(_BASE)
    for i, x in flips:
        data[i] ^= x
    _loads_or_typed_error(bytes(data))


@settings(max_examples=100, deadline=None)
@given(st.integers(0, len(_BASE) - 1), st.binary(max_size=8))
def test_truncations_and_insertions_raise_only_typed_errors(at: int, extra: bytes) -> None:
    _loads_or_typed_error(_BASE[:at])
    _loads_or_typed_error(_BASE[:at] + extra + _BASE[at:])


json_values = st.recursive(
    st.one_of(st.text(max_size=5), st.integers(), st.booleans(), st.none(), st.floats()),
    lambda c: st.one_of(
        st.lists(c, max_size=3), st.dictionaries(st.text(max_size=3), c, max_size=3)
    ),
    max_leaves=6,
)


def _pick(step: Any) -> int:
    return sum(map(ord, str(step)))  # deterministic, unlike hash()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=8), st.integers(0, 5)), max_size=5), json_values)
def test_json_edits_raise_only_typed_errors(path: list[Any], value: Any) -> None:
    raw = json.loads(_BASE)
    node: Any = raw
    for step in path[:-1]:
        if isinstance(node, dict) and node:
            node = node[sorted(node)[_pick(step) % len(node)]]
        elif isinstance(node, list) and node:
            node = node[_pick(step) % len(node)]
    last = path[-1] if path else "veil_state"
    if isinstance(node, dict):
        if node and isinstance(last, int):
            node[sorted(node)[last % len(node)]] = value
        else:
            node[str(last)] = value
    elif isinstance(node, list) and node:
        node[_pick(last) % len(node)] = value
    _loads_or_typed_error(json.dumps(raw).encode())
