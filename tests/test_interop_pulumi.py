"""Pulumi passphrase interop: known answers from Pulumi's own tests, and an independent
re-implementation of Pulumi's scheme that checks what veil writes is Pulumi's format."""

from __future__ import annotations

import base64
import functools
import json
import pickle
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
from hypothesis import given, settings
from hypothesis import strategies as st

import veil
from veil import Output, Secret, deferred_output
from veil.interop.pulumi import (
    SECRET_SIG,
    SIG_KEY,
    PassphraseCrypter,
    PulumiStackConfig,
    crypter_from_checkpoint,
    dump_checkpoint,
    load_checkpoint,
    passphrase_from_env,
)

VECTORS = json.loads(
    (Path(__file__).parent / "vectors" / "pulumi-vectors.json").read_text(encoding="utf-8")
)
STATES = VECTORS["passphrase_states"]
WRONG = [(s, w) for s in STATES for w in s["wrong_passphrases"]]
SECURE = [(s, v) for s in STATES for v in s.get("secure_config_values", [])]
ASSET_SIG = VECTORS["signatures"]["asset_sig"]

PASSPHRASE = "test passphrase"


# --- an independent implementation of Pulumi's scheme, from the vectors' "about" ------------


@functools.cache
def ref_key(passphrase: str, encryptionsalt: str) -> bytes:
    salt = base64.b64decode(encryptionsalt.split(":")[1])
    kdf = PBKDF2HMAC(algorithm=hashes.SHA256(), length=32, salt=salt, iterations=1_000_000)
    return kdf.derive(passphrase.encode())


def ref_decrypt(key: bytes, value: str) -> str:
    version, nonce, sealed = value.split(":")
    assert version == "v1"
    raw_nonce = base64.b64decode(nonce, validate=True)
    assert len(raw_nonce) == 12
    return AESGCM(key).decrypt(raw_nonce, base64.b64decode(sealed, validate=True), None).decode()


def ref_encrypt(key: bytes, plaintext: str, nonce: bytes = b"\x07" * 12) -> str:
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), None)
    return f"v1:{base64.b64encode(nonce).decode()}:{base64.b64encode(sealed).decode()}"


def ref_secret(key: bytes, value: Any) -> dict[str, str]:
    return {SIG_KEY: SECRET_SIG, "ciphertext": ref_encrypt(key, json.dumps(value))}


@pytest.fixture(scope="module")
def crypter() -> PassphraseCrypter:
    return PassphraseCrypter(PASSPHRASE)


@pytest.fixture(scope="module")
def key(crypter: PassphraseCrypter) -> bytes:
    return ref_key(PASSPHRASE, crypter.encryptionsalt)


def check_value(encryptionsalt: str) -> str:
    return encryptionsalt.split(":", 2)[2]


# --- PassphraseCrypter: known answers ----------------------------------------------------


@pytest.mark.parametrize("state", STATES, ids=[s["id"] for s in STATES])
def test_every_vector_stack_opens_with_its_passphrase(state: dict[str, Any]) -> None:
    opened = PassphraseCrypter(state["passphrase"], state["encryptionsalt"])
    assert opened.encryptionsalt == state["encryptionsalt"]
    check = opened.decrypt(check_value(state["encryptionsalt"]))
    assert check == state["expected_check_plaintext"] == "pulumi"


@pytest.mark.parametrize(("state", "wrong"), WRONG, ids=[f"{s['id']}-{w!r}" for s, w in WRONG])
def test_every_vector_wrong_passphrase_is_rejected(state: dict[str, Any], wrong: str) -> None:
    with pytest.raises(veil.IncorrectPassphraseError):
        PassphraseCrypter(wrong, state["encryptionsalt"])


def test_vectors_have_wrong_passphrases_and_secure_values() -> None:
    assert len(WRONG) >= 4
    assert len(SECURE) >= 1


@pytest.mark.parametrize(("state", "value"), SECURE, ids=[v["key"] for _, v in SECURE])
def test_every_vector_secure_value_decrypts(state: dict[str, Any], value: dict[str, str]) -> None:
    opened = PassphraseCrypter(state["passphrase"], state["encryptionsalt"])
    assert opened.decrypt(value["secure"]) == value["expected_plaintext"]


def test_independent_implementation_agrees_with_a_vector() -> None:
    # Proves the test's reference implementation is Pulumi's scheme, not just veil's.
    state, value = SECURE[0]
    k = ref_key(state["passphrase"], state["encryptionsalt"])
    assert ref_decrypt(k, check_value(state["encryptionsalt"])) == "pulumi"
    assert ref_decrypt(k, value["secure"]) == value["expected_plaintext"]


# --- PassphraseCrypter: what veil writes is Pulumi's format ----------------------------------


def test_new_encryptionsalt_is_pulumis_format(crypter: PassphraseCrypter, key: bytes) -> None:
    version, salt, check = crypter.encryptionsalt.split(":", 2)
    assert version == "v1"
    assert len(base64.b64decode(salt, validate=True)) == 8
    assert ref_decrypt(key, check) == "pulumi"


def test_new_stack_reopens_with_its_passphrase_only(crypter: PassphraseCrypter) -> None:
    reopened = PassphraseCrypter(PASSPHRASE, crypter.encryptionsalt)
    assert reopened.decrypt(crypter.encrypt("x")) == "x"
    with pytest.raises(veil.IncorrectPassphraseError):
        PassphraseCrypter(PASSPHRASE + "!", crypter.encryptionsalt)


