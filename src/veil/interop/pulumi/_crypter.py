"""The key of a Pulumi passphrase stack and Pulumi's ``v1:`` value format.

The format, as Pulumi defines it:

- ``encryptionsalt = "v1:" + b64(salt) + ":" + Enc("pulumi")`` with an 8-byte random salt;
- ``key = PBKDF2-HMAC-SHA256(passphrase, salt, 1,000,000 iterations, 32 bytes)``;
- ``Enc(x) = "v1:" + b64(nonce) + ":" + b64(AES-256-GCM(key, nonce, x))`` with a 12-byte
  random nonce, the 16-byte tag appended, no associated data, standard base64 with
  padding;
- config ``secure:`` values encrypt the raw string; state secrets encrypt the JSON
  encoding of the value, inside ``{SIG_KEY: SECRET_SIG, "ciphertext": ...}``.

Pulumi's format binds a ciphertext to nothing but the key: unlike veil's own state, a
Pulumi ciphertext can be moved between properties or stacks sharing a passphrase and
salt without detection. Use veil's own format where that matters.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Final, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from ..._secret import Secret
from ...errors import (
    DecryptionError,
    IncorrectPassphraseError,
    InvalidValueError,
    PassphraseRequiredError,
    ProviderConfigError,
    SecretPickleError,
)

__all__ = [
    "CHECK_PLAINTEXT",
    "KDF_ITERATIONS",
    "PassphraseCrypter",
    "passphrase_from_env",
]

KDF_ITERATIONS: Final = 1_000_000
"""PBKDF2-HMAC-SHA256 iterations of Pulumi's passphrase provider (fixed by the format)."""
CHECK_PLAINTEXT: Final = "pulumi"
"""The plaintext of the check value in an ``encryptionsalt``."""

_KEY_SIZE: Final = 32
_SALT_SIZE: Final = 8
_NONCE_SIZE: Final = 12
_TAG_SIZE: Final = 16

# --- key derivation, cached per process -------------------------------------------------

# PBKDF2 with a million iterations costs a noticeable fraction of a second; a program
# that opens the same stack several times derives its key once. The cache is keyed by
# an HMAC of the passphrase under the salt, so it never holds the passphrase itself.
_KEY_CACHE_SIZE: Final = 32
_key_cache: OrderedDict[bytes, bytes] = OrderedDict()
_key_cache_lock = threading.Lock()


def _derive_key(passphrase: bytes, salt: bytes) -> bytes:
    cache_key = salt + hmac.new(salt, passphrase, hashlib.sha256).digest()
    with _key_cache_lock:
        key = _key_cache.get(cache_key)
        if key is not None:
            _key_cache.move_to_end(cache_key)
            return key
    key = PBKDF2HMAC(
        algorithm=hashes.SHA256(), length=_KEY_SIZE, salt=salt, iterations=KDF_ITERATIONS
    ).derive(passphrase)
    with _key_cache_lock:
        _key_cache[cache_key] = key
        while len(_key_cache) > _KEY_CACHE_SIZE:
            _key_cache.popitem(last=False)
    return key


# --- the v1 value format ------------------------------------------------------------------


