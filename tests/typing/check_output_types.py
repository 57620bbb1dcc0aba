"""Static typing of the Output API, checked by ``mypy --strict`` in CI (not run)."""

from __future__ import annotations

from typing import Any

from typing_extensions import assert_type

import veil
from veil import Output

number: Output[int] = Output.from_input(1)
assert_type(number.apply(lambda v: v + 1), Output[int])
assert_type(number.apply(lambda v: Output.from_input(str(v))), Output[str])


async def _spell(v: int) -> str:
    return str(v)


assert_type(number.apply(_spell), Output[str])
assert_type(number.apply(lambda v: [v]), Output[list[int]])
assert_type(Output.all(number, number), Output[list[Any]])
assert_type(Output.all(a=number, b="x"), Output[dict[str, Any]])
assert_type(Output.concat("a", number.apply(str)), Output[str])
assert_type(Output.format("{}", number), Output[str])
assert_type(Output.json_dumps({"n": number}), Output[str])
assert_type(Output.secret("pw"), Output[str])
assert_type(veil.secret(3), Output[int])
assert_type(veil.unsecret(number), Output[int])
assert_type(veil.ephemeral("tok"), Output[str])
assert_type(Output.ephemeral(number), Output[int])
assert_type(veil.ephemeral({"k": number}), Output[dict[str, int]])
assert_type(veil.Secret("x").reveal(), str)


# Awaitables: the type of what they resolve to, never Never.
async def _count() -> int:
    return 1


assert_type(Output.from_input(_count()), Output[int])
assert_type(Output.secret(_count()), Output[int])
assert_type(Output.unsecret(_count()), Output[int])
assert_type(veil.secret(_count()), Output[int])
assert_type(veil.unsecret(_count()), Output[int])

# Containers: from_input unwraps the Outputs inside, so the result holds their values.
assert_type(Output.from_input({"k": number}), Output[dict[str, int]])
assert_type(Output.from_input([number, number]), Output[list[int]])
assert_type(Output.from_input({"k": 1}), Output[dict[str, int]])
assert_type(Output.from_input(["a"]), Output[list[str]])
# Mixed or nested inputs: unwrapped at any depth, so the values are Any, never Outputs.
assert_type(Output.from_input({"k": {"j": number}}), Output[dict[str, Any]])
assert_type(Output.from_input({"k": number, "n": 1}), Output[dict[str, Any]])
assert_type(Output.from_input([[number]]), Output[list[Any]])
assert_type(veil.secret({"k": number}), Output[dict[str, int]])
assert_type(Output.secret({"k": number}), Output[dict[str, int]])
assert_type(Output.from_input(veil.Secret("pw")), Output[str])
assert_type(Output.from_input(number), Output[int])
assert_type(Output.from_input("s"), Output[str])


def _fingerprints(stack: veil.Stack, o: Output[str]) -> None:
    assert_type(stack.fingerprint(o, "db.password_version"), Output[str])
    assert_type(stack.fingerprint("x", ("db", "password_version")), str)
    assert_type(veil.fingerprint(o), veil.Fingerprint)