@settings(max_examples=60, deadline=None)
@given(text=st.text())
def test_veil_encrypt_decrypts_with_pulumis_scheme(
    crypter: PassphraseCrypter, key: bytes, text: str
) -> None:
    assert ref_decrypt(key, crypter.encrypt(text)) == text


@settings(max_examples=60, deadline=None)
@given(text=st.text(), nonce=st.binary(min_size=12, max_size=12))
def test_pulumi_scheme_values_decrypt_with_veil(
    crypter: PassphraseCrypter, key: bytes, text: str, nonce: bytes
) -> None:
    assert crypter.decrypt(ref_encrypt(key, text, nonce)) == text


def test_encrypt_uses_a_fresh_nonce(crypter: PassphraseCrypter) -> None:
    assert crypter.encrypt("same") != crypter.encrypt("same")


def test_empty_passphrase_is_accepted_as_pulumi_does() -> None:
    created = PassphraseCrypter("")
    reopened = PassphraseCrypter("", created.encryptionsalt)
    assert reopened.decrypt(created.encrypt("v")) == "v"
    assert ref_decrypt(ref_key("", created.encryptionsalt), created.encrypt("w")) == "w"


def test_passphrase_may_be_a_secret(crypter: PassphraseCrypter) -> None:
    reopened = PassphraseCrypter(Secret(PASSPHRASE), crypter.encryptionsalt)
    assert reopened.decrypt(crypter.encrypt("y")) == "y"


def test_key_derivation_is_cached_per_passphrase_and_salt(crypter: PassphraseCrypter) -> None:
    PassphraseCrypter(PASSPHRASE, crypter.encryptionsalt)
    start = time.perf_counter()
    PassphraseCrypter(PASSPHRASE, crypter.encryptionsalt)
    assert time.perf_counter() - start < 0.02  # a derivation takes over 0.1 s


def test_non_string_passphrase_is_refused() -> None:
    with pytest.raises(veil.InvalidValueError):
        PassphraseCrypter(b"bytes")  # type: ignore[arg-type]


def test_encrypt_refuses_non_strings(crypter: PassphraseCrypter) -> None:
    with pytest.raises(veil.InvalidValueError):
        crypter.encrypt(42)  # type: ignore[arg-type]


def test_repr_shows_the_salt_and_no_passphrase(crypter: PassphraseCrypter) -> None:
    assert PASSPHRASE not in repr(crypter)
    assert crypter.encryptionsalt in repr(crypter)


def test_crypter_cannot_be_pickled(crypter: PassphraseCrypter) -> None:
    with pytest.raises(veil.SecretPickleError):
        pickle.dumps(crypter)


# --- PassphraseCrypter: failures -------------------------------------------------------------


def test_every_bit_flip_in_a_value_is_detected(crypter: PassphraseCrypter) -> None:
    value = crypter.encrypt("payload")
    _, nonce, sealed = value.split(":")
    raw_nonce, raw_sealed = base64.b64decode(nonce), base64.b64decode(sealed)
    for part in ("nonce", "sealed"):
        raw = raw_nonce if part == "nonce" else raw_sealed
        for bit in range(len(raw) * 8):
            flipped = bytearray(raw)
            flipped[bit // 8] ^= 1 << (bit % 8)
            n = bytes(flipped) if part == "nonce" else raw_nonce
            s = bytes(flipped) if part == "sealed" else raw_sealed
            tampered = f"v1:{base64.b64encode(n).decode()}:{base64.b64encode(s).decode()}"
            with pytest.raises(veil.DecryptionError):
                crypter.decrypt(tampered)


def test_every_changed_character_of_a_value_is_detected(crypter: PassphraseCrypter) -> None:
    # Includes the last base64 character, whose low bits are padding: it must not
    # decode to the same bytes.
    value = crypter.encrypt("abcde")  # 21 sealed bytes: the last group has spare bits
    for i in range(3, len(value)):
        if value[i] in ":=":
            continue
        other = "B" if value[i] == "A" else "A"
        with pytest.raises(veil.DecryptionError):
            crypter.decrypt(value[:i] + other + value[i + 1 :])


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "v1",
        "v1:AAAAAAAAAAAAAAAA",
        "v2:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA==",
        "v1:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA==:x",
        "v1:not base64!:AAAAAAAAAAAAAAAAAAAAAA==",
        "v1:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA",
        "v1:AAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA==",
        "v1:AAAAAAAAAAAAAAAA:AAAA",
        "v1:AAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA==\n",
        "v1:ÄAAAAAAAAAAAAAAA:AAAAAAAAAAAAAAAAAAAAAA==",
    ],
)
def test_malformed_values_raise_decryption_error(crypter: PassphraseCrypter, bad: str) -> None:
    with pytest.raises(veil.DecryptionError):
        crypter.decrypt(bad)


def test_non_string_value_raises_decryption_error(crypter: PassphraseCrypter) -> None:
    with pytest.raises(veil.DecryptionError):
        crypter.decrypt(None)  # type: ignore[arg-type]


def test_value_of_another_stack_raises_decryption_error(crypter: PassphraseCrypter) -> None:
    _, value = SECURE[0]
    with pytest.raises(veil.DecryptionError):
        crypter.decrypt(value["secure"])


