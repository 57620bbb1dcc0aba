"""`awskms://KEY`: a data key wrapped by AWS KMS.

Needs the optional extra ``veil[aws]`` (boto3). The key is named as in Pulumi's
``--secrets-provider``: ``awskms://1234abcd-...`` (key id), ``awskms://alias/NAME`` or
``awskms://arn:aws:kms:REGION:ACCOUNT:key/ID`` (an alias ARN works too), with
``?region=R`` and ``&profile=P``. Credentials and the endpoint come from boto3's usual
chain (environment, shared config and credentials files, SSO, instance roles;
``AWS_ENDPOINT_URL_KMS`` or ``AWS_ENDPOINT_URL``); none is ever stored.

The data key is encrypted with KMS ``Encrypt`` under the context mapping as the
``EncryptionContext``, and decrypted with ``Decrypt`` given the same ``KeyId`` and
context: a wrapped key copied to another stack does not unwrap. The wrapped key is
KMS's ciphertext blob, unchanged. One ``Decrypt`` opens a stack; saving one makes no
call at all unless the key changes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn
from urllib.parse import parse_qsl, quote

from .. import _aws
from ..errors import (
    KeyUnwrapError,
    ProviderAccessError,
    ProviderConfigError,
    ProviderError,
    ProviderKeyError,
    ProviderUnavailableError,
    SecretPickleError,
)
from .base import SecretsProvider

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["AwsKmsProvider"]

_ARN = re.compile(r"arn:aws[a-z-]*:kms:([a-z0-9-]+):(\d{12}):(key|alias)/[A-Za-z0-9/_+=,.@:-]+")
_KEY = re.compile(r"(alias/[A-Za-z0-9/_-]+|[A-Za-z0-9-]{1,128})")
_PARAMS = ("region", "profile", "awssdk")  # awssdk: Pulumi's SDK switch, meaningless here

# Codes that say the credentials themselves were refused.
_BAD_CREDENTIALS = {
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "ExpiredTokenException",
    "ExpiredToken",
    "InvalidClientTokenId",
    "IncompleteSignature",
    "MissingAuthenticationToken",
}


def _require_boto3() -> None:
    if not _aws.have_boto3():
        raise ProviderConfigError(f"the awskms:// provider needs boto3: {_aws.INSTALL_HINT}")


class AwsKmsProvider(SecretsProvider):
    """Protects a stack's data key with an AWS KMS symmetric key.

    ``key_id``: a key id, ``alias/NAME``, or a key or alias ARN. ``region``: the key's
    region (default: the ARN's, else boto3's usual chain: ``AWS_REGION``,
    ``AWS_DEFAULT_REGION``, the profile). ``profile``: a named profile of the shared
    AWS config for the credentials (default: boto3's chain).

    Permissions: ``kms:Encrypt`` to create a stack or change its key, ``kms:Decrypt``
    to open it.
    """

    scheme: ClassVar[str] = "awskms"

    def __init__(
        self, key_id: str, *, region: str | None = None, profile: str | None = None
    ) -> None:
        _require_boto3()
        if not isinstance(key_id, str) or not key_id.strip():
            raise ProviderConfigError(
                "awskms:// needs a key: awskms://KEY-ID, awskms://alias/NAME or "
                "awskms://arn:aws:kms:REGION:ACCOUNT:key/ID"
            )
        key_id = key_id.strip()
        arn = _ARN.fullmatch(key_id)
        if key_id.startswith("arn:") and arn is None:
            raise ProviderConfigError(
                f"awskms:// key {key_id!r} is not a KMS key or alias ARN "
                "(arn:aws:kms:REGION:ACCOUNT:key/ID or ...:alias/NAME)"
            )
        if arn is None and not _KEY.fullmatch(key_id):
            raise ProviderConfigError(
                f"awskms:// key {key_id!r} is neither a key id, alias/NAME nor a key ARN"
            )
        if arn is not None:
            if region is not None and region != arn.group(1):
                raise ProviderConfigError(
                    f"awskms:// key {key_id} is in region {arn.group(1)}, but the URL says "
                    f"region={region}; drop ?region or make them agree"
                )
            region = arn.group(1)
        if profile is not None and not profile:
            raise ProviderConfigError("awskms:// ?profile= is empty")
        self._key_id = key_id
        self._profile = profile
        try:
            self._session = _aws.make_session(profile=profile, region=region)
        except Exception as exc:
            failure = _aws.classify(exc)
            if failure is None:
                raise
            detail = failure.message
        else:
            detail = ""
        if detail:
            raise ProviderAccessError(
                f"AWS KMS (awskms://{key_id}): {detail}. Check the profile name in "
                "~/.aws/config, or drop ?profile= to use AWS_PROFILE or the environment"
            )
        self._region: str | None = region or self._session.region_name
        if not self._region:
            raise ProviderConfigError(
                f"awskms://{key_id} names no region: add ?region=REGION to the URL, use a key "
                "ARN, or set AWS_REGION"
            )
        self._client: Any = None

    # --- settings -----------------------------------------------------------------------

    @property
    def key_id(self) -> str:
        """The KMS key as given: key id, ``alias/NAME`` or ARN."""
        return self._key_id

    @property
    def region(self) -> str:
        assert self._region is not None
        return self._region

    @property
    def url(self) -> str:
        url = f"awskms://{quote(self._key_id, safe='/:@+=,.-_')}?region={quote(self.region)}"
        if self._profile:
            url += f"&profile={quote(self._profile)}"
        return url

    def describe(self) -> dict[str, Any]:
        # The profile and endpoint are this machine's way to reach KMS, not the stack's.
        return {"key_id": self._key_id, "region": self.region}

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> Self:
        if not isinstance(description, Mapping):
            raise ProviderConfigError("an awskms:// provider description must be a JSON object")
        key_id, region = description.get("key_id"), description.get("region")
        if not isinstance(key_id, str) or not isinstance(region, str) or not region:
            raise ProviderConfigError(
                "an awskms:// provider description needs 'key_id' and 'region' strings"
            )
        return cls(key_id, region=region)

    def with_description(self, description: Mapping[str, Any]) -> AwsKmsProvider:
        """The stored key and region, reached with this instance's profile."""
        stored = type(self).from_description(description)
        return type(self)(stored.key_id, region=stored.region, profile=self._profile)

    @classmethod
    def from_url(cls, url: str) -> Self:
        """``awskms://KEY[?region=R&profile=P]``; ``awskms:///arn:...`` works too."""
        cls._split_url(url)
        rest = url.split("://", 1)[1]
        key, _, query = rest.partition("?")
        key = key.lstrip("/")
        params: dict[str, str] = {}
        for name, value in parse_qsl(query, keep_blank_values=True):
            if name not in _PARAMS:
                raise ProviderConfigError(
                    f"unknown parameter {name!r} in {url!r}; awskms:// takes region and profile"
                )
            params[name] = value
        return cls(key, region=params.get("region") or None, profile=params.get("profile"))

    def __reduce__(self) -> NoReturn:
        raise SecretPickleError(
            "an AwsKmsProvider holds an AWS session with credentials and cannot be pickled; "
            "pickle its url and build it again with provider_from_url"
        )

    # --- wrapping -----------------------------------------------------------------------

    def _kms(self) -> Any:
        if self._client is None:
            self._client = _aws.make_client(
                self._session, "kms", region=self._region, endpoint=None
            )
        return self._client

    def _where(self) -> str:
        endpoint = getattr(getattr(self._client, "meta", None), "endpoint_url", None)
        return f"AWS KMS key {self._key_id} in {self.region}" + (
            f" at {endpoint}" if endpoint else ""
        )

    def wrap_key(self, data_key: bytes, context: Mapping[str, str]) -> bytes:
        ctx = _context(context)
        failure: _aws.Failure | None = None
        try:
            response = self._kms().encrypt(
                KeyId=self._key_id, Plaintext=bytes(data_key), EncryptionContext=ctx
            )
        except Exception as exc:
            failure = _aws.classify(exc)
            if failure is None:
                raise
        if failure is not None:
            self._fail("kms:Encrypt", failure)
        blob = response.get("CiphertextBlob")
        if not isinstance(blob, bytes) or not blob:
            raise ProviderUnavailableError(f"{self._where()}: Encrypt returned no ciphertext")
        return blob

    def unwrap_key(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        ctx = _context(context)
        if not isinstance(wrapped, (bytes, bytearray)) or not wrapped:
            raise KeyUnwrapError(f"{self._where()}: the wrapped key is empty")
        failure: _aws.Failure | None = None
        try:
            response = self._kms().decrypt(
                CiphertextBlob=bytes(wrapped), KeyId=self._key_id, EncryptionContext=ctx
            )
        except Exception as exc:
            failure = _aws.classify(exc)
            if failure is None:
                raise
        if failure is not None:
            self._fail("kms:Decrypt", failure)
        key = response.get("Plaintext")
        if not isinstance(key, bytes) or not key:
            raise KeyUnwrapError(f"{self._where()}: Decrypt returned no key")
        return key

    def _fail(self, action: str, failure: _aws.Failure) -> NoReturn:
        where = self._where()
        code, message = failure.code, failure.message
        if failure.kind == "unreachable":
            raise ProviderUnavailableError(
                f"{where}: the service could not be reached ({code}). Check the network, "
                "AWS_ENDPOINT_URL_KMS / AWS_ENDPOINT_URL and the region. Nothing was written."
            )
        if failure.kind == "credentials":
            raise ProviderAccessError(
                f"{where}: no usable AWS credentials ({code}). Set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or ?profile=NAME, or sign in again "
                "(aws sso login). Nothing was written."
            )
        if failure.kind != "client":
            raise ProviderError(f"{where}: {action} failed ({code}). Nothing was written.")
        if action == "kms:Decrypt" and (
            code in ("InvalidCiphertextException", "IncorrectKeyException")
            or (code == "ValidationException")
            or (code == "AccessDeniedException" and "ciphertext refers to" in message)
        ):
            raise KeyUnwrapError(
                f"{where} cannot unwrap this stack's data key ({code}): it was wrapped "
                "for another stack or another key, or it is corrupted. If the key is right, "
                "check that it exists in this region and that the caller has kms:Decrypt."
            )
        if code in _BAD_CREDENTIALS:
            raise ProviderAccessError(
                f"{where}: the AWS credentials were refused ({code}): they are invalid or "
                "expired. Refresh them (aws sso login, new session token) and retry."
            )
        if code == "AccessDeniedException" or failure.status == 403:
            raise ProviderAccessError(
                f"{where}: access denied; the caller needs the {action} permission on this "
                f"key (IAM policy or key policy). AWS says: {message}"
            )
        if code == "NotFoundException":
            raise ProviderKeyError(
                f"{where}: no such key. Check the key id or alias, and the region "
                f"(?region=): a KMS key lives in one region. AWS says: {message}"
            )
        if code == "DisabledException":
            raise ProviderKeyError(
                f"{where}: the key is disabled. Enable it (aws kms enable-key) to use it."
            )
        if code == "KMSInvalidStateException":
            raise ProviderKeyError(
                f"{where}: the key cannot be used in its state (pending deletion or "
                f"import). AWS says: {message}"
            )
        if code == "InvalidKeyUsageException":
            raise ProviderKeyError(
                f"{where}: the key is of the wrong type; veil needs a symmetric encryption "
                "key (KeySpec SYMMETRIC_DEFAULT, KeyUsage ENCRYPT_DECRYPT)."
            )
        raise ProviderUnavailableError(
            f"{where}: {action} failed ({code}): {message}. Nothing was written."
        )

    def __repr__(self) -> str:
        return f"AwsKmsProvider({self.url!r})"


def _context(context: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(context, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in context.items()
    ):
        raise ProviderConfigError("a key context must map str to str")
    return dict(context)
