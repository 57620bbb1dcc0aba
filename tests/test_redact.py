"""Log redaction: what reaches a log with and without the filter, the index behind
``veil.redact``, and installing and uninstalling the filter.

Every test that installs the filter takes it out again (the ``log_filter`` fixture),
and each starts without it, so no test depends on another having installed it.
"""

from __future__ import annotations

import base64
import copy
import importlib
import io
import json
import logging
import logging.handlers
import pickle
import queue
import secrets
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import veil
from veil import LogFilterHandle, Secret, SecretRedactingFilter
from veil._known import known_plaintexts

STANDARD = {k for k in logging.makeLogRecord({}).__dict__} | {"message", "asctime", "taskName"}


def new_secret(label: str) -> str:
    """The plaintext of a fresh secret this process now knows."""
    value: str = Secret(f"{label}-{secrets.token_hex(8)}").reveal()
    return value


@pytest.fixture(autouse=True)
def logging_as_found() -> Iterator[None]:
    """Each test starts from logging's own record factory (the ``veil`` command, which
    other tests run in this process, installs the filter for the rest of its process)
    and must leave it so; the factory found is put back afterwards."""
    found = logging.getLogRecordFactory()
    logging.setLogRecordFactory(logging.LogRecord)
    yield
    left = logging.getLogRecordFactory()
    logging.setLogRecordFactory(found)
    assert left is logging.LogRecord, "a test left a record factory installed"


@pytest.fixture
def log_filter() -> Iterator[LogFilterHandle]:
    factory = logging.getLogRecordFactory()
    handle = veil.install_log_filter()
    yield handle
    handle.uninstall()
    assert logging.getLogRecordFactory() is factory


def capture(
    name: str, formatter: logging.Formatter | None = None
) -> tuple[logging.Logger, io.StringIO, logging.Handler]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter or logging.Formatter("%(name)s: %(message)s"))
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    return logger, stream, handler


@pytest.fixture
def logged() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    logger, stream, handler = capture("veil-filter-test")
    yield logger, stream
    logger.removeHandler(handler)


def raise_with(text: str) -> None:
    raise ValueError(f"x={text}")


# --- veil.redact and its index --------------------------------------------------------------


def test_redact_masks_every_known_secret() -> None:
    a, b = new_secret("red-a"), new_secret("red-b")
    assert veil.redact(f"{a}/{b}/{a}") == "[secret]/[secret]/[secret]"


def test_redact_leaves_text_without_secrets_alone() -> None:
    # Characters no test's secret holds: other tests leave their secrets known.
    text = "".join(secrets.choice("水火木金土 ") for _ in range(40))
    assert veil.redact(text) is text


def test_redact_masks_secrets_that_share_a_prefix_longest_first() -> None:
    for i in range(2000):
        veil.Secret(f"tok_shared_prefix_{i:05d}")
    veil.Secret("tok_shared_prefix_00042_and_more")
    line = "a tok_shared_prefix_00042_and_more b tok_shared_prefix_01999 c tok_shared_prefix_9"
    assert veil.redact(line) == "a [secret] b [secret] c tok_shared_prefix_9"


def test_redact_masks_the_secret_that_starts_first_where_two_overlap() -> None:
    core = secrets.token_hex(4)
    left, right = f"L{core}", f"{core}R"
    Secret(left), Secret(right)
    assert veil.redact(f"<L{core}R>") == "<[secret]R>"


def test_redact_sees_a_secret_made_just_before_the_call() -> None:
    veil.redact("warm the index " + new_secret("warm"))
    for _ in range(50):
        value = new_secret("fresh")
        assert veil.redact(f"v={value};") == "v=[secret];"


