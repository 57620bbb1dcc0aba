"""`azurekeyvault://VAULT.vault.azure.net/keys/KEY[/VERSION]`: an RSA key in Azure Key Vault.

Needs the optional extra ``veil[azure]`` (``azure-keyvault-keys``, ``azure-identity``).
Credentials come from ``DefaultAzureCredential`` (environment variables, workload or
managed identity, ``az login``, ...); nothing about them is stored.

The data key is wrapped with RSA-OAEP-256 through the SDK's ``CryptographyClient``: the
key's public half is fetched once per process (``keys/get``) and wraps locally, as the
SDK does by default; unwrapping is always done by Key Vault (``keys/unwrapKey``).

Context binding. RSA-OAEP as Key Vault offers it takes no label, so the context goes
inside the wrapped plaintext: the RSA plaintext is ``SHA-256(DOMAIN || context_bytes) ||
data_key``. Unwrapping recomputes the digest for the caller's context and compares it
in constant time: a wrapped key copied to another stack unwraps at Key Vault but is
refused by veil (:class:`veil.KeyUnwrapError`), and no data key is returned.

Wrapped bytes: ``0x01 | len(version) | version (ASCII) | RSA ciphertext``. The key
version that wrapped is recorded, so a stack still opens after the key is rotated
(new versions wrap, old versions keep unwrapping what they wrapped).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, NoReturn
from urllib.parse import urlsplit

from ..errors import (
    KeyUnwrapError,
    ProviderAccessError,
    ProviderConfigError,
    ProviderKeyError,
    ProviderUnavailableError,
    SecretPickleError,
)
from .base import SecretsProvider, context_bytes

_sdk: Any
try:
    from azure.core import exceptions as _azure_errors
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.keys import KeyClient
    from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

    _sdk = True
except ImportError:  # pragma: no cover - exercised only without the extra
    _sdk = None

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["AzureKeyVaultProvider", "clear_cache"]

_MISSING: Final = "the azurekeyvault:// provider needs the Azure SDK: pip install 'veil[azure]'"
_FORMAT: Final = 1
_DOMAIN: Final = b"veil/azurekeyvault/v1/context\x00"
_DIGEST_SIZE: Final = 32
_NAME = re.compile(r"[0-9A-Za-z-]{1,127}\Z")
_VERSION = re.compile(r"[0-9A-Za-z]{1,64}\Z")
_HOST = re.compile(r"[0-9A-Za-z.-]+(:[0-9]{1,5})?\Z")
_RSA_TYPES: Final = ("RSA", "RSA-HSM")
_PERMISSIONS: Final = (
    "key permissions get, wrapKey and unwrapKey in the vault's access policy, or the "
    "Azure RBAC role 'Key Vault Crypto Service Encryption User' (or 'Key Vault Crypto "
    "User') on the key or vault"
)
# Bounded time: an unreachable vault or login endpoint fails in well under 30 s
# (3 attempts of at most 4 s to connect and 7 s to read, plus 1.5 s of backoff).
_PIPELINE: Final[dict[str, Any]] = {
    "retry_total": 2,
    "retry_backoff_factor": 0.5,
    "retry_backoff_max": 2,
    "connection_timeout": 4,
    "read_timeout": 7,
}
# Microsoft's own authority hosts, where MSAL's instance discovery works.
_KNOWN_AUTHORITIES: Final = frozenset(
    {
        "login.microsoftonline.com",
        "login.microsoft.com",
        "login.windows.net",
        "sts.windows.net",
        "login.chinacloudapi.cn",
        "login.partner.microsoftonline.cn",
        "login.microsoftonline.us",
        "login.usgovcloudapi.net",
        "login-us.microsoftonline.com",
        "login.microsoftonline.de",
    }
)


def _require_sdk() -> None:
    if _sdk is None:
        raise ProviderConfigError(_MISSING)


# --- clients, shared per process -------------------------------------------------------

_lock = threading.Lock()
_default_credentials: dict[tuple[tuple[str, str], ...], Any] = {}
_keys: dict[tuple[str, Any], tuple[Any, Any]] = {}  # (kid, credential) -> (key, client)
_key_clients: dict[tuple[str, Any], Any] = {}  # (vault, credential) -> KeyClient


def clear_cache() -> None:
    """Forget the credentials, key properties and clients this process has made.

    They are kept so that opening many stacks costs one Key Vault call each; a key's
    public half and attributes (enabled, type) are read once per process.
    """
    with _lock:
        _default_credentials.clear()
        _keys.clear()
        _key_clients.clear()


def _credential_options() -> dict[str, Any]:
    options = dict(_PIPELINE)
    authority = os.environ.get("AZURE_AUTHORITY_HOST", "")
    if authority:
        host = urlsplit(authority if "://" in authority else "https://" + authority).hostname
        # MSAL validates an unknown authority against Microsoft's own host; a private
        # authority (Azure Stack, a sovereign deployment) set by its operator cannot
        # pass that, so the check is off for it, as Microsoft documents for such clouds.
        if host and host.lower() not in _KNOWN_AUTHORITIES:
            options["disable_instance_discovery"] = True
    return options


def _default_credential() -> Any:
    """One ``DefaultAzureCredential`` per distinct Azure environment (it caches tokens)."""
    snapshot = tuple(
        sorted(
            (k, v) for k, v in os.environ.items() if k.startswith(("AZURE_", "IDENTITY_", "MSI_"))
        )
    )
    with _lock:
        credential = _default_credentials.get(snapshot)
        if credential is None:
            credential = DefaultAzureCredential(**_credential_options())
            _default_credentials[snapshot] = credential
        return credential


def _key_client(vault: str, credential: Any) -> Any:
    with _lock:
        client = _key_clients.get((vault, credential))
        if client is None:
            client = KeyClient(vault, credential, **_PIPELINE)
            _key_clients[(vault, credential)] = client
        return client


# --- the provider ----------------------------------------------------------------------


class AzureKeyVaultProvider(SecretsProvider):
    """Protects a stack's data key with an RSA key in Azure Key Vault.

    ``vault_url``: ``https://VAULT.vault.azure.net`` (or a Managed HSM's URL); ``key``:
    the key's name; ``version``: pin a key version (default: the current one wraps,
    and each wrapped key records the version that made it). ``credential``: any
    ``azure.core.credentials.TokenCredential``; default ``DefaultAzureCredential()``.
    """

    scheme: ClassVar[str] = "azurekeyvault"

    def __init__(
        self,
        vault_url: str,
        key: str,
        version: str | None = None,
        *,
        credential: Any = None,
    ) -> None:
        _require_sdk()
        parts = urlsplit(vault_url) if isinstance(vault_url, str) else None
        if (
            parts is None
            or parts.scheme != "https"
            or not parts.netloc
            or not _HOST.match(parts.netloc)
            or parts.path not in ("", "/")
            or parts.query
        ):
            raise ProviderConfigError(
                "an Azure Key Vault URL looks like https://VAULT.vault.azure.net, "
                f"got {vault_url!r}"
            )
        if not isinstance(key, str) or not _NAME.match(key):
            raise ProviderConfigError(
                f"an Azure Key Vault key name is 1 to 127 letters, digits and '-', got {key!r}"
            )
        if version is not None and (not isinstance(version, str) or not _VERSION.match(version)):
            raise ProviderConfigError(f"not an Azure Key Vault key version: {version!r}")
        self._vault = f"https://{parts.netloc.lower()}"
        self._name = key
        self._version = version or None
        self._credential = credential

    # --- settings -----------------------------------------------------------------

    @property
    def key_id(self) -> str:
        """``https://VAULT.vault.azure.net/keys/KEY[/VERSION]``."""
        tail = f"/{self._version}" if self._version else ""
        return f"{self._vault}/keys/{self._name}{tail}"

    def describe(self) -> dict[str, Any]:
        description: dict[str, Any] = {"vault": self._vault, "key": self._name}
        if self._version:
            description["version"] = self._version
        return description

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> Self:
        if not isinstance(description, Mapping):
            raise ProviderConfigError("an azurekeyvault:// description must be a JSON object")
        vault, key, version = (description.get(k) for k in ("vault", "key", "version"))
        if not isinstance(vault, str) or not isinstance(key, str):
            raise ProviderConfigError(
                "an azurekeyvault:// provider description needs 'vault' and 'key' strings"
            )
        if version is not None and not isinstance(version, str):
            raise ProviderConfigError("an azurekeyvault:// 'version' must be a string")
        return cls(vault, key, version)

    def with_description(self, description: Mapping[str, Any]) -> AzureKeyVaultProvider:
        """The stored key, with this instance's credential."""
        provider = type(self).from_description(description)
        provider._credential = self._credential
        return provider

    @classmethod
    def from_url(cls, url: str) -> Self:
        """``azurekeyvault://VAULT.vault.azure.net/keys/KEY[/VERSION]``."""
        parts = cls._split_url(url)
        segments = [s for s in parts.path.split("/") if s]
        if (
            not parts.netloc
            or len(segments) not in (2, 3)
            or segments[0] != "keys"
            or parts.query
            or parts.fragment
        ):
            raise ProviderConfigError(
                "an Azure Key Vault URL looks like "
                "azurekeyvault://VAULT.vault.azure.net/keys/KEY[/VERSION], got " + repr(url)
            )
        version = segments[2] if len(segments) == 3 else None
        return cls(f"https://{parts.netloc}", segments[1], version)

    @property
    def url(self) -> str:
        return f"azurekeyvault://{self.key_id.split('://', 1)[1]}"

    def __repr__(self) -> str:
        return f"AzureKeyVaultProvider({self.url!r})"

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise SecretPickleError(
            "an AzureKeyVaultProvider holds a credential and is not pickled; "
            "pass its url or describe() instead"
        )

    # --- Key Vault ----------------------------------------------------------------

    def _credential_or_default(self) -> Any:
        return self._credential if self._credential is not None else _default_credential()

    def _where(self) -> str:
        return f"Azure Key Vault key {self.key_id}"

    def _client(self, version: str | None, operation: str) -> tuple[Any, Any]:
        """The key's properties (None when ``get`` is not allowed) and a client for it."""
        credential = self._credential_or_default()
        kid = f"{self._vault}/keys/{self._name}" + (f"/{version}" if version else "")
        with _lock:
            cached = _keys.get((kid, credential))
        if cached is not None:
            if cached[0] is not None:
                self._check_key(cached[0], operation)
            return cached
        properties: Any = None
        failure: Exception | None = None
        try:
            properties = _key_client(self._vault, credential).get_key(self._name, version or None)
        except _azure_errors.HttpResponseError as exc:
            failure = exc if exc.status_code != 403 or _inner_code(exc) == "KeyDisabled" else None
        except Exception as exc:
            failure = exc
        if failure is not None:
            if (
                operation == "unwrapKey"
                and version
                and isinstance(failure, _azure_errors.ResourceNotFoundError)
            ):
                del failure
                # A version the key does not have: say so if the key itself is there.
                self._client(None, "unwrapKey")
                raise KeyUnwrapError(
                    f"{self._where()} has no version {version}: the data key was wrapped by "
                    "another key, or the wrapped key was altered"
                )
            error = self._translate(failure, "get", version)
            del failure  # its response holds the request, bearer token included
            raise error
        if properties is None:
            # No keys/get permission: every operation is done by Key Vault itself.
            crypto = CryptographyClient(kid, credential, **_PIPELINE)
        else:
            self._check_key(properties, operation)
            crypto = CryptographyClient(properties, credential, **_PIPELINE)
        entry = (properties, crypto)
        with _lock:
            _keys[(kid, credential)] = entry
            if properties is not None and properties.properties.version:
                resolved = f"{self._vault}/keys/{self._name}/{properties.properties.version}"
                _keys.setdefault((resolved, credential), entry)
        return entry

    def _check_key(self, properties: Any, operation: str) -> None:
        kty = str(getattr(properties.key_type, "value", properties.key_type))
        if kty not in _RSA_TYPES:
            raise ProviderKeyError(
                f"{self._where()} is of type {kty}; veil wraps with RSA-OAEP-256 and needs an "
                "RSA key (az keyvault key create --kty RSA --size 3072 ...)"
            )
        ops = [str(getattr(o, "value", o)) for o in (properties.key_operations or [])]
        if operation not in ops:
            raise ProviderKeyError(
                f"{self._where()} does not allow the {operation} operation (its key_ops are "
                f"{', '.join(ops) or 'none'}); create it with --ops wrapKey unwrapKey"
            )
        if properties.properties.enabled is False:
            raise ProviderKeyError(
                f"{self._where()} is disabled; enable it (az keyvault key set-attributes "
                "--enabled true) or use another key"
            )

    def _translate(self, exc: Exception, operation: str, version: str | None) -> Exception:
        """The veil error for an SDK failure: built from its status and the service's
        error code and message only, never from the request (which carries the token)."""
        where = self._where()
        if isinstance(exc, _azure_errors.ClientAuthenticationError):
            detail = _service_message(exc)
            return ProviderAccessError(
                f"{where}: the credentials were not accepted or none were found "
                f"({detail}). DefaultAzureCredential looks at AZURE_TENANT_ID, AZURE_CLIENT_ID "
                "and AZURE_CLIENT_SECRET (or a certificate), workload or managed identity, "
                "then 'az login'; a token that expired or was revoked needs a new sign-in"
            )
        if isinstance(exc, _azure_errors.HttpResponseError) and exc.status_code is not None:
            status, inner, detail = exc.status_code, _inner_code(exc), _service_message(exc)
            if status == 403 and inner == "KeyDisabled":
                return ProviderKeyError(
                    f"{where} is disabled ({detail}); enable it (az keyvault key "
                    "set-attributes --enabled true) or use another key"
                )
            if status == 403:
                return ProviderAccessError(
                    f"{where}: access denied for keys/{operation} ({detail}). Grant the "
                    f"caller {_PERMISSIONS}"
                )
            if status == 404:
                if operation == "unwrapKey" and version:
                    return KeyUnwrapError(
                        f"{where} has no version {version}: the data key was wrapped by "
                        "another key, or the wrapped key was altered"
                    )
                return ProviderKeyError(
                    f"{where} was not found ({detail}): check the vault and key names, and "
                    "whether the key was deleted (az keyvault key recover)"
                )
            if status == 400 and operation == "unwrapKey":
                return KeyUnwrapError(
                    f"{where} could not unwrap the data key: it was wrapped by another key, "
                    "or the wrapped key was altered"
                )
            if status == 400:
                return ProviderKeyError(f"{where} refused the {operation} request ({detail})")
            return ProviderUnavailableError(
                f"{where}: Key Vault answered HTTP {status} to {operation} ({detail}); "
                "try again later"
            )
        if isinstance(exc, (_azure_errors.ServiceRequestError, _azure_errors.ServiceResponseError)):
            return ProviderUnavailableError(
                f"{where}: cannot reach {self._vault} ({type(exc).__name__}). Check the vault "
                "name, DNS, the network, and the vault's firewall or private endpoint"
            )
        if isinstance(exc, ValueError) and (
            "not valid before" in str(exc) or "expired" in str(exc)
        ):
            return ProviderKeyError(
                f"{where} is outside its validity period (not-before/expires): {exc}"
            )
        if isinstance(exc, _azure_errors.AzureError):
            return ProviderUnavailableError(
                f"{where}: {operation} failed ({type(exc).__name__}: {_service_message(exc)})"
            )
        return ProviderUnavailableError(f"{where}: {operation} failed ({type(exc).__name__})")

    # --- wrapping -----------------------------------------------------------------

    def wrap_key(self, data_key: bytes, context: Mapping[str, str]) -> bytes:
        if not isinstance(data_key, bytes) or not data_key:
            raise ProviderConfigError("a data key to wrap must be non-empty bytes")
        plaintext = _commitment(context) + data_key
        properties, crypto = self._client(self._version, "wrapKey")
        seen: dict[str, str] = {}
        try:
            result = crypto.wrap_key(
                KeyWrapAlgorithm.rsa_oaep_256,
                plaintext,
                raw_response_hook=lambda response: _remember_kid(response, seen),
            )
            ciphertext = bytes(result.encrypted_key)
            failure: Exception | None = None
        except Exception as exc:
            failure = exc
        if failure is not None:
            error = self._translate(failure, "wrapKey", self._version)
            del failure  # its response holds the request, bearer token included
            raise error
        version = self._version or (
            properties.properties.version if properties is not None else _version_of(seen)
        )
        if not version or not _VERSION.match(version):
            raise ProviderUnavailableError(
                f"{self._where()}: Key Vault did not say which key version wrapped"
            )
        raw = version.encode("ascii")
        return bytes([_FORMAT, len(raw)]) + raw + ciphertext

    def unwrap_key(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        expected = _commitment(context)
        if not isinstance(wrapped, bytes) or len(wrapped) < 3 or wrapped[0] != _FORMAT:
            raise KeyUnwrapError(f"{self._where()}: not a wrapped key made by this provider")
        size = wrapped[1]
        version_bytes, ciphertext = wrapped[2 : 2 + size], wrapped[2 + size :]
        try:
            version = version_bytes.decode("ascii")
        except UnicodeDecodeError:
            version = ""
        if len(version_bytes) != size or not _VERSION.match(version) or not ciphertext:
            raise KeyUnwrapError(f"{self._where()}: the wrapped key is malformed or truncated")
        if self._version and version != self._version:
            raise KeyUnwrapError(
                f"{self._where()}: the data key was wrapped by key version {version}, "
                "not the pinned one"
            )
        _, crypto = self._client(version, "unwrapKey")
        failure: Exception | None = None
        plaintext = b""
        try:
            plaintext = bytes(crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, ciphertext).key)
        except Exception as exc:
            failure = exc
        if failure is not None:
            error = self._translate(failure, "unwrapKey", version)
            del failure  # its response holds the request, bearer token included
            raise error
        digest, key = plaintext[:_DIGEST_SIZE], plaintext[_DIGEST_SIZE:]
        if len(plaintext) <= _DIGEST_SIZE or not hmac.compare_digest(digest, expected):
            raise KeyUnwrapError(
                f"{self._where()}: the wrapped data key belongs to another stack (its context "
                "does not match)"
            )
        return key


def _commitment(context: Mapping[str, str]) -> bytes:
    return hashlib.sha256(_DOMAIN + context_bytes(context)).digest()


def _inner_code(exc: Any) -> str:
    error = getattr(exc, "error", None)
    inner = getattr(error, "innererror", None)
    if isinstance(inner, Mapping):
        return str(inner.get("code", ""))
    return ""


def _service_message(exc: Any) -> str:
    """The service's error code and message, or the first line of the SDK's."""
    error = getattr(exc, "error", None)
    code, message = getattr(error, "code", None), getattr(error, "message", None)
    if code or message:
        text = f"{code}: {message}" if code and message else str(code or message)
    else:
        text = str(getattr(exc, "message", "") or exc)
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:300]


def _remember_kid(response: Any, seen: dict[str, str]) -> None:
    try:
        body = response.http_response.json()
    except Exception:
        return
    if isinstance(body, dict) and isinstance(body.get("kid"), str):
        seen["kid"] = body["kid"]


def _version_of(seen: Mapping[str, str]) -> str:
    segments = [s for s in urlsplit(seen.get("kid", "")).path.split("/") if s]
    return segments[2] if len(segments) == 3 and segments[0] == "keys" else ""
