"""The value cipher: data keys, subkeys, and sealing single JSON values.

Each stack has one random 32-byte *data key* (:func:`generate_data_key`). A
:class:`ValueCipher` derives two subkeys from it with HKDF-SHA256: one AES-256-GCM key
that seals values, and one HMAC-SHA256 key for the document MAC; a third, for
fingerprints of ephemeral values (:meth:`ValueCipher.fingerprint`), is kept apart from
both. A sealed value is an
ASCII string (see ``docs/format.md``)::

    veil:v1:<key id, 16 hex>:<base64(nonce || ciphertext || tag)>

What a caller may rely on:

- ``open(seal(v, aad), aad) == v`` with types kept (``1``, ``1.0`` and ``True`` stay
  apart) for every JSON value: ``str``, ``int``, finite ``float``, ``bool``, ``None``,
  lists and dicts with ``str`` keys. Tuples come back as lists.
- A token opened with other associated data, under another key, or changed in any way
  raises :class:`veil.DecryptionError`, and nothing else.
- The token length reveals the value's length only to within a bucket (48 bytes of
  binary for values up to about 1.5 KiB, at most 1/16 of the length above that).

This module knows no document and no provider.
"""

from __future__ import annotations

import hmac
import json
import math
import os
from binascii import Error as _BinasciiError
from binascii import a2b_base64, b2a_base64
from collections.abc import Sequence
from hashlib import sha256
from json.encoder import encode_basestring_ascii as _encode_str
from typing import Any, Final, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import DecryptionError, InvalidValueError, SecretPickleError

__all__ = [
    "DATA_KEY_SIZE",
    "FINGERPRINT_PREFIX",
    "TOKEN_PREFIX",
    "ValueCipher",
    "generate_data_key",
    "key_id",
]

DATA_KEY_SIZE: Final = 32
"""Length in bytes of a stack's data key."""

TOKEN_PREFIX: Final = "veil:v1:"  # noqa: S105  (a format marker, not a password)
"""Every sealed value of format version 1 starts with this."""

FINGERPRINT_PREFIX: Final = "fp:v1:"
"""Every fingerprint starts with this: ``fp:v1:<key id, 16 hex>:<HMAC, 32 hex>``."""

_KEY_ID_LEN: Final = 16  # hex characters
_NONCE_LEN: Final = 12
_TAG_LEN: Final = 16
_OVERHEAD: Final = _NONCE_LEN + _TAG_LEN
# Offsets in a token: "veil:v1:" + 16 hex + ":" + base64.
_KID_START: Final = len(TOKEN_PREFIX)
_KID_END: Final = _KID_START + _KEY_ID_LEN
_B64_START: Final = _KID_END + 1

# HKDF info strings (the salt is empty); changing any of them breaks every stored file.
_INFO_KEY_ID: Final = b"veil/v1/key-id"
_INFO_VALUE_KEY: Final = b"veil/v1/value-key"
_INFO_MAC_KEY: Final = b"veil/v1/mac-key"
_INFO_FINGERPRINT_KEY: Final = b"veil/v1/fingerprint-key"
_FINGERPRINT_DOMAIN: Final = b"veil/v1/fingerprint\x00"
_FINGERPRINT_LEN: Final = 16  # bytes of HMAC-SHA256 kept: 128 bits, 32 hex characters
_AAD_PREFIX: Final = b"veil/v1/value\x00"

# Padding buckets for the binary (nonce || ciphertext || tag) length N: multiples of
# 48 bytes (64 base64 characters) up to 1536 bytes, then steps of 48 * 2**j with
# 2**j <= (N - 1) // 768, i.e. between N/32 and N/16. Every N is a multiple of 3,
# so the base64 text has no "=" padding and no unused bits: it is canonical.
_SMALL_STEP: Final = 48
_SMALL_LIMIT: Final = 1536

_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, separators=(",", ":"), check_circular=True
)
_DECODER: Final = json.JSONDecoder()
_JSON_SCALARS: Final = (str, int, float, bool, type(None))
_MAX_DEPTH: Final = 512


def generate_data_key() -> bytes:
    """Return a fresh random data key of :data:`DATA_KEY_SIZE` bytes."""
    return os.urandom(DATA_KEY_SIZE)


def _hkdf(data_key: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=info).derive(data_key)


def _check_key(data_key: object) -> bytes:
    if not isinstance(data_key, bytes) or len(data_key) != DATA_KEY_SIZE:
        raise InvalidValueError(
            f"a data key must be {DATA_KEY_SIZE} bytes (got {type(data_key).__name__}"
            f"{' of length ' + str(len(data_key)) if isinstance(data_key, bytes) else ''})"
        )
    return data_key