def test_the_index_takes_only_the_new_secrets_from_the_registry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    redact_module = importlib.import_module("veil._redact")  # veil.redact is the function

    veil.redact("sync " + new_secret("sync"))
    taken: list[int] = []
    since = redact_module.plaintexts_since

    def counting(position: int) -> list[str]:
        found = since(position)
        taken.append(len(found))
        return found

    monkeypatch.setattr(redact_module, "plaintexts_since", counting)
    added = [new_secret(f"inc{i}") for i in range(3)]
    assert veil.redact(" ".join(added)) == "[secret] [secret] [secret]"
    assert veil.redact(added[0]) == "[secret]"
    assert taken == [3]  # three strings copied, once, however many are known


@settings(max_examples=300, deadline=None)
@given(
    known=st.lists(st.text("αβγδ", min_size=4, max_size=12), max_size=6),
    text=st.text("αβγδ x", max_size=80),
)
def test_redact_masks_the_longest_secret_at_the_first_position_it_finds(
    known: list[str], text: str
) -> None:
    # Greek letters: these secrets stay known to the process and must not mask the
    # words other tests log.
    for value in known:
        Secret(value)
    _, everything = known_plaintexts()
    expected: list[str] = []
    i = 0
    while i < len(text):
        match = max((s for s in everything if text.startswith(s, i)), key=len, default=None)
        if match is None:
            expected.append(text[i])
            i += 1
        else:
            expected.append("[secret]")
            i += len(match)
    assert veil.redact(text) == "".join(expected)


def test_redact_is_exact_while_other_threads_add_secrets() -> None:
    failures: list[str] = []

    def work() -> None:
        for _ in range(200):
            value = new_secret("thr")
            line = f"a {value} b"
            if veil.redact(line) != "a [secret] b":
                failures.append(line)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []


# --- what reaches a log without the filter ---------------------------------------------------


