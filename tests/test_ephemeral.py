# mypy: disable-error-code="var-annotated"
# (deferred_output() pairs are typed by use, as in a program)
"""Ephemeral values: used by the program, never written anywhere.

``veil.ephemeral`` marks a value more strongly than ``veil.secret``: it propagates the
same way, survives ``unsecret``, and every writer (state, stack, config, Pulumi
checkpoint and config) refuses it, naming every path, before anything is written.
``veil.fingerprint`` / ``Stack.fingerprint`` store a keyed token in its place.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pickle
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import veil
from veil import (
    UNKNOWN,
    EphemeralValueError,
    Output,
    OutputToStringError,
    PendingOutputError,
    Secret,
    SecretPickleError,
    Stack,
    VeilError,
)
from veil.crypto import ValueCipher, generate_data_key
from veil.providers import PassphraseProvider

TOKEN = "tok-ephemeral-5f3a9c17"
PASSWORD = "pw-ephemeral-0d8e4b26"


def fast() -> PassphraseProvider:
    return PassphraseProvider(
        passphrase="correct horse battery staple",
        memory_cost=8,
        iterations=1,
        lanes=1,
        insecure_weak_kdf=True,
    )


# --- the mark -------------------------------------------------------------------------


def test_ephemeral_is_secret_and_ephemeral() -> None:
    o = veil.ephemeral(TOKEN)
    assert veil.is_ephemeral(o)
    assert veil.is_secret(o)
    assert veil.reveal(o) == TOKEN


def test_output_ephemeral_is_the_same_as_veil_ephemeral() -> None:
    assert veil.is_ephemeral(Output.ephemeral({"a": TOKEN}))
    assert veil.reveal(Output.ephemeral({"a": TOKEN})) == {"a": TOKEN}


def test_plain_secret_and_secret_objects_are_not_ephemeral() -> None:
    assert not veil.is_ephemeral("x")
    assert not veil.is_ephemeral(Secret("x"))
    assert not veil.is_ephemeral(veil.secret("x"))
    assert not veil.is_ephemeral(Output.from_input("x"))


def test_repr_masks_and_str_raises() -> None:
    o = veil.ephemeral(TOKEN)
    assert TOKEN not in repr(o)
    assert repr(o) == "Output([ephemeral])"
    with pytest.raises(OutputToStringError):
        str(o)
    with pytest.raises(OutputToStringError):
        f"{o}"


def test_pickle_is_refused() -> None:
    with pytest.raises(SecretPickleError):
        pickle.dumps(veil.ephemeral(TOKEN))


def test_unsecret_does_not_remove_the_mark() -> None:
    o = veil.unsecret(veil.ephemeral(TOKEN))
    assert veil.is_ephemeral(o)
    assert veil.is_secret(o)
    assert veil.is_ephemeral(Output.unsecret(Output.unsecret(o)))


def test_secret_of_an_ephemeral_value_stays_ephemeral() -> None:
    assert veil.is_ephemeral(veil.secret(veil.ephemeral(TOKEN)))


def test_ephemeral_of_a_secret_is_ephemeral() -> None:
    assert veil.is_ephemeral(veil.ephemeral(veil.secret(TOKEN)))
    assert veil.is_ephemeral(veil.ephemeral(Secret(TOKEN)))


@pytest.mark.parametrize(
    "derive",
    [
        pytest.param(lambda e: e.apply(str.upper), id="apply"),
        pytest.param(lambda e: e.apply(lambda v: Output.from_input(v)), id="apply-to-output"),
        pytest.param(lambda e: e.apply(lambda v: Secret(v)), id="apply-to-secret"),
        pytest.param(lambda e: e.apply(lambda v: {"k": [v]}), id="apply-to-container"),
        pytest.param(lambda e: Output.all(e, 1, veil.secret("s")), id="all"),
        pytest.param(lambda e: Output.all(a=e, b="plain"), id="all-kwargs"),
        pytest.param(lambda e: Output.concat("a", e, "b"), id="concat"),
        pytest.param(lambda e: Output.format("{}-{x}", "p", x=e), id="format"),
        pytest.param(lambda e: Output.format(e.apply(lambda _: "{}"), "p"), id="format-string"),
        pytest.param(lambda e: Output.json_dumps({"t": e}), id="json_dumps"),
        pytest.param(lambda e: Output.json_dumps({"t": e}, indent=2), id="json_dumps-hook"),
        pytest.param(lambda e: Output.json_loads(Output.json_dumps([e])), id="json_loads"),
        pytest.param(lambda e: Output.from_input({"a": [1, (e,)]}), id="from_input"),
        pytest.param(lambda e: Output.from_input({"a": e, "b": "x"}), id="from_input-flat"),
        pytest.param(lambda e: Output.from_input({"a": e})["a"], id="lift-item"),
        pytest.param(
            lambda e: e.apply(lambda v: types.SimpleNamespace(a=v)).a, id="lift-attribute"
        ),
        pytest.param(lambda e: Output.secret(e), id="secret"),
        pytest.param(lambda e: veil.secret("s").apply(lambda _: e), id="flattened"),
        pytest.param(lambda e: veil.secret("s").apply(lambda _: {"x": e}), id="returned-inside"),
    ],
)
def test_everything_derived_is_ephemeral(derive: Any) -> None:
    out = derive(veil.ephemeral(TOKEN))
    assert veil.is_ephemeral(out)
    assert veil.is_secret(out)


def test_a_dataclass_holding_an_ephemeral_value_is_ephemeral() -> None:
    import dataclasses

    @dataclasses.dataclass
    class Conn:
        password: Any

    out = Output.from_input(Conn(veil.ephemeral(TOKEN)))
    assert veil.is_ephemeral(out)
    assert veil.reveal(out).password == TOKEN


def test_an_unknown_ephemeral_value_stays_ephemeral() -> None:
    o = veil.ephemeral(UNKNOWN)
    assert veil.is_ephemeral(o)
    derived = o.apply(lambda v: str(v) + "x")
    assert veil.is_ephemeral(derived)
    assert not asyncio.run(derived.is_known())


def test_awaitables_are_ephemeral_once_resolved() -> None:
    async def fetch() -> str:
        await asyncio.sleep(0)
        return TOKEN

    async def main() -> None:
        o = veil.ephemeral(fetch())
        with pytest.raises(PendingOutputError):
            veil.is_ephemeral(o)
        derived = Output.all(o, "x").apply(lambda v: v[0] + v[1])
        assert await derived.is_ephemeral()
        assert await derived.is_secret()
        assert await derived.future() == TOKEN + "x"
        assert veil.is_ephemeral(derived)

    asyncio.run(main())


def test_an_ephemeral_value_from_a_deferred_output() -> None:
    out, resolve = veil.deferred_output()
    derived = out.apply(len)
    resolve(veil.ephemeral(TOKEN))
    assert veil.is_ephemeral(derived)


def test_plain_values_stay_plain() -> None:
    assert not veil.is_secret(Output.all(1, "a").apply(str))


def test_exceptions_are_scrubbed() -> None:
    with pytest.raises(ValueError, match="invalid literal") as info:
        veil.ephemeral(TOKEN).apply(int)
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(info.value.args)


def test_log_filter_masks_ephemeral_values() -> None:
    veil.ephemeral(TOKEN)
    assert TOKEN not in veil.redact(f"token is {TOKEN}")
    derived = veil.ephemeral("dyn-" + TOKEN)
    assert veil.is_ephemeral(derived)
    assert "dyn-" + TOKEN not in veil.redact(f"x dyn-{TOKEN} y")


def test_log_records_through_the_filter_hold_no_ephemeral_value(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.ephemeral")
    handler = logging.StreamHandler(stream := __import__("io").StringIO())
    handler.addFilter(veil.SecretRedactingFilter())
    log.addHandler(handler)
    try:
        veil.ephemeral(PASSWORD)
        log.warning("connecting with %s", PASSWORD)
    finally:
        log.removeHandler(handler)
    assert PASSWORD not in stream.getvalue()
    assert veil.MASK in stream.getvalue()


# --- refusing to write: state ------------------------------------------------------------


def test_dumps_names_every_path() -> None:
    tree = {
        "a": veil.ephemeral(TOKEN),
        "b": [1, {"c": Output.format("x{}", veil.ephemeral(PASSWORD))}],
        "d": veil.secret("fine"),
        "e": "plain",
    }
    with pytest.raises(EphemeralValueError) as info:
        veil.state.dumps(tree, provider=fast(), stack="dev")
    assert set(info.value.paths) == {"a", "b[1].c"}
    assert "a" in str(info.value)
    assert "b[1].c" in str(info.value)
    assert TOKEN not in str(info.value)
    assert PASSWORD not in str(info.value)
    assert isinstance(info.value, VeilError)


def test_dumps_refuses_an_ephemeral_value_inside_a_secret() -> None:
    tree = {"s": Secret({"inner": veil.ephemeral(TOKEN)})}
    with pytest.raises(EphemeralValueError) as info:
        veil.state.dumps(tree, provider=fast(), stack="dev")
    assert info.value.paths == ("s.inner",)


def test_dump_document_refuses_at_the_root() -> None:
    with pytest.raises(EphemeralValueError) as info:
        veil.state.dump_document(veil.ephemeral(TOKEN), provider=fast(), stack="dev")
    assert info.value.paths == ("<root>",)


def test_dumps_async_refuses_pending_ephemeral_values() -> None:
    async def fetch() -> str:
        await asyncio.sleep(0)
        return TOKEN

    async def main() -> None:
        tree = {"x": {"t": veil.ephemeral(fetch())}, "y": veil.secret("ok")}
        with pytest.raises(EphemeralValueError) as info:
            await veil.state.dumps_async(tree, provider=fast(), stack="dev")
        assert info.value.paths == ("x.t",)
        with pytest.raises(EphemeralValueError):
            await veil.state.dump_document_async(tree, provider=fast(), stack="dev")

    asyncio.run(main())


def test_a_tree_without_ephemeral_values_still_dumps() -> None:
    data = veil.state.dumps(
        {"a": veil.unsecret(veil.secret("x")), "b": veil.secret("y")}, provider=fast(), stack="dev"
    )
    assert b"veil_state" in data


# --- refusing to write: stack, config -----------------------------------------------------


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("VEIL_PASSPHRASE", "VEIL_PASSPHRASE_FILE", "VEIL_BACKEND_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def stack(project: Path) -> Iterator[Stack]:
    s = Stack.create(
        "dev", backend=f"file://{project / 'state'}", secrets_provider=fast(), project_dir=project
    )
    s.config.set("db:password", PASSWORD + "-stored", secret=True)
    s.export("region", "eu-west-1")
    s.save()
    yield s
    s.close()


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_export_of_a_known_ephemeral_value_raises_at_once(stack: Stack) -> None:
    with pytest.raises(EphemeralValueError) as info:
        stack.export("db", {"host": "h", "password": veil.ephemeral(PASSWORD)})
    assert info.value.paths == ("outputs.db.password",)
    assert "db" not in stack.outputs


def test_save_refuses_and_writes_nothing(stack: Stack, project: Path) -> None:
    before = files(project)
    pending, resolve = veil.deferred_output()
    stack.export("later", pending)
    resolve(veil.ephemeral(TOKEN))
    with pytest.raises(EphemeralValueError) as info:
        stack.save()
    assert info.value.paths == ("outputs.later",)
    assert files(project) == before


def test_save_async_refuses_and_writes_nothing(stack: Stack, project: Path) -> None:
    before = files(project)

    async def fetch() -> str:
        await asyncio.sleep(0)
        return TOKEN

    async def main() -> None:
        stack.export("a", veil.ephemeral(fetch()))
        stack.export("b", [veil.ephemeral(fetch()).apply(len)])
        with pytest.raises(EphemeralValueError) as info:
            await stack.save_async()
        assert set(info.value.paths) == {"outputs.a", "outputs.b[0]"}

    asyncio.run(main())
    assert files(project) == before


def test_config_set_refuses_and_changes_nothing(stack: Stack, project: Path) -> None:
    before = files(project)
    with pytest.raises(EphemeralValueError) as info:
        stack.config.set("api:token", veil.ephemeral(TOKEN), secret=True)
    assert info.value.paths == ("api:token",)
    with pytest.raises(EphemeralValueError):
        stack.config.set("api:token", veil.ephemeral(TOKEN).apply(str.upper))
    assert "api:token" not in stack.config
    stack.config.save()
    assert files(project) == before


def test_pulumi_checkpoint_export_names_every_path() -> None:
    from veil.interop.pulumi import PassphraseCrypter, dump_checkpoint

    crypter = PassphraseCrypter("pass phrase for tests")
    tree = {
        "a": veil.ephemeral(TOKEN),
        "b": [veil.secret("ok"), Secret({"c": veil.ephemeral(PASSWORD)})],
    }
    with pytest.raises(EphemeralValueError) as info:
        dump_checkpoint(tree, crypter)
    assert set(info.value.paths) == {"$.a", "$.b[1].c"}


def test_pulumi_stack_config_set_refuses() -> None:
    from veil.interop.pulumi import PassphraseCrypter, PulumiStackConfig

    cfg = PulumiStackConfig("", crypter=PassphraseCrypter("pass phrase for tests"))
    with pytest.raises(EphemeralValueError) as info:
        cfg.set("app:token", veil.ephemeral(TOKEN), secret=True)
    assert info.value.paths == ("app:token",)


# --- fingerprints --------------------------------------------------------------------------


def test_fingerprint_is_a_plain_token_with_the_key_id(stack: Stack) -> None:
    fp = stack.fingerprint(PASSWORD, "db.password_version")
    assert isinstance(fp, str)
    prefix, version, kid, mac = fp.split(":")
    assert (prefix, version, kid) == ("fp", "v1", stack.key_id)
    assert len(mac) == 32
    assert int(mac, 16) >= 0
    assert PASSWORD not in fp


def test_fingerprint_of_an_output_is_a_plain_output(stack: Stack) -> None:
    fp = stack.fingerprint(veil.ephemeral(PASSWORD), "db.password_version")
    assert isinstance(fp, Output)
    assert not veil.is_secret(fp)
    assert not veil.is_ephemeral(fp)
    assert veil.reveal(fp) == stack.fingerprint(PASSWORD, ("db", "password_version"))
    assert stack.fingerprint(Secret(PASSWORD), "db.password_version") == veil.reveal(fp)


def test_fingerprint_of_an_unknown_value_is_unknown(stack: Stack) -> None:
    fp = stack.fingerprint(veil.ephemeral(UNKNOWN), "x")
    assert not asyncio.run(fp.is_known())


def test_fingerprint_differs_for_value_and_path(stack: Stack) -> None:
    a = stack.fingerprint(PASSWORD, "db.v")
    assert stack.fingerprint(PASSWORD + "!", "db.v") != a
    assert stack.fingerprint(PASSWORD, "db.w") != a
    assert stack.fingerprint({"p": PASSWORD}, "db.v") != a
    assert stack.fingerprint(1, "db.v") != stack.fingerprint(1.0, "db.v")
    assert stack.fingerprint(1, "db.v") != stack.fingerprint("1", "db.v")


def test_fingerprint_request_becomes_its_token_when_exported(stack: Stack) -> None:
    stack.export("db", {"password_version": veil.fingerprint(veil.ephemeral(PASSWORD))})
    stored = veil.reveal(stack.outputs["db"]["password_version"])
    assert stored == stack.fingerprint(PASSWORD, "db.password_version")
    stack.save()
    assert PASSWORD not in repr(veil.fingerprint(PASSWORD))
    with pytest.raises(SecretPickleError):
        pickle.dumps(veil.fingerprint(PASSWORD))


def test_fingerprint_is_stable_across_saves_and_processes(stack: Stack, project: Path) -> None:
    stack.export("v", veil.fingerprint(veil.ephemeral(PASSWORD)))
    stack.save()
    first = stack.outputs["v"]
    stack.export("v", veil.fingerprint(veil.ephemeral(PASSWORD)))
    stack.save()
    assert stack.outputs["v"] == first
    stack.close()
    script = (
        "import veil\n"
        "from veil.providers import PassphraseProvider\n"
        "p = PassphraseProvider(passphrase='correct horse battery staple', memory_cost=8, "
        "iterations=1, lanes=1, insecure_weak_kdf=True)\n"
        f"with veil.Stack.open('dev', backend='file://{project / 'state'}', "
        f"secrets_provider=p, project_dir={str(project)!r}, lock=False) as s:\n"
        f"    print(s.fingerprint({PASSWORD!r}, 'v'))\n"
        "    print(s.outputs['v'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=project
    ).stdout.split()
    assert out == [first, first]


def test_fingerprint_differs_between_stacks(stack: Stack, project: Path) -> None:
    with Stack.create(
        "prod", backend=f"file://{project / 'state'}", secrets_provider=fast(), project_dir=project
    ) as other:
        assert other.fingerprint(PASSWORD, "v") != stack.fingerprint(PASSWORD, "v")


def test_rotation_changes_every_fingerprint_and_its_key_id(stack: Stack) -> None:
    before = stack.fingerprint(PASSWORD, "v")
    old_kid = stack.key_id
    stack.rotate_key()
    stack.save()
    after = stack.fingerprint(PASSWORD, "v")
    assert after != before
    assert before.split(":")[2] == old_kid != stack.key_id == after.split(":")[2]


def test_fingerprint_is_separate_from_the_document_mac_and_config_digests() -> None:
    cipher = ValueCipher(generate_data_key())
    fp = cipher.fingerprint("dev", ["v"], "x")
    text = json.dumps(["dev", ["v"], "x"], separators=(",", ":"))
    assert fp.split(":")[3] not in cipher.mac(text.encode()).hex()
    assert fp.split(":")[3] not in cipher.mac(b"veil/v1/fingerprint\x00" + text.encode()).hex()


def test_fingerprint_of_a_non_json_value_is_a_typed_error(stack: Stack) -> None:
    with pytest.raises(veil.InvalidValueError):
        stack.fingerprint(object(), "v")


def test_the_error_pickles_with_its_paths() -> None:
    err = veil.EphemeralValueError("message", ("a", "b[0]"))
    copy = pickle.loads(pickle.dumps(err))  # noqa: S301 (our own bytes)
    assert copy.paths == ("a", "b[0]")
    assert str(copy) == "message"