def test_decryption_error_does_not_show_the_value(crypter: PassphraseCrypter) -> None:
    value = crypter.encrypt("topsecret")
    with pytest.raises(veil.DecryptionError) as info:
        crypter.decrypt(value[:-4] + "AAA=")
    assert "topsecret" not in str(info.value)
    assert value not in str(info.value)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "v1",
        "v1:fozI5u6B030=",
        "v2:fozI5u6B030=:v1:F+6ZduKKd8G0/V7L:PGMFeIzwobWRKmEAzUdaQHqC5mMRIQ==",
        "v1:not-b64!:v1:F+6ZduKKd8G0/V7L:PGMFeIzwobWRKmEAzUdaQHqC5mMRIQ==",
        "v1:AAAA:v1:F+6ZduKKd8G0/V7L:PGMFeIzwobWRKmEAzUdaQHqC5mMRIQ==",
        "v1:fozI5u6B030=:garbage",
        "v1:fozI5u6B030=:v1:F+6ZduKKd8G0/V7L",
    ],
)
def test_malformed_encryptionsalt_raises_provider_config_error(bad: str) -> None:
    with pytest.raises(veil.ProviderConfigError):
        PassphraseCrypter("password", bad)


def test_non_string_encryptionsalt_raises_provider_config_error() -> None:
    with pytest.raises(veil.ProviderConfigError):
        PassphraseCrypter("password", 5)  # type: ignore[arg-type]


def test_tampered_check_value_reads_as_incorrect_passphrase() -> None:
    state = STATES[0]
    salt = state["encryptionsalt"]
    tampered = salt[:-6] + ("A" if salt[-6] != "A" else "B") + salt[-5:]
    with pytest.raises(veil.IncorrectPassphraseError):
        PassphraseCrypter(state["passphrase"], tampered)


# --- checkpoints ---------------------------------------------------------------------------


def pulumi_checkpoint(key: bytes, salt: str) -> dict[str, Any]:
    """A checkpoint as Pulumi's file backend writes it, sealed by the reference code."""
    return {
        "version": 3,
        "checkpoint": {
            "stack": "organization/proj/dev",
            "latest": {
                "manifest": {"time": "2024-01-01T00:00:00Z", "magic": "m", "version": "v3"},
                "secrets_providers": {"type": "passphrase", "state": {"salt": salt}},
                "resources": [
                    {
                        "urn": "urn:pulumi:dev::proj::random:index/randomPassword:"
                        "RandomPassword::pw",
                        "type": "random:index/randomPassword:RandomPassword",
                        "inputs": {"length": 16, "special": True},
                        "outputs": {
                            "length": 16,
                            "result": ref_secret(key, "s3cr3t-pw"),
                            "bcryptHash": ref_secret(key, {"h": ["$2a$10$x", 1.5, None]}),
                            "keepers": {
                                SIG_KEY: SECRET_SIG,
                                "plaintext": json.dumps(["plain", 2]),
                            },
                            "file": {SIG_KEY: ASSET_SIG, "text": "hello"},
                        },
                    }
                ],
            },
        },
    }


def test_load_checkpoint_decrypts_pulumi_secrets(crypter: PassphraseCrypter, key: bytes) -> None:
    data = json.dumps(pulumi_checkpoint(key, crypter.encryptionsalt)).encode()
    tree = load_checkpoint(data, crypter)
    outputs = tree["checkpoint"]["latest"]["resources"][0]["outputs"]
    assert isinstance(outputs["result"], Secret)
    assert outputs["result"].reveal() == "s3cr3t-pw"
    assert outputs["bcryptHash"].reveal() == {"h": ["$2a$10$x", 1.5, None]}


def test_load_checkpoint_reads_plaintext_secret_objects_as_secrets(
    crypter: PassphraseCrypter, key: bytes
) -> None:
    data = json.dumps(pulumi_checkpoint(key, crypter.encryptionsalt)).encode()
    keepers = load_checkpoint(data, crypter)["checkpoint"]["latest"]["resources"][0]["outputs"][
        "keepers"
    ]
    assert isinstance(keepers, Secret)
    assert keepers.reveal() == ["plain", 2]


def test_load_checkpoint_passes_other_values_through(
    crypter: PassphraseCrypter, key: bytes
) -> None:
    original = pulumi_checkpoint(key, crypter.encryptionsalt)
    tree = load_checkpoint(json.dumps(original).encode(), crypter)
    resource = tree["checkpoint"]["latest"]["resources"][0]
    assert resource["inputs"] == {"length": 16, "special": True}
    assert resource["outputs"]["file"] == {SIG_KEY: ASSET_SIG, "text": "hello"}
    assert tree["checkpoint"]["latest"]["manifest"] == original["checkpoint"]["latest"]["manifest"]


def test_dump_checkpoint_is_readable_with_pulumis_scheme(
    crypter: PassphraseCrypter, key: bytes
) -> None:
    a, b = Secret({"user": "admin", "pw": "hunter2"}), Secret("x")
    written = json.loads(dump_checkpoint({"a": a, "b": [1, b], "c": "plain"}, crypter))
    assert written["c"] == "plain"
    for sealed, value in ((written["a"], a), (written["b"][1], b)):
        assert set(sealed) == {SIG_KEY, "ciphertext"}
        assert sealed[SIG_KEY] == SECRET_SIG
        assert json.loads(ref_decrypt(key, sealed["ciphertext"])) == veil.reveal(value)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)
