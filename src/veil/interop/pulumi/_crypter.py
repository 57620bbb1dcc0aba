"""Read and write Pulumi's passphrase secrets formats.

Pulumi's ``passphrase`` secrets provider protects a stack with a key derived from a
passphrase. This module speaks that format exactly, so a veil program can open a
Pulumi stack's config and state, and Pulumi can open what veil writes:

- :class:`PassphraseCrypter` holds the key of one stack and encrypts and decrypts
  Pulumi ``v1:`` values.
- :func:`load_checkpoint` / :func:`dump_checkpoint` read and write Pulumi checkpoint
  (and ``pulumi stack export``) JSON, turning Pulumi's secret objects into
  :class:`veil.Secret` leaves and back.
- :class:`PulumiStackConfig` reads and edits ``Pulumi.<stack>.yaml`` (its
  ``encryptionsalt`` and ``secure:`` values), keeping comments and order. It needs the
  ``veil[pulumi]`` extra (ruamel.yaml), imported only when a config is read.

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
import io
import json
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from ..._files import write_atomic
from ..._secret import Secret, is_secret, reveal
from ...errors import (
    ConfigError,
    ConfigMissingError,
    DecryptionError,
    IncorrectPassphraseError,
    InvalidValueError,
    PassphraseRequiredError,
    ProviderConfigError,
    SecretPickleError,
    StateFormatError,
)

__all__ = [
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

SIG_KEY: Final = "4dabf18193072939515e22adb298388d"
"""The key that marks a special object in Pulumi state."""
SECRET_SIG: Final = "1b47061264138c4ac30d75fd1eb44270"  # noqa: S105 (a type tag)
"""The value of :data:`SIG_KEY` in a secret object."""
KDF_ITERATIONS: Final = 1_000_000
"""PBKDF2-HMAC-SHA256 iterations of Pulumi's passphrase provider (fixed by the format)."""
CHECK_PLAINTEXT: Final = "pulumi"
"""The plaintext of the check value in an ``encryptionsalt``."""

_KEY_SIZE: Final = 32
_SALT_SIZE: Final = 8
_NONCE_SIZE: Final = 12
_TAG_SIZE: Final = 16
_PROVIDER_TYPE: Final = "passphrase"

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
    try:
        return passphrase.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidValueError(
            "the passphrase is not valid Unicode text (it holds a lone surrogate)"
        ) from None


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

    def _remember(self, secret: Secret[Any], plaintext: str, ciphertext: str) -> None:
        digest = hashlib.sha256(plaintext.encode("utf-8", "surrogatepass")).digest()
        with self._reuse_lock:
            if len(self._reuse) >= self._REUSE_LIMIT:
                self._reuse.clear()
            self._reuse[id(secret)] = (secret, digest, ciphertext)

    def _reused(self, secret: Secret[Any] | None, plaintext: str) -> str | None:
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
        raise InvalidValueError(
            "the value is not valid Unicode text (it holds a lone surrogate)"
        ) from None
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
        raise DecryptionError(
            "a Pulumi secret value decrypts to bytes that are not UTF-8"
        ) from None


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


# --- checkpoints ------------------------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _parse_json(data: bytes | bytearray | memoryview | str, what: str) -> Any:
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            raise StateFormatError(f"this {what} is not UTF-8 text: it is not JSON") from None
    elif isinstance(data, str):
        text = data
    else:
        raise InvalidValueError(f"a {what} is bytes or str, not {type(data).__name__}")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        where = ""
        if isinstance(exc, json.JSONDecodeError):
            where = f" (line {exc.lineno}, column {exc.colno})"
        raise StateFormatError(
            f"this {what} is not valid JSON{where}: it is truncated or damaged"
        ) from None


def _deployment(tree: Any) -> dict[str, Any] | None:
    """The deployment of a checkpoint (``checkpoint.latest``) or export (``deployment``)."""
    if not isinstance(tree, dict):
        return None
    checkpoint = tree.get("checkpoint")
    if isinstance(checkpoint, dict):
        latest = checkpoint.get("latest")
        return latest if isinstance(latest, dict) else None
    deployment = tree.get("deployment")
    return deployment if isinstance(deployment, dict) else None


