"""`hashivault://KEY-NAME`: a data key encrypted by HashiCorp Vault's or OpenBao's
transit secrets engine.

Needs the optional extra ``veil[vault]`` (``hvac``). ``?mount=PATH`` names the transit
mount (default ``transit``). The server and the token come from the environment only,
as the ``vault`` and ``bao`` commands read them: ``VAULT_ADDR`` (or ``BAO_ADDR``),
``VAULT_TOKEN`` (or ``BAO_TOKEN``, or the file ``~/.vault-token``), ``VAULT_NAMESPACE``
(or ``BAO_NAMESPACE``), ``VAULT_CACERT`` (or ``BAO_CACERT``). None of them is stored:
the state keeps the key name and the mount.

Wrapping is one ``transit/encrypt/KEY`` call, unwrapping one ``transit/decrypt/KEY``
call. The stack's context (``{"stack": name}``, canonical JSON) is sent as
``associated_data``, so the ciphertext authenticates it, and as ``context`` too, which
a key created with ``derived=true`` uses to derive a key per stack: either way a
wrapped key copied to another stack does not decrypt. That needs an AEAD key type
(``aes256-gcm96``, the default, ``aes128-gcm96`` or ``chacha20-poly1305``); RSA and
signing keys are refused. The wrapped key is the ciphertext string Vault returned
(``vault:v1:...``), so ``vault write transit/decrypt/KEY ciphertext=...
associated_data=...`` recovers it by hand.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, NoReturn
from urllib.parse import parse_qsl, quote, unquote

from ..errors import (
    KeyUnwrapError,
    ProviderAccessError,
    ProviderConfigError,
    ProviderKeyError,
    ProviderUnavailableError,
    SecretPickleError,
)
from .base import SecretsProvider, context_bytes

try:
    import hvac
    import hvac.exceptions
    import requests

    _HAVE_HVAC = True
except ImportError:  # pragma: no cover - exercised only without the extra
    _HAVE_HVAC = False

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["VaultTransitProvider"]

DEFAULT_MOUNT: Final = "transit"
DEFAULT_TIMEOUT: Final = (5.0, 20.0)
"""Seconds to connect and to wait for an answer: an unreachable server fails in < 30 s."""

_MISSING: Final = "the hashivault:// provider needs hvac: pip install 'veil[vault]'"
_NAME: Final = "the hashivault:// provider"
_KEY_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,128}")
_MOUNT_SEGMENT = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_CIPHERTEXT = re.compile(rb"vault:v([1-9][0-9]{0,9}):([A-Za-z0-9+/]+={0,2})")
_AEAD_TYPES: Final = "aes256-gcm96 (the default), aes128-gcm96 or chacha20-poly1305"


def _require_hvac() -> Any:
    if not _HAVE_HVAC:
        raise ProviderConfigError(_MISSING)
    return hvac


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name)
        if value:
            return value
    return None


def _check_key_name(name: object) -> str:
    if not isinstance(name, str) or not _KEY_NAME.fullmatch(name) or name in (".", ".."):
        raise ProviderConfigError(
            f"{_NAME} needs a transit key name of letters, digits and _ . @ -, "
            f"e.g. hashivault://my-key; got {name!r}"
        )
    return name


def _check_mount(mount: object) -> str:
    if not isinstance(mount, str):
        raise ProviderConfigError(f"{_NAME}: mount must be a string such as 'transit'")
    segments = mount.strip("/").split("/")
    if not all(_MOUNT_SEGMENT.fullmatch(s) and s not in (".", "..") for s in segments):
        raise ProviderConfigError(
            f"{_NAME}: mount {mount!r} is not a mount path such as 'transit' or 'team/transit'"
        )
    return "/".join(segments)


def _valid_ciphertext(wrapped: object) -> bool:
    """Whether ``wrapped`` is a transit ciphertext string, checked before any call."""
    if not isinstance(wrapped, bytes):
        return False
    match = _CIPHERTEXT.fullmatch(wrapped)
    if match is None:
        return False
    body = match.group(2)
    try:
        raw = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return False
    # Strict: unused bits in the last character would make two strings decode alike.
    return base64.b64encode(raw) == body


class VaultTransitProvider(SecretsProvider):
    """Protects a stack's data key with a Vault or OpenBao transit key.

    ``key``: the transit key's name; ``mount``: the transit engine's mount path.
    ``address``, ``token`` and ``namespace`` default to the environment (see the
    module docstring) and are never stored or shown. ``timeout`` is
    ``(connect, read)`` seconds for each request.
    """

    scheme: ClassVar[str] = "hashivault"

    def __init__(
        self,
        key: str,
        *,
        mount: str = DEFAULT_MOUNT,
        address: str | None = None,
        token: str | None = None,
        namespace: str | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        _require_hvac()
        self._key = _check_key_name(key)
        self._mount = _check_mount(mount)
        self._address = address
        self._token = token
        self._namespace = namespace
        self._timeout = timeout
        self._client: Any = None

    # --- settings ---------------------------------------------------------------------

    @property
    def key(self) -> str:
        """The transit key's name."""
        return self._key

    @property
    def mount(self) -> str:
        """The transit engine's mount path."""
        return self._mount

    def describe(self) -> dict[str, Any]:
        return {"key": self._key, "mount": self._mount}

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> Self:
        if not isinstance(description, Mapping):
            raise ProviderConfigError(f"a stored {_NAME} description must be a JSON object")
        unknown = set(description) - {"key", "mount"}
        if unknown:
            raise ProviderConfigError(
                f"unknown settings for {_NAME}: {', '.join(sorted(map(str, unknown)))}; "
                "known: key, mount"
            )
        return cls(description.get("key"), mount=description.get("mount", DEFAULT_MOUNT))  # type: ignore[arg-type]

    def with_description(self, description: Mapping[str, Any]) -> VaultTransitProvider:
        """The stored key and mount with this instance's server, token and namespace."""
        provider = type(self).from_description(description)
        provider._address = self._address
        provider._token = self._token
        provider._namespace = self._namespace
        provider._timeout = self._timeout
        return provider

    @classmethod
    def from_url(cls, url: str) -> Self:
        """``hashivault://KEY-NAME[?mount=PATH]``."""
        parts = cls._split_url(url)
        name = unquote(parts.netloc + parts.path).strip("/")
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        unknown = set(params) - {"mount"}
        if unknown:
            raise ProviderConfigError(
                f"unknown parameter(s) {', '.join(sorted(unknown))} in {url!r}; known: mount "
                "(the server and token come from VAULT_ADDR and VAULT_TOKEN)"
            )
        return cls(name, mount=params.get("mount", DEFAULT_MOUNT))

    @property
    def url(self) -> str:
        query = "" if self._mount == DEFAULT_MOUNT else "?mount=" + quote(self._mount, safe="/")
        return f"hashivault://{quote(self._key, safe='@')}{query}"

    def __repr__(self) -> str:
        return f"VaultTransitProvider(key={self._key!r}, mount={self._mount!r})"

    def __reduce__(self) -> NoReturn:
        raise SecretPickleError(
            "a VaultTransitProvider may hold a Vault token and is not pickled; "
            "rebuild it with provider_from_url in the other process"
        )

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        self.__reduce__()

    # --- the client -------------------------------------------------------------------

    def _address_or_fail(self) -> str:
        address = self._address or _env("VAULT_ADDR", "BAO_ADDR")
        if not address:
            raise ProviderConfigError(
                f"{_NAME} needs the server's address: set VAULT_ADDR (or BAO_ADDR), "
                "e.g. https://vault.example.com:8200"
            )
        return address

    def _token_or_fail(self) -> str:
        token = self._token or _env("VAULT_TOKEN", "BAO_TOKEN")
        if token:
            return token
        path = Path("~/.vault-token").expanduser()
        try:
            token = path.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeError):
            token = ""
        if not token:
            raise ProviderAccessError(
                f"{_NAME} found no Vault token: set VAULT_TOKEN (or BAO_TOKEN), or log in "
                "with 'vault login' / 'bao login' (which writes ~/.vault-token)"
            )
        return token

    def _get_client(self) -> Any:
        if self._client is None:
            verify: bool | str = _env("VAULT_CACERT", "BAO_CACERT") or True
            client = _require_hvac().Client(
                url=self._address_or_fail(),
                token=self._token_or_fail(),
                namespace=self._namespace or _env("VAULT_NAMESPACE", "BAO_NAMESPACE"),
                timeout=self._timeout,
                verify=verify,
            )
            # requests retries nothing by default, so the timeouts bound each call.
            self._client = client
        return self._client

    def _where(self) -> str:
        return f"transit key {self._key!r} on mount {self._mount!r}"

    def _call(self, operation: str, body: dict[str, str]) -> dict[str, Any]:
        """POST ``MOUNT/OPERATION/KEY``; return the response's ``data``.

        Every failure is classified inside the ``except`` block and raised after it,
        so no exception object holding the request (and the data key in it) survives
        as a cause or a context.
        """
        client = self._get_client()
        path = f"/v1/{self._mount}/{operation}/{quote(self._key, safe='@')}"
        failure: tuple[str, int, str] | None = None
        response: Any = None
        try:
            response = client.adapter.post(path, json=body)
        except hvac.exceptions.VaultError as exc:
            status = {
                hvac.exceptions.InvalidRequest: 400,
                hvac.exceptions.Unauthorized: 401,
                hvac.exceptions.Forbidden: 403,
                hvac.exceptions.InvalidPath: 404,
                hvac.exceptions.RateLimitExceeded: 429,
                hvac.exceptions.VaultDown: 503,
            }.get(type(exc), 500)
            failure = ("vault", status, "; ".join(map(str, exc.errors or [])) or str(exc))
        except requests.exceptions.Timeout:
            failure = ("timeout", 0, "")
        except requests.exceptions.SSLError:
            failure = ("tls", 0, "")
        except requests.exceptions.RequestException as exc:
            failure = ("network", 0, type(exc).__name__)
        body.clear()
        if failure is not None:
            self._fail(operation, *failure)
        data = response.get("data") if isinstance(response, dict) else None
        if not isinstance(data, dict):
            raise ProviderUnavailableError(
                f"{_NAME}: the server at {self._address_or_fail()} gave no data for "
                f"{operation} with {self._where()}; is it a Vault or OpenBao server?"
            )
        return data

    def _fail(self, operation: str, kind: str, status: int, text: str) -> NoReturn:
        address = self._address_or_fail()
        if kind == "timeout":
            raise ProviderUnavailableError(
                f"{_NAME}: no answer from {address} within {self._timeout[0]:g} s to connect "
                f"and {self._timeout[1]:g} s to reply; check VAULT_ADDR and the network"
            )
        if kind == "tls":
            raise ProviderUnavailableError(
                f"{_NAME}: TLS to {address} failed; check VAULT_ADDR's scheme and VAULT_CACERT"
            )
        if kind == "network":
            raise ProviderUnavailableError(
                f"{_NAME}: cannot reach {address} ({text}); check VAULT_ADDR (or BAO_ADDR) "
                "and that the server is running"
            )
        lowered = text.lower()
        if status in (401, 403):
            if self._token_is_valid():
                capability = f"'update' on '{self._mount}/{operation}/{self._key}'"
                if operation == "encrypt":
                    raise ProviderAccessError(
                        f"{_NAME}: permission denied on {address}: the token's policy needs "
                        f"{capability} (or the key {self._key!r} does not exist: encrypting "
                        "creates a missing key only with 'create' on that path)"
                    )
                raise ProviderAccessError(
                    f"{_NAME}: permission denied on {address}: the token's policy needs "
                    f"{capability}"
                )
            raise ProviderAccessError(
                f"{_NAME}: {address} refused the token: it is invalid, expired or revoked "
                "(or its policies allow neither this path nor auth/token/lookup-self). Log in "
                "again ('vault login' / 'bao login') or set a valid VAULT_TOKEN"
            )
        if status == 404 or "no handler for route" in lowered:
            raise ProviderConfigError(
                f"{_NAME}: {address} has no transit engine at mount {self._mount!r}; "
                "enable it ('vault secrets enable transit') or set ?mount= in the URL"
            )
        if "encryption key not found" in lowered or "key not found" in lowered:
            raise ProviderKeyError(
                f"{_NAME}: {self._where()} does not exist on {address} (never created, or "
                "deleted); check the key name, or restore the key from a backup"
            )
        if "non-aead" in lowered or "does not support" in lowered or "not supported" in lowered:
            raise ProviderKeyError(
                f"{_NAME}: {self._where()} is of a type that cannot wrap a data key with "
                f"associated data; use a key of type {_AEAD_TYPES}"
            )
        if status == 503 or "sealed" in lowered:
            raise ProviderUnavailableError(
                f"{_NAME}: {address} is sealed or in standby; unseal it or try another node"
            )
        if "disallowed by policy" in lowered:
            raise ProviderKeyError(
                f"{_NAME}: the wrapped data key was made with a version of {self._where()} "
                "that the key's min_decryption_version no longer allows; lower it to open "
                "the stack, then rotate the stack's data key"
            )
        if status == 400 and operation == "decrypt":
            raise KeyUnwrapError(
                f"{_NAME}: {self._where()} could not decrypt the wrapped data key: it was "
                "made with another key or for another stack, or it was altered"
            )
        if status == 429:
            raise ProviderUnavailableError(f"{_NAME}: {address} is rate limiting; retry later")
        raise ProviderUnavailableError(
            f"{_NAME}: {operation} with {self._where()} on {address} failed "
            f"(HTTP {status}: {text[:200]})"
        )

    def _token_is_valid(self) -> bool:
        """Whether the server accepts the token at all (a 403 means a missing
        capability then, not a bad token). Asked only after a refusal."""
        try:
            self._get_client().adapter.get("/v1/auth/token/lookup-self")
        except Exception:  # a refusal or any failure: the token is not known to be good
            return False
        return True

    # --- wrapping ---------------------------------------------------------------------

    @staticmethod
    def _binding(context: Mapping[str, str]) -> str:
        return base64.b64encode(context_bytes(context)).decode("ascii")

    def wrap_key(self, data_key: bytes, context: Mapping[str, str]) -> bytes:
        binding = self._binding(context)
        body = {
            "plaintext": base64.b64encode(data_key).decode("ascii"),
            "associated_data": binding,
            "context": binding,
        }
        data = self._call("encrypt", body)
        ciphertext = data.get("ciphertext")
        if not isinstance(ciphertext, str) or not _valid_ciphertext(ciphertext.encode()):
            raise ProviderUnavailableError(
                f"{_NAME}: the server returned no transit ciphertext for {self._where()}"
            )
        return ciphertext.encode("ascii")

    def unwrap_key(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        if not _valid_ciphertext(wrapped):
            raise KeyUnwrapError(
                f"{_NAME}: the wrapped data key is not a transit ciphertext (vault:vN:...); "
                "it was altered or made by another provider"
            )
        binding = self._binding(context)
        body = {
            "ciphertext": wrapped.decode("ascii"),
            "associated_data": binding,
            "context": binding,
        }
        data = self._call("decrypt", body)
        plaintext = data.get("plaintext")
        try:
            key = base64.b64decode(plaintext, validate=True) if isinstance(plaintext, str) else b""
        except (binascii.Error, ValueError):
            key = b""
        if not key:
            raise KeyUnwrapError(f"{_NAME}: the server returned no data key from {self._where()}")
        return key