trees = st.recursive(
    json_values | json_values.map(Secret),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=60, deadline=None)
@given(tree=trees)
def test_dump_then_load_checkpoint_round_trips(crypter: PassphraseCrypter, tree: Any) -> None:
    assert load_checkpoint(dump_checkpoint(tree, crypter), crypter) == tree


def test_dump_checkpoint_never_writes_secret_plaintext(crypter: PassphraseCrypter) -> None:
    tree = {
        "a": Secret("plaintext-one"),
        "b": {SIG_KEY: SECRET_SIG, "plaintext": json.dumps("plaintext-two")},
        "c": Output.secret("plaintext-three"),
    }
    data = dump_checkpoint(tree, crypter)
    for word in (b"plaintext-one", b"plaintext-two", b"plaintext-three"):
        assert word not in data
    loaded = load_checkpoint(data, crypter)
    assert [loaded[k].reveal() for k in "abc"] == [
        "plaintext-one",
        "plaintext-two",
        "plaintext-three",
    ]


def test_dump_checkpoint_writes_secret_outputs_as_secrets_and_plain_outputs_plain(
    crypter: PassphraseCrypter,
) -> None:
    tree = {"s": Output.secret({"k": [1, 2]}), "p": Output.from_input({"n": Secret("z")})}
    loaded = load_checkpoint(dump_checkpoint(tree, crypter), crypter)
    assert loaded["s"] == Secret({"k": [1, 2]})
    assert loaded["p"] == Secret({"n": "z"})


def test_dump_checkpoint_refuses_pending_outputs(crypter: PassphraseCrypter) -> None:
    pending: Output[str] = deferred_output()[0]
    with pytest.raises(veil.PendingOutputError):
        dump_checkpoint({"x": pending}, crypter)


def test_dump_checkpoint_reuses_ciphertexts_of_unchanged_secrets(
    crypter: PassphraseCrypter,
) -> None:
    first = dump_checkpoint({"a": Secret("same"), "b": Secret(["m"])}, crypter)
    tree = load_checkpoint(first, crypter)
    tree["b"].reveal().append("changed")
    second = json.loads(dump_checkpoint(tree, crypter))
    assert second["a"] == json.loads(first)["a"]
    assert second["b"] != json.loads(first)["b"]
    assert load_checkpoint(json.dumps(second), crypter)["b"].reveal() == ["m", "changed"]


def test_dump_checkpoint_does_not_reuse_ciphertexts_for_new_equal_secrets(
    crypter: PassphraseCrypter,
) -> None:
    written = json.loads(dump_checkpoint({"a": Secret("v"), "b": Secret("v")}, crypter))
    assert written["a"]["ciphertext"] != written["b"]["ciphertext"]


def test_dump_checkpoint_names_the_crypters_salt(crypter: PassphraseCrypter, key: bytes) -> None:
    original = pulumi_checkpoint(key, "v1:AAAAAAAAAAA=:v1:old")
    written = json.loads(dump_checkpoint(original, crypter))
    providers = written["checkpoint"]["latest"]["secrets_providers"]
    assert providers == {"type": "passphrase", "state": {"salt": crypter.encryptionsalt}}


def test_dump_checkpoint_adds_a_passphrase_provider_when_missing(
    crypter: PassphraseCrypter,
) -> None:
    tree = {"version": 3, "deployment": {"resources": [{"outputs": {"pw": Secret("p")}}]}}
    written = json.loads(dump_checkpoint(tree, crypter))
    assert written["deployment"]["secrets_providers"]["state"]["salt"] == crypter.encryptionsalt
    assert crypter_from_checkpoint(json.dumps(written), PASSPHRASE).same_key(crypter.encryptionsalt)


def test_dump_checkpoint_refuses_to_mix_providers(crypter: PassphraseCrypter) -> None:
    tree = {
        "checkpoint": {
            "latest": {"secrets_providers": {"type": "cloud", "state": {}}, "x": Secret("s")}
        }
    }
    with pytest.raises(veil.ProviderConfigError):
        dump_checkpoint(tree, crypter)


def test_dump_checkpoint_output_is_pulumi_style_json(crypter: PassphraseCrypter) -> None:
    data = dump_checkpoint({"version": 3, "ä": [1]}, crypter)
    assert data == b'{\n    "version": 3,\n    "\xc3\xa4": [\n        1\n    ]\n}\n'


@pytest.mark.parametrize(
    "bad", [{1: "int key"}, {"x": {1, 2}}, {"x": b"bytes"}, {"x": float("nan")}, {"x": object()}]
)
def test_dump_checkpoint_refuses_non_json_values(crypter: PassphraseCrypter, bad: Any) -> None:
    with pytest.raises(veil.InvalidValueError):
        dump_checkpoint(bad, crypter)


def test_dump_checkpoint_refuses_non_json_values_inside_secrets(
    crypter: PassphraseCrypter,
) -> None:
    with pytest.raises(veil.InvalidValueError):
        dump_checkpoint({"x": Secret({"y": float("inf")})}, crypter)


