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
assert_type(veil.Secret("x").reveal(), str)
