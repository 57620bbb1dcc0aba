"""No plaintext of any secret in any byte written.

A realistic session (config, nested and derived secrets, several saves, rotation, the
CLI, logging, error paths) runs in a temp folder; then every byte written there, every
captured output, log line, warning, exception message and repr is scanned for each
secret's plaintext, raw and in its base64, hex and JSON-escaped forms.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import logging
import pickle
import secrets
import sys
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

import veil
from veil import Output, Secret, Stack, VeilError
from veil.cli import main as cli_main
from veil.providers import PassphraseProvider

PASSPHRASE = "passphrase-" + secrets.token_hex(8)


def fast(passphrase: str = PASSPHRASE) -> PassphraseProvider:
    return PassphraseProvider(
        passphrase=passphrase, memory_cost=8, iterations=1, lanes=1, insecure_weak_kdf=True
    )


def _b64_forms(data: bytes) -> set[bytes]:
    """The part of base64(prefix + data + suffix) that depends only on ``data``, for
    each of the three alignments (standard and URL-safe alphabets)."""
    forms = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data)
        # Skip the characters mixed with the prefix, and the last (padding-dependent) group.
        start = (shift * 8 + 5) // 6 if shift else 0
        end = (len(encoded.rstrip(b"=")) * 6 - 6) // 6
        inner = encoded[start:end]
        if len(inner) >= 8:
            forms.add(inner)
            forms.add(inner.replace(b"+", b"-").replace(b"/", b"_"))
    return forms


def encodings(plaintext: str) -> dict[str, bytes]:
    """Byte patterns that would betray ``plaintext``: raw, JSON-escaped, hex, base64."""
    raw = plaintext.encode("utf-8")
    forms = {
        "raw": raw,
        "json": json.dumps(plaintext)[1:-1].encode(),
        "json-utf8": json.dumps(plaintext, ensure_ascii=False)[1:-1].encode(),
        "hex": binascii.hexlify(raw),
        "HEX": binascii.hexlify(raw).upper(),
    }
    for i, form in enumerate(sorted(_b64_forms(raw))):
        forms[f"base64-{i}"] = form
    return forms


def find_leaks(secret_values: Iterable[str], sources: dict[str, bytes]) -> list[str]:
    hits = []
    for plaintext in secret_values:
        for how, pattern in encodings(plaintext).items():
            for where, data in sources.items():
                if pattern in data:
                    hits.append(f"{how} form of a secret in {where}")
    return hits


def test_the_scanner_finds_each_form() -> None:
    secret_value = 'pässwörd"-0123456789'
    raw = secret_value.encode()
    planted = {
        "raw": b"x" + raw + b"y",
        "json": json.dumps({"a": secret_value}).encode(),
        "hex": b"00" + binascii.hexlify(raw) + b"ff",
        "b64": base64.b64encode(b"ab" + raw + b"cd"),
        "b64url": base64.urlsafe_b64encode(b"?" + raw),
    }
    hits = find_leaks([secret_value], planted)
    for where in planted:
        assert any(h.endswith(f"in {where}") for h in hits), where
    assert find_leaks([secret_value], {"clean": b"nothing to see here"}) == []


# --- the session --------------------------------------------------------------------------


class Capture:
    """Everything the session showed: outputs, logs, warnings, errors, reprs."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}

    def add(self, where: str, text: object) -> None:
        self.texts[f"{where} #{len(self.texts)}"] = str(text)

    def error(self, where: str, exc: BaseException) -> None:
        self.add(f"{where}: message", str(exc))
        self.add(f"{where}: repr", repr(exc))
        self.add(f"{where}: args", repr(exc.args))
        if exc.__cause__ is not None:
            self.add(f"{where}: cause", repr(exc.__cause__))


@pytest.fixture
def session_logger() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("veil-session")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    factory = logging.getLogRecordFactory()
    handle = veil.install_log_filter()
    yield logger, stream
    handle.uninstall()
    # The CLI installs the filter for the rest of its process: put back what was there.
    logging.setLogRecordFactory(factory)
    logger.removeHandler(handler)


