"""``json.dumps`` of a value that holds resolved Outputs and Secrets: what
``Output.json_dumps`` encodes once the value is known."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ._secret import Secret, is_output

__all__ = ["Found", "NeedsAwait", "dumps_found"]

_JSON_DEFAULT = json.JSONEncoder().default


class Found:
    """What the encoding met inside the value: a secret, an unknown, resources."""

    __slots__ = ("resources", "secret", "unknown")

    def __init__(self) -> None:
        self.secret = 0  # a secret level, as an Output's (veil._inputs)
        self.unknown = False
        self.resources: frozenset[Any] = frozenset()


class NeedsAwait(Exception):
    """An Output inside the value is still pending: dump again once it has settled."""

    def __init__(self, output: Any) -> None:
        super().__init__()
        self.output = output


def dumps_found(
    value: Any,
    found: Found,
    *,
    cls: type[json.JSONEncoder] | None,
    default: Callable[[Any], Any] | None,
    **options: Any,
) -> str:
    """``json.dumps(value, cls=cls, default=default, **options)`` where Outputs (through
    their ``_veil_snapshot_`` hook) and Secrets anywhere inside are replaced by their
    values, and what they were is recorded in ``found``. An unknown Output encodes as
    ``null`` (the caller discards the text). Raises :class:`NeedsAwait`."""

    def hook(o: Any) -> Any:
        if is_output(o):
            resolved, inner, known, secret, res = o._veil_snapshot_()
            if not resolved:
                raise NeedsAwait(o)
            found.secret |= secret
            found.resources |= res
            if not known:
                found.unknown = True
                return None
            return inner
        if isinstance(o, Secret):
            found.secret |= 1
            return o.reveal()
        if default is not None:
            return default(o)
        return _JSON_DEFAULT(o)

    if cls is None:
        return json.dumps(value, default=hook, **options)
    user_cls = cls

    class _Encoder(user_cls):  # type: ignore[valid-type, misc]
        def default(self, o: Any) -> Any:
            if is_output(o) or isinstance(o, Secret) or default is not None:
                return hook(o)
            return super().default(o)

    return json.dumps(value, cls=_Encoder, **options)