def key_id(data_key: bytes) -> str:
    """A stable, non-secret 16-hex-character fingerprint of a data key.

    It is derived with HKDF, so it reveals nothing about the key; it tells which key
    sealed a value.
    """
    return _hkdf(_check_key(data_key), _INFO_KEY_ID, _KEY_ID_LEN // 2).hex()


def _is_key_id(kid: str) -> bool:
    return len(kid) == _KEY_ID_LEN and all(c in "0123456789abcdef" for c in kid)


def _malformed(token: object) -> str:
    if not isinstance(token, str):
        return f"a sealed value must be a string, not {type(token).__name__}"
    if token.startswith("veil:") and not token.startswith(TOKEN_PREFIX):
        return (
            "the sealed value uses a format version this veil does not know; "
            "upgrade veil to read it"
        )
    return (
        f"not a veil sealed value (expected '{TOKEN_PREFIX}<key id>:<base64>'); "
        "the text was changed or truncated"
    )


def _padded_length(n: int) -> int:
    """The bucketed binary length for a minimum binary length ``n`` (see the buckets above)."""
    if n <= _SMALL_LIMIT:
        step = _SMALL_STEP
    else:
        step = _SMALL_STEP << (((n - 1) // (_SMALL_LIMIT // 2)).bit_length() - 1)
    return -(-n // step) * step


def _check_json(value: Any, depth: int = 0) -> None:
    """Refuse what JSON would silently change: non-str dict keys, non-JSON types."""
    if depth > _MAX_DEPTH:
        raise InvalidValueError("a value to seal is nested too deeply")
    if isinstance(value, dict):
        for k, v in value.items():
            if type(k) is not str:
                raise InvalidValueError(
                    f"a value to seal has a dict key of type {type(k).__name__}; "
                    "JSON keys must be str"
                )
            if not isinstance(v, _JSON_SCALARS):
                _check_json(v, depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            if not isinstance(v, _JSON_SCALARS):
                _check_json(v, depth + 1)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidValueError("a value to seal is NaN or infinite; JSON has no such number")
    elif not isinstance(value, _JSON_SCALARS):
        raise InvalidValueError(
            f"a value of type {type(value).__name__} cannot be sealed; "
            "use str, int, float, bool, None, list or dict"
        )


class ValueCipher:
    """Seals and opens single JSON values under one stack's data key.

    One instance per data key; it is cheap to call and safe to share between threads
    (it holds no mutable state). Its ``repr`` shows only the key id.
    """

    __slots__ = ("_aad_prefix", "_aead", "_fingerprint_key", "_mac_key", "_token_head", "key_id")

    key_id: str

    def __init__(self, data_key: bytes) -> None:
        """Derive the value subkey and the MAC subkey from ``data_key`` (32 bytes)."""
        _check_key(data_key)
        self.key_id = key_id(data_key)
        self._aead = AESGCM(_hkdf(data_key, _INFO_VALUE_KEY, 32))
        self._mac_key = _hkdf(data_key, _INFO_MAC_KEY, 32)
        self._fingerprint_key = _hkdf(data_key, _INFO_FINGERPRINT_KEY, 32)
        self._aad_prefix = _AAD_PREFIX + self.key_id.encode("ascii") + b"\x00"
        self._token_head = TOKEN_PREFIX + self.key_id + ":"

    def __repr__(self) -> str:
        return f"ValueCipher(key_id={self.key_id!r})"

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise SecretPickleError("a ValueCipher holds a data key and cannot be pickled")

    def seal(self, value: Any, aad: bytes) -> str:
        """Encrypt a JSON value bound to ``aad``; return the ASCII sealed value.

        Raises :class:`veil.InvalidValueError` for a value JSON cannot carry exactly.
        """
        return self._seal(value, aad, os.urandom(_NONCE_LEN))

    def _seal(self, value: Any, aad: bytes, nonce: bytes) -> str:
        # Fast path first: most secrets are strings.
        if type(value) is str:
            text = _encode_str(value)
        else:
            _check_json(value)
            try:
                text = _ENCODER.encode(value)
            except (TypeError, ValueError) as exc:  # circular references
                raise InvalidValueError(
                    f"the value cannot be sealed: {type(exc).__name__}"
                ) from None
        # JSON allows trailing whitespace, so the padded text is itself valid JSON.
        plaintext = text.ljust(_padded_length(len(text) + _OVERHEAD) - _OVERHEAD).encode("ascii")
        try:
            sealed = self._aead.encrypt(nonce, plaintext, self._aad_prefix + aad)
        except TypeError:
            raise InvalidValueError("associated data must be bytes") from None
        return self._token_head + b2a_base64(nonce + sealed, newline=False).decode("ascii")

    def seal_many(self, values: Sequence[Any], aads: Sequence[bytes]) -> list[str]:
        """:meth:`seal` of each value with its associated data, in order (the nonces
        drawn from one ``os.urandom`` call)."""
        if len(values) != len(aads):
            raise InvalidValueError("seal_many needs one associated data per value")
        nonces = os.urandom(_NONCE_LEN * len(values))
        return [
            self._seal(value, aad, nonces[i * _NONCE_LEN : (i + 1) * _NONCE_LEN])
            for i, (value, aad) in enumerate(zip(values, aads, strict=True))
        ]

    def open(self, token: str, aad: bytes) -> Any:
        """Decrypt a sealed value made with the same key and ``aad``.

        Raises :class:`veil.DecryptionError` for anything wrong: malformed, truncated,
        tampered with, other associated data, another key.
        """
        # One try block: it costs nothing when nothing fails, and every failure below
        # becomes a DecryptionError.
        failure: str | None
        try:
            if not token.startswith(self._token_head):
                raise DecryptionError(self._open_failure_message(token))
            b64 = token[_B64_START:]
            raw = a2b_base64(b64)
            # a2b_base64 skips stray characters; an exact length makes the text canonical.
            if len(raw) * 4 != len(b64) * 3 or len(raw) < _OVERHEAD + 2:
                raise DecryptionError(_malformed(token))
            text = (
                self._aead.decrypt(raw[:_NONCE_LEN], raw[_NONCE_LEN:], self._aad_prefix + aad)
                .decode("ascii")
                .rstrip()
            )
            value, end = _DECODER.raw_decode(text)
        except InvalidTag:
            failure = (
                "a sealed value does not open: it was changed, or moved from another stack or path"
            )
        except (_BinasciiError, UnicodeError):
            failure = _malformed(token)
        except (TypeError, AttributeError):
            failure = (
                f"cannot open a {type(token).__name__} with associated data of type "
                f"{type(aad).__name__}; a sealed value is a str and associated data bytes"
            )
        except ValueError:
            # Non-ASCII text, or authentic but not JSON (only a key holder could do that).
            failure = _malformed(token)
        else:
            failure = None
        if failure is not None:
            # Raised here, outside the except blocks: the caught exception (a decode or
            # JSON error holding the decrypted text) must not ride along as __context__.
            raise DecryptionError(failure)
        if end != len(text):
            raise DecryptionError(_malformed(token))
        return value

    def _open_failure_message(self, token: object) -> str:
        if isinstance(token, str) and token.startswith(TOKEN_PREFIX):
            kid = token[_KID_START:_KID_END]
            if _is_key_id(kid) and kid != self.key_id and token[_KID_END : _KID_END + 1] == ":":
                return (
                    f"a sealed value was made with another data key (key id {kid}; "
                    f"this stack's key id is {self.key_id})"
                )
        return _malformed(token)

    def mac(self, data: bytes) -> bytes:
        """HMAC-SHA256 of ``data`` under the MAC subkey (32 bytes)."""
        return hmac.digest(self._mac_key, data, sha256)

    def fingerprint(self, stack: str, path: Sequence[str | int], value: Any) -> str:
        """A keyed token of a JSON ``value`` at ``path`` of ``stack``:
        ``fp:v1:<key id>:<32 hex>``.

        Equal for an equal value at the same stack and path under the same data key,
        in any process; different (but for a 2**-128 chance) for another value, path,
        stack or key. HMAC-SHA256 under a subkey of its own, over a domain string of its
        own, so no fingerprint is ever a document MAC or a config digest. It holds no
        part of the value, and cannot be checked against guesses without the data key.
        """
        _check_json(value)
        try:
            text = json.dumps(
                [stack, list(path), value],
                sort_keys=True,
                separators=(",", ":"),
                ensure_ascii=True,
                allow_nan=False,
            )
        except (TypeError, ValueError):
            raise InvalidValueError("a value to fingerprint must be a JSON value") from None
        tag = hmac.digest(self._fingerprint_key, _FINGERPRINT_DOMAIN + text.encode("ascii"), sha256)
        return f"{FINGERPRINT_PREFIX}{self.key_id}:{tag[:_FINGERPRINT_LEN].hex()}"

    def verify_mac(self, data: bytes, tag: bytes) -> bool:
        """Whether ``tag`` is the MAC of ``data``, compared in constant time."""
        if not isinstance(tag, bytes):
            return False
        return hmac.compare_digest(hmac.digest(self._mac_key, data, sha256), tag)