def test_changing_crypter_re_encrypts_every_secret(crypter: PassphraseCrypter) -> None:
    old = PassphraseCrypter("old passphrase")
    data = dump_checkpoint({"checkpoint": {"latest": {"pw": Secret("p")}}}, old)
    rekeyed = dump_checkpoint(load_checkpoint(data, old), crypter)
    assert load_checkpoint(rekeyed, crypter)["checkpoint"]["latest"]["pw"] == Secret("p")
    with pytest.raises(veil.DecryptionError):
        load_checkpoint(rekeyed, old)


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b'{"a": 1', b"\xff\xfe", b'{"a": NaN}', b"[" * 100_000 + b"]" * 100_000],
    ids=["empty", "brace", "truncated", "not-utf8", "nan", "deep"],
)
def test_load_checkpoint_refuses_non_json(crypter: PassphraseCrypter, data: bytes) -> None:
    with pytest.raises(veil.StateFormatError):
        load_checkpoint(data, crypter)


@pytest.mark.parametrize(
    "secret",
    [
        {SIG_KEY: SECRET_SIG},
        {SIG_KEY: SECRET_SIG, "ciphertext": "v1:a:b", "plaintext": '"x"'},
        {SIG_KEY: SECRET_SIG, "ciphertext": 5},
        {SIG_KEY: SECRET_SIG, "plaintext": "not json"},
    ],
    ids=["neither", "both", "non-string", "plaintext-not-json"],
)
def test_load_checkpoint_refuses_malformed_secret_objects(
    crypter: PassphraseCrypter, secret: dict[str, Any]
) -> None:
    with pytest.raises(veil.StateFormatError):
        load_checkpoint(json.dumps({"x": secret}).encode(), crypter)


def test_load_checkpoint_names_the_path_of_a_bad_ciphertext(crypter: PassphraseCrypter) -> None:
    data = json.dumps({"res": [{"pw": {SIG_KEY: SECRET_SIG, "ciphertext": "v1:bad"}}]})
    with pytest.raises(veil.DecryptionError, match=r"\$\.res\[0\]\.pw"):
        load_checkpoint(data.encode(), crypter)


def test_load_checkpoint_refuses_tampered_ciphertext(crypter: PassphraseCrypter) -> None:
    data = json.loads(dump_checkpoint({"pw": Secret("p")}, crypter))
    c = data["pw"]["ciphertext"]
    data["pw"]["ciphertext"] = c[:-3] + ("A" if c[-3] != "A" else "B") + c[-2:]
    with pytest.raises(veil.DecryptionError):
        load_checkpoint(json.dumps(data).encode(), crypter)


def test_load_checkpoint_refuses_non_json_secret_payload_without_showing_it(
    crypter: PassphraseCrypter,
) -> None:
    data = json.dumps({"x": {SIG_KEY: SECRET_SIG, "ciphertext": crypter.encrypt("raw-token")}})
    with pytest.raises(veil.StateFormatError) as info:
        load_checkpoint(data.encode(), crypter)
    assert "raw-token" not in str(info.value)


def test_load_checkpoint_with_another_salt_hints_at_crypter_from_checkpoint(
    crypter: PassphraseCrypter,
) -> None:
    state = STATES[0]
    other = PassphraseCrypter(state["passphrase"], state["encryptionsalt"])
    data = dump_checkpoint({"checkpoint": {"latest": {"pw": Secret("p")}}}, crypter)
    with pytest.raises(veil.DecryptionError, match="crypter_from_checkpoint"):
        load_checkpoint(data, other)


def test_load_checkpoint_refuses_other_pulumi_providers(crypter: PassphraseCrypter) -> None:
    tree = {
        "checkpoint": {
            "latest": {
                "secrets_providers": {"type": "cloud", "state": {"url": "awskms://k"}},
                "pw": {SIG_KEY: SECRET_SIG, "ciphertext": "djE6..."},
            }
        }
    }
    with pytest.raises(veil.ProviderConfigError):
        load_checkpoint(json.dumps(tree).encode(), crypter)


def test_crypter_from_checkpoint_opens_the_named_salt(crypter: PassphraseCrypter) -> None:
    data = dump_checkpoint({"checkpoint": {"latest": {"pw": Secret("p")}}}, crypter)
    opened = crypter_from_checkpoint(data, PASSPHRASE)
    assert opened.encryptionsalt == crypter.encryptionsalt
    assert load_checkpoint(data, opened)["checkpoint"]["latest"]["pw"] == Secret("p")


def test_crypter_from_checkpoint_rejects_a_wrong_passphrase(crypter: PassphraseCrypter) -> None:
    data = dump_checkpoint({"checkpoint": {"latest": {"pw": Secret("p")}}}, crypter)
    with pytest.raises(veil.IncorrectPassphraseError):
        crypter_from_checkpoint(data, "wrong")


def test_crypter_from_checkpoint_without_salt_raises_state_format_error() -> None:
    with pytest.raises(veil.StateFormatError):
        crypter_from_checkpoint(b'{"version": 3, "checkpoint": {"latest": {}}}', "pw")


