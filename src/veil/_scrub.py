"""Mask a secret's plaintext in an exception raised by code that was given the secret.

``apply`` on a secret Output, ``Output.format`` and ``Output.json_dumps`` call
:func:`scrub_exception` before the exception leaves veil, so ``str(exc)``, a traceback
and a log line show ``[secret]`` where the plaintext was.
"""

from __future__ import annotations

import json

from ._known import MASK
from ._redact import redact
from ._secret import Secret

__all__ = ["scrub_exception"]

# Texts this short are masked in an exception only where they are a whole argument:
# masking every "ab" inside a message would garble it and hide nearly nothing.
_MIN_MASKED_INSIDE = 3

# Attributes that built-in exception types keep outside ``__dict__`` and that can hold
# what a function was given: UnicodeError.object, OSError.filename, SyntaxError.text,
# AttributeError.obj, NameError.name, StopIteration.value, ...
_SLOT_ATTRIBUTES = (
    "object",
    "filename",
    "filename2",
    "strerror",
    "text",
    "msg",
    "obj",
    "name",
    "path",
    "value",
)

_PLAIN_TYPES = (bool, int, float, type(None))


class _Plaintexts:
    """The forms in which a secret value can show up inside an exception."""

    __slots__ = ("blobs", "inside", "numbers", "whole")

    def __init__(self, value: object) -> None:
        found: list[str] = []
        blobs: list[bytes] = []
        numbers: list[object] = []
        _secret_leaves(value, found, blobs, numbers, 0)
        self.whole = {s for s in found if s}
        self.numbers = numbers
        inside: set[str] = set()
        raw: set[bytes] = {b for b in blobs if len(b) >= _MIN_MASKED_INSIDE}
        for s in self.whole:
            if len(s) >= _MIN_MASKED_INSIDE:
                inside.add(s)
                # The forms a message shows a string in: repr() and JSON escapes.
                inside.add(repr(s)[1:-1])
                inside.add(json.dumps(s)[1:-1])
                raw.add(s.encode("utf-8", "surrogatepass"))
        # Longest first, so a secret that contains another is masked whole.
        self.inside = sorted(inside, key=len, reverse=True)
        self.blobs = sorted(raw, key=len, reverse=True)

    def mask_text(self, text: str) -> str:
        # A whole argument that is the secret or a piece of it (a format field name
        # cut out of a secret format string, say).
        if text in self.whole or (
            len(text) >= _MIN_MASKED_INSIDE and any(text in s for s in self.whole)
        ):
            return MASK
        for s in self.inside:
            if s in text:
                text = text.replace(s, MASK)
        # Every other secret this process has handled, as the log filter masks it.
        return redact(text)

    def mask_bytes(self, data: bytes) -> bytes:
        for b in self.blobs:
            if b in data:
                data = data.replace(b, MASK.encode())
        return data

    def mask(self, item: object) -> object:
        """``item`` with the secret masked: the same object when it holds none of it."""
        if isinstance(item, str):
            masked_text = self.mask_text(item)
            return item if masked_text == item else masked_text
        if isinstance(item, (bytes, bytearray)):
            masked_bytes = self.mask_bytes(bytes(item))
            return item if masked_bytes == item else masked_bytes
        if type(item) in (int, float) and any(item == n for n in self.numbers):
            return MASK
        if isinstance(item, _PLAIN_TYPES):
            return item
        try:
            text = repr(item)
        except Exception:
            return MASK
        masked = self.mask_text(text)
        return item if masked == text else masked


def _secret_leaves(
    value: object, out: list[str], blobs: list[bytes], numbers: list[object], depth: int
) -> None:
    """The str and bytes leaves and the numbers of a secret value, through nested
    Secrets and resolved Outputs."""
    if depth > 64:
        return
    if isinstance(value, Secret):
        value = value.reveal()
    if isinstance(value, str):
        out.append(str(value))
    elif isinstance(value, (bytes, bytearray)):
        blobs.append(bytes(value))
    elif type(value) is int or type(value) is float:
        numbers.append(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            _secret_leaves(k, out, blobs, numbers, depth + 1)
            _secret_leaves(v, out, blobs, numbers, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _secret_leaves(v, out, blobs, numbers, depth + 1)
    else:
        hook = getattr(type(value), "_veil_snapshot_", None)
        if hook is not None:  # a resolved Output inside the value
            try:
                resolved, inner, known, _secret, _res = hook(value)
            except Exception:
                return
            if resolved and known:
                _secret_leaves(inner, out, blobs, numbers, depth + 1)


def _set(exc: BaseException, name: str, item: object) -> bool:
    try:
        setattr(exc, name, item)
    except (AttributeError, TypeError, ValueError):
        return False
    return True


def _scrub_one(e: BaseException, plain: _Plaintexts) -> bool:
    """Mask ``e``'s arguments and attributes; False if one of them refused the change."""
    ok = True
    args = tuple(plain.mask(a) for a in e.args)
    if any(a is not b for a, b in zip(args, e.args, strict=True)):
        ok = _set(e, "args", args) and ok
    attrs = getattr(e, "__dict__", None)
    if isinstance(attrs, dict):
        for name, item in list(attrs.items()):
            if name == "__notes__" and isinstance(item, list):
                attrs[name] = [plain.mask(n) for n in item]
            elif not name.startswith("__"):
                masked = plain.mask(item)
                if masked is not item:
                    attrs[name] = masked
    for name in _SLOT_ATTRIBUTES:
        if name in (attrs or {}):
            continue  # done above
        try:
            item = getattr(e, name)
        except Exception:
            item = None  # a property that cannot compute holds nothing to mask
        if item is None or callable(item):
            continue
        masked = plain.mask(item)
        if masked is not item:
            ok = _set(e, name, masked) and ok
    return ok


def scrub_exception(exc: BaseException, value: object) -> None:
    """Mask the plaintext of the secret ``value`` in ``exc`` and the exceptions it chains.

    For an exception raised by a function that was given a secret (``apply`` on a
    secret Output): its arguments, its attributes (``JSONDecodeError.doc``,
    ``UnicodeError.object``, ``OSError.filename``, ...) and its notes lose every string
    or bytes leaf of ``value``, so ``str(exc)``, a traceback and a log line show
    ``[secret]`` instead; so does every other secret this process has handled (see
    :func:`veil.redact`). The same is done along ``__cause__``, ``__context__`` and the
    members of an exception group. The type and traceback of the exception are kept.

    An attribute that refuses the change (a read-only property of a user's exception
    class) does not stop the others from being masked: the exception gets a note
    saying that it may still hold the secret.
    """
    plain = _Plaintexts(value)
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        add_note = getattr(e, "add_note", None)  # Python 3.11+
        if not _scrub_one(e, plain) and add_note is not None:
            add_note("veil: an attribute of this exception may still hold a secret")
        for linked in (e.__cause__, e.__context__):
            if linked is not None:
                todo.append(linked)
        members = getattr(e, "exceptions", None)
        if isinstance(members, tuple):
            todo.extend(m for m in members if isinstance(m, BaseException))