def _declared_provider(tree: Any) -> tuple[str | None, str | None]:
    """(type, passphrase salt) of the secrets provider a checkpoint names, if any."""
    deployment = _deployment(tree)
    if deployment is None:
        return None, None
    providers = deployment.get("secrets_providers")
    if not isinstance(providers, dict):
        return None, None
    kind = providers.get("type")
    state = providers.get("state")
    salt = state.get("salt") if isinstance(state, dict) else None
    return (kind if isinstance(kind, str) else None), (salt if isinstance(salt, str) else None)


def _format_path(path: list[str | int]) -> str:
    out = "$"
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


class _LoadContext:
    __slots__ = ("crypter", "foreign", "path", "salt_differs")

    def __init__(self, crypter: PassphraseCrypter, tree: Any) -> None:
        self.crypter = crypter
        self.path: list[str | int] = []
        kind, salt = _declared_provider(tree)
        self.foreign = kind if kind not in (None, _PROVIDER_TYPE) else None
        self.salt_differs = salt is not None and not crypter.same_key(salt)


def _load_node(node: Any, ctx: _LoadContext) -> Any:
    if isinstance(node, dict):
        if node.get(SIG_KEY) == SECRET_SIG:
            return _load_secret(node, ctx)
        out: dict[str, Any] = {}
        path = ctx.path
        for key, value in node.items():
            path.append(key)
            out[key] = _load_node(value, ctx)
            path.pop()
        return out
    if isinstance(node, list):
        items: list[Any] = []
        path = ctx.path
        for index, value in enumerate(node):
            path.append(index)
            items.append(_load_node(value, ctx))
            path.pop()
        return items
    return node


def _load_secret(node: dict[str, Any], ctx: _LoadContext) -> Secret[Any]:
    ciphertext = node.get("ciphertext")
    plaintext = node.get("plaintext")
    has_ciphertext = isinstance(ciphertext, str)
    if has_ciphertext == isinstance(plaintext, str):
        raise StateFormatError(
            f"malformed Pulumi secret object at {_format_path(ctx.path)}: exactly one of "
            "'ciphertext' or 'plaintext' (a string) must be present"
        )
    if has_ciphertext:
        if ctx.foreign is not None:
            raise ProviderConfigError(
                f"this checkpoint's secrets are protected by Pulumi's {ctx.foreign!r} secrets "
                "provider; only passphrase stacks can be read here (run `pulumi stack "
                "change-secrets-provider passphrase` first)"
            )
        try:
            text = ctx.crypter.decrypt(ciphertext)  # type: ignore[arg-type]
        except DecryptionError as exc:
            hint = (
                " The checkpoint names another salt than this crypter's: build the crypter "
                "with crypter_from_checkpoint(data, passphrase)."
                if ctx.salt_differs
                else ""
            )
            raise DecryptionError(
                f"cannot decrypt the secret at {_format_path(ctx.path)}: {exc}.{hint}"
            ) from None
    else:
        text = plaintext  # type: ignore[assignment]
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise StateFormatError(
            f"the secret at {_format_path(ctx.path)} does not hold a JSON value"
        ) from None
    secret: Secret[Any] = Secret(value)
    if has_ciphertext:
        ctx.crypter._remember(secret, text, ciphertext)  # type: ignore[arg-type]
    return secret


def load_checkpoint(data: bytes | str, crypter: PassphraseCrypter) -> Any:
    """Read a Pulumi checkpoint (or any JSON document), decrypting its secrets.

    Every Pulumi secret object ``{SIG_KEY: SECRET_SIG, "ciphertext": "v1:..."}`` (or
    with ``"plaintext"``, as Pulumi accepts in imported deployments) becomes a
    :class:`veil.Secret` holding the JSON value it encodes; every other value is
    returned as :func:`json.loads` returns it. The checkpoint may be a stack file of
    Pulumi's file backend (``{"version": 3, "checkpoint": {...}}``) or the output of
    ``pulumi stack export`` (``{"version": 3, "deployment": {...}}``).

    Raises :class:`veil.StateFormatError` for input that is not JSON or a malformed
    secret object, :class:`veil.DecryptionError` (naming the JSON path) for a secret
    that does not decrypt, and :class:`veil.ProviderConfigError` when the checkpoint's
    secrets belong to another Pulumi secrets provider than ``passphrase``.
    """
    tree = _parse_json(data, "Pulumi checkpoint")
    ctx = _LoadContext(crypter, tree)
    try:
        return _load_node(tree, ctx)
    except RecursionError:
        raise StateFormatError("this Pulumi checkpoint is nested too deeply to read") from None