def test_crypter_from_checkpoint_uses_pulumis_environment_variable(
    crypter: PassphraseCrypter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", PASSPHRASE)
    data = dump_checkpoint({"checkpoint": {"latest": {"pw": Secret("p")}}}, crypter)
    assert crypter_from_checkpoint(data).same_key(crypter.encryptionsalt)


# --- Pulumi.<stack>.yaml -----------------------------------------------------------------

CONFIG_STATE, CONFIG_VALUE = SECURE[0]
CONFIG_TEXT = f"""\
# Stack settings for the test stack.
encryptionsalt: {CONFIG_STATE["encryptionsalt"]}
config:
  # The region stays first.
  aws:region: us-west-2 # where it runs
  {CONFIG_VALUE["key"]}:
    secure: {CONFIG_VALUE["secure"]}
  foo:list:
    - a
    - b
  # trailing comment
"""


@pytest.fixture
def config() -> PulumiStackConfig:
    return PulumiStackConfig.loads(CONFIG_TEXT, CONFIG_STATE["passphrase"])


def test_config_secure_vector_decrypts_to_a_secret(config: PulumiStackConfig) -> None:
    value = config.get(CONFIG_VALUE["key"])
    assert isinstance(value, Secret)
    assert value.reveal() == CONFIG_VALUE["expected_plaintext"]


def test_config_reads_plain_values(config: PulumiStackConfig) -> None:
    assert config.get("aws:region") == "us-west-2"
    assert config.get("foo:list") == ["a", "b"]
    assert config.keys() == ["aws:region", CONFIG_VALUE["key"], "foo:list"]
    assert config.is_secret(CONFIG_VALUE["key"])
    assert not config.is_secret("aws:region")


def test_config_round_trip_is_byte_exact(config: PulumiStackConfig) -> None:
    config.get(CONFIG_VALUE["key"])
    assert config.dumps() == CONFIG_TEXT


def test_config_edits_keep_comments_order_and_unchanged_ciphertexts(
    config: PulumiStackConfig,
) -> None:
    config.set("foo:new", "fresh-secret", secret=True)
    config.set("aws:region", "eu-west-1")
    config.set(CONFIG_VALUE["key"], config.get(CONFIG_VALUE["key"]))
    text = config.dumps()
    for comment in (
        "# Stack settings for the test stack.",
        "# The region stays first.",
        "# where it runs",
        "# trailing comment",
    ):
        assert comment in text
    assert CONFIG_VALUE["secure"] in text
    assert "fresh-secret" not in text
    assert text.index("aws:region: eu-west-1") < text.index(CONFIG_VALUE["key"])
    again = PulumiStackConfig.loads(text, CONFIG_STATE["passphrase"])
    assert again.keys() == ["aws:region", CONFIG_VALUE["key"], "foo:list", "foo:new"]
    assert again.get("foo:new") == Secret("fresh-secret")


def test_config_secure_values_written_are_pulumis_format(config: PulumiStackConfig) -> None:
    config.set("foo:new", Secret("by-veil"))
    written = PulumiStackConfig.loads(config.dumps())  # no passphrase: read raw YAML only
    assert written.is_secret("foo:new")
    ciphertext = written._doc["config"]["foo:new"]["secure"]
    k = ref_key(CONFIG_STATE["passphrase"], CONFIG_STATE["encryptionsalt"])
    assert ref_decrypt(k, ciphertext) == "by-veil"


def test_config_structured_values_hold_secure_leaves(config: PulumiStackConfig) -> None:
    config.set("foo:obj", {"user": "admin", "pw": Secret("pw1"), "n": [1, True]})
    again = PulumiStackConfig.loads(config.dumps(), CONFIG_STATE["passphrase"])
    assert again.get("foo:obj") == {"user": "admin", "pw": Secret("pw1"), "n": [1, True]}
    assert "pw1" not in config.dumps()


def test_config_secret_outputs_are_stored_secure(config: PulumiStackConfig) -> None:
    config.set("foo:out", Output.secret("from-output"))
    config.set("foo:plainout", Output.from_input("visible"))
    text = config.dumps()
    assert "from-output" not in text
    assert "foo:plainout: visible" in text


def test_new_config_gets_an_encryptionsalt_first(crypter: PassphraseCrypter) -> None:
    config = PulumiStackConfig.loads("config:\n  proj:a: b\n", crypter=crypter)
    config.set("proj:pw", "p", secret=True)
    text = config.dumps()
    assert text.startswith(f"encryptionsalt: {crypter.encryptionsalt}\n")
    assert PulumiStackConfig.loads(text, PASSPHRASE).get("proj:pw") == Secret("p")


def test_empty_config_creates_salt_and_config(crypter: PassphraseCrypter) -> None:
    config = PulumiStackConfig.loads("", crypter=crypter)
    config.set("proj:pw", "p", secret=True)
    config.set("proj:x", "y")
    assert config.keys() == ["proj:pw", "proj:x"]
    assert config.encryptionsalt == crypter.encryptionsalt


def test_config_with_other_salt_refuses_a_crypter(crypter: PassphraseCrypter) -> None:
    with pytest.raises(veil.ProviderConfigError):
        PulumiStackConfig.loads(CONFIG_TEXT, crypter=crypter)


def test_config_rekey_re_encrypts_every_secure_value(
    config: PulumiStackConfig, crypter: PassphraseCrypter
) -> None:
    config.set("foo:obj", {"pw": Secret("inner")})
    config.rekey(crypter)
    text = config.dumps()
    assert CONFIG_VALUE["secure"] not in text
    assert "# The region stays first." in text
    again = PulumiStackConfig.loads(text, PASSPHRASE)
    assert again.encryptionsalt == crypter.encryptionsalt
    assert again.get(CONFIG_VALUE["key"]).reveal() == CONFIG_VALUE["expected_plaintext"]
    assert again.get("foo:obj") == {"pw": Secret("inner")}


def test_config_rekey_failure_changes_nothing(crypter: PassphraseCrypter) -> None:
    secure = CONFIG_VALUE["secure"]
    broken = CONFIG_TEXT.replace(
        secure, secure[:-4] + ("A" if secure[-4] != "A" else "B") + secure[-3:]
    )
    config = PulumiStackConfig.loads(
        broken + "  foo:good:\n    secure: " + SECURE[0][1]["secure"] + "\n",
        CONFIG_STATE["passphrase"],
    )
    before = config.dumps()
    with pytest.raises(veil.DecryptionError):
        config.rekey(crypter)
    assert config.dumps() == before


def test_config_remove(config: PulumiStackConfig) -> None:
    config.remove("aws:region")
    assert "aws:region" not in config
    assert "aws:region" not in config.dumps()
    with pytest.raises(veil.ConfigMissingError):
        config.remove("aws:region")


def test_config_missing_key_raises_config_missing_error(config: PulumiStackConfig) -> None:
    with pytest.raises(veil.ConfigMissingError):
        config.get("foo:nope")
    with pytest.raises(KeyError):
        config.get("foo:nope")


def test_config_key_needs_a_namespace(config: PulumiStackConfig) -> None:
    with pytest.raises(veil.ConfigError):
        config.set("nonamespace", "v")


def test_config_secure_value_must_be_a_string(config: PulumiStackConfig) -> None:
    with pytest.raises(veil.InvalidValueError):
        config.set("foo:n", 5, secret=True)


def test_config_refuses_unsupported_value_types(config: PulumiStackConfig) -> None:
    with pytest.raises(veil.InvalidValueError):
        config.set("foo:n", {1, 2})


def test_config_wrong_passphrase_raises_on_first_secure_access() -> None:
    config = PulumiStackConfig.loads(CONFIG_TEXT, "wrong")
    assert config.get("aws:region") == "us-west-2"
    with pytest.raises(veil.IncorrectPassphraseError):
        config.get(CONFIG_VALUE["key"])


def test_config_without_passphrase_reads_plain_values_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE_FILE", raising=False)
    config = PulumiStackConfig.loads(CONFIG_TEXT)
    assert config.get("aws:region") == "us-west-2"
    with pytest.raises(veil.PassphraseRequiredError):
        config.get(CONFIG_VALUE["key"])


def test_config_passphrase_from_pulumi_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", CONFIG_STATE["passphrase"])
    config = PulumiStackConfig.loads(CONFIG_TEXT)
    assert config.get(CONFIG_VALUE["key"]).reveal() == CONFIG_VALUE["expected_plaintext"]


def test_config_passphrase_from_pulumi_passphrase_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    phrase_file = tmp_path / "phrase"
    phrase_file.write_text(CONFIG_STATE["passphrase"] + "\n")
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE_FILE", str(phrase_file))
    config = PulumiStackConfig.loads(CONFIG_TEXT)
    assert config.get(CONFIG_VALUE["key"]).reveal() == CONFIG_VALUE["expected_plaintext"]


def test_config_tampered_secure_value_raises_decryption_error() -> None:
    secure = CONFIG_VALUE["secure"]
    tampered = secure[:-4] + ("A" if secure[-4] != "A" else "B") + secure[-3:]
    config = PulumiStackConfig.loads(
        CONFIG_TEXT.replace(secure, tampered), CONFIG_STATE["passphrase"]
    )
    with pytest.raises(veil.DecryptionError):
        config.get(CONFIG_VALUE["key"])


def test_config_malformed_encryptionsalt_raises_provider_config_error() -> None:
    text = CONFIG_TEXT.replace(CONFIG_STATE["encryptionsalt"], "v1:broken")
    config = PulumiStackConfig.loads(text, CONFIG_STATE["passphrase"])
    with pytest.raises(veil.ProviderConfigError):
        config.get(CONFIG_VALUE["key"])


def test_config_of_another_secrets_provider_raises_provider_config_error() -> None:
    text = "secretsprovider: awskms://alias/x\nencryptedkey: abc\nconfig:\n  p:a:\n    secure: x\n"
    with pytest.raises(veil.ProviderConfigError):
        PulumiStackConfig.loads(text, "pw").get("p:a")


@pytest.mark.parametrize("text", ["config: [1, 2\n", "- a list\n", "config: 5\n"])
def test_config_malformed_file_raises_config_error(text: str) -> None:
    with pytest.raises(veil.ConfigError):
        PulumiStackConfig.loads(text, "pw")


def test_config_non_string_encryptionsalt_raises_provider_config_error() -> None:
    with pytest.raises(veil.ProviderConfigError):
        PulumiStackConfig.loads("encryptionsalt: [1]\n", "pw")


def test_config_save_and_load_a_file(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(CONFIG_TEXT)
    config = PulumiStackConfig.load(path, CONFIG_STATE["passphrase"])
    config.set("foo:extra", "e")
    config.save()
    assert PulumiStackConfig.load(path).get("foo:extra") == "e"
    assert "# Stack settings for the test stack." in path.read_text()
    assert [p.name for p in tmp_path.iterdir()] == ["Pulumi.test.yaml"]


def test_config_save_keeps_the_file_mode(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.test.yaml"
    path.write_text(CONFIG_TEXT)
    path.chmod(0o640)
    config = PulumiStackConfig.load(path, CONFIG_STATE["passphrase"])
    config.set("foo:extra", "e")
    config.save()
    assert path.stat().st_mode & 0o777 == 0o640


def test_config_save_to_a_missing_folder_raises_config_error(tmp_path: Path) -> None:
    config = PulumiStackConfig.loads(CONFIG_TEXT, CONFIG_STATE["passphrase"])
    with pytest.raises(veil.ConfigError, match="cannot write"):
        config.save(tmp_path / "missing" / "Pulumi.test.yaml")


def test_config_load_of_a_missing_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(veil.ConfigError):
        PulumiStackConfig.load(tmp_path / "Pulumi.none.yaml")


def test_config_repr_shows_no_values(config: PulumiStackConfig) -> None:
    assert CONFIG_VALUE["secure"] not in repr(config)
    assert "us-west-2" not in repr(config)


def test_checkpoints_work_without_ruamel_and_config_says_how_to_install() -> None:
    code = (
        "import sys; sys.modules['ruamel'] = None; sys.modules['ruamel.yaml'] = None\n"
        "import veil\n"
        "from veil.interop import pulumi\n"
        "assert pulumi.load_checkpoint(b'{\"a\": 1}', None) == {'a': 1}\n"
        "try:\n"
        "    pulumi.PulumiStackConfig.loads('')\n"
        "except veil.ConfigError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert "pip install 'veil[pulumi]'" in result.stdout


def test_empty_pulumi_passphrase_variable_is_a_passphrase(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE_FILE", "/nonexistent")
    assert passphrase_from_env() == ""


def test_unreadable_pulumi_passphrase_file_raises_passphrase_required(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE", raising=False)
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE_FILE", str(tmp_path / "missing"))
    with pytest.raises(veil.PassphraseRequiredError):
        passphrase_from_env()


# --- no plaintext in an error's context ------------------------------------------------


def _chain(exc: BaseException) -> list[BaseException]:
    out: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or any(e is seen for seen in out):
            continue
        out.append(e)
        todo.extend((e.__cause__, e.__context__))
    return out


def _assert_chain_holds_no(exc: BaseException, plaintext: str) -> None:
    for e in _chain(exc):
        for item in (*e.args, *vars(e).values(), getattr(e, "object", None)):
            if isinstance(item, bytes):
                assert plaintext.encode() not in item
            else:
                assert plaintext not in str(item)


def test_a_secret_that_is_not_json_leaves_no_plaintext_in_the_error(
    crypter: PassphraseCrypter,
) -> None:
    plaintext = "not json: hunter2-" + secrets.token_hex(4)
    doc = {"outputs": {"pw": {SIG_KEY: SECRET_SIG, "ciphertext": crypter.encrypt(plaintext)}}}
    with pytest.raises(veil.StateFormatError, match=r"\$\.outputs\.pw") as info:
        load_checkpoint(json.dumps(doc), crypter)
    assert info.value.__context__ is None
    _assert_chain_holds_no(info.value, plaintext)


def test_a_plaintext_secret_object_that_is_not_json_is_refused_without_its_text(
    crypter: PassphraseCrypter,
) -> None:
    plaintext = "not json: hunter2-" + secrets.token_hex(4)
    tree = {"pw": {SIG_KEY: SECRET_SIG, "plaintext": plaintext}}
    with pytest.raises(veil.InvalidValueError, match="not JSON") as info:
        dump_checkpoint(tree, crypter)
    assert info.value.__context__ is None
    _assert_chain_holds_no(info.value, plaintext)


def test_a_passphrase_that_is_not_unicode_is_not_kept_in_the_error() -> None:
    passphrase = "pass-" + secrets.token_hex(4) + "\ud800"
    with pytest.raises(veil.InvalidValueError, match="lone surrogate") as info:
        PassphraseCrypter(passphrase)
    assert info.value.__context__ is None
    _assert_chain_holds_no(info.value, passphrase[:-1])


def test_a_value_that_is_not_unicode_is_not_kept_in_the_encryption_error(
    crypter: PassphraseCrypter,
) -> None:
    plaintext = "value-" + secrets.token_hex(4)
    with pytest.raises(veil.InvalidValueError, match="lone surrogate") as info:
        crypter.encrypt(plaintext + "\ud800")
    assert info.value.__context__ is None
    _assert_chain_holds_no(info.value, plaintext)


def test_a_checkpoint_that_is_not_json_is_refused_without_its_text(
    crypter: PassphraseCrypter,
) -> None:
    plaintext = "hunter2-" + secrets.token_hex(4)
    whole = json.dumps({"pw": {SIG_KEY: SECRET_SIG, "plaintext": plaintext}})
    text = whole[:-1]  # truncated
    with pytest.raises(veil.StateFormatError, match="line 1") as info:
        load_checkpoint(text, crypter)
    assert info.value.__context__ is None


def test_the_package_exports_todays_names() -> None:
    import veil.interop.pulumi as pulumi

    assert sorted(pulumi.__all__) == sorted(
        [
            "CHECK_PLAINTEXT",
            "KDF_ITERATIONS",
            "SECRET_SIG",
            "SIG_KEY",
            "PassphraseCrypter",
            "PulumiStackConfig",
            "crypter_from_checkpoint",
            "dump_checkpoint",
            "load_checkpoint",
            "passphrase_from_env",
        ]
    )
    for name in pulumi.__all__:
        assert getattr(pulumi, name) is not None
