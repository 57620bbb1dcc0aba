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

Settings are bounded on both sides, before any derivation: at most 4x the defaults'
cost (stored settings cannot make a load take minutes or gigabytes), and at least
OWASP's minimums. Only the caller can go below the minimums, for tests:
``insecure_weak_kdf=True`` or ``VEIL_INSECURE_WEAK_KDF=1``; never a stored setting.

Each derivation runs at most once per process for a given passphrase, salt and
parameters (see ``veil.providers._kdf``).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final
from urllib.parse import parse_qsl, urlencode

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from .._secret import Secret
from ..errors import (
    IncorrectPassphraseError,
    PassphraseRequiredError,
    ProviderConfigError,
)
from ._envelope import KeyWrap
from ._kdf import KEYS
from .base import SecretsProvider

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["PassphraseProvider"]

ENV_PASSPHRASE: Final = "VEIL_PASSPHRASE"  # noqa: S105  (a variable name)
ENV_PASSPHRASE_FILE: Final = "VEIL_PASSPHRASE_FILE"  # noqa: S105
ENV_INSECURE_WEAK_KDF: Final = "VEIL_INSECURE_WEAK_KDF"
"""Set to ``1`` by a test (never in production) to allow KDF settings below OWASP's
minimums, as ``insecure_weak_kdf=True`` does in-process."""

ARGON2ID: Final = "argon2id"
PBKDF2: Final = "pbkdf2-sha256"
_KDF_ALIASES: Final = {"argon2id": ARGON2ID, "argon2": ARGON2ID, "pbkdf2": PBKDF2, PBKDF2: PBKDF2}

ARGON2_DEFAULTS: Final = {"memory_cost": 65536, "iterations": 3, "lanes": 4}
"""Argon2id defaults: 64 MiB of memory (in KiB), 3 passes, 4 lanes (OWASP grade)."""
PBKDF2_DEFAULT_ITERATIONS: Final = 600_000

# Upper bounds: at most 4x the defaults' cost, so that settings read from a state
# document (written by anyone who can write the backend) cannot make a load take
# minutes or gigabytes. Argon2id's time grows with memory_cost x iterations.
ARGON2_MAX_MEMORY_COST: Final = 4 * ARGON2_DEFAULTS["memory_cost"]  # 256 MiB
ARGON2_MAX_WORK: Final = 4 * ARGON2_DEFAULTS["memory_cost"] * ARGON2_DEFAULTS["iterations"]
ARGON2_MAX_LANES: Final = 4 * ARGON2_DEFAULTS["lanes"]
PBKDF2_MAX_ITERATIONS: Final = 4 * PBKDF2_DEFAULT_ITERATIONS

# Lower bounds: OWASP Password Storage Cheat Sheet (Argon2id and PBKDF2 sections),
# https://cheatsheetseries.owasp.org/cheatsheets/Password_Storage_Cheat_Sheet.html
# Argon2id: any one of these (memory KiB, iterations) pairs, p=1, which it lists as
# equally strong; PBKDF2-HMAC-SHA256: 600,000 iterations.
OWASP_ARGON2ID_MINIMUMS: Final = ((47104, 1), (19456, 2), (12288, 3), (9216, 4), (7168, 5))
OWASP_PBKDF2_MIN_ITERATIONS: Final = 600_000

_SALT_LEN: Final = 16
_FORMAT: Final = 1
_VERIFIER_MSG: Final = b"veil/passphrase/v1/verifier"
_AAD_PREFIX: Final = b"veil/passphrase/v1/wrap\x00"
_UNWRAP_FAILED: Final = (
    "the wrapped data key does not open: it belongs to another stack or was altered"
)


def derivation_count() -> int:
    """How many key derivations this process has run (the cache makes it rare)."""
    return KEYS.derivations


def clear_cache() -> None:
    """Forget every passphrase-derived key held by this process."""
    KEYS.clear()


def weak_kdf_allowed(insecure_weak_kdf: bool = False) -> bool:
    """Whether the caller opted out of the minimums: the keyword, or the variable."""
    return insecure_weak_kdf is True or os.environ.get(ENV_INSECURE_WEAK_KDF) == "1"


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