class _DumpContext:
    __slots__ = ("crypter", "path", "wrote_secrets")

    def __init__(self, crypter: PassphraseCrypter) -> None:
        self.crypter = crypter
        self.path: list[str | int] = []
        self.wrote_secrets = False


def _is_output(node: object) -> bool:
    return hasattr(type(node), "_veil_reveal_")


def _check_scalar(node: Any, path: list[str | int]) -> Any:
    if node is None or isinstance(node, (str, bool, int)):
        return node
    if isinstance(node, float):
        if not math.isfinite(node):
            raise InvalidValueError(
                f"the number at {_format_path(path)} is not finite; JSON cannot hold it"
            )
        return node
    raise InvalidValueError(
        f"the value at {_format_path(path)} is a {type(node).__name__}, which JSON cannot "
        "hold; convert it to str, int, float, bool, None, list or dict"
    )


def _plain(node: Any, path: list[str | int]) -> Any:
    """A JSON value with every Secret and Output inside revealed (it will be sealed)."""
    if isinstance(node, Secret) or _is_output(node):
        return _plain(reveal(node), path)
    if isinstance(node, dict):
        out: dict[str, Any] = {}
        for key, value in node.items():
            if not isinstance(key, str):
                raise InvalidValueError(
                    f"a key at {_format_path(path)} is a {type(key).__name__}; JSON keys are str"
                )
            path.append(key)
            out[key] = _plain(value, path)
            path.pop()
        return out
    if isinstance(node, (list, tuple)):
        items: list[Any] = []
        for index, value in enumerate(node):
            path.append(index)
            items.append(_plain(value, path))
            path.pop()
        return items
    return _check_scalar(node, path)