def run_cli(capture: Capture, capsys: pytest.CaptureFixture[str], *argv: str) -> int:
    capsys.readouterr()
    try:
        code = cli_main(list(argv))
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    capture.add(f"veil {' '.join(argv)}: stdout", out.out)
    capture.add(f"veil {' '.join(argv)}: stderr", out.err)
    return code


def test_no_plaintext_of_any_secret_in_any_byte_written(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    session_logger: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, log_stream = session_logger
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("VEIL_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("VEIL_INSECURE_WEAK_KDF", "1")  # fast KDF settings below
    monkeypatch.delenv("VEIL_STRICT", raising=False)
    monkeypatch.delenv("VEIL_STACK", raising=False)
    backend = f"file://{tmp_path / 'state'}"
    monkeypatch.setenv("VEIL_BACKEND_URL", backend)
    capture = Capture()

    db_password = "db-" + secrets.token_urlsafe(16)
    api_token = "tok_" + secrets.token_hex(16)
    nested = 'nëst"ed-' + secrets.token_hex(8)  # escapes differently in JSON
    listed = "list-" + secrets.token_hex(10)
    late = "late-" + secrets.token_hex(10)
    from_stdin = "stdin-" + secrets.token_hex(10)
    rotated_in = "after-rotation-" + secrets.token_hex(6)
    url = f"postgres://app:{db_password}@db.internal:5432/orders"
    all_secrets = [
        db_password,
        api_token,
        nested,
        listed,
        late,
        from_stdin,
        rotated_in,
        url,
        PASSPHRASE,
    ]
    data_keys: list[bytes] = []

    # 1. Create, configure, export, save several times.
    stack = Stack.create("dev", secrets_provider="passphrase://?memory_cost=8&iterations=1&lanes=1")
    stack.config.set("app:region", "eu-west-1")
    stack.config.set("db:password", db_password, secret=True)
    stack.config.set("api:token", Secret(api_token))
    password = stack.config.require_secret("db:password")
    stack.export("url", Output.format("postgres://app:{}@db.internal:5432/orders", password))
    stack.export(
        "settings",
        {
            "replicas": 2,
            "nested": {"deeper": [1, {"value": veil.secret(nested)}]},
            "list": [Secret(listed), "public"],
        },
    )
    stack.export("token", stack.config.get("api:token"))
    stack.save()
    stack.save()

    async def arrives_later() -> str:
        await asyncio.sleep(0.005)
        return late

    async def save_with_pending() -> None:
        pending: Output[str] = Output.secret(
            Output.from_input(asyncio.ensure_future(arrives_later()))
        )
        stack.export("late", {"value": pending})
        await stack.save_async()

    asyncio.run(save_with_pending())

    # A plain value that holds a secret: the leak guard seals it, the warning names the path.
    with (
        warnings.catch_warnings(record=True) as caught,
        Stack.create("careless", secrets_provider=fast()) as careless,
    ):
        warnings.simplefilter("always")
        careless.export("password", Secret(db_password))
        careless.export("copy", f"password is {db_password}")
        careless.save()
    assert caught
    for w in caught:
        capture.add("warning", w.message)

    # The lock file exists now: scan while it does.
    locked_files = {str(p): p.read_bytes() for p in (tmp_path / "state").rglob("*") if p.is_file()}

    # 2. Logs through the filter.
    logger.info("database password is %s", veil.reveal(password))
    logger.warning("connecting to %s", stack.outputs["url"].reveal())
    logger.debug("settings: %r", stack.outputs["settings"])
    logger.info("token %s and nested %s", api_token, nested)
    try:
        raise RuntimeError(f"could not connect with {db_password}")
    except RuntimeError:
        logger.exception("connection failed")

    # 3. Reprs and string forms of everything that holds a secret.
    capture.add("repr(stack)", repr(stack))
    capture.add("repr(config)", repr(stack.config))
    capture.add("repr(outputs)", repr(stack.outputs))
    capture.add("str(outputs)", str(stack.outputs))
    capture.add("repr(provider)", repr(stack.provider))
    capture.add("repr(document)", repr(stack._document))
    capture.add("repr(Output)", repr(password))
    capture.add("repr(Secret)", repr(Secret(db_password)))
    capture.add("str(Secret)", str(Secret(db_password)))
    capture.add("format(Secret)", f"{Secret(db_password)}")
    data_keys.append(stack._document._data_key)

    # 4. Errors raised with secrets around.
    for action, where in (
        (lambda: f"{password}", "f-string of an Output"),
        (lambda: pickle.dumps(Secret(db_password)), "pickling a Secret"),
        (lambda: pickle.dumps(stack._document), "pickling a Document"),
        (lambda: Stack.open("dev", lock=True), "second writer"),
        (lambda: stack.config.set("bad", {"x": object()}, secret=True), "bad config value"),
    ):
        try:
            action()
        except (VeilError, TypeError) as exc:
            capture.error(where, exc)
        else:
            pytest.fail(f"{where} did not raise")

    # 5. Rotate the key, add a secret after rotation, save again.
    stack.rotate_key()
    stack.config.set("late:secret", rotated_in, secret=True)
    stack.save()
    data_keys.append(stack._document._data_key)
    stack.close()

    # 6. The CLI, without --show-secrets (and set from stdin).
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(from_stdin.encode())))
    code = run_cli(capture, capsys, "-s", "dev", "config", "set", "in", "--secret")
    assert code == 0, [v for k, v in capture.texts.items() if "stderr" in k]
    for argv in (
        ("config", "ls"),
        ("config", "ls", "--json"),
        ("config", "get", "db:password"),
        ("stack", "output"),
        ("stack", "output", "--json"),
        ("stack", "output", "url"),
        ("stack", "export"),
        ("stack", "ls"),
    ):
        assert run_cli(capture, capsys, "-s", "dev", *argv) == 0

    # 7. Error paths: wrong passphrase, tampered state and config, through API and CLI.
    monkeypatch.setenv("VEIL_PASSPHRASE", "wrong-" + PASSPHRASE)
    try:
        Stack.open("dev")
    except VeilError as exc:
        capture.error("wrong passphrase", exc)
    assert run_cli(capture, capsys, "-s", "dev", "config", "ls") != 0
    monkeypatch.setenv("VEIL_PASSPHRASE", PASSPHRASE)

    config_file = tmp_path / "veil.dev.json"
    good_config = config_file.read_bytes()
    doc = json.loads(good_config)
    doc["config"]["moved"] = doc["config"]["db:password"]
    config_file.write_text(json.dumps(doc, indent=2))
    with Stack.open("dev", lock=False) as s:
        try:
            s.config.get("moved")
        except VeilError as exc:
            capture.error("moved secure value", exc)
    assert run_cli(capture, capsys, "-s", "dev", "config", "get", "moved") != 0
    config_file.write_bytes(good_config)

    state_file = tmp_path / "state" / "stacks" / "dev.json"
    good_state = state_file.read_bytes()
    state = json.loads(good_state)
    sealed = state["tree"]["outputs"]["token"]["$secret"]
    state["tree"]["outputs"]["token"]["$secret"] = sealed[:-6] + "AAAAAA"
    state_file.write_text(json.dumps(state))
    try:
        Stack.open("dev")
    except VeilError as exc:
        capture.error("tampered state", exc)
    assert run_cli(capture, capsys, "-s", "dev", "stack", "output") != 0
    state_file.write_bytes(good_state)

    # Sanity: the session really holds the secrets it claims to.
    with Stack.open("dev", lock=False) as s:
        assert s.outputs["url"] == Secret(url)
        assert veil.reveal(s.config.require_secret("in")) == from_stdin
        assert veil.reveal(s.config.require_secret("late:secret")) == rotated_in

    # 8. Scan.
    sources: dict[str, bytes] = {
        f"file {p.relative_to(tmp_path)}": p.read_bytes()
        for p in tmp_path.rglob("*")
        if p.is_file()
    }
    sources.update({f"while locked: {k}": v for k, v in locked_files.items()})
    sources.update({k: v.encode() for k, v in capture.texts.items()})
    sources["log output"] = log_stream.getvalue().encode()
    out, err = capsys.readouterr()
    sources["stdout"] = out.encode()
    sources["stderr"] = err.encode()

    assert any("history" in name for name in sources)  # history files were written
    assert "[secret]" in log_stream.getvalue()  # the logs were written and masked
    assert "connection failed" in log_stream.getvalue()
    assert find_leaks(all_secrets, sources) == []
    for key in data_keys:
        forms = [key, binascii.hexlify(key), *_b64_forms(key)]
        assert not [w for w, data in sources.items() for f in forms if f in data]


