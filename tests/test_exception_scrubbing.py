"""An exception raised by a function given a secret keeps none of its plaintext: not in
its message, arguments or attributes, nor anywhere along its cause and context chain."""

from __future__ import annotations

import json
import secrets
import sys
import traceback

import pytest

from veil import Output

_ATTRIBUTES = ("object", "doc", "filename", "filename2", "strerror", "text", "obj", "name")


def _places(exc: BaseException) -> list[object]:
    """Everything an exception and the exceptions it chains hold that a log, a
    traceback or a debugger shows (frame locals aside)."""
    found: list[object] = []
    todo = [exc]
    seen: set[int] = set()
    while todo:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        found.extend([str(e), repr(e), *e.args, *vars(e).values()])
        found.extend(getattr(e, name, None) for name in _ATTRIBUTES)
        todo.extend(x for x in (e.__cause__, e.__context__) if x is not None)
        todo.extend(getattr(e, "exceptions", ()))
    found.append("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    return found


def _assert_no_plaintext(exc: BaseException, plaintext: str) -> None:
    raw = plaintext.encode()
    for place in _places(exc):
        if isinstance(place, (bytes, bytearray)):
            assert raw not in place
        else:
            assert plaintext not in str(place)
            assert plaintext not in repr(place)


def _plaintext(label: str) -> str:
    return f"{label}-{secrets.token_hex(8)}"


def test_unicode_decode_error_object_loses_the_secret_bytes() -> None:
    plaintext = _plaintext("bytes")
    with pytest.raises(UnicodeDecodeError) as info:
        Output.secret(b"\xff" + plaintext.encode()).apply(lambda v: v.decode("utf-8"))
    assert isinstance(info.value.object, bytes)
    _assert_no_plaintext(info.value, plaintext)


def test_unicode_encode_error_object_loses_the_secret_text() -> None:
    plaintext = _plaintext("surrogate")
    with pytest.raises(UnicodeEncodeError) as info:
        Output.secret(plaintext + "\ud800").apply(lambda v: v.encode("utf-8"))
    _assert_no_plaintext(info.value, plaintext)


def test_json_decode_error_doc_loses_the_secret() -> None:
    plaintext = _plaintext("doc")
    with pytest.raises(json.JSONDecodeError) as info:
        Output.secret(plaintext).apply(json.loads)
    _assert_no_plaintext(info.value, plaintext)


def test_os_error_filename_loses_the_secret() -> None:
    plaintext = _plaintext("path")
    with pytest.raises(FileNotFoundError) as info:
        Output.secret("/nonexistent/" + plaintext).apply(open)
    _assert_no_plaintext(info.value, plaintext)


def test_attribute_error_obj_loses_the_secret() -> None:
    plaintext = _plaintext("obj")
    with pytest.raises(AttributeError) as info:
        Output.secret(plaintext).apply(lambda v: v.no_such_attribute)  # type: ignore[attr-defined]
    _assert_no_plaintext(info.value, plaintext)


def test_arguments_of_any_type_lose_the_secret() -> None:
    plaintext = _plaintext("args")

    def fail(v: str) -> None:
        raise ValueError("bad value", [v], {"k": v}, v.encode())

    with pytest.raises(ValueError, match="bad value") as info:
        Output.secret(plaintext).apply(fail)
    _assert_no_plaintext(info.value, plaintext)


def test_cause_and_context_chains_lose_the_secret() -> None:
    plaintext = _plaintext("chain")

    def fail(v: str) -> None:
        try:
            try:
                json.loads(v)
            except ValueError as inner:
                raise LookupError(v) from inner
        except LookupError:
            raise RuntimeError("could not use the value") from None

    with pytest.raises(RuntimeError) as info:
        Output.secret(plaintext).apply(fail)
    assert info.value.__context__ is not None  # the chain is kept, only masked
    assert isinstance(info.value.__context__.__cause__, json.JSONDecodeError)
    _assert_no_plaintext(info.value, plaintext)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="exception groups are Python 3.11+")
def test_members_of_an_exception_group_lose_the_secret() -> None:
    plaintext = _plaintext("group")

    def fail(v: str) -> None:
        if sys.version_info >= (3, 11):  # the test is skipped before; mypy checks 3.10
            raise ExceptionGroup("several", [ValueError(v), KeyError(v)])  # noqa: F821

    with pytest.raises(Exception, match="several") as info:
        Output.secret(plaintext).apply(fail)
    _assert_no_plaintext(info.value, plaintext)


def test_an_attribute_that_refuses_masking_does_not_stop_the_rest() -> None:
    plaintext = _plaintext("stubborn")

    def fail(v: str) -> None:
        class Stubborn(Exception):
            @property
            def text(self) -> str:  # read-only, and it shows the secret
                return v

        exc = Stubborn("failed on", v)
        exc.detail = v  # type: ignore[attr-defined]
        raise exc

    with pytest.raises(Exception, match="failed on") as info:
        Output.secret(plaintext).apply(fail)
    exc = info.value
    assert exc.args == ("failed on", "[secret]")
    assert exc.detail == "[secret]"  # type: ignore[attr-defined]
    if sys.version_info >= (3, 11):
        assert any("may still hold a secret" in n for n in exc.__notes__)


def test_a_pending_apply_on_a_secret_scrubs_its_exception_too() -> None:
    import asyncio

    plaintext = _plaintext("pending")

    async def later() -> str:
        return plaintext

    async def main() -> None:
        await Output.secret(later()).apply(json.loads).future()

    with pytest.raises(json.JSONDecodeError) as info:
        asyncio.run(main())
    _assert_no_plaintext(info.value, plaintext)
