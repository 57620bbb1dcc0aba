"""`passphrase://`: a data key wrapped under a key derived from a passphrase.

The passphrase comes from, in order: the constructor argument, ``VEIL_PASSPHRASE``,
the file named by ``VEIL_PASSPHRASE_FILE`` (one trailing newline removed), or a prompt
on the terminal (asked twice for a new stack). Without any of these and without a
terminal, :class:`veil.PassphraseRequiredError` is raised at once.

Key derivation: Argon2id (default: 64 MiB, 3 iterations, 4 lanes) or
PBKDF2-HMAC-SHA256 (``kdf="pbkdf2"``, 600,000 iterations), with a random 16-byte salt.
The salt and parameters are stored in the description, so defaults can be raised
later and old stacks still open. A *verifier* (an HMAC of a constant under a key
derived from the passphrase) is stored too, so a wrong passphrase is reported as
:class:`veil.IncorrectPassphraseError` rather than as a corrupt key.

Each derivation runs at most once per process for a given passphrase, salt and
parameters: the derived keys are cached in this module, keyed by an HMAC (under a
random per-process key) of those three, so the cache key is not a fast hash of the
passphrase. :func:`clear_cache` empties it.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import sys
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final
from urllib.parse import parse_qsl, urlencode

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from .._secret import Secret
from ..errors import (
    IncorrectPassphraseError,
    KeyUnwrapError,
    PassphraseRequiredError,
    ProviderConfigError,
)
from .base import SecretsProvider, context_bytes

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["PassphraseProvider", "clear_cache", "derivation_count"]

ENV_PASSPHRASE: Final = "VEIL_PASSPHRASE"  # noqa: S105  (a variable name)
ENV_PASSPHRASE_FILE: Final = "VEIL_PASSPHRASE_FILE"  # noqa: S105

ARGON2ID: Final = "argon2id"
PBKDF2: Final = "pbkdf2-sha256"
_KDF_ALIASES: Final = {"argon2id": ARGON2ID, "argon2": ARGON2ID, "pbkdf2": PBKDF2, PBKDF2: PBKDF2}

ARGON2_DEFAULTS: Final = {"memory_cost": 65536, "iterations": 3, "lanes": 4}
"""Argon2id defaults: 64 MiB of memory (in KiB), 3 passes, 4 lanes (OWASP grade)."""
PBKDF2_DEFAULT_ITERATIONS: Final = 600_000

# Bounds that refuse absurd or hostile stored parameters (a document could ask for
# terabytes of memory); the lower bounds are low so that tests can run fast.
_ARGON2_LIMITS: Final = {
    "memory_cost": (8, 4 * 1024 * 1024),
    "iterations": (1, 64),
    "lanes": (1, 64),
}
_PBKDF2_LIMITS: Final = (1, 100_000_000)

_SALT_LEN: Final = 16
_FORMAT: Final = 1
_VERIFIER_MSG: Final = b"veil/passphrase/v1/verifier"
_AAD_PREFIX: Final = b"veil/passphrase/v1/wrap\x00"

# Derived (wrap key, verifier key) by HMAC(process key, passphrase, salt, params).
_cache: dict[bytes, tuple[bytes, bytes]] = {}
_cache_lock = threading.Lock()
_process_key: Final = os.urandom(32)
_derivations = 0


def derivation_count() -> int:
    """How many key derivations this process has run (the cache makes it rare)."""
    return _derivations


def clear_cache() -> None:
    """Forget every derived key held by this process."""
    with _cache_lock:
        _cache.clear()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: object, what: str) -> bytes:
    try:
        if not isinstance(text, str):
            raise ValueError
        return base64.b64decode(text.encode("ascii"), validate=True)
    except ValueError:
        raise ProviderConfigError(
            f"the stored passphrase provider setting '{what}' is not valid base64"
        ) from None


def _int_param(raw: object, name: str, lo: int, hi: int) -> int:
    # ASCII digits only: str.isdigit() admits "²", which int() refuses, and a short
    # length keeps int() clear of its digit limit.
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 20:
        raw = int(raw)
    if type(raw) is not int or not lo <= raw <= hi:
        raise ProviderConfigError(
            f"passphrase provider setting '{name}' must be an integer from {lo} to {hi}"
        )
    return raw


def _derive(
    passphrase: bytes, kdf: str, params: Mapping[str, int], salt: bytes
) -> tuple[bytes, bytes]:
    """Return (wrap key, verifier key), running the KDF at most once per process."""
    global _derivations
    material = repr((kdf, sorted(params.items()))).encode() + b"\x00" + salt + b"\x00" + passphrase
    cache_key = hmac.digest(_process_key, material, hashlib.sha256)
    with _cache_lock:
        hit = _cache.get(cache_key)
        if hit is not None:
            return hit
        # Held during the derivation: two threads asking for the same key derive once.
        if kdf == ARGON2ID:
            kek = Argon2id(
                salt=salt,
                length=32,
                iterations=params["iterations"],
                lanes=params["lanes"],
                memory_cost=params["memory_cost"],
            ).derive(passphrase)
        else:
            kek = PBKDF2HMAC(hashes.SHA256(), 32, salt, params["iterations"]).derive(passphrase)
        _derivations += 1
        keys = (
            HKDF(hashes.SHA256(), 32, None, b"veil/passphrase/v1/wrap-key").derive(kek),
            HKDF(hashes.SHA256(), 32, None, b"veil/passphrase/v1/verifier-key").derive(kek),
        )
        _cache[cache_key] = keys
        return keys


class PassphraseProvider(SecretsProvider):
    """Protects a stack's data key with a passphrase (``passphrase://``).

    ``PassphraseProvider()`` takes the passphrase from the environment or a prompt,
    when it is first needed. ``kdf`` is ``"argon2id"`` (default) or ``"pbkdf2"``;
    ``memory_cost`` (KiB), ``iterations`` and ``lanes`` override the defaults for a
    new stack. An existing stack's stored settings win (see :meth:`with_description`).
    The passphrase never appears in ``repr``, :meth:`describe` or an error.
    """

    scheme: ClassVar[str] = "passphrase"

    def __init__(
        self,
        passphrase: str | Secret[str] | None = None,
        *,
        kdf: str = "argon2id",
        memory_cost: int | None = None,
        iterations: int | None = None,
        lanes: int | None = None,
    ) -> None:
        self._kdf, self._params = self._check_params(
            {"kdf": kdf, "memory_cost": memory_cost, "iterations": iterations, "lanes": lanes}
        )
        self._given: bytes | None = None
        if passphrase is not None:
            self._given = self._check_passphrase(
                passphrase.reveal() if isinstance(passphrase, Secret) else passphrase,
                "the passphrase argument",
            )
        self._salt = os.urandom(_SALT_LEN)
        self._verifier: bytes | None = None
        self._new = True  # no stored salt yet: a prompt asks twice
        self._keys: tuple[bytes, bytes] | None = None
        self._resolved: bytes | None = None  # read from the environment or a prompt

    # --- settings -----------------------------------------------------------------

    @staticmethod
    def _check_params(raw: Mapping[str, Any]) -> tuple[str, dict[str, int]]:
        name = raw.get("kdf") or ARGON2ID
        kdf = _KDF_ALIASES.get(str(name).lower()) if isinstance(name, str) else None
        if kdf is None:
            raise ProviderConfigError(
                f"unknown passphrase KDF {name!r}; use 'argon2id' (default) or 'pbkdf2'"
            )
        params: dict[str, int] = {}
        if kdf == ARGON2ID:
            for key, default in ARGON2_DEFAULTS.items():
                value = raw.get(key)
                lo, hi = _ARGON2_LIMITS[key]
                params[key] = default if value is None else _int_param(value, key, lo, hi)
            if params["memory_cost"] < 8 * params["lanes"]:
                raise ProviderConfigError("Argon2id needs memory_cost of at least 8 KiB per lane")
        else:
            if raw.get("memory_cost") is not None or raw.get("lanes") is not None:
                raise ProviderConfigError(
                    "pbkdf2 takes only 'iterations', not memory_cost or lanes"
                )
            value = raw.get("iterations")
            params["iterations"] = (
                PBKDF2_DEFAULT_ITERATIONS
                if value is None
                else _int_param(value, "iterations", *_PBKDF2_LIMITS)
            )
        return kdf, params

    @staticmethod
    def _check_passphrase(value: object, source: str) -> bytes:
        if not isinstance(value, str):
            raise ProviderConfigError(f"{source} must be a str")
        if not value:
            raise ProviderConfigError(
                f"{source} is empty; an empty passphrase protects nothing. Choose a passphrase."
            )
        return value.encode("utf-8")

    def describe(self) -> dict[str, Any]:
        """Salt, KDF and parameters, and the passphrase verifier (no secret).

        For a new stack this derives the key, so the passphrase is needed.
        """
        if self._verifier is None:
            self._verifier = self._compute_verifier(self._derived()[1])
        return {
            "version": _FORMAT,
            "kdf": self._kdf,
            **self._params,
            "salt": _b64(self._salt),
            "verifier": _b64(self._verifier),
        }

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> Self:
        """Stored settings; the passphrase from the environment or a prompt."""
        provider = cls.__new__(cls)
        provider._given = None
        provider._resolved = None
        provider._keys = None
        provider._apply(description)
        return provider

    def with_description(self, description: Mapping[str, Any]) -> PassphraseProvider:
        """This instance's passphrase (if it has one) with the stored settings."""
        provider = type(self).from_description(description)
        provider._given = self._given if self._given is not None else self._resolved
        return provider

    def _apply(self, description: Mapping[str, Any]) -> None:
        if not isinstance(description, Mapping):
            raise ProviderConfigError("a passphrase provider description must be a JSON object")
        version = description.get("version", _FORMAT)
        if version != _FORMAT:
            raise ProviderConfigError(
                f"passphrase provider settings of version {version!r} are not known to this "
                "veil; upgrade veil"
            )
        if "salt" not in description:
            # Settings only (e.g. from a URL query): a new stack.
            self._kdf, self._params = self._check_params(description)
            self._salt = os.urandom(_SALT_LEN)
            self._verifier = None
            self._new = True
            return
        self._kdf, self._params = self._check_params(description)
        self._salt = _unb64(description["salt"], "salt")
        if len(self._salt) < 8:
            raise ProviderConfigError("the stored passphrase salt is shorter than 8 bytes")
        verifier = description.get("verifier")
        self._verifier = None if verifier is None else _unb64(verifier, "verifier")
        self._new = False

    @classmethod
    def from_url(cls, url: str) -> Self:
        """``passphrase://`` with optional ``?kdf=pbkdf2&iterations=...`` settings."""
        parts = cls._split_url(url)
        if parts.netloc or parts.path:
            raise ProviderConfigError(
                "passphrase:// takes no path; the passphrase comes from VEIL_PASSPHRASE, "
                "VEIL_PASSPHRASE_FILE or a prompt"
            )
        settings = dict(parse_qsl(parts.query))
        unknown = set(settings) - {"kdf", "memory_cost", "iterations", "lanes"}
        if unknown:
            raise ProviderConfigError(
                f"unknown passphrase:// setting(s) {sorted(unknown)}; "
                "known: kdf, memory_cost, iterations, lanes"
            )
        return cls.from_description(settings)

    @property
    def url(self) -> str:
        query = {"kdf": "pbkdf2"} if self._kdf == PBKDF2 else {}
        return "passphrase://" + (f"?{urlencode(query)}" if query else "")

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v}" for k, v in self._params.items())
        return f"PassphraseProvider(kdf={self._kdf!r}, {params})"

    # --- the passphrase -----------------------------------------------------------

    def _passphrase(self) -> bytes:
        if self._given is not None:
            return self._given
        resolved = self._resolved
        if resolved is None:
            resolved = self._read_passphrase()
            self._resolved = resolved
        return resolved

    def _read_passphrase(self) -> bytes:
        env = os.environ.get(ENV_PASSPHRASE)
        if env is not None:
            return self._check_passphrase(env, ENV_PASSPHRASE)
        path = os.environ.get(ENV_PASSPHRASE_FILE)
        if path:
            try:
                with open(path, encoding="utf-8") as f:
                    text = f.read()
            except (OSError, UnicodeError) as exc:
                raise ProviderConfigError(
                    f"cannot read the passphrase file {path!r} named by {ENV_PASSPHRASE_FILE}: "
                    f"{type(exc).__name__}"
                ) from None
            if text.endswith("\n"):
                text = text[:-2] if text.endswith("\r\n") else text[:-1]
            return self._check_passphrase(text, f"the passphrase file {path!r}")
        stdin = sys.stdin
        if stdin is None or not stdin.isatty():
            raise PassphraseRequiredError(
                f"a passphrase is needed: set {ENV_PASSPHRASE}, or {ENV_PASSPHRASE_FILE} to "
                "the path of a file holding it, or run on a terminal to be asked"
            )
        if self._new:
            first = getpass.getpass("Enter a passphrase to protect this stack: ")
            second = getpass.getpass("Re-enter the passphrase: ")
            if first != second:
                raise ProviderConfigError("the two passphrases differ; nothing was written")
            return self._check_passphrase(first, "the passphrase")
        return self._check_passphrase(
            getpass.getpass("Enter the stack's passphrase: "), "the passphrase"
        )

    # --- keys ---------------------------------------------------------------------

    def _derived(self) -> tuple[bytes, bytes]:
        if self._keys is None:
            self._keys = _derive(self._passphrase(), self._kdf, self._params, self._salt)
        return self._keys

    @staticmethod
    def _compute_verifier(verifier_key: bytes) -> bytes:
        return hmac.digest(verifier_key, _VERIFIER_MSG, hashlib.sha256)

    def _wrap_key_checked(self) -> bytes:
        wrap_key, verifier_key = self._derived()
        if self._verifier is None:
            self._verifier = self._compute_verifier(verifier_key)
        elif not hmac.compare_digest(self._verifier, self._compute_verifier(verifier_key)):
            # Forget the wrong passphrase so that a retry (with a new env var) can work.
            self._keys = None
            self._resolved = None
            raise IncorrectPassphraseError(
                f"the passphrase does not open this stack; check {ENV_PASSPHRASE} or "
                f"{ENV_PASSPHRASE_FILE} (or what you typed). Nothing was written."
            )
        return wrap_key

    def wrap_key(self, data_key: bytes, context: Mapping[str, str]) -> bytes:
        """``version (1) || nonce (12) || AES-256-GCM(data key, aad = context)``."""
        aad = _AAD_PREFIX + context_bytes(context)
        nonce = os.urandom(12)
        return (
            bytes([_FORMAT])
            + nonce
            + AESGCM(self._wrap_key_checked()).encrypt(nonce, data_key, aad)
        )

    def unwrap_key(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        """The data key; :class:`veil.IncorrectPassphraseError` for a wrong passphrase,
        :class:`veil.KeyUnwrapError` for another stack or altered bytes."""
        aad = _AAD_PREFIX + context_bytes(context)
        key = self._wrap_key_checked()
        if not isinstance(wrapped, bytes) or len(wrapped) < 1 + 12 + 16 or wrapped[0] != _FORMAT:
            raise KeyUnwrapError(
                "the wrapped data key is truncated or not from a passphrase provider"
            )
        try:
            return AESGCM(key).decrypt(wrapped[1:13], wrapped[13:], aad)
        except InvalidTag:
            raise KeyUnwrapError(
                "the wrapped data key does not open: it belongs to another stack or was altered"
            ) from None