# --- exceptions raised by functions given a secret --------------------------------------


def _traceback_text(exc: BaseException) -> str:
    import traceback

    return "".join(traceback.format_exception(exc))


def test_exception_in_apply_on_a_secret_does_not_show_its_plaintext() -> None:
    plaintext = "apply-" + secrets.token_hex(8)
    with pytest.raises(ValueError, match=r"\[secret\]") as info:
        Output.secret(plaintext).apply(int)
    assert plaintext not in _traceback_text(info.value)


def test_exception_in_apply_on_a_nested_secret_value_does_not_show_it() -> None:
    plaintext = "nested-" + secrets.token_hex(8)
    with pytest.raises(KeyError) as info:
        Output.secret({"k": [plaintext]}).apply(lambda v: {}[v["k"][0]])
    assert plaintext not in _traceback_text(info.value)


def test_exception_attributes_lose_the_secret_plaintext() -> None:
    plaintext = "attrs-" + secrets.token_hex(8)
    with pytest.raises(json.JSONDecodeError) as decode:
        Output.json_loads(Output.secret(plaintext))
    assert plaintext not in str(decode.value.doc)
    with pytest.raises(FileNotFoundError) as missing:
        Output.secret("/nonexistent/" + plaintext).apply(open)
    assert plaintext not in str(missing.value)
    assert plaintext not in str(missing.value.filename)


