"""The state document: sealing, round trips, markers, re-saves, providers, tampering."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

import veil
from veil import (
    UNKNOWN,
    InvalidStackNameError,
    InvalidValueError,
    KeyUnwrapError,
    Output,
    PendingOutputError,
    ProviderConfigError,
    Secret,
    SecretPickleError,
    StateFormatError,
    StateIntegrityError,
    UnknownValueError,
    VeilError,
)
from veil.crypto import ValueCipher, generate_data_key
from veil.providers import (
    LocalKeyProvider,
    PassphraseProvider,
    SecretsProvider,
    provider_from_description,
)
from veil.state import (
    Document,
    ProviderEntry,
    dump_document,
    dumps,
    dumps_async,
    load_document,
    loads,
)
from veil.state.document import format_path, load_with_stored_providers


class CountingProvider(LocalKeyProvider):
    """A real key-file provider that counts its key operations."""

    calls: list[str]

    def __init__(self, path: str | Path, **kwargs: Any) -> None:
        super().__init__(path, **kwargs)
        self.calls = []

    def wrap_key(self, data_key: bytes, context: Mapping[str, str]) -> bytes:
        self.calls.append("wrap")
        return super().wrap_key(data_key, context)

    def unwrap_key(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        self.calls.append("unwrap")
        return super().unwrap_key(wrapped, context)

    def with_description(self, description: Mapping[str, Any]) -> CountingProvider:
        # Share the call log with the instance that unwraps.
        twin = CountingProvider(self.path, create=False)
        twin.calls = self.calls
        return twin


@pytest.fixture
def provider(tmp_path: Path) -> CountingProvider:
    return CountingProvider(tmp_path / "stack.key")


def _raw(data: bytes) -> dict[str, Any]:
    return json.loads(data)  # type: ignore[no-any-return]


def _rewrite(data: bytes, change: Any) -> bytes:
    raw = _raw(data)
    change(raw)
    return json.dumps(raw).encode()


def _reveal_tree(tree: Any) -> Any:
    if isinstance(tree, Secret):
        return ("secret", tree.reveal())
    if isinstance(tree, dict):
        return {k: _reveal_tree(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_reveal_tree(v) for v in tree]
    return tree


# --- round trips -------------------------------------------------------------------------


def test_secret_leaves_come_back_as_secrets(provider: CountingProvider) -> None:
    tree = {"db": {"host": "db.internal", "port": 5432, "password": Secret("hunter2")}}
    back = loads(dumps(tree, provider=provider, stack="dev"), provider=provider)
    assert back["db"]["host"] == "db.internal"
    assert back["db"]["port"] == 5432
    assert isinstance(back["db"]["password"], Secret)
    assert back["db"]["password"].reveal() == "hunter2"


def test_plain_values_of_every_json_type_round_trip(provider: CountingProvider) -> None:
    tree = {"s": "x", "i": -3, "f": 1.5, "t": True, "n": None, "l": [1, [2, {}], []], "d": {}}
    assert loads(dumps(tree, provider=provider, stack="dev"), provider=provider) == tree


def test_clear_fields_next_to_a_secret_stay_readable(provider: CountingProvider) -> None:
    data = dumps(
        {"db": {"host": "db.internal", "password": Secret("hunter2")}},
        provider=provider,
        stack="dev",
    )
    stored = _raw(data)["tree"]["db"]
    assert stored["host"] == "db.internal"
    assert set(stored["password"]) == {"$secret"}
    assert stored["password"]["$secret"].startswith("veil:v1:")


def test_secret_output_with_a_container_is_one_sealed_leaf(provider: CountingProvider) -> None:
    tree = {"creds": Output.secret({"user": "admin", "keys": [1, 2]})}
    data = dumps(tree, provider=provider, stack="dev")
    assert set(_raw(data)["tree"]["creds"]) == {"$secret"}
    back = loads(data, provider=provider)
    assert back["creds"].reveal() == {"user": "admin", "keys": [1, 2]}


def test_plain_output_contributes_its_value(provider: CountingProvider) -> None:
    tree = {"o": Output.from_input({"a": 1, "b": [Output.from_input("c")]})}
    data = dumps(tree, provider=provider, stack="dev")
    assert _raw(data)["tree"]["o"] == {"a": 1, "b": ["c"]}
    assert loads(data, provider=provider) == {"o": {"a": 1, "b": ["c"]}}


def test_nested_outputs_and_secrets_inside_a_secret_are_opened(
    provider: CountingProvider,
) -> None:
    tree = {"s": Secret({"a": Output.from_input(1), "b": Secret("x")})}
    back = loads(dumps(tree, provider=provider, stack="dev"), provider=provider)
    assert back["s"].reveal() == {"a": 1, "b": "x"}


def test_root_may_be_a_secret(provider: CountingProvider) -> None:
    back = loads(dumps(Secret([1, 2]), provider=provider, stack="dev"), provider=provider)
    assert back.reveal() == [1, 2]


def test_tuples_are_written_as_lists(provider: CountingProvider) -> None:
    back = loads(dumps({"t": (1, "a")}, provider=provider, stack="dev"), provider=provider)
    assert back == {"t": [1, "a"]}


def test_int_float_bool_and_str_secrets_keep_their_types(provider: CountingProvider) -> None:
    tree = [Secret(1), Secret(1.0), Secret(True), Secret("1"), Secret(None)]
    back = loads(dumps(tree, provider=provider, stack="dev"), provider=provider)
    values = [s.reveal() for s in back]
    assert values == [1, 1.0, True, "1", None]
    assert [type(v) for v in values] == [int, float, bool, str, type(None)]


@pytest.mark.parametrize(
    "lookalike",
    [
        {"$secret": "veil:v1:0000000000000000:AAAA"},
        {"$secret": {"$secret": "x"}},
        {"$escape": {"$secret": "x"}},
        {"$escape": "x"},
        {"$secret": 1, "other": 2},
        {"$escape": {"$escape": {}}},
    ],
)
def test_user_dicts_that_look_like_markers_round_trip(
    provider: CountingProvider, lookalike: dict[str, Any]
) -> None:
    tree = {"a": lookalike, "b": [lookalike]}
    assert loads(dumps(tree, provider=provider, stack="dev"), provider=provider) == tree


def test_marker_lookalike_holding_a_secret_round_trips(provider: CountingProvider) -> None:
    tree = {"$secret": Secret("s3cr3t")}
    back = loads(dumps(tree, provider=provider, stack="dev"), provider=provider)
    assert list(back) == ["$secret"]
    assert back["$secret"].reveal() == "s3cr3t"


def test_document_tree_equals_what_loads_returns(provider: CountingProvider) -> None:
    tree = {"a": [Secret("x"), {"$secret": "y"}], "b": Secret({"k": [1.5]})}
    data, doc = dump_document(tree, provider=provider, stack="dev")
    assert _reveal_tree(doc.tree) == _reveal_tree(loads(data, provider=provider))


# --- what is refused when writing -----------------------------------------------------------


def test_pending_output_is_refused_naming_its_path(provider: CountingProvider) -> None:
    pending, _resolve = veil.deferred_output()
    with pytest.raises(PendingOutputError, match=r"outputs\.db\[1\]"):
        dumps({"outputs": {"db": [0, pending]}}, provider=provider, stack="dev")


def test_unknown_output_is_refused_naming_its_path(provider: CountingProvider) -> None:
    with pytest.raises(UnknownValueError, match=r"a\.b"):
        dumps({"a": {"b": Output.from_input(UNKNOWN)}}, provider=provider, stack="dev")


def test_unknown_value_is_refused(provider: CountingProvider) -> None:
    with pytest.raises(UnknownValueError, match=r"x\[0\]"):
        dumps({"x": [UNKNOWN]}, provider=provider, stack="dev")


def test_dumps_async_awaits_pending_outputs(provider: CountingProvider) -> None:
    async def main() -> bytes:
        pending, resolve = veil.deferred_output()
        loop = asyncio.get_running_loop()
        loop.call_later(0.01, resolve, Output.secret("late"))
        return await dumps_async({"x": pending, "y": 1}, provider=provider, stack="dev")

    back = loads(asyncio.run(main()), provider=provider)
    assert back["x"].reveal() == "late"
    assert back["y"] == 1


def test_non_str_key_is_refused_naming_its_path(provider: CountingProvider) -> None:
    with pytest.raises(InvalidValueError, match=r"a dict at a\[0\] has a key of type int"):
        dumps({"a": [{1: "x"}]}, provider=provider, stack="dev")


def test_non_str_key_inside_a_secret_is_refused(provider: CountingProvider) -> None:
    with pytest.raises(InvalidValueError, match="key of type int"):
        dumps({"s": Secret({1: "x"})}, provider=provider, stack="dev")


@pytest.mark.parametrize("value", [b"bytes", {1, 2}, object(), 1j])
def test_non_json_value_is_refused_naming_its_path(
    provider: CountingProvider, value: object
) -> None:
    with pytest.raises(InvalidValueError, match=r"the value at a\.b is a"):
        dumps({"a": {"b": value}}, provider=provider, stack="dev")


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_are_refused(provider: CountingProvider, value: float) -> None:
    with pytest.raises(InvalidValueError, match="NaN or infinite"):
        dumps({"x": value}, provider=provider, stack="dev")
    with pytest.raises(InvalidValueError, match="NaN or infinite"):
        dumps({"x": Secret(value)}, provider=provider, stack="dev")


def test_self_referencing_tree_is_refused(provider: CountingProvider) -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(InvalidValueError, match="refers to itself"):
        dumps(loop, provider=provider, stack="dev")


def test_self_referencing_value_inside_a_secret_is_refused(provider: CountingProvider) -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(InvalidValueError, match="refers to itself"):
        dumps({"x": Secret(loop)}, provider=provider, stack="dev")


def test_too_deep_value_inside_a_secret_output_is_refused(provider: CountingProvider) -> None:
    deep: list[Any] = []
    for _ in range(5000):
        deep = [deep]
    with pytest.raises(InvalidValueError, match="nested too deeply"):
        dumps({"x": Output.secret(deep)}, provider=provider, stack="dev")


@pytest.mark.parametrize("bad", [None, "passphrase://", object()])
def test_a_provider_that_is_not_a_secrets_provider_is_refused(
    provider: CountingProvider, bad: Any
) -> None:
    with pytest.raises(ProviderConfigError, match="SecretsProvider"):
        dumps({}, provider=bad, stack="dev")
    with pytest.raises(ProviderConfigError, match="SecretsProvider"):
        dumps({}, provider=provider, stack="dev", additional_providers=[bad])
    with pytest.raises(ProviderConfigError, match="SecretsProvider"):
        loads(dumps({}, provider=provider, stack="dev"), provider=bad)


def test_load_with_stored_providers_uses_the_first_entry_that_opens(
    provider: CountingProvider, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = PassphraseProvider("the passphrase nobody has here")
    data = dumps({"x": Secret("v")}, provider=first, stack="dev", additional_providers=[provider])
    monkeypatch.delenv("VEIL_PASSPHRASE", raising=False)
    monkeypatch.delenv("VEIL_PASSPHRASE_FILE", raising=False)
    built: list[str] = []

    def build(entry: ProviderEntry) -> SecretsProvider:
        built.append(entry.scheme)
        return provider_from_description(entry.scheme, entry.description)

    chosen, document = load_with_stored_providers(data, build)
    assert built == ["passphrase", "file"]
    assert chosen.path == provider.path  # type: ignore[attr-defined]
    assert document.tree["x"].reveal() == "v"


def test_load_with_stored_providers_raises_the_first_error_if_none_opens(
    provider: CountingProvider, tmp_path: Path
) -> None:
    data = dumps({"x": Secret("v")}, provider=provider, stack="dev")
    provider.path.unlink()
    with pytest.raises(veil.ProviderConfigError, match="does not exist"):
        load_with_stored_providers(data, lambda e: LocalKeyProvider.from_description(e.description))


def test_invalid_stack_name_is_refused(provider: CountingProvider) -> None:
    with pytest.raises(InvalidStackNameError):
        dumps({}, provider=provider, stack="../x")


# --- the format ------------------------------------------------------------------------------


def test_document_records_version_stack_serial_key_and_providers(
    provider: CountingProvider,
) -> None:
    data, doc = dump_document({"a": 1}, provider=provider, stack="dev")
    raw = _raw(data)
    assert list(raw) == ["veil_state", "stack", "serial", "key_id", "providers", "tree", "mac"]
    assert raw["veil_state"] == 1
    assert raw["stack"] == "dev"
    assert raw["serial"] == 1
    assert raw["key_id"] == doc.key_id
    (entry,) = raw["providers"]
    assert entry["scheme"] == "file"
    assert entry["description"] == provider.describe()
    assert base64.b64decode(entry["wrapped_key"])
    assert re.fullmatch("[0-9a-f]{64}", raw["mac"])


def test_file_has_one_member_per_line_with_sorted_keys(provider: CountingProvider) -> None:
    data = dumps({"b": {"y": 1, "x": [1, 2]}, "a": "z"}, provider=provider, stack="dev")
    text = data.decode()
    assert '  "tree":{\n    "a":"z",\n    "b":{\n      "x":[1,2],\n      "y":1\n    }\n  },' in text
    assert text.endswith("}\n")


def test_deep_containers_are_written_on_one_line(provider: CountingProvider) -> None:
    data = dumps({"a": {"b": {"c": {"d": {"e": [1]}}}}}, provider=provider, stack="dev")
    assert '"d":{"e":[1]}' in data.decode()


def test_removing_layout_gives_canonical_json(provider: CountingProvider) -> None:
    data = dumps({"b": [{"é": Secret("x")}, 1.5], "a": "z"}, provider=provider, stack="dev")
    stripped = re.sub("\n *", "", data.decode())
    raw = json.loads(stripped)
    assert stripped == json.dumps(raw, separators=(",", ":"), ensure_ascii=True).replace(
        json.dumps(raw["tree"], separators=(",", ":")),
        json.dumps(raw["tree"], separators=(",", ":"), sort_keys=True),
    )


def test_reformatted_document_still_loads(provider: CountingProvider) -> None:
    data = dumps({"b": [Secret("x"), 1.5], "a": "z"}, provider=provider, stack="dev")
    reformatted = json.dumps(json.loads(data), indent=3, ensure_ascii=False).encode()
    assert _reveal_tree(loads(reformatted, provider=provider)) == {
        "a": "z",
        "b": [("secret", "x"), 1.5],
    }


def test_sealed_values_are_bound_to_stack_and_full_path(provider: CountingProvider) -> None:
    data = dumps({"a": [{"b": Secret("v")}]}, provider=provider, stack="dev")
    raw = _raw(data)
    (entry,) = raw["providers"]
    key = provider.unwrap_key(base64.b64decode(entry["wrapped_key"]), {"stack": "dev"})
    cipher = ValueCipher(key)
    token = raw["tree"]["a"][0]["b"]["$secret"]
    aad = json.dumps(["dev", ["a", 0, "b"]], separators=(",", ":")).encode()
    assert cipher.open(token, aad) == "v"


def test_mac_covers_the_canonical_document(provider: CountingProvider) -> None:
    data = dumps({"a": Secret("v"), "é": [1.5, None]}, provider=provider, stack="dev")
    raw = _raw(data)
    (entry,) = raw["providers"]
    key = provider.unwrap_key(base64.b64decode(entry["wrapped_key"]), {"stack": "dev"})
    mac = raw.pop("mac")
    tree = raw.pop("tree")

    def canonical(v: Any) -> bytes:
        return json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()

    expected = ValueCipher(key).mac(
        b"veil/v1/state-mac\x00" + canonical(raw) + b"\x00" + canonical(tree)
    )
    assert expected.hex() == mac


def test_no_secret_plaintext_in_the_bytes(provider: CountingProvider) -> None:
    secrets = ["hunter2-password", "AKIA-not-really", "tiny", "ünïcödé-sécret"]
    tree = {"s": [Secret(s) for s in secrets], "d": Secret({"inner": "nested-plaintext"})}
    data = dumps(tree, provider=provider, stack="dev")
    for s in [*secrets, "nested-plaintext"]:
        assert s.encode() not in data
        assert json.dumps(s).encode() not in data


def test_document_repr_shows_no_secret(provider: CountingProvider) -> None:
    _data, doc = dump_document({"a": Secret("hunter2")}, provider=provider, stack="dev")
    assert "hunter2" not in repr(doc)
    assert "stack='dev'" in repr(doc)


def test_document_cannot_be_pickled(provider: CountingProvider) -> None:
    import pickle

    _data, doc = dump_document({"a": Secret("hunter2")}, provider=provider, stack="dev")
    with pytest.raises(SecretPickleError):
        pickle.dumps(doc)


# --- re-saving -------------------------------------------------------------------------------


def _tokens(data: bytes) -> dict[str, str]:
    tree = _raw(data)["tree"]
    return {k: v["$secret"] for k, v in tree.items() if isinstance(v, dict) and "$secret" in v}


def test_resave_keeps_ciphertexts_of_unchanged_secrets(provider: CountingProvider) -> None:
    tree = {"a": Secret("one"), "b": Secret({"x": 1}), "c": "plain"}
    first, doc = dump_document(tree, provider=provider, stack="dev")
    second, doc2 = dump_document(tree, provider=provider, stack="dev", previous=doc)
    assert _tokens(first) == _tokens(second)
    assert doc2.serial == doc.serial + 1


def test_resave_after_load_keeps_ciphertexts(provider: CountingProvider) -> None:
    tree = {"a": Secret("one"), "b": Secret([1, 2])}
    first = dumps(tree, provider=provider, stack="dev")
    doc = load_document(first, provider=provider)
    second = dumps(doc.tree, provider=provider, stack="dev", previous=doc)
    assert _tokens(first) == _tokens(second)
    assert first != second  # the serial and the MAC changed


def test_resave_reseals_only_changed_values(provider: CountingProvider) -> None:
    first, doc = dump_document(
        {"a": Secret("one"), "b": Secret("two")}, provider=provider, stack="dev"
    )
    second = dumps(
        {"a": Secret("one"), "b": Secret("TWO")}, provider=provider, stack="dev", previous=doc
    )
    before, after = _tokens(first), _tokens(second)
    assert before["a"] == after["a"]
    assert before["b"] != after["b"]
    assert loads(second, provider=provider)["b"].reveal() == "TWO"


def test_value_of_another_type_is_resealed(provider: CountingProvider) -> None:
    first, doc = dump_document({"a": Secret(1)}, provider=provider, stack="dev")
    second = dumps({"a": Secret(1.0)}, provider=provider, stack="dev", previous=doc)
    assert _tokens(first)["a"] != _tokens(second)["a"]
    assert type(loads(second, provider=provider)["a"].reveal()) is float


def test_value_moved_to_another_path_is_resealed(provider: CountingProvider) -> None:
    first, doc = dump_document({"a": Secret("one")}, provider=provider, stack="dev")
    second = dumps({"b": Secret("one")}, provider=provider, stack="dev", previous=doc)
    assert _tokens(first)["a"] != _tokens(second)["b"]


def test_resave_makes_no_provider_call(provider: CountingProvider) -> None:
    data = dumps({"a": Secret("one")}, provider=provider, stack="dev")
    provider.calls.clear()
    doc = load_document(data, provider=provider)
    assert provider.calls == ["unwrap"]
    for _ in range(3):
        _data, doc = dump_document(doc.tree, provider=provider, stack="dev", previous=doc)
    assert provider.calls == ["unwrap"]


def test_previous_may_be_bytes(provider: CountingProvider) -> None:
    first = dumps({"a": Secret("one")}, provider=provider, stack="dev")
    second = dumps({"a": Secret("one")}, provider=provider, stack="dev", previous=first)
    assert _tokens(first) == _tokens(second)
    assert _raw(second)["serial"] == 2


def test_rotate_key_reseals_everything_under_a_new_key(provider: CountingProvider) -> None:
    first, doc = dump_document({"a": Secret("one")}, provider=provider, stack="dev")
    second, doc2 = dump_document(
        {"a": Secret("one")}, provider=provider, stack="dev", previous=doc, rotate_key=True
    )
    assert doc2.key_id != doc.key_id
    assert _tokens(first)["a"] != _tokens(second)["a"]
    assert doc2.serial == 2
    assert loads(second, provider=provider)["a"].reveal() == "one"


# --- several providers -----------------------------------------------------------------------


def test_each_of_several_providers_opens_the_document(tmp_path: Path) -> None:
    first = LocalKeyProvider(tmp_path / "one.key")
    second = PassphraseProvider("correct horse battery", kdf="pbkdf2")
    data = dumps({"a": Secret("x")}, provider=first, stack="dev", additional_providers=[second])
    assert len(_raw(data)["providers"]) == 2
    for p in (first, second):
        assert loads(data, provider=p)["a"].reveal() == "x"


def test_two_providers_of_one_scheme_are_refused(tmp_path: Path) -> None:
    first = LocalKeyProvider(tmp_path / "one.key")
    second = LocalKeyProvider(tmp_path / "two.key")
    with pytest.raises(ProviderConfigError, match="one recipient per scheme"):
        dumps({}, provider=first, stack="dev", additional_providers=[second])


def test_a_document_with_two_entries_of_one_scheme_is_refused_before_any_unwrap(
    provider: CountingProvider,
) -> None:
    data = _rewrite(_doc(provider), lambda r: r["providers"].append(dict(r["providers"][0])))
    calls = list(provider.calls)
    with pytest.raises(StateFormatError, match="two 'file' provider entries"):
        loads(data, provider=provider)
    assert provider.calls == calls


def test_previous_of_another_stack_never_shares_its_data_key(provider: CountingProvider) -> None:
    _, dev = dump_document({"pw": Secret("dev")}, provider=provider, stack="dev")
    with pytest.raises(veil.UsageError, match="never reuses another stack's data key"):
        dump_document({"pw": Secret("prod")}, provider=provider, stack="prod", previous=dev)


def test_changing_provider_on_a_live_stack(tmp_path: Path) -> None:
    old = LocalKeyProvider(tmp_path / "old.key")
    new = LocalKeyProvider(tmp_path / "new.key")
    doc = load_document(dumps({"a": Secret("x")}, provider=old, stack="dev"), provider=old)
    data = dumps(doc.tree, provider=new, stack="dev", previous=doc)
    assert loads(data, provider=new)["a"].reveal() == "x"
    with pytest.raises(KeyUnwrapError):
        loads(data, provider=old)


def test_passphrase_provider_round_trip_and_resave(tmp_path: Path) -> None:
    provider = PassphraseProvider(
        "correct horse", kdf="pbkdf2", iterations=1000, insecure_weak_kdf=True
    )
    first = dumps({"a": Secret("x")}, provider=provider, stack="dev")
    reader = PassphraseProvider("correct horse", insecure_weak_kdf=True)
    loaded = load_document(first, provider=reader)
    assert loaded.tree["a"].reveal() == "x"
    second = dumps(loaded.tree, provider=reader, stack="dev", previous=loaded)
    assert _raw(second)["providers"] == _raw(first)["providers"]
    with pytest.raises(veil.IncorrectPassphraseError):
        loads(first, provider=PassphraseProvider("wrong horse", insecure_weak_kdf=True))


def test_provider_of_another_scheme_is_refused_listing_the_known_ones(
    tmp_path: Path, provider: CountingProvider
) -> None:
    data = dumps({"a": 1}, provider=provider, stack="dev")
    with pytest.raises(KeyUnwrapError, match="written for: file"):
        loads(
            data,
            provider=PassphraseProvider("x", kdf="pbkdf2", iterations=1000, insecure_weak_kdf=True),
        )


def test_another_key_file_is_refused(tmp_path: Path, provider: CountingProvider) -> None:
    data = dumps({"a": Secret("x")}, provider=provider, stack="dev")
    other = LocalKeyProvider(tmp_path / "other.key")
    other.describe()  # creates the key file
    with pytest.raises(KeyUnwrapError):
        loads(data, provider=other)


# --- reading bad documents --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"version": 3, "checkpoint": {}}', "no 'veil_state'"),
        (b'{"veil_state": "1"}', "not a whole number"),
        (b'{"veil_state": 0}', "unknown state document format version 0"),
    ],
)
def test_foreign_or_broken_bytes_raise_state_format_error(
    provider: CountingProvider, data: bytes, message: str
) -> None:
    with pytest.raises(StateFormatError, match=message):
        loads(data, provider=provider)


def test_newer_format_version_says_to_upgrade(provider: CountingProvider) -> None:
    data = _rewrite(dumps({}, provider=provider, stack="dev"), lambda r: r.update(veil_state=2))
    with pytest.raises(StateFormatError, match="Upgrade veil"):
        loads(data, provider=provider)


def test_every_truncation_raises_a_typed_error(provider: CountingProvider) -> None:
    data = dumps({"a": Secret("x"), "b": [1, 2]}, provider=provider, stack="dev")
    for end in range(0, len(data) - 1, 7):
        with pytest.raises(StateFormatError):
            loads(data[:end], provider=provider)


def test_str_data_is_refused(provider: CountingProvider) -> None:
    with pytest.raises(StateFormatError, match="bytes"):
        loads("{}", provider=provider)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.pop("mac"), "fields missing"),
        (lambda r: r.update(extra=1), "unexpected fields"),
        (lambda r: r.update(serial=-1), "'serial'"),
        (lambda r: r.update(serial=True), "'serial'"),
        (lambda r: r.update(stack="../x"), "'stack'"),
        (lambda r: r.update(key_id="XYZ"), "'key_id'"),
        (lambda r: r.update(mac="00"), "'mac'"),
        (lambda r: r.update(providers=[]), "'providers'"),
        (lambda r: r["providers"][0].pop("scheme"), "providers"),
        (lambda r: r["providers"][0].update(wrapped_key="!!"), "base64"),
    ],
)
def test_bad_structure_raises_state_format_error(
    provider: CountingProvider, change: Any, message: str
) -> None:
    data = _rewrite(dumps({"a": Secret("x")}, provider=provider, stack="dev"), change)
    with pytest.raises(StateFormatError, match=message):
        loads(data, provider=provider)


# --- tampering -----------------------------------------------------------------------------


def _doc(provider: CountingProvider, stack: str = "dev") -> bytes:
    tree = {
        "outputs": {"host": "db", "password": Secret("hunter2"), "token": Secret("t0k3n")},
        "list": [Secret("first"), Secret("second"), "clear"],
    }
    return dumps(tree, provider=provider, stack=stack)


def test_changed_clear_field_is_detected(provider: CountingProvider) -> None:
    data = _rewrite(_doc(provider), lambda r: r["tree"]["outputs"].update(host="evil"))
    with pytest.raises(StateIntegrityError, match="MAC"):
        loads(data, provider=provider)


def test_changed_serial_is_detected(provider: CountingProvider) -> None:
    data = _rewrite(_doc(provider), lambda r: r.update(serial=99))
    with pytest.raises(StateIntegrityError):
        loads(data, provider=provider)


def test_swapped_sealed_values_are_detected(provider: CountingProvider) -> None:
    def swap(raw: dict[str, Any]) -> None:
        out = raw["tree"]["outputs"]
        out["password"], out["token"] = out["token"], out["password"]

    with pytest.raises(StateIntegrityError):
        loads(_rewrite(_doc(provider), swap), provider=provider)


def test_reordered_list_is_detected(provider: CountingProvider) -> None:
    data = _rewrite(_doc(provider), lambda r: r["tree"]["list"].reverse())
    with pytest.raises(StateIntegrityError):
        loads(data, provider=provider)


def test_removed_field_is_detected(provider: CountingProvider) -> None:
    data = _rewrite(_doc(provider), lambda r: r["tree"]["outputs"].pop("token"))
    with pytest.raises(StateIntegrityError):
        loads(data, provider=provider)


def test_removed_provider_description_field_is_detected(provider: CountingProvider) -> None:
    data = _rewrite(_doc(provider), lambda r: r["providers"][0]["description"].update(x=1))
    with pytest.raises(StateIntegrityError):
        loads(data, provider=provider)


def test_sealed_value_moved_from_another_stack_is_detected(tmp_path: Path) -> None:
    provider = LocalKeyProvider(tmp_path / "shared.key")
    other = _raw(dumps({"pw": Secret("other-stack")}, provider=provider, stack="other"))
    data = _rewrite(
        dumps({"pw": Secret("mine")}, provider=provider, stack="dev"),
        lambda r: r["tree"].update(pw=other["tree"]["pw"]),
    )
    with pytest.raises(StateIntegrityError):
        loads(data, provider=provider)


def test_sealed_value_moved_from_another_passphrase_stack_is_detected() -> None:
    provider = PassphraseProvider(
        "same passphrase", kdf="pbkdf2", iterations=1000, insecure_weak_kdf=True
    )
    # The same data key for both stacks: only the associated data tells them apart.
    key = generate_data_key()
    other = _raw(dumps({"pw": Secret("theirs")}, provider=provider, stack="prod", data_key=key))
    mine = dumps({"pw": Secret("mine")}, provider=provider, stack="dev", data_key=key)
    assert _raw(mine)["key_id"] == other["key_id"]
    data = _rewrite(mine, lambda r: r["tree"].update(pw=other["tree"]["pw"]))
    with pytest.raises(StateIntegrityError):
        loads(data, provider=provider)


def test_whole_document_renamed_to_another_stack_is_refused(provider: CountingProvider) -> None:
    data = _rewrite(_doc(provider), lambda r: r.update(stack="prod"))
    with pytest.raises(VeilError):
        loads(data, provider=provider)


def test_every_single_byte_flip_raises_a_typed_error(provider: CountingProvider) -> None:
    data = _doc(provider)
    for i in range(0, len(data), 3):
        flipped = bytearray(data)
        flipped[i] ^= 0x01
        try:
            back = loads(bytes(flipped), provider=provider)
        except VeilError:
            continue
        # A flip in insignificant whitespace keeps the same document.
        assert _reveal_tree(back) == _reveal_tree(loads(data, provider=provider)), i


# --- the leak guard ----------------------------------------------------------------------------


def _dump_warns(tree: Any, provider: CountingProvider, **kw: Any) -> tuple[bytes, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = dumps(tree, provider=provider, stack="dev", **kw)
    messages = [str(w.message) for w in caught if issubclass(w.category, veil.LeakWarning)]
    return data, messages


def test_plain_copy_of_a_secret_is_sealed_with_a_warning(provider: CountingProvider) -> None:
    data, messages = _dump_warns({"pw": Secret("pw1"), "copy": {"x": "pw1"}}, provider)
    assert b'"pw1"' not in data
    assert loads(data, provider=provider)["copy"]["x"].reveal() == "pw1"
    (message,) = messages
    assert "copy.x (equals the plaintext of a secret)" in message
    assert "pw1" not in message


def test_plain_string_containing_a_secret_is_sealed(provider: CountingProvider) -> None:
    tree = {"pw": Secret("s3cretpass"), "url": "postgres://db/x?password=s3cretpass&y=1"}
    data, messages = _dump_warns(tree, provider)
    assert b"s3cretpass" not in data
    assert "url (contains the plaintext of a secret)" in messages[0]


def test_short_secret_is_matched_by_equality_only(provider: CountingProvider) -> None:
    data, messages = _dump_warns({"pw": Secret("abc1234"), "s": "xabc1234x"}, provider)
    assert messages == []
    assert b"xabc1234x" in data


def test_secret_at_start_and_end_of_a_string_is_found(provider: CountingProvider) -> None:
    tree = {"pw": Secret("12345678"), "a": "12345678-tail", "b": "head-12345678"}
    _data, messages = _dump_warns(tree, provider)
    assert "a (contains" in messages[0]
    assert "b (contains" in messages[0]


def test_empty_and_boolean_secrets_match_nothing(provider: CountingProvider) -> None:
    tree = {"e": Secret(""), "b": Secret(True), "x": "", "y": "true"}
    data, messages = _dump_warns(tree, provider)
    assert messages == []
    assert loads(data, provider=provider)["y"] == "true"


def test_non_string_secret_is_matched_by_its_json(provider: CountingProvider) -> None:
    _data, messages = _dump_warns({"port": Secret(5432), "s": "5432", "t": "15432"}, provider)
    assert "s (equals" in messages[0]
    assert "t (" not in messages[0]


def test_strings_inside_a_container_secret_are_matched(provider: CountingProvider) -> None:
    tree = {"creds": Secret({"password": "very-long-pw"}), "leak": "pw=very-long-pw"}
    _data, messages = _dump_warns(tree, provider)
    assert "leak (contains" in messages[0]


def test_secret_from_an_output_is_matched(provider: CountingProvider) -> None:
    pw = Output.secret("output-password")
    conn = veil.unsecret(Output.concat("user:", pw))
    _data, messages = _dump_warns({"pw": pw, "conn": conn}, provider)
    assert "conn (contains" in messages[0]


@pytest.mark.parametrize(
    ("value", "kind"),
    [
        ("AKIAIOSFODNN7EXAMPLE", "AWS access key id"),
        ("id ASIAY34FZKBOKMUTVV7A here", "AWS access key id"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIE...", "PEM private key"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "PEM private key"),
        ("ghp_" + "a" * 36, "GitHub token"),
        ("github_pat_" + "A1" * 20, "GitHub token"),
        ("xoxb-123456789012-abcdef", "Slack token"),
        ("sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc", "Stripe live key"),
        ("AIza" + "SyA-1234567890abcdefghijklmnopqrstu", "Google API key"),
        ("sk-proj-" + "x" * 40, "OpenAI API key"),
        (
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "JSON Web Token",
        ),
        ("postgres://admin:pa55word@db.internal:5432/app", "URL with a password"),
        ("redis://:pa55word@cache:6379", "URL with a password"),
    ],
)
def test_credential_shapes_are_sealed(provider: CountingProvider, value: str, kind: str) -> None:
    data, messages = _dump_warns({"config": {"value": value}}, provider)
    assert value.encode() not in data
    assert "config.value (" in messages[0]
    assert kind in messages[0]
    assert loads(data, provider=provider)["config"]["value"].reveal() == value


@pytest.mark.parametrize(
    "value",
    [
        "AKIA-short",
        "https://example.com/path",
        "https://user@example.com",
        "postgres://admin:[secret]@db/app",
        "-----BEGIN CERTIFICATE-----",
        "task-abcdefghijklmnopqrstuvwxyz",
        "ghp_short",
    ],
)
def test_harmless_strings_stay_plain(provider: CountingProvider, value: str) -> None:
    data, messages = _dump_warns({"v": value}, provider)
    assert messages == []
    assert loads(data, provider=provider)["v"] == value


def test_strict_mode_raises_naming_the_path(provider: CountingProvider) -> None:
    with pytest.raises(veil.PlaintextLeakError, match=r"a\.b \(looks like an AWS"):
        dumps({"a": {"b": "AKIAIOSFODNN7EXAMPLE"}}, provider=provider, stack="dev", strict=True)


def test_strict_mode_from_environment(
    provider: CountingProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VEIL_STRICT", "1")
    with pytest.raises(veil.PlaintextLeakError, match="Nothing was written"):
        dumps({"pw": Secret("x"), "c": "x"}, provider=provider, stack="dev")
    with pytest.warns(veil.LeakWarning):
        dumps({"pw": Secret("x"), "c": "x"}, provider=provider, stack="dev", strict=False)


def test_allow_plaintext_by_dotted_path_and_by_tuple(provider: CountingProvider) -> None:
    tree = {"pw": Secret("x"), "outputs": {"db": {"host": "x"}}, "l": ["x"]}
    data, messages = _dump_warns(
        tree, provider, strict=True, allow_plaintext=["outputs.db.host", ("l", 0)]
    )
    assert messages == []
    back = loads(data, provider=provider)
    assert back["outputs"]["db"]["host"] == "x"
    assert back["l"] == ["x"]


def test_allow_plaintext_accepts_display_form_of_index(provider: CountingProvider) -> None:
    tree = {"pw": Secret("x"), "l": ["x"]}
    _data, messages = _dump_warns(tree, provider, allow_plaintext=["l[0]"])
    assert messages == []


def test_leaking_root_string_is_sealed(provider: CountingProvider) -> None:
    data, messages = _dump_warns("AKIAIOSFODNN7EXAMPLE", provider)
    assert "<root>" in messages[0]
    assert loads(data, provider=provider).reveal() == "AKIAIOSFODNN7EXAMPLE"


def test_leaked_value_keeps_its_ciphertext_on_resave(provider: CountingProvider) -> None:
    tree = {"k": "AKIAIOSFODNN7EXAMPLE"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        first, doc = dump_document(tree, provider=provider, stack="dev")
        second = dumps(tree, provider=provider, stack="dev", previous=doc)
    assert _tokens(first) == _tokens(second)


# --- paths ---------------------------------------------------------------------------------------


def test_format_path() -> None:
    assert format_path(()) == "<root>"
    assert format_path(("outputs", "db", "host")) == "outputs.db.host"
    assert format_path(("resources", 0, "password")) == "resources[0].password"
    assert format_path(("a", "x.y", "with space")) == 'a["x.y"]["with space"]'


def test_document_type_is_exported() -> None:
    assert Document.__module__ == "veil.state.document"


def test_leak_warning_points_at_the_callers_line(provider: CountingProvider) -> None:
    with pytest.warns(veil.LeakWarning) as caught:
        dumps({"pw": Secret("x"), "c": "x"}, provider=provider, stack="dev")
    assert caught[0].filename == __file__
    with pytest.warns(veil.LeakWarning) as caught:
        dump_document({"pw": Secret("x"), "c": "x"}, provider=provider, stack="dev")
    assert caught[0].filename == __file__
