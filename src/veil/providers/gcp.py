"""`gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K`: Google Cloud KMS.

Needs the optional extra ``veil[gcp]`` (``google-cloud-kms``). The data key is wrapped
with the CryptoKey's ``encrypt`` method and unwrapped with ``decrypt``, each once per
stack write or open. The stack context is bound to the wrapped key as KMS
*additional authenticated data*: the bytes of :func:`veil.providers.context_bytes`
(``{"stack":"dev"}``), so a wrapped key copied to another stack does not decrypt. The
wrapped key is the KMS ciphertext itself, so ``gcloud kms decrypt`` can recover a data
key without veil (pass the context bytes with ``--additional-authenticated-data-file``).

Credentials come from Application Default Credentials (``GOOGLE_APPLICATION_CREDENTIALS``,
``gcloud auth application-default login``, the metadata server on Google Cloud) and are
never stored. ``VEIL_GCPKMS_ENDPOINT`` (for example ``http://127.0.0.1:8080``) sends the
calls to another endpoint than ``cloudkms.googleapis.com``, such as a local test server;
it is read from the environment only, never from stored settings.

Every call is bounded: each attempt times out after :data:`ATTEMPT_TIMEOUT` seconds and
transient failures (connection refused or reset, 429, 500, 503) are retried for at most
:data:`RETRY_DEADLINE` seconds, so an unreachable service fails in well under 30 s.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final, NoReturn

from ..errors import (
    KeyUnwrapError,
    ProviderAccessError,
    ProviderConfigError,
    ProviderError,
    ProviderKeyError,
    ProviderUnavailableError,
    SecretPickleError,
    VeilError,
)
from .base import SecretsProvider, context_bytes

_sdk: Any
try:
    import google.auth
    import google.auth.exceptions
    import google_crc32c
    import requests
    from google.api_core import client_options as _client_options
    from google.api_core import exceptions as _api_exceptions
    from google.api_core import retry as _retry
    from google.auth.transport.requests import Request as _AuthRequest
    from google.cloud import kms_v1 as _sdk
    from google.oauth2 import service_account as _service_account
except ImportError:  # pragma: no cover - exercised only without the extra
    _sdk = None

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["ATTEMPT_TIMEOUT", "ENV_ENDPOINT", "RETRY_DEADLINE", "GcpKmsProvider"]

ENV_ENDPOINT: Final = "VEIL_GCPKMS_ENDPOINT"
ATTEMPT_TIMEOUT: Final = 8.0
"""Seconds one HTTP attempt (or one credentials refresh) may take."""
RETRY_DEADLINE: Final = 8.0
"""Seconds within which transient failures are retried."""

SCOPE: Final = "https://www.googleapis.com/auth/cloud-platform"
ROLE: Final = "roles/cloudkms.cryptoKeyEncrypterDecrypter"
ENCRYPT_PERMISSION: Final = "cloudkms.cryptoKeyVersions.useToEncrypt"
DECRYPT_PERMISSION: Final = "cloudkms.cryptoKeyVersions.useToDecrypt"
MAX_CIPHERTEXT: Final = 64 * 1024 + 1024

_MISSING: Final = "the gcpkms:// provider needs google-cloud-kms: pip install 'veil[gcp]'"
_ID = r"[A-Za-z0-9_.-]+"
_KEY_NAME = re.compile(rf"projects/{_ID}/locations/{_ID}/keyRings/{_ID}/cryptoKeys/{_ID}")
_ADC_HELP: Final = (
    "run 'gcloud auth application-default login', or set GOOGLE_APPLICATION_CREDENTIALS "
    "to a service account key file"
)


def _require_sdk() -> Any:
    if _sdk is None:
        raise ProviderConfigError(_MISSING)
    return _sdk


def _check_key_name(name: object) -> str:
    if not isinstance(name, str) or not _KEY_NAME.fullmatch(name):
        raise ProviderConfigError(
            "a Cloud KMS key is named projects/PROJECT/locations/LOCATION/keyRings/RING/"
            f"cryptoKeys/KEY (as in gcpkms://projects/p/locations/global/keyRings/r/"
            f"cryptoKeys/k), got {name!r}"
        )
    return name


def _crc32c(data: bytes) -> int:
    return int(google_crc32c.value(data))


class GcpKmsProvider(SecretsProvider):
    """Protects a stack's data key with a Cloud KMS symmetric key.

    ``key``: the CryptoKey's resource name (``projects/.../cryptoKeys/K``); encrypting
    uses its primary version, decrypting whichever version encrypted.
    ``credentials``: a ``google.auth`` credentials object (default: Application Default
    Credentials, looked up on first use). ``endpoint``: an API endpoint other than
    ``cloudkms.googleapis.com`` (default: ``$VEIL_GCPKMS_ENDPOINT`` if set).

    The caller needs ``cloudkms.cryptoKeyVersions.useToEncrypt`` to create a stack (or
    rotate its data key) and ``cloudkms.cryptoKeyVersions.useToDecrypt`` to open one; the role
    ``roles/cloudkms.cryptoKeyEncrypterDecrypter`` on the key grants both.
    """

    scheme: ClassVar[str] = "gcpkms"

    def __init__(self, key: str, *, credentials: Any = None, endpoint: str | None = None) -> None:
        _require_sdk()
        self._key = _check_key_name(key)
        self._credentials = credentials
        self._endpoint = endpoint
        self._client: Any = None
        self._mutex = threading.Lock()

    @property
    def key(self) -> str:
        """The CryptoKey's resource name."""
        return self._key

    # --- settings -------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        return {"key": self._key}

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> Self:
        if not isinstance(description, Mapping) or set(description) != {"key"}:
            raise ProviderConfigError("a gcpkms:// provider description is {'key': 'projects/...'}")
        return cls(_check_key_name(description["key"]))

    def with_description(self, description: Mapping[str, Any]) -> GcpKmsProvider:
        """This instance's credentials and endpoint with the stored key name."""
        provider = type(self).from_description(description)
        provider._credentials = self._credentials
        provider._endpoint = self._endpoint
        if provider._key == self._key:
            provider._client = self._client
        return provider

    @classmethod
    def from_url(cls, url: str) -> Self:
        """``gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K``."""
        parts = cls._split_url(url)
        if parts.query or parts.fragment:
            raise ProviderConfigError(
                "gcpkms:// takes no settings after the key name; the endpoint comes from "
                f"${ENV_ENDPOINT} and the credentials from Application Default Credentials"
            )
        return cls(url.split("://", 1)[1])

    @property
    def url(self) -> str:
        return f"gcpkms://{self._key}"

    def __repr__(self) -> str:
        return f"GcpKmsProvider({self._key!r})"

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise SecretPickleError(
            "a GcpKmsProvider holds credentials and cannot be pickled; build a new one "
            "from its URL or describe() in the other process"
        )

    # --- the client -------------------------------------------------------------------

    def _what(self) -> str:
        where = self._endpoint or os.environ.get(ENV_ENDPOINT) or "cloudkms.googleapis.com"
        return f"Cloud KMS key {self._key} (at {where})"

    def _get_client(self) -> Any:
        with self._mutex:
            if self._client is None:
                shared = self._shared_key()
                cached = _SHARED.get(shared) if shared else None
                if cached is not None:
                    self._credentials, self._client = cached
                else:
                    self._client = self._build_client()
                    if shared:
                        with _SHARED_LOCK:
                            if len(_SHARED) >= 8:
                                _SHARED.clear()
                            _SHARED[shared] = (self._credentials, self._client)
            return self._client

    def _shared_key(self) -> tuple[str, str, int, int] | None:
        """Providers built from the same key file share credentials and client: loading
        a service account's RSA key costs about 120 ms, as much as the rest of an open
        (benchmarks/bench_providers.py, gcpkms open of 10,000 secrets: 250-520 ms
        uncached, 200-220 ms shared)."""
        path = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
        if self._credentials is not None or not path:
            return None
        try:
            info = os.stat(path)
        except OSError:
            return None
        endpoint = self._endpoint or os.environ.get(ENV_ENDPOINT) or ""
        return endpoint, path, info.st_mtime_ns, info.st_size

    def _build_client(self) -> Any:
        failure: VeilError | None = None
        try:
            if self._credentials is None:
                credentials, _ = google.auth.default(scopes=[SCOPE])
                if isinstance(credentials, _service_account.Credentials):
                    # Tokens signed locally (as the client library does anyway): no
                    # round trip to a token endpoint before the first call.
                    credentials = credentials.with_always_use_jwt_access(True)  # type: ignore[no-untyped-call]
                self._credentials = credentials
        except google.auth.exceptions.DefaultCredentialsError:
            failure = ProviderAccessError(
                f"no Google Cloud credentials found for {self._what()}: {_ADC_HELP}"
            )
        except google.auth.exceptions.GoogleAuthError as exc:
            failure = ProviderAccessError(
                f"the Google Cloud credentials for {self._what()} cannot be loaded "
                f"({type(exc).__name__}); {_ADC_HELP}"
            )
        if failure is not None:
            raise failure
        endpoint = self._endpoint or os.environ.get(ENV_ENDPOINT) or None
        options = _client_options.ClientOptions(api_endpoint=endpoint) if endpoint else None
        return _sdk.KeyManagementServiceClient(
            credentials=self._credentials, transport="rest", client_options=options
        )

    def _ensure_token(self) -> None:
        # The client library refreshes credentials without a timeout of its own;
        # refreshing here first keeps the whole call bounded.
        credentials = self._credentials
        if credentials is None or credentials.valid:
            return
        credentials.refresh(functools.partial(_AuthRequest(), timeout=ATTEMPT_TIMEOUT))

    def _call(self, method: str, request: dict[str, Any]) -> Any:
        permission = ENCRYPT_PERMISSION if method == "encrypt" else DECRYPT_PERMISSION
        failure: VeilError | None = None
        try:
            client = self._get_client()
            self._ensure_token()
            retry = _retry.Retry(
                predicate=_retry.if_exception_type(*_TRANSIENT),
                initial=0.25,
                maximum=2.0,
                multiplier=2.0,
                timeout=RETRY_DEADLINE,
            )
            return getattr(client, method)(request=request, retry=retry, timeout=ATTEMPT_TIMEOUT)
        except VeilError:
            raise
        except Exception as exc:
            # Classified here, raised below: the SDK's exception holds the HTTP request,
            # whose body holds the data key, and must not become __context__.
            failure = self._classify(exc, method, permission)
        raise failure

    def _classify(self, exc: Exception, method: str, permission: str) -> VeilError:
        what = self._what()
        if isinstance(exc, google.auth.exceptions.RefreshError):
            return ProviderAccessError(
                f"the Google Cloud credentials for {what} could not be refreshed: they are "
                f"expired, revoked or invalid; {_ADC_HELP}"
            )
        if isinstance(exc, google.auth.exceptions.TransportError):
            return ProviderUnavailableError(
                f"the Google token endpoint could not be reached to authenticate to {what}; "
                "check the network and proxy settings"
            )
        if isinstance(exc, google.auth.exceptions.GoogleAuthError):
            return ProviderAccessError(
                f"the Google Cloud credentials for {what} cannot be used "
                f"({type(exc).__name__}); {_ADC_HELP}"
            )
        if isinstance(exc, _api_exceptions.RetryError) and exc.cause is not None:
            cause = exc.cause
            if not isinstance(cause, _api_exceptions.GoogleAPICallError):
                return self._unreachable(f"{type(cause).__name__}")
            exc = cause
        if isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return self._unreachable(type(exc).__name__)
        if not isinstance(exc, _api_exceptions.GoogleAPICallError):
            return ProviderError(f"{what}: {method} failed unexpectedly ({type(exc).__name__})")
        status, message = _status_of(exc)
        said = f"Cloud KMS said: {message}" if message else f"HTTP {exc.code}"
        if exc.code == 401 or status == "UNAUTHENTICATED":
            return ProviderAccessError(
                f"{what} rejected the credentials (expired or invalid); {_ADC_HELP}. {said}"
            )
        if exc.code == 403 or status == "PERMISSION_DENIED":
            return ProviderAccessError(
                f"{what}: permission {permission} denied (or the key does not exist). Grant "
                f"the caller {ROLE} on the key, or check the key name. {said}"
            )
        if exc.code == 404 or status == "NOT_FOUND":
            return ProviderKeyError(
                f"{what} does not exist: check the project, the location (region), the key "
                f"ring and the key name. {said}"
            )
        if status == "FAILED_PRECONDITION":
            return ProviderKeyError(
                f"{what} cannot be used: a disabled or destroyed key version, or a key whose "
                f"purpose is not ENCRYPT_DECRYPT (symmetric). {said}"
            )
        if method == "decrypt" and status == "INVALID_ARGUMENT":
            return KeyUnwrapError(
                f"{what} did not decrypt the wrapped data key: it was made by another key, "
                f"for another stack, or altered. {said}"
            )
        if exc.code in (429, 500, 502, 503, 504):
            return self._unreachable(f"HTTP {exc.code}")
        return ProviderError(f"{what}: {method} failed. {said}")

    def _unreachable(self, reason: str) -> ProviderUnavailableError:
        return ProviderUnavailableError(
            f"{self._what()} could not be reached within {RETRY_DEADLINE:.0f} s ({reason}); "
            f"check the network, proxy settings and ${ENV_ENDPOINT}"
        )

    # --- wrapping -----------------------------------------------------------------------

    def wrap_key(self, data_key: bytes, context: Mapping[str, str]) -> bytes:
        aad = context_bytes(context)
        response = self._call(
            "encrypt",
            {
                "name": self._key,
                "plaintext": data_key,
                "additional_authenticated_data": aad,
                "plaintext_crc32c": _crc32c(data_key),
                "additional_authenticated_data_crc32c": _crc32c(aad),
            },
        )
        ciphertext = bytes(response.ciphertext)
        # Integrity checks Google asks clients to make on every encrypt response.
        if not (
            response.verified_plaintext_crc32c
            and response.verified_additional_authenticated_data_crc32c
            and response.ciphertext_crc32c == _crc32c(ciphertext)
            and str(response.name).startswith(self._key + "/cryptoKeyVersions/")
            and ciphertext
        ):
            raise ProviderUnavailableError(
                f"{self._what()}: the encrypt response failed its integrity checks (CRC32C "
                "or key name); nothing was written. Retry."
            )
        return ciphertext

    def unwrap_key(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        if not isinstance(wrapped, bytes) or not wrapped or len(wrapped) > MAX_CIPHERTEXT:
            raise KeyUnwrapError(
                "the wrapped data key is empty, too long or not bytes: not from gcpkms://"
            )
        aad = context_bytes(context)
        response = self._call(
            "decrypt",
            {
                "name": self._key,
                "ciphertext": wrapped,
                "additional_authenticated_data": aad,
                "ciphertext_crc32c": _crc32c(wrapped),
                "additional_authenticated_data_crc32c": _crc32c(aad),
            },
        )
        plaintext = bytes(response.plaintext)
        if response.plaintext_crc32c != _crc32c(plaintext):
            raise ProviderUnavailableError(
                f"{self._what()}: the decrypt response failed its CRC32C check. Retry."
            )
        return plaintext


def _status_of(exc: Any) -> tuple[str, str]:
    """``(status, message)`` of Google's JSON error envelope, or empty strings."""
    try:
        error = exc.response.json()["error"]
        status, message = error.get("status", ""), error.get("message", "")
        if isinstance(status, str) and isinstance(message, str):
            return status, message[:300]
    except (AttributeError, KeyError, TypeError, ValueError, json.JSONDecodeError):
        pass
    return "", ""


# (endpoint, key file, its mtime and size) -> (credentials, client); see _shared_key.
_SHARED: dict[tuple[str, str, int, int], tuple[Any, Any]] = {}
_SHARED_LOCK = threading.Lock()

_TRANSIENT: tuple[type[Exception], ...] = ()
if _sdk is not None:
    _TRANSIENT = (
        _api_exceptions.ServiceUnavailable,
        _api_exceptions.InternalServerError,
        _api_exceptions.TooManyRequests,
        _api_exceptions.DeadlineExceeded,
        _api_exceptions.BadGateway,
        _api_exceptions.GatewayTimeout,
        requests.exceptions.ConnectionError,
        requests.exceptions.Timeout,
    )