def test_exception_chained_from_an_apply_on_a_secret_loses_the_plaintext() -> None:
    plaintext = "chained-" + secrets.token_hex(8)

    def parse(v: str) -> int:
        try:
            return int(v)
        except ValueError as exc:
            raise RuntimeError("cannot parse") from exc

    with pytest.raises(RuntimeError) as info:
        Output.secret(plaintext).apply(parse)
    assert plaintext not in _traceback_text(info.value)


def test_exception_in_format_of_a_secret_does_not_show_its_plaintext() -> None:
    plaintext = "format-" + secrets.token_hex(8)
    with pytest.raises(KeyError) as info:
        Output.format(Output.secret("{" + plaintext + "}"))
    assert plaintext not in _traceback_text(info.value)


def test_exception_in_json_dumps_default_on_a_secret_does_not_show_it() -> None:
    plaintext = "dumps-" + secrets.token_hex(8)

    class Opaque:
        pass

    def default(o: object) -> object:
        raise TypeError(f"cannot encode next to {veil.reveal(secret)}")

    secret = Output.secret(plaintext)
    with pytest.raises(TypeError) as info:
        Output.json_dumps({"a": secret, "b": Opaque()}, default=default)
    assert plaintext not in _traceback_text(info.value)


def test_exception_in_apply_on_a_plain_value_is_untouched() -> None:
    with pytest.raises(ValueError, match="'not-a-number'"):
        Output.from_input("not-a-number").apply(int)