def _int_param(raw: object, name: str) -> int:
    # ASCII digits only: str.isdigit() admits "²", which int() refuses, and a short
    # length keeps int() clear of its digit limit.
    if isinstance(raw, str) and raw.isascii() and raw.isdigit() and len(raw) <= 20:
        raw = int(raw)
    if type(raw) is not int or raw < 1:
        raise ProviderConfigError(
            f"passphrase provider setting '{name}' must be a positive integer, not {raw!r}"
        )
    return raw


def _check_argon2(params: Mapping[str, int], weak_ok: bool) -> None:
    memory, passes, lanes = params["memory_cost"], params["iterations"], params["lanes"]
    if memory > ARGON2_MAX_MEMORY_COST:
        raise ProviderConfigError(
            f"Argon2id memory_cost={memory} KiB is above veil's bound of "
            f"{ARGON2_MAX_MEMORY_COST} KiB (4x the default); refused before deriving"
        )
    if memory * passes > ARGON2_MAX_WORK:
        raise ProviderConfigError(
            f"Argon2id memory_cost x iterations = {memory} x {passes} is above veil's bound "
            f"of {ARGON2_MAX_WORK} (4x the default 65536 KiB x 3); refused before deriving"
        )
    if lanes > ARGON2_MAX_LANES:
        raise ProviderConfigError(
            f"Argon2id lanes={lanes} is above veil's bound of {ARGON2_MAX_LANES}"
        )
    if memory < 8 * lanes:
        raise ProviderConfigError("Argon2id needs memory_cost of at least 8 KiB per lane")
    if not weak_ok and not any(memory >= m and passes >= t for m, t in OWASP_ARGON2ID_MINIMUMS):
        pairs = ", ".join(f"{m} KiB x {t}" for m, t in OWASP_ARGON2ID_MINIMUMS)
        raise ProviderConfigError(
            f"Argon2id memory_cost={memory} KiB with iterations={passes} is below OWASP's "
            f"minimum (memory_cost and iterations at least one of: {pairs}); "
            f"tests may pass insecure_weak_kdf=True or set {ENV_INSECURE_WEAK_KDF}=1"
        )


def _check_pbkdf2(iterations: int, weak_ok: bool) -> None:
    if iterations > PBKDF2_MAX_ITERATIONS:
        raise ProviderConfigError(
            f"PBKDF2 iterations={iterations} is above veil's bound of "
            f"{PBKDF2_MAX_ITERATIONS} (4x the default); refused before deriving"
        )
    if not weak_ok and iterations < OWASP_PBKDF2_MIN_ITERATIONS:
        raise ProviderConfigError(
            f"PBKDF2 iterations={iterations} is below OWASP's minimum of "
            f"{OWASP_PBKDF2_MIN_ITERATIONS} for PBKDF2-HMAC-SHA256; "
            f"tests may pass insecure_weak_kdf=True or set {ENV_INSECURE_WEAK_KDF}=1"
        )


def _derive(
    passphrase: bytes, kdf: str, params: Mapping[str, int], salt: bytes
) -> tuple[KeyWrap, bytes]:
    """Return (key wrap, verifier key), running the KDF at most once per process."""

    def run() -> bytes:
        if kdf == ARGON2ID:
            return Argon2id(
                salt=salt,
                length=32,
                iterations=params["iterations"],
                lanes=params["lanes"],
                memory_cost=params["memory_cost"],
            ).derive(passphrase)
        return PBKDF2HMAC(hashes.SHA256(), 32, salt, params["iterations"]).derive(passphrase)

    kek = KEYS.derive(passphrase, salt, (kdf, *sorted(params.items())), run)
    wrap_key = HKDF(hashes.SHA256(), 32, None, b"veil/passphrase/v1/wrap-key").derive(kek)
    wrap = KeyWrap(
        wrap_key, label=_AAD_PREFIX, what="a passphrase provider", failure=_UNWRAP_FAILED
    )
    return wrap, HKDF(hashes.SHA256(), 32, None, b"veil/passphrase/v1/verifier-key").derive(kek)


