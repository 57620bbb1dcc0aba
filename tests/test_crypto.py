"""The value cipher: round trips, known answers, and failing closed."""

from __future__ import annotations

import base64
import json
import math
import pickle
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

import veil
from veil.crypto import (
    DATA_KEY_SIZE,
    TOKEN_PREFIX,
    ValueCipher,
    generate_data_key,
    key_id,
)

VECTORS = json.loads((Path(__file__).parent / "vectors" / "cipher-v1.json").read_text())
KEY = bytes(range(32))
CIPHER = ValueCipher(KEY)
OTHER = ValueCipher(bytes(range(1, 33)))

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=20,
)


def same_json(a: Any, b: Any) -> bool:
    """Equal with types: 1, 1.0 and True are told apart, -0.0 and 0.0 too."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return list(a) == list(b) and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    return bool(a == b)


# --- keys ------------------------------------------------------------------------------


def test_generate_data_key_is_32_random_bytes() -> None:
    a, b = generate_data_key(), generate_data_key()
    assert len(a) == DATA_KEY_SIZE == 32
    assert a != b


def test_key_id_is_16_hex_chars_and_stable() -> None:
    assert key_id(KEY) == VECTORS["key_id"]
    assert len(key_id(KEY)) == 16
    int(key_id(KEY), 16)
    assert CIPHER.key_id == key_id(KEY)


@pytest.mark.parametrize("bad", [b"", b"x" * 31, b"x" * 33, "x" * 32, None])
def test_wrong_size_data_key_is_refused(bad: Any) -> None:
    with pytest.raises(veil.InvalidValueError):
        ValueCipher(bad)


def test_repr_shows_key_id_only() -> None:
    assert repr(CIPHER) == f"ValueCipher(key_id={CIPHER.key_id!r})"
    assert KEY.hex() not in repr(CIPHER)


def test_cipher_cannot_be_pickled() -> None:
    with pytest.raises(veil.SecretPickleError):
        pickle.dumps(CIPHER)


# --- known answers ---------------------------------------------------------------------


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["token"][25:33])
def test_known_answer_seal(vector: dict[str, Any]) -> None:
    cipher = ValueCipher(bytes.fromhex(VECTORS["data_key_hex"]))
    token = cipher._seal(
        vector["value"], bytes.fromhex(vector["aad_hex"]), bytes.fromhex(vector["nonce_hex"])
    )
    assert token == vector["token"]


@pytest.mark.parametrize("vector", VECTORS["vectors"], ids=lambda v: v["token"][25:33])
def test_known_answer_open(vector: dict[str, Any]) -> None:
    cipher = ValueCipher(bytes.fromhex(VECTORS["data_key_hex"]))
    value = cipher.open(vector["token"], bytes.fromhex(vector["aad_hex"]))
    assert same_json(value, vector["value"])


def test_known_answer_mac() -> None:
    for case in VECTORS["mac"]:
        data, tag = bytes.fromhex(case["data_hex"]), bytes.fromhex(case["tag_hex"])
        assert CIPHER.mac(data) == tag
        assert CIPHER.verify_mac(data, tag)


def test_token_matches_the_documented_construction() -> None:
    """docs/format.md, rebuilt from primitives: HKDF info strings, AAD, padding, base64."""

    def hkdf(info: bytes, n: int) -> bytes:
        return HKDF(algorithm=hashes.SHA256(), length=n, salt=None, info=info).derive(KEY)

    kid = hkdf(b"veil/v1/key-id", 8).hex()
    aad = b"stack\x00dev"
    nonce = bytes(12)
    plaintext = b'"hunter2"'.ljust(48 - 28)
    full_aad = b"veil/v1/value\x00" + kid.encode() + b"\x00" + aad
    sealed = AESGCM(hkdf(b"veil/v1/value-key", 32)).encrypt(nonce, plaintext, full_aad)
    expected = f"veil:v1:{kid}:" + base64.b64encode(nonce + sealed).decode()
    assert CIPHER._seal("hunter2", aad, nonce) == expected
    mac_key = hkdf(b"veil/v1/mac-key", 32)
    import hmac as _hmac

    assert CIPHER.mac(b"doc") == _hmac.new(mac_key, b"doc", "sha256").digest()


# --- round trips -----------------------------------------------------------------------


@given(json_values, st.binary(max_size=40))
def test_any_json_value_round_trips_with_its_type(value: Any, aad: bytes) -> None:
    assert same_json(CIPHER.open(CIPHER.seal(value, aad), aad), value)


@pytest.mark.parametrize("value", [1, 1.0, True, 0, 0.0, False, None, "1", [1], {"1": 1}])
def test_numbers_and_bools_keep_their_types(value: Any) -> None:
    assert same_json(CIPHER.open(CIPHER.seal(value, b""), b""), value)


def test_tuple_comes_back_as_list() -> None:
    assert CIPHER.open(CIPHER.seal((1, "a"), b""), b"") == [1, "a"]


def test_sealing_twice_gives_different_tokens() -> None:
    assert CIPHER.seal("x", b"") != CIPHER.seal("x", b"")


def test_token_is_ascii_without_whitespace() -> None:
    token = CIPHER.seal("ünïcode\n\t value", b"a")
    assert token.isascii()
    assert not any(c.isspace() for c in token)
    assert token.startswith(TOKEN_PREFIX + CIPHER.key_id + ":")


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), [float("-inf")], {1: "a"}, {"a": {None: 1}}, b"bytes", {1, 2}],
)
def test_values_json_cannot_carry_exactly_are_refused(value: Any) -> None:
    with pytest.raises(veil.InvalidValueError):
        CIPHER.seal(value, b"")


def test_circular_value_is_refused() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(veil.InvalidValueError):
        CIPHER.seal(loop, b"")


def test_non_bytes_aad_is_refused_on_seal() -> None:
    with pytest.raises(veil.InvalidValueError):
        CIPHER.seal("x", "not bytes")  # type: ignore[arg-type]


# --- padding ---------------------------------------------------------------------------


@given(
    st.text(
        max_size=18,
        alphabet=st.characters(
            codec="ascii", exclude_categories=["Cc"], exclude_characters='"\\\\'
        ),
    )
)
def test_short_strings_of_any_length_have_the_same_token_length(value: str) -> None:
    assert len(CIPHER.seal(value, b"")) == len(CIPHER.seal("", b""))


@given(st.integers(min_value=0, max_value=20000))
def test_token_length_is_a_bucket(n: int) -> None:
    token = CIPHER.seal("a" * n, b"")
    binary = len(token[25:]) * 3 // 4
    assert binary % 48 == 0
    needed = n + 2 + 28
    assert binary >= needed
    assert binary - needed < max(48, needed // 16 + 48)


# --- failing closed --------------------------------------------------------------------


def flip_bit(text: str, bit: int) -> str:
    data = bytearray(text.encode("ascii"))
    data[bit // 8] ^= 1 << (bit % 8)
    return data.decode("latin-1")


@settings(max_examples=300)
@given(json_values, st.data())
def test_any_single_bit_change_fails_to_open(value: Any, data: st.DataObject) -> None:
    token = CIPHER.seal(value, b"ctx")
    bit = data.draw(st.integers(min_value=0, max_value=len(token) * 8 - 1))
    with pytest.raises(veil.DecryptionError):
        CIPHER.open(flip_bit(token, bit), b"ctx")


def test_every_single_bit_change_of_one_token_fails_to_open() -> None:
    token = CIPHER.seal({"pw": "hunter2"}, b"ctx")
    for bit in range(len(token) * 8):
        with pytest.raises(veil.DecryptionError):
            CIPHER.open(flip_bit(token, bit), b"ctx")


@given(json_values, st.binary(max_size=20), st.binary(max_size=20))
def test_other_associated_data_fails_to_open(value: Any, aad: bytes, other: bytes) -> None:
    if aad == other:
        return
    with pytest.raises(veil.DecryptionError):
        CIPHER.open(CIPHER.seal(value, aad), other)


def test_other_key_fails_to_open_and_names_both_key_ids() -> None:
    token = OTHER.seal("x", b"")
    with pytest.raises(veil.DecryptionError) as info:
        CIPHER.open(token, b"")
    assert OTHER.key_id in str(info.value)
    assert CIPHER.key_id in str(info.value)


def test_other_key_with_forged_key_id_fails_to_open() -> None:
    token = OTHER.seal("x", b"")
    forged = TOKEN_PREFIX + CIPHER.key_id + token[24:]
    with pytest.raises(veil.DecryptionError):
        CIPHER.open(forged, b"")


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-1],
        lambda t: t[:-4],
        lambda t: t + "=",
        lambda t: t + "AAAA",
        lambda t: t[:30] + "\n" + t[30:],
        lambda t: t[:30] + "!" + t[31:],
        lambda t: t[:30] + "é" + t[31:],
        lambda t: t.replace("veil:v1:", "veil:v2:"),
        lambda t: t.replace("veil:v1:", ""),
        lambda t: t[:25],
        lambda t: t[:24],
        lambda t: "",
        lambda t: t[:25] + "AAAA",
        lambda t: t[:25] + base64.b64encode(bytes(29)).decode(),
    ],
)
def test_malformed_token_raises_decryption_error(mangle: Any) -> None:
    token = CIPHER.seal("hunter2", b"")
    with pytest.raises(veil.DecryptionError):
        CIPHER.open(mangle(token), b"")


@pytest.mark.parametrize("token", [None, 1, b"veil:v1:", ["x"]])
def test_non_string_token_raises_decryption_error(token: Any) -> None:
    with pytest.raises(veil.DecryptionError):
        CIPHER.open(token, b"")


def test_non_bytes_aad_on_open_raises_decryption_error() -> None:
    token = CIPHER.seal("x", b"")
    with pytest.raises(veil.DecryptionError):
        CIPHER.open(token, "")  # type: ignore[arg-type]


def test_authentic_non_json_plaintext_raises_decryption_error() -> None:
    """Only a key holder could write this; it still fails with the one error type."""
    nonce = bytes(12)
    raw = CIPHER._aead.encrypt(nonce, b"not json".ljust(20), CIPHER._aad_prefix + b"")
    token = CIPHER._token_head + base64.b64encode(nonce + raw).decode()
    with pytest.raises(veil.DecryptionError):
        CIPHER.open(token, b"")


def test_error_message_never_holds_the_plaintext() -> None:
    token = CIPHER.seal("hunter2-plaintext", b"a")
    with pytest.raises(veil.DecryptionError) as info:
        CIPHER.open(token, b"b")
    assert "hunter2" not in str(info.value)


def test_newer_format_version_says_to_upgrade() -> None:
    token = CIPHER.seal("x", b"").replace("veil:v1:", "veil:v9:")
    with pytest.raises(veil.DecryptionError, match="upgrade veil"):
        CIPHER.open(token, b"")


# --- MAC -------------------------------------------------------------------------------


def test_mac_is_32_bytes_and_verifies() -> None:
    tag = CIPHER.mac(b"document")
    assert len(tag) == 32
    assert CIPHER.verify_mac(b"document", tag)


@pytest.mark.parametrize(
    ("data", "tag"),
    [
        (b"document!", None),
        (b"document", b""),
        (b"document", b"x" * 32),
        (b"document", "not bytes"),
    ],
)
def test_verify_mac_refuses_wrong_data_or_tag(data: bytes, tag: Any) -> None:
    good = CIPHER.mac(b"document")
    assert not CIPHER.verify_mac(data, good if tag is None else tag)


def test_mac_key_differs_per_data_key() -> None:
    assert CIPHER.mac(b"d") != OTHER.mac(b"d")


def test_an_authentic_value_that_is_not_json_leaves_no_plaintext_in_the_error() -> None:

    from veil.crypto import ValueCipher, generate_data_key

    cipher = ValueCipher(generate_data_key())
    good = cipher.seal("x", b"aad")
    # Re-encrypt a non-JSON plaintext the same way a key holder could: swap the
    # plaintext inside a token by sealing through the cipher's own AEAD.
    raw = base64.b64decode(good.split(":", 3)[3])
    nonce = raw[:12]
    aead: AESGCM = cipher._aead  # type: ignore[attr-defined]
    prefix: bytes = cipher._aad_prefix  # type: ignore[attr-defined]
    forged_ct = aead.encrypt(nonce, b"not-json TOPSECRET-PLAINTEXT", prefix + b"aad")
    forged = good.rsplit(":", 1)[0] + ":" + base64.b64encode(nonce + forged_ct).decode()
    with pytest.raises(veil.DecryptionError) as info:
        cipher.open(forged, b"aad")
    assert info.value.__context__ is None
    assert info.value.__cause__ is None
    assert "TOPSECRET" not in repr(info.value.args)