def _b64decode(text: str) -> bytes | None:
    """Strict standard base64 with padding; None unless ``text`` is its canonical form.

    Canonical only: a flipped bit in the unused trailing bits of the last character
    must not decode to the same bytes, or tampering could go unnoticed.
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeEncodeError):
        return None
    if base64.b64encode(raw).decode("ascii") != text:
        return None
    return raw


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _parse_value(value: object) -> tuple[bytes, bytes]:
    """(nonce, ciphertext-with-tag) of a ``v1:`` value, or DecryptionError."""
    if not isinstance(value, str):
        raise DecryptionError(f"a Pulumi secret value must be a string, not {type(value).__name__}")
    parts = value.split(":")
    if len(parts) != 3 or parts[0] != "v1":
        raise DecryptionError(
            "not a Pulumi secret value: expected 'v1:<base64 nonce>:<base64 ciphertext>'"
        )
    nonce = _b64decode(parts[1])
    sealed = _b64decode(parts[2])
    if nonce is None or sealed is None:
        raise DecryptionError("a Pulumi secret value holds invalid base64: it was damaged")
    if len(nonce) != _NONCE_SIZE or len(sealed) < _TAG_SIZE:
        raise DecryptionError("a Pulumi secret value is truncated or has a wrong nonce size")
    return nonce, sealed


def _encode_passphrase(passphrase: object) -> bytes:
    if isinstance(passphrase, Secret):
        passphrase = passphrase.reveal()
    if not isinstance(passphrase, str):
        raise InvalidValueError(
            f"the passphrase must be a str (or a Secret holding one), "
            f"not {type(passphrase).__name__}"
        )
    # The error is raised outside the except block: the UnicodeEncodeError holds the
    # passphrase (.object) and must not become its __context__.
    try:
        return passphrase.encode("utf-8")
    except UnicodeEncodeError:
        pass
    raise InvalidValueError("the passphrase is not valid Unicode text (it holds a lone surrogate)")


def _parse_encryptionsalt(encryptionsalt: object) -> tuple[bytes, str]:
    """(salt, check value) of an ``encryptionsalt``, or ProviderConfigError."""
    if not isinstance(encryptionsalt, str):
        raise ProviderConfigError(
            f"a Pulumi encryptionsalt must be a string, not {type(encryptionsalt).__name__}"
        )
    parts = encryptionsalt.split(":", 2)
    if len(parts) != 3 or parts[0] != "v1":
        raise ProviderConfigError(
            "not a Pulumi encryptionsalt: expected 'v1:<base64 salt>:v1:<nonce>:<ciphertext>' "
            "(copy it unchanged from Pulumi.<stack>.yaml or the checkpoint's "
            "secrets_providers.state.salt)"
        )
    salt = _b64decode(parts[1])
    if salt is None or len(salt) < _SALT_SIZE:
        raise ProviderConfigError(
            "the salt in this Pulumi encryptionsalt is not valid base64 of at least 8 bytes: "
            "the value was damaged"
        )
    check = parts[2]
    try:
        _parse_value(check)
    except DecryptionError:
        raise ProviderConfigError(
            "the check value in this Pulumi encryptionsalt is malformed: the value was damaged"
        ) from None
    return salt, check


class PassphraseCrypter:
    """The key of one Pulumi passphrase stack: encrypts and decrypts ``v1:`` values.

    ``PassphraseCrypter(passphrase, encryptionsalt)`` opens an existing stack: the key
    is derived from the passphrase and the salt, and the check value in the salt must
    decrypt to ``"pulumi"``, else :class:`veil.IncorrectPassphraseError`. A malformed
    ``encryptionsalt`` raises :class:`veil.ProviderConfigError` (it is the stored state
    of Pulumi's passphrase provider).

    ``PassphraseCrypter(passphrase)`` creates a new stack key: a random 8-byte salt and
    a fresh check value, available as :attr:`encryptionsalt` to write into
    ``Pulumi.<stack>.yaml`` or a checkpoint.

    The empty passphrase is accepted, as Pulumi accepts it
    (``PULUMI_CONFIG_PASSPHRASE=""``); it protects nothing.

    Key derivation (PBKDF2, a million iterations) is cached per process for each
    passphrase and salt, so opening the same stack again is instant. The instance keeps
    the derived key, never the passphrase; its ``repr`` shows the salt only, and it
    cannot be pickled.
    """

    __slots__ = ("_aead", "_encryptionsalt", "_reuse", "_reuse_lock", "_salt")

    def __init__(self, passphrase: str | Secret[str], encryptionsalt: str | None = None) -> None:
        secret = _encode_passphrase(passphrase)
        if encryptionsalt is None:
            salt = os.urandom(_SALT_SIZE)
            aead = AESGCM(_derive_key(secret, salt))
            check = _encrypt(aead, CHECK_PLAINTEXT)
            encryptionsalt = f"v1:{_b64encode(salt)}:{check}"
        else:
            salt, check = _parse_encryptionsalt(encryptionsalt)
            aead = AESGCM(_derive_key(secret, salt))
            try:
                ok = hmac.compare_digest(_decrypt(aead, check).encode(), CHECK_PLAINTEXT.encode())
            except DecryptionError:
                ok = False
            if not ok:
                raise IncorrectPassphraseError(
                    "incorrect passphrase for this Pulumi stack: the encryptionsalt's check "
                    "value does not decrypt. Use the passphrase the stack was created with "
                    "(PULUMI_CONFIG_PASSPHRASE)."
                )
        self._aead = aead
        self._salt = salt
        self._encryptionsalt: str = encryptionsalt
        # Ciphertexts of Secret objects read with this key, so that writing an unchanged
        # secret back reuses its ciphertext instead of churning the file.
        self._reuse: dict[int, tuple[Secret[Any], bytes, str]] = {}
        self._reuse_lock = threading.Lock()

    @property
    def encryptionsalt(self) -> str:
        """The stack's ``encryptionsalt`` (``v1:<salt>:<check value>``); not secret."""
        return self._encryptionsalt

    def encrypt(self, plaintext: str) -> str:
        """``v1:<nonce>:<ciphertext>`` of a string, with a fresh random nonce."""
        if not isinstance(plaintext, str):
            raise InvalidValueError(
                f"encrypt() takes a str, not {type(plaintext).__name__}; "
                "encode other values first (json.dumps)"
            )
        return _encrypt(self._aead, plaintext)

    def decrypt(self, ciphertext: str) -> str:
        """The string a ``v1:`` value holds.

        Raises :class:`veil.DecryptionError` for anything wrong: not a ``v1:`` value,
        invalid base64, a wrong nonce size, truncated, tampered with, or sealed under
        another key.
        """
        return _decrypt(self._aead, ciphertext)

    def same_key(self, encryptionsalt: str) -> bool:
        """Whether ``encryptionsalt`` names the same salt (hence the same key) as this one."""
        try:
            salt, _ = _parse_encryptionsalt(encryptionsalt)
        except ProviderConfigError:
            return False
        return hmac.compare_digest(salt, self._salt)

    def __repr__(self) -> str:
        return f"PassphraseCrypter(encryptionsalt={self._encryptionsalt!r})"

    def __reduce__(self) -> NoReturn:
        raise SecretPickleError(
            "a PassphraseCrypter holds a stack key and cannot be pickled; "
            "pickle the encryptionsalt and ask for the passphrase again"
        )

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        self.__reduce__()

    # Reuse of ciphertexts, by identity of the Secret object (never by value: equal
    # plaintexts elsewhere must not get equal ciphertexts).
    _REUSE_LIMIT: Final = 100_000

    def remember_ciphertext(self, secret: Secret[Any], plaintext: str, ciphertext: str) -> None:
        """Record that ``secret`` (holding ``plaintext``) was read from ``ciphertext``, so
        that writing it back unchanged reuses the ciphertext (no churn in the file)."""
        digest = hashlib.sha256(plaintext.encode("utf-8", "surrogatepass")).digest()
        with self._reuse_lock:
            if len(self._reuse) >= self._REUSE_LIMIT:
                self._reuse.clear()
            self._reuse[id(secret)] = (secret, digest, ciphertext)

    def reused_ciphertext(self, secret: Secret[Any] | None, plaintext: str) -> str | None:
        """The ciphertext ``secret`` was read from, if it still holds ``plaintext``;
        else None (encrypt it afresh)."""
        if secret is None:
            return None
        with self._reuse_lock:
            entry = self._reuse.get(id(secret))
        if entry is None or entry[0] is not secret:
            return None
        digest = hashlib.sha256(plaintext.encode("utf-8", "surrogatepass")).digest()
        # The value inside a Secret may be a mutable dict or list: reuse only if unchanged.
        return entry[2] if hmac.compare_digest(digest, entry[1]) else None


def _encrypt(aead: AESGCM, plaintext: str) -> str:
    try:
        data = plaintext.encode("utf-8")
    except UnicodeEncodeError:
        data = None  # raised below, without the plaintext as __context__.object
    if data is None:
        raise InvalidValueError("the value is not valid Unicode text (it holds a lone surrogate)")
    nonce = os.urandom(_NONCE_SIZE)
    return f"v1:{_b64encode(nonce)}:{_b64encode(aead.encrypt(nonce, data, None))}"


def _decrypt(aead: AESGCM, ciphertext: object) -> str:
    nonce, sealed = _parse_value(ciphertext)
    try:
        data = aead.decrypt(nonce, sealed, None)
    except InvalidTag:
        raise DecryptionError(
            "a Pulumi secret value does not decrypt: it was tampered with or damaged, or it "
            "belongs to another stack (another passphrase or encryptionsalt)"
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass  # raised below, without the plaintext as __context__.object
    raise DecryptionError("a Pulumi secret value decrypts to bytes that are not UTF-8")


def passphrase_from_env() -> str:
    """The passphrase Pulumi would use: ``PULUMI_CONFIG_PASSPHRASE`` (even if empty), else
    the stripped contents of the file named by ``PULUMI_CONFIG_PASSPHRASE_FILE``.

    Raises :class:`veil.PassphraseRequiredError` when neither is set or the file cannot
    be read.
    """
    phrase = os.environ.get("PULUMI_CONFIG_PASSPHRASE")
    if phrase is not None:
        return phrase
    file = os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE")
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise PassphraseRequiredError(
                f"cannot read PULUMI_CONFIG_PASSPHRASE_FILE ({file}): {exc.__class__.__name__}"
            ) from None
    raise PassphraseRequiredError(
        "a passphrase is needed for this Pulumi stack: pass it, or set "
        "PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE"
    )