def _seal(value: Any, ctx: _DumpContext, secret: Secret[Any] | None) -> dict[str, str]:
    plain = _plain(value, ctx.path)
    text = json.dumps(plain, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    ciphertext = ctx.crypter._reused(secret, text)
    if ciphertext is None:
        ciphertext = ctx.crypter.encrypt(text)
    ctx.wrote_secrets = True
    return {SIG_KEY: SECRET_SIG, "ciphertext": ciphertext}


def _dump_node(node: Any, ctx: _DumpContext) -> Any:
    if isinstance(node, Secret):
        return _seal(node.reveal(), ctx, node)
    if _is_output(node):
        # reveal() raises PendingOutputError / UnknownValueError for unresolved Outputs.
        if is_secret(node):
            return _seal(reveal(node), ctx, None)
        return _dump_node(reveal(node), ctx)
    if isinstance(node, dict):
        path = ctx.path
        if node.get(SIG_KEY) == SECRET_SIG and isinstance(node.get("plaintext"), str):
            # A secret object in plaintext form: encrypt it, never write its plaintext.
            try:
                value = json.loads(node["plaintext"], parse_constant=_reject_constant)
            except (ValueError, RecursionError):
                raise InvalidValueError(
                    f"the secret object at {_format_path(path)} has a 'plaintext' that is not JSON"
                ) from None
            return _seal(value, ctx, None)
        out: dict[str, Any] = {}
        for key, value in node.items():
            if not isinstance(key, str):
                raise InvalidValueError(
                    f"a key at {_format_path(path)} is a {type(key).__name__}; JSON keys are str"
                )
            path.append(key)
            out[key] = _dump_node(value, ctx)
            path.pop()
        return out
    if isinstance(node, (list, tuple)):
        items: list[Any] = []
        path = ctx.path
        for index, value in enumerate(node):
            path.append(index)
            items.append(_dump_node(value, ctx))
            path.pop()
        return items
    return _check_scalar(node, ctx.path)


def _name_provider(tree: Any, crypter: PassphraseCrypter, wrote_secrets: bool) -> None:
    """Make the checkpoint name this crypter's salt, so Pulumi can open what was written."""
    deployment = _deployment(tree)
    if deployment is None:
        return
    providers = deployment.get("secrets_providers")
    if providers is None:
        if wrote_secrets:
            deployment["secrets_providers"] = {
                "type": _PROVIDER_TYPE,
                "state": {"salt": crypter.encryptionsalt},
            }
        return
    if isinstance(providers, dict) and providers.get("type") == _PROVIDER_TYPE:
        state = providers.get("state")
        state = dict(state) if isinstance(state, dict) else {}
        state["salt"] = crypter.encryptionsalt
        providers["state"] = state
        return
    if wrote_secrets:
        kind = providers.get("type") if isinstance(providers, dict) else providers
        raise ProviderConfigError(
            f"this checkpoint names Pulumi's {kind!r} secrets provider, but its secrets are "
            "written with a passphrase; set secrets_providers to "
            "{'type': 'passphrase', 'state': {'salt': crypter.encryptionsalt}} or remove it"
        )


def dump_checkpoint(tree: Any, crypter: PassphraseCrypter) -> bytes:
    """Write a Pulumi checkpoint (or any JSON document), encrypting its secrets.

    Every :class:`veil.Secret` leaf, and every resolved secret veil Output, becomes a
    Pulumi secret object whose ciphertext encrypts the JSON encoding of its value
    (Secrets nested inside it included). A Pulumi secret object in ``"plaintext"`` form
    is encrypted too, so no secret is written in the clear. A Secret that was read with
    :func:`load_checkpoint` under the same crypter and is unchanged keeps its
    ciphertext. Other values are written as they are.

    When the tree is a Pulumi checkpoint or export, its
    ``secrets_providers`` is set to ``passphrase`` with this crypter's salt (added if
    absent and secrets were written), so Pulumi opens the result with the same
    passphrase; loading with one crypter and dumping with another re-encrypts every
    secret (a passphrase change).

    Output: UTF-8 JSON indented by four spaces, as Pulumi writes it, ending in a newline.
    Raises :class:`veil.InvalidValueError` for a value JSON cannot hold,
    :class:`veil.PendingOutputError` / :class:`veil.UnknownValueError` for an Output
    without a known value, :class:`veil.ProviderConfigError` when the checkpoint names
    another secrets provider.
    """
    ctx = _DumpContext(crypter)
    try:
        out = _dump_node(tree, ctx)
    except RecursionError:
        raise InvalidValueError("the tree is nested too deeply to write as JSON") from None
    _name_provider(out, crypter, ctx.wrote_secrets)
    text = json.dumps(out, indent=4, ensure_ascii=False, allow_nan=False)
    return (text + "\n").encode("utf-8")


def crypter_from_checkpoint(
    data: bytes | str, passphrase: str | Secret[str] | None = None
) -> PassphraseCrypter:
    """Open the key of a Pulumi checkpoint from the salt it names
    (``checkpoint.latest.secrets_providers.state.salt``, or ``deployment...`` in an export).

    ``passphrase=None`` uses :func:`passphrase_from_env`. Raises
    :class:`veil.StateFormatError` when the checkpoint is not JSON or names no salt,
    :class:`veil.ProviderConfigError` when it names another secrets provider, and
    :class:`veil.IncorrectPassphraseError` for a wrong passphrase.
    """
    tree = _parse_json(data, "Pulumi checkpoint")
    kind, salt = _declared_provider(tree)
    if kind is not None and kind != _PROVIDER_TYPE:
        raise ProviderConfigError(
            f"this checkpoint uses Pulumi's {kind!r} secrets provider, not 'passphrase'"
        )
    if salt is None:
        raise StateFormatError(
            "this Pulumi checkpoint names no passphrase salt "
            "(checkpoint.latest.secrets_providers.state.salt); take the encryptionsalt from "
            "Pulumi.<stack>.yaml and use PassphraseCrypter(passphrase, encryptionsalt)"
        )
    if passphrase is None:
        passphrase = passphrase_from_env()
    return PassphraseCrypter(passphrase, salt)


# --- Pulumi.<stack>.yaml ------------------------------------------------------------------


def _yaml() -> Any:
    try:
        from ruamel.yaml import YAML
    except ImportError:
        raise ConfigError(
            "reading Pulumi stack config files needs ruamel.yaml: pip install 'veil[pulumi]'"
        ) from None
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 1 << 16  # never fold a long ciphertext over lines
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def _is_secure(node: Any) -> bool:
    # Pulumi's rule: a mapping with the single key "secure" holding a string.
    return isinstance(node, dict) and len(node) == 1 and isinstance(node.get("secure"), str)


class PulumiStackConfig:
    """A ``Pulumi.<stack>.yaml`` file: its ``config:`` values and ``encryptionsalt``.

    Opened with :meth:`load` (a path) or :meth:`loads` (the text). Reading and writing
    keep the file's comments, key order and quoting (ruamel.yaml round-trip mode; needs
    ``pip install 'veil[pulumi]'``, else :class:`veil.ConfigError` says so).

    ``secure:`` values are decrypted only when read with :meth:`get`, into a
    :class:`veil.Secret`; the key is derived (about half a second, once per process)
    only when a secure value is first read or written. The passphrase is the one given,
    else Pulumi's ``PULUMI_CONFIG_PASSPHRASE`` / ``PULUMI_CONFIG_PASSPHRASE_FILE``.
    Pass ``crypter=`` to share one :class:`PassphraseCrypter` with
    :func:`load_checkpoint`: Pulumi uses the same salt for a stack's config and state.

    Keys are Pulumi's full config keys, ``<namespace>:<name>`` (``myproject:dbPassword``,
    ``aws:region``).
    """

    __slots__ = ("_crypter", "_doc", "_passphrase", "_path", "_yaml")

    def __init__(
        self,
        text: str = "",
        passphrase: str | Secret[str] | None = None,
        *,
        crypter: PassphraseCrypter | None = None,
        path: str | os.PathLike[str] | None = None,
    ) -> None:
        """Parse the text of a stack config file (an empty text is an empty config)."""
        self._yaml = _yaml()
        where = f" {os.fspath(path)}" if path is not None else ""
        try:
            doc = self._yaml.load(text)
        except Exception as exc:  # ruamel raises many unrelated classes for bad YAML
            mark = getattr(exc, "problem_mark", None)
            at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise ConfigError(
                f"the Pulumi stack config{where} is not valid YAML{at}: fix or restore the file"
            ) from None
        if doc is None:
            from ruamel.yaml.comments import CommentedMap

            doc = CommentedMap()
        if not isinstance(doc, dict):
            raise ConfigError(f"the Pulumi stack config{where} is not a YAML mapping")
        config = doc.get("config")
        if config is not None and not isinstance(config, dict):
            raise ConfigError(f"'config' in the Pulumi stack config{where} is not a mapping")
        salt = doc.get("encryptionsalt")
        if salt is not None and not isinstance(salt, str):
            raise ProviderConfigError(
                f"'encryptionsalt' in the Pulumi stack config{where} is not a string"
            )
        self._doc: Any = doc
        self._path = Path(path) if path is not None else None
        self._passphrase = passphrase
        self._crypter: PassphraseCrypter | None = None
        if crypter is not None:
            if salt is None:
                self._insert_salt(crypter.encryptionsalt)
            elif not crypter.same_key(salt):
                raise ProviderConfigError(
                    f"the crypter's salt differs from the encryptionsalt of the Pulumi stack "
                    f"config{where}; open the config with its own passphrase instead"
                )
            self._crypter = crypter

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        passphrase: str | Secret[str] | None = None,
        *,
        crypter: PassphraseCrypter | None = None,
    ) -> PulumiStackConfig:
        """Read ``Pulumi.<stack>.yaml`` from ``path`` (:meth:`save` writes it back there)."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"no Pulumi stack config at {os.fspath(path)}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(
                f"cannot read the Pulumi stack config {os.fspath(path)}: {exc.__class__.__name__}"
            ) from None
        return cls(text, passphrase, crypter=crypter, path=path)

    @classmethod
    def loads(
        cls,
        text: str,
        passphrase: str | Secret[str] | None = None,
        *,
        crypter: PassphraseCrypter | None = None,
    ) -> PulumiStackConfig:
        """Parse the text of ``Pulumi.<stack>.yaml``."""
        return cls(text, passphrase, crypter=crypter)

    @property
    def encryptionsalt(self) -> str | None:
        """The file's ``encryptionsalt``, or None if it has none yet."""
        salt = self._doc.get("encryptionsalt")
        return salt if isinstance(salt, str) else None

    @property
    def crypter(self) -> PassphraseCrypter:
        """The stack's key, opened on first use from ``encryptionsalt`` and the passphrase.

        A file without ``encryptionsalt`` gets a new one (written by :meth:`dumps`).
        Raises :class:`veil.IncorrectPassphraseError`, :class:`veil.PassphraseRequiredError`,
        or :class:`veil.ProviderConfigError` for a malformed salt or a stack that uses
        another Pulumi secrets provider.
        """
        if self._crypter is None:
            provider = self._doc.get("secretsprovider")
            if (isinstance(provider, str) and not provider.startswith("passphrase")) or (
                self._doc.get("encryptedkey") is not None
            ):
                raise ProviderConfigError(
                    f"this Pulumi stack uses the secrets provider {provider!r}, not a passphrase; "
                    "only passphrase stacks can be read here"
                )
            passphrase = self._passphrase
            if passphrase is None:
                passphrase = passphrase_from_env()
            salt = self.encryptionsalt
            crypter = PassphraseCrypter(passphrase, salt)
            if salt is None:
                self._insert_salt(crypter.encryptionsalt)
            self._crypter = crypter
        return self._crypter

    def _insert_salt(self, salt: str) -> None:
        # Pulumi writes encryptionsalt first, above config.
        self._doc.insert(0, "encryptionsalt", salt)

    def _config(self, create: bool = False) -> Any:
        config = self._doc.get("config")
        if config is None and create:
            from ruamel.yaml.comments import CommentedMap

            config = CommentedMap()
            self._doc["config"] = config
        return config

    def keys(self) -> list[str]:
        """The config keys, in file order."""
        config = self._config()
        return [str(key) for key in config] if config is not None else []

    def __contains__(self, key: object) -> bool:
        config = self._config()
        return config is not None and key in config

    def __iter__(self) -> Iterator[str]:
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())

    def is_secret(self, key: str) -> bool:
        """Whether the value at ``key`` is, or holds, a ``secure:`` value (no decryption)."""
        return self._holds_secure(self._node(key))

    def _holds_secure(self, node: Any) -> bool:
        if _is_secure(node):
            return True
        if isinstance(node, dict):
            return any(self._holds_secure(v) for v in node.values())
        if isinstance(node, list):
            return any(self._holds_secure(v) for v in node)
        return False

    def _node(self, key: str) -> Any:
        config = self._config()
        if config is None or key not in config:
            raise ConfigMissingError(f"the Pulumi stack config has no key {key!r}")
        return config[key]

    def get(self, key: str) -> Any:
        """The value at ``key``: a ``str`` (or the YAML scalar's int, float, bool, None), a
        :class:`veil.Secret` (``Secret[str]``) for a ``secure:`` value, and for a structured
        value a dict or list with Secret leaves where it holds ``secure:`` values.

        Raises :class:`veil.ConfigMissingError` (a ``KeyError``) for a missing key and
        :class:`veil.DecryptionError` for a secure value that does not decrypt.
        """
        return self._decode(self._node(key), key)

    def _decode(self, node: Any, key: str) -> Any:
        if _is_secure(node):
            ciphertext = str(node["secure"])
            crypter = self.crypter  # opening it may raise IncorrectPassphraseError: let it
            try:
                plaintext = crypter.decrypt(ciphertext)
            except DecryptionError as exc:
                raise DecryptionError(f"cannot decrypt config value {key!r}: {exc}") from None
            secret: Secret[str] = Secret(plaintext)
            crypter._remember(secret, plaintext, ciphertext)
            return secret
        if isinstance(node, dict):
            return {str(k): self._decode(v, key) for k, v in node.items()}
        if isinstance(node, list):
            return [self._decode(v, key) for v in node]
        # Plain Python types, not ruamel's scalar subclasses.
        if isinstance(node, bool) or node is None:
            return node
        if isinstance(node, str):
            return str(node)
        if isinstance(node, int):
            return int(node)
        if isinstance(node, float):
            return float(node)
        return node

    def set(self, key: str, value: Any, *, secret: bool = False) -> None:
        """Set ``key``; ``secret=True`` (or a :class:`veil.Secret` / secret Output value)
        stores it as ``secure: v1:...``.

        A secure value must be a ``str`` (Pulumi encrypts config strings). Structured
        values (dict, list) may hold Secret leaves, each stored as its own secure value.
        The key keeps its place and comments if it exists; a new key goes last.
        Raises :class:`veil.ConfigError` for a key without a ``namespace:`` and
        :class:`veil.InvalidValueError` for a value YAML config cannot hold.
        """
        if not isinstance(key, str) or ":" not in key or key.startswith(":"):
            raise ConfigError(
                f"Pulumi config keys are '<namespace>:<name>' (e.g. 'myproject:password'), "
                f"not {key!r}"
            )
        node = self._secure(value) if secret else self._encode(value, key)
        self._config(create=True)[key] = node

    def _secure(self, value: Any) -> Any:
        from ruamel.yaml.comments import CommentedMap

        source = value if isinstance(value, Secret) else None
        plaintext = reveal(value)
        if not isinstance(plaintext, str):
            raise InvalidValueError(
                f"a Pulumi secure config value is a str, not {type(plaintext).__name__}; "
                "json.dumps structured values first"
            )
        ciphertext = self.crypter._reused(source, plaintext) or self.crypter.encrypt(plaintext)
        return CommentedMap([("secure", ciphertext)])

    def _encode(self, value: Any, key: str) -> Any:
        if isinstance(value, Secret) or (_is_output(value) and is_secret(value)):
            return self._secure(value)
        if _is_output(value):
            return self._encode(reveal(value), key)
        if isinstance(value, dict):
            from ruamel.yaml.comments import CommentedMap

            out = CommentedMap()
            for k, v in value.items():
                if not isinstance(k, str):
                    raise InvalidValueError(f"keys inside config value {key!r} must be str")
                out[k] = self._encode(v, key)
            return out
        if isinstance(value, (list, tuple)):
            from ruamel.yaml.comments import CommentedSeq

            return CommentedSeq(self._encode(v, key) for v in value)
        if value is None or isinstance(value, (str, bool, int, float)):
            return value
        raise InvalidValueError(
            f"config value {key!r} is a {type(value).__name__}; use str, int, float, bool, "
            "list or dict"
        )

    def rekey(self, crypter: PassphraseCrypter) -> None:
        """Re-encrypt every secure value under ``crypter`` and take its ``encryptionsalt``:
        a passphrase change. Comments and order are kept.

        All values are decrypted with the current key before anything changes, so a
        failure (:class:`veil.DecryptionError`, :class:`veil.IncorrectPassphraseError`)
        leaves the config as it was.
        """
        config = self._config()
        found: list[Any] = []
        if config is not None and self._holds_secure(config):
            old = self.crypter
            self._collect_secure(config, found)
            try:
                plaintexts = [old.decrypt(str(node["secure"])) for node in found]
            except DecryptionError as exc:
                raise DecryptionError(f"cannot re-encrypt this config: {exc}") from None
            for node, plaintext in zip(found, plaintexts, strict=True):
                node["secure"] = crypter.encrypt(plaintext)
        if "encryptionsalt" in self._doc:
            self._doc["encryptionsalt"] = crypter.encryptionsalt
        else:
            self._insert_salt(crypter.encryptionsalt)
        self._crypter = crypter

    def _collect_secure(self, node: Any, out: list[Any]) -> None:
        if _is_secure(node):
            out.append(node)
        elif isinstance(node, dict):
            for value in node.values():
                self._collect_secure(value, out)
        elif isinstance(node, list):
            for value in node:
                self._collect_secure(value, out)

    def remove(self, key: str) -> None:
        """Remove ``key``; :class:`veil.ConfigMissingError` if it is not set."""
        self._node(key)
        del self._config()[key]

    def dumps(self) -> str:
        """The file's text, with comments and order kept and ciphertexts of unchanged
        secure values unchanged."""
        stream = io.StringIO()
        self._yaml.dump(self._doc, stream)
        return stream.getvalue()

    def save(self, path: str | os.PathLike[str] | None = None) -> None:
        """Write the file atomically (temp file, fsync, rename) to ``path``, by default
        where :meth:`load` read it."""
        target = Path(path) if path is not None else self._path
        if target is None:
            raise ConfigError("save() needs a path: this config was not read from a file")
        data = self.dumps().encode("utf-8")
        try:
            mode = target.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        try:
            write_atomic(target, data, mode, exact_mode=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot write the Pulumi stack config {os.fspath(target)}: "
                f"{exc.strerror or type(exc).__name__}"
            ) from None
        self._path = target

    def __repr__(self) -> str:
        where = f" {os.fspath(self._path)!r}" if self._path is not None else ""
        return f"<PulumiStackConfig{where} keys={len(self)}>"