def test_without_the_filter_a_secret_object_logs_as_its_mask(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    value = Secret("obj-" + secrets.token_hex(8))
    logger.info("pw=%s %r", value, value)
    assert stream.getvalue() == "veil-filter-test: pw=[secret] Secret([secret])\n"


def test_without_the_filter_a_revealed_plaintext_is_written_as_is(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    value = new_secret("bare")
    try:
        raise_with(value)
    except ValueError:
        logger.exception("pw=%s", value)
    assert stream.getvalue().count(value) == 2  # the message and the exception line


def test_without_the_filter_an_output_is_refused_and_reported_by_its_repr(
    capsys: pytest.CaptureFixture[str],
) -> None:
    value = "out-" + secrets.token_hex(8)
    stream = io.StringIO()
    record = logging.makeLogRecord({"msg": "v=%s", "args": (veil.Output.secret(value),)})
    logging.StreamHandler(stream).handle(record)
    err = capsys.readouterr().err
    assert "OutputToStringError" in err
    assert "Arguments: (Output([secret]),)" in err
    assert value not in err
    assert stream.getvalue() == ""


# --- what reaches a log with the filter ------------------------------------------------------


def test_log_filter_masks_secrets_in_message_arguments(
    log_filter: LogFilterHandle, logged: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = logged
    value = new_secret("arg")
    logger.info("pw=%s port=%d", value, 5432)
    assert stream.getvalue() == "veil-filter-test: pw=[secret] port=5432\n"


def test_log_filter_masks_secrets_in_mapping_arguments(
    log_filter: LogFilterHandle, logged: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = logged
    value = new_secret("map")
    logger.info("pw=%(pw)s", {"pw": value})
    assert stream.getvalue() == "veil-filter-test: pw=[secret]\n"


def test_log_filter_masks_secrets_in_the_message_itself(
    log_filter: LogFilterHandle, logged: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = logged
    value = new_secret("msg")
    logger.warning(f"t: {value}!")
    assert stream.getvalue() == "veil-filter-test: t: [secret]!\n"


def test_a_masked_record_carries_the_masked_message_and_no_arguments(
    log_filter: LogFilterHandle,
) -> None:
    value = new_secret("rec")
    record = logging.getLogger("veil-filter-test").makeRecord(
        "n", logging.INFO, __file__, 1, "pw=%s", (value,), None
    )
    assert (record.msg, record.args) == ("pw=[secret]", None)


def test_a_record_without_secrets_keeps_its_message_and_arguments(
    log_filter: LogFilterHandle,
) -> None:
    record = logging.getLogger("veil-filter-test").makeRecord(
        "n", logging.INFO, __file__, 1, "n=%d", (5,), None
    )
    assert (record.msg, record.args) == ("n=%d", (5,))


def test_log_filter_masks_secrets_in_tracebacks(
    log_filter: LogFilterHandle, logged: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = logged
    value = new_secret("exc")
    try:
        raise_with(value)
    except ValueError:
        logger.exception("login failed")
    text = stream.getvalue()
    assert "Traceback" in text
    assert "ValueError: x=[secret]" in text
    assert value not in text


def test_log_filter_masks_chained_exceptions_and_notes(
    log_filter: LogFilterHandle, logged: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = logged
    first, second = new_secret("cause"), new_secret("note")
    try:
        try:
            raise_with(first)
        except ValueError as exc:
            err = RuntimeError("wrapped")
            err.__notes__ = [f"while using {second}"]
            raise err from exc
    except RuntimeError:
        logger.exception("failed")
    text = stream.getvalue()
    assert "direct cause" in text
    if sys.version_info >= (3, 11):  # tracebacks show notes from 3.11 on
        assert "while using [secret]" in text
    assert first not in text
    assert second not in text


SOURCE_SECRET = "src-literal-7c41e9d2"


def test_log_filter_masks_a_secret_in_a_traceback_source_line(
    log_filter: LogFilterHandle, logged: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = logged
    Secret(SOURCE_SECRET)
    try:
        raise ValueError("src-literal-7c41e9d2")  # the traceback shows this line
    except ValueError:
        logger.exception("failed")
    text = stream.getvalue()
    assert 'raise ValueError("[secret]")' in text
    assert SOURCE_SECRET not in text


def test_log_filter_masks_stack_info(
    log_filter: LogFilterHandle, logged: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = logged
    value = new_secret("stk")
    record = logger.makeRecord(
        "n", logging.INFO, __file__, 1, "m", None, None, sinfo=f"Stack:\n  {value}\n"
    )
    assert record.stack_info == "Stack:\n  [secret]\n"
    logger.info("here", stack_info=True)
    assert "Stack (most recent call last)" in stream.getvalue()


def test_log_filter_covers_child_loggers(
    log_filter: LogFilterHandle, logged: tuple[logging.Logger, io.StringIO]
) -> None:
    _logger, stream = logged
    value = new_secret("child")
    logging.getLogger("veil-filter-test.db.pool").error("d=%s", value)
    assert stream.getvalue() == "veil-filter-test.db.pool: d=[secret]\n"


def test_log_filter_covers_handlers_added_after_install(log_filter: LogFilterHandle) -> None:
    logger, stream, handler = capture("veil-late-handler", logging.Formatter("%(message)s"))
    try:
        logger.warning("v=%s", new_secret("late"))
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "v=[secret]\n"


def test_log_filter_leaves_other_records_alone(
    log_filter: LogFilterHandle, logged: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = logged
    # (Only strings equal to a known secret are masked: these are random words.)
    words = secrets.token_hex(6), secrets.token_hex(6)
    logger.info("%s / %s", *words)
    assert stream.getvalue() == f"veil-filter-test: {words[0]} / {words[1]}\n"


def test_log_filter_masks_the_arguments_logging_prints_for_a_bad_format_string(
    log_filter: LogFilterHandle, capsys: pytest.CaptureFixture[str]
) -> None:
    stream = io.StringIO()
    value = new_secret("badfmt")
    record = logging.getLogger("veil-badfmt").makeRecord(
        "n", logging.INFO, __file__, 1, "port=%d", (value,), None
    )
    logging.StreamHandler(stream).handle(record)
    err = capsys.readouterr().err
    assert "--- Logging error ---" in err
    assert "Arguments: ('[secret]',)" in err
    assert value not in err
    assert stream.getvalue() == ""


def test_log_filter_does_not_mask_other_record_fields(log_filter: LogFilterHandle) -> None:
    value = new_secret("name")
    logger, stream, handler = capture(f"svc.{value}")
    logger.info("hello")
    logger.removeHandler(handler)
    assert stream.getvalue() == f"svc.{value}: hello\n"


def test_log_filter_does_not_see_records_built_without_the_factory(
    log_filter: LogFilterHandle,
) -> None:
    value = new_secret("made")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.handle(logging.makeLogRecord({"msg": "v=%s", "args": (value,)}))
    handler.addFilter(SecretRedactingFilter())
    handler.handle(logging.makeLogRecord({"msg": "v=%s", "args": (value,)}))
    # As a socket log server receives it: the exception already rendered.
    handler.handle(logging.makeLogRecord({"msg": "e", "exc_text": f"ValueError: {value}"}))
    assert stream.getvalue() == f"v={value}\nv=[secret]\ne\nValueError: [secret]\n"


def test_log_filter_does_not_mask_secrets_shorter_than_four_characters(
    log_filter: LogFilterHandle, logged: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = logged
    Secret("Zq7")
    logger.info("code Zq7")
    assert stream.getvalue() == "veil-filter-test: code Zq7\n"


def test_log_filter_does_not_mask_an_encoded_plaintext(
    log_filter: LogFilterHandle, logged: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = logged
    value = new_secret("enc")
    encoded = base64.b64encode(value.encode()).decode()
    logger.info("basic %s", encoded)
    assert stream.getvalue() == f"veil-filter-test: basic {encoded}\n"


# --- each handler keeps its own formatting -------------------------------------------------


class OwnFormatter(logging.Formatter):
    """A formatter with its own format string and its own exception rendering."""

    def __init__(self) -> None:
        super().__init__("<%(levelname)s|%(name)s> %(message)s")

    def formatException(self, ei: Any) -> str:
        return f"!! {ei[0].__name__}: {ei[1]} !!"


class JsonFormatter(logging.Formatter):
    """One JSON object a line, as JSON logging formatters build it: the message, the
    exception text through ``record.exc_text``, the stack, and every ``extra=`` field."""

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        fields = {k: v for k, v in record.__dict__.items() if k not in STANDARD}
        return json.dumps(
            {
                "level": record.levelname,
                "message": record.getMessage(),
                "exception": record.exc_text,
                "stack": record.stack_info,
                **fields,
            }
        )


class ExcInfoJsonFormatter(logging.Formatter):
    """A formatter that renders ``record.exc_info`` itself and never stores it in
    ``record.exc_text`` (python-json-logger's formatter does this)."""

    def format(self, record: logging.LogRecord) -> str:
        exception = self.formatException(record.exc_info) if record.exc_info else None
        return json.dumps({"message": record.getMessage(), "exception": exception})


def test_a_custom_formatter_keeps_its_format_and_its_exception_rendering(
    log_filter: LogFilterHandle,
) -> None:
    logger, stream, handler = capture("veil-own", OwnFormatter())
    value = new_secret("own")
    try:
        raise_with(value)
    except ValueError:
        logger.exception("failed for %s", value)
    logger.removeHandler(handler)
    assert stream.getvalue() == (
        "<ERROR|veil-own> failed for [secret]\n!! ValueError: x=[secret] !!\n"
    )


def test_each_handler_renders_the_exception_its_own_way(log_filter: LogFilterHandle) -> None:
    logger, own_stream, own = capture("veil-two", OwnFormatter())
    plain_stream = io.StringIO()
    plain = logging.StreamHandler(plain_stream)
    logger.addHandler(plain)
    value = new_secret("two")
    try:
        raise_with(value)
    except ValueError:
        logger.exception("x")
    logger.removeHandler(own)
    logger.removeHandler(plain)
    # logging itself keeps the first formatter's exception text on the record for the
    # next handler: the same as without the filter, and masked.
    assert "!! ValueError: x=[secret] !!" in own_stream.getvalue()
    assert value not in own_stream.getvalue() + plain_stream.getvalue()


def test_a_json_formatter_gets_masked_message_exception_and_stack(
    log_filter: LogFilterHandle,
) -> None:
    logger, stream, handler = capture("veil-json", JsonFormatter())
    value = new_secret('js"on')  # a quote: masked before JSON escapes it
    try:
        raise_with(value)
    except ValueError:
        logger.exception("pw=%s", value, stack_info=True)
    logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["message"] == "pw=[secret]"
    assert line["exception"].endswith("ValueError: x=[secret]")
    assert line["stack"].startswith("Stack (most recent call last)")
    assert value not in stream.getvalue()
    assert json.dumps(value)[1:-1] not in stream.getvalue()


def test_install_log_filter_does_not_see_extra_fields(log_filter: LogFilterHandle) -> None:
    logger, stream, handler = capture("veil-extra", JsonFormatter())
    value = new_secret("extra")
    logger.info("login", extra={"user_token": value})
    logger.removeHandler(handler)
    assert json.loads(stream.getvalue())["user_token"] == value


def test_the_filter_on_a_handler_masks_string_extra_fields() -> None:
    logger, stream, handler = capture("veil-extra-flt", JsonFormatter())
    handler.addFilter(SecretRedactingFilter())
    value = new_secret("xtr")
    logger.info("login %s", value, extra={"user_token": value, "nested": {"t": value}})
    logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["message"] == "login [secret]"
    assert line["user_token"] == "[secret]"
    assert line["nested"] == {"t": value}  # only strings are masked, not containers


def test_a_formatter_that_renders_exc_info_itself_is_not_masked(
    log_filter: LogFilterHandle,
) -> None:
    logger, stream, handler = capture("veil-excinfo", ExcInfoJsonFormatter())
    value = new_secret("byp")
    try:
        raise_with(value)
    except ValueError:
        logger.exception("failed")
    logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["message"] == "failed"
    assert f"x={value}" in line["exception"]


def test_the_filter_class_on_a_handler_masks_a_record_made_without_the_factory() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(SecretRedactingFilter())
    value = new_secret("flt")
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "v=%s", (value,), None)
    handler.handle(record)
    assert stream.getvalue() == "v=[secret]\n"


def test_a_masked_record_stays_masked_through_a_queue_handler(
    log_filter: LogFilterHandle,
) -> None:
    q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    logger, _stream, _handler = capture("veil-queue")
    logger.handlers[:] = [logging.handlers.QueueHandler(q)]
    value = new_secret("queue")
    try:
        raise_with(value)
    except ValueError:
        logger.exception("q=%s", value)
    record = q.get_nowait()
    out = io.StringIO()
    logging.StreamHandler(out).handle(record)
    logger.handlers[:] = []
    assert out.getvalue().startswith("q=[secret]\nTraceback")
    assert value not in out.getvalue()


def test_a_masked_record_copies_and_pickles_as_a_masked_record(
    log_filter: LogFilterHandle,
) -> None:
    value = new_secret("pkl")
    record = logging.getLogger("veil-pickle").makeRecord(
        "n", logging.ERROR, __file__, 1, "m=%s", (value,), None
    )
    twin = copy.copy(record)
    twin.exc_text = f"<{value}>"
    back = pickle.loads(pickle.dumps(record))  # noqa: S301 (our own bytes)
    back.exc_text = value
    assert (twin.exc_text, back.exc_text) == ("<[secret]>", "[secret]")
    assert (type(back).__name__, back.getMessage()) == ("LogRecord", "m=[secret]")


class FinalRecord(logging.LogRecord):
    """A record class that refuses subclasses."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raise TypeError("final")


def test_a_record_class_that_refuses_subclasses_gets_its_exception_text_masked() -> None:
    previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(FinalRecord)
    try:
        with veil.install_log_filter():
            logger, stream, handler = capture("veil-final", OwnFormatter())
            value = new_secret("final")
            try:
                raise_with(value)
            except ValueError:
                logger.exception("v=%s", value)
            logger.removeHandler(handler)
    finally:
        logging.setLogRecordFactory(previous)
    # Rendered the default way, not by OwnFormatter.formatException; masked either way.
    assert stream.getvalue().startswith("<ERROR|veil-final> v=[secret]\nTraceback")
    assert "ValueError: x=[secret]" in stream.getvalue()
    assert value not in stream.getvalue()


# --- installing and uninstalling ---------------------------------------------------------------


def test_uninstall_puts_back_the_factory_that_was_there() -> None:
    original = logging.getLogRecordFactory()
    made: list[str] = []

    def own(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made.append("own")
        return original(*args, **kwargs)

    logging.setLogRecordFactory(own)
    try:
        handle = veil.install_log_filter()
        assert logging.getLogRecordFactory() is not own
        logging.getLogRecordFactory()("n", logging.INFO, __file__, 1, "x", None, None)
        handle.uninstall()
        assert logging.getLogRecordFactory() is own
        assert made == ["own"]
    finally:
        logging.setLogRecordFactory(original)


def test_after_uninstall_records_are_not_masked(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    value = new_secret("after")
    with veil.install_log_filter():
        logger.info("a=%s", value)
    logger.info("b=%s", value)
    assert stream.getvalue() == f"veil-filter-test: a=[secret]\nveil-filter-test: b={value}\n"


def test_installing_twice_changes_nothing_and_masks_once(
    log_filter: LogFilterHandle, logged: tuple[logging.Logger, io.StringIO]
) -> None:
    logger, stream = logged
    factory = logging.getLogRecordFactory()
    second = veil.install_log_filter()
    assert logging.getLogRecordFactory() is factory
    logger.info("v=%s", new_secret("twice"))
    second.uninstall()
    assert stream.getvalue() == "veil-filter-test: v=[secret]\n"


def test_the_filter_stays_until_every_handle_is_uninstalled(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    original = logging.getLogRecordFactory()
    first, second = veil.install_log_filter(), veil.install_log_filter()
    first.uninstall()
    first.uninstall()  # again: nothing more
    value = new_secret("held")
    logger.info("v=%s", value)
    second.uninstall()
    assert stream.getvalue() == "veil-filter-test: v=[secret]\n"
    assert logging.getLogRecordFactory() is original


def test_a_factory_set_on_top_stays_and_veils_passes_records_through(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    original = logging.getLogRecordFactory()
    handle = veil.install_log_filter()
    ours = logging.getLogRecordFactory()

    def theirs(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return ours(*args, **kwargs)

    logging.setLogRecordFactory(theirs)
    try:
        handle.uninstall()
        assert logging.getLogRecordFactory() is theirs
        value = new_secret("top")
        logger.info("v=%s", value)
        assert stream.getvalue() == f"veil-filter-test: v={value}\n"
        # Installing again wraps what is there now, and uninstalling puts it back.
        again = veil.install_log_filter()
        logger.info("w=%s", value)
        again.uninstall()
        assert logging.getLogRecordFactory() is theirs
        assert stream.getvalue().endswith("veil-filter-test: w=[secret]\n")
    finally:
        logging.setLogRecordFactory(original)


def test_installing_after_the_factory_was_reset_installs_again(
    logged: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = logged
    original = logging.getLogRecordFactory()
    stale = veil.install_log_filter()
    logging.setLogRecordFactory(original)  # someone resets logging behind veil's back
    with veil.install_log_filter():
        logger.info("v=%s", new_secret("reset"))
    stale.uninstall()
    assert logging.getLogRecordFactory() is original
    assert stream.getvalue() == "veil-filter-test: v=[secret]\n"


def test_install_log_filter_is_usable_as_a_context_manager() -> None:
    original = logging.getLogRecordFactory()
    with veil.install_log_filter() as handle:
        assert isinstance(handle, LogFilterHandle)
        assert logging.getLogRecordFactory() is not original
    assert logging.getLogRecordFactory() is original