class PassphraseProvider(SecretsProvider):
    """Protects a stack's data key with a passphrase (``passphrase://``).

    ``PassphraseProvider()`` takes the passphrase from the environment or a prompt,
    when it is first needed. ``kdf`` is ``"argon2id"`` (default) or ``"pbkdf2"``;
    ``memory_cost`` (KiB), ``iterations`` and ``lanes`` override the defaults for a
    new stack. An existing stack's stored settings win (see :meth:`with_description`).
    Settings outside veil's bounds raise :class:`veil.ProviderConfigError`; below
    OWASP's minimums only with ``insecure_weak_kdf=True`` (or
    ``VEIL_INSECURE_WEAK_KDF=1``), for tests.
    The passphrase never appears in ``repr``, :meth:`describe` or an error.
    """

    scheme: ClassVar[str] = "passphrase"
    url_options: ClassVar[frozenset[str]] = frozenset({"insecure_weak_kdf"})

    def __init__(
        self,
        passphrase: str | Secret[str] | None = None,
        *,
        kdf: str = "argon2id",
        memory_cost: int | None = None,
        iterations: int | None = None,
        lanes: int | None = None,
        insecure_weak_kdf: bool = False,
    ) -> None:
        self._weak_ok = weak_kdf_allowed(insecure_weak_kdf)
        self._kdf, self._params = self._check_params(
            {"kdf": kdf, "memory_cost": memory_cost, "iterations": iterations, "lanes": lanes},
            self._weak_ok,
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
        self._keys: tuple[KeyWrap, bytes] | None = None
        self._resolved: bytes | None = None  # read from the environment or a prompt

    # --- settings -----------------------------------------------------------------

    @staticmethod
    def _check_params(raw: Mapping[str, Any], weak_ok: bool) -> tuple[str, dict[str, int]]:
        """The KDF and its parameters, within bounds; nothing is derived here."""
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
                params[key] = default if value is None else _int_param(value, key)
            _check_argon2(params, weak_ok)
        else:
            if raw.get("memory_cost") is not None or raw.get("lanes") is not None:
                raise ProviderConfigError(
                    "pbkdf2 takes only 'iterations', not memory_cost or lanes"
                )
            value = raw.get("iterations")
            params["iterations"] = (
                PBKDF2_DEFAULT_ITERATIONS if value is None else _int_param(value, "iterations")
            )
            _check_pbkdf2(params["iterations"], weak_ok)
        return kdf, params

    @staticmethod
    def _check_passphrase(value: object, source: str) -> bytes:
        if not isinstance(value, str):
            raise ProviderConfigError(f"{source} must be a str")
        if not value:
            raise ProviderConfigError(
                f"{source} is empty; an empty passphrase protects nothing. Choose a passphrase."
            )
        try:
            encoded: bytes | None = value.encode("utf-8")
        except UnicodeEncodeError:  # its .object is the passphrase: let it go here
            encoded = None
        if encoded is None:  # raised outside the except block: no __context__
            raise ProviderConfigError(f"{source} is not valid text (it holds a lone surrogate)")
        return encoded

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
    def from_description(
        cls, description: Mapping[str, Any], *, insecure_weak_kdf: bool = False
    ) -> Self:
        """Stored settings; the passphrase from the environment or a prompt.

        Settings out of bounds are refused before anything is derived. Only the
        caller's ``insecure_weak_kdf=True`` (or ``VEIL_INSECURE_WEAK_KDF=1``) admits
        settings below the minimums; the description itself cannot.
        """
        provider = cls.__new__(cls)
        provider._weak_ok = weak_kdf_allowed(insecure_weak_kdf)
        provider._given = None
        provider._resolved = None
        provider._keys = None
        provider._apply(description)
        return provider

    def with_description(self, description: Mapping[str, Any]) -> PassphraseProvider:
        """This instance's passphrase (if it has one) with the stored settings."""
        provider = type(self).from_description(description, insecure_weak_kdf=self._weak_ok)
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
        self._kdf, self._params = self._check_params(description, self._weak_ok)
        if "salt" not in description:
            # Settings only (e.g. from a URL query): a new stack.
            self._salt = os.urandom(_SALT_LEN)
            self._verifier = None
            self._new = True
            return
        self._salt = _unb64(description["salt"], "salt")
        if len(self._salt) < 8:
            raise ProviderConfigError("the stored passphrase salt is shorter than 8 bytes")
        verifier = description.get("verifier")
        self._verifier = None if verifier is None else _unb64(verifier, "verifier")
        self._new = False

    @classmethod
    def from_url(cls, url: str, *, insecure_weak_kdf: bool = False) -> Self:
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
        return cls.from_description(settings, insecure_weak_kdf=insecure_weak_kdf)

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

    def _read_file(self, path: str) -> bytes:
        source = f"the passphrase file {path!r} named by {ENV_PASSPHRASE_FILE}"
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as exc:  # holds the path and an errno, nothing read
            raise ProviderConfigError(f"cannot read {source}: {type(exc).__name__}") from None
        try:
            text: str | None = raw.decode("utf-8")
        except UnicodeDecodeError:  # its .object is the file's bytes: let it go here
            text = None
        del raw
        if text is None:  # raised outside the except block: no __context__
            raise ProviderConfigError(f"cannot read {source}: it is not UTF-8 text")
        if text.endswith("\n"):
            text = text[:-2] if text.endswith("\r\n") else text[:-1]
        return self._check_passphrase(text, f"the passphrase file {path!r}")

    def _read_passphrase(self) -> bytes:
        env = os.environ.get(ENV_PASSPHRASE)
        if env is not None:
            return self._check_passphrase(env, ENV_PASSPHRASE)
        path = os.environ.get(ENV_PASSPHRASE_FILE)
        if path:
            return self._read_file(path)
        stdin = sys.stdin
        if stdin is None or not stdin.isatty():
            raise PassphraseRequiredError(
                f"a passphrase is needed: set {ENV_PASSPHRASE}, or {ENV_PASSPHRASE_FILE} to "
                "the path of a file holding it, or run on a terminal to be asked"
            )
        if self._new:
            first = _prompt("Enter a passphrase to protect this stack: ")
            second = _prompt("Re-enter the passphrase: ")
            if first != second:
                raise ProviderConfigError("the two passphrases differ; nothing was written")
            return self._check_passphrase(first, "the passphrase")
        return self._check_passphrase(_prompt("Enter the stack's passphrase: "), "the passphrase")

    # --- keys ---------------------------------------------------------------------

    def _derived(self) -> tuple[KeyWrap, bytes]:
        if self._keys is None:
            self._keys = _derive(self._passphrase(), self._kdf, self._params, self._salt)
        return self._keys

    @staticmethod
    def _compute_verifier(verifier_key: bytes) -> bytes:
        return hmac.digest(verifier_key, _VERIFIER_MSG, hashlib.sha256)

    def _wrap_checked(self) -> KeyWrap:
        wrap, verifier_key = self._derived()
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
        return wrap

    def wrap_key(self, data_key: bytes, context: Mapping[str, str]) -> bytes:
        """``version (1) || nonce (12) || AES-256-GCM(data key, aad = context)``."""
        return self._wrap_checked().wrap(data_key, context)

    def unwrap_key(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        """The data key; :class:`veil.IncorrectPassphraseError` for a wrong passphrase,
        :class:`veil.KeyUnwrapError` for another stack or altered bytes."""
        return self._wrap_checked().unwrap(wrapped, context)


def _prompt(text: str) -> str:
    """Ask on the terminal; end of input (Ctrl-D) is a clean, typed error."""
    try:
        return getpass.getpass(text)
    except EOFError:
        pass
    raise PassphraseRequiredError(
        f"no passphrase was entered (end of input); set {ENV_PASSPHRASE} or "
        f"{ENV_PASSPHRASE_FILE}, or type it at the prompt"
    )
