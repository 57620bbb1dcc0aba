"""`file://PATH`: a data key wrapped under a 32-byte key kept in a local file.

The key file holds the key as one line of base64 (a file of exactly 32 raw bytes is
read too). It must be readable and writable by its owner only: a file open to group or
others is refused with :class:`veil.KeyFilePermissionError`. When a stack is created
and the file does not exist, it is created with mode 0600 (never overwriting a file).
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final
from urllib.parse import quote, unquote

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .._files import create_new
from ..errors import KeyFilePermissionError, KeyUnwrapError, ProviderConfigError
from .base import SecretsProvider, context_bytes

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["LocalKeyProvider"]

KEY_SIZE: Final = 32
_FORMAT: Final = 1
_AAD_PREFIX: Final = b"veil/file/v1/wrap\x00"


def _fingerprint(key: bytes) -> str:
    return HKDF(hashes.SHA256(), 8, None, b"veil/file/v1/fingerprint").derive(key).hex()


class LocalKeyProvider(SecretsProvider):
    """Protects a stack's data key with a key file (``file://PATH``).

    ``create=True`` (the default) creates a missing key file, mode 0600, the first time
    a key is wrapped; unwrapping never creates one. ``describe()`` stores the path and
    the key's fingerprint (an HKDF output, not the key).
    """

    scheme: ClassVar[str] = "file"

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self._path = Path(path).expanduser()
        if "\x00" in str(self._path):
            raise ProviderConfigError("a key file path cannot hold a NUL character")
        self._create = create
        self._expected: str | None = None  # stored fingerprint, when opening a stack
        self._key: bytes | None = None

    @property
    def path(self) -> Path:
        """The key file's path."""
        return self._path

    # --- settings -----------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """``{"path": ..., "fingerprint": ...}``; reads (or creates) the key file."""
        return {
            "path": str(self._path),
            "fingerprint": _fingerprint(self._load(create=self._create)),
        }

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> Self:
        if not isinstance(description, Mapping) or not isinstance(description.get("path"), str):
            raise ProviderConfigError("a file:// provider description needs a 'path' string")
        provider = cls(description["path"], create=False)
        provider._expected = cls._check_fingerprint(description.get("fingerprint"))
        return provider

    def with_description(self, description: Mapping[str, Any]) -> LocalKeyProvider:
        """This instance's key file, checked against the stored fingerprint."""
        provider = type(self)(self._path, create=False)
        if isinstance(description, Mapping):
            provider._expected = self._check_fingerprint(description.get("fingerprint"))
        return provider

    @staticmethod
    def _check_fingerprint(value: object) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or len(value) != 16:
            raise ProviderConfigError("a file:// provider fingerprint must be 16 hex characters")
        return value

    @classmethod
    def from_url(cls, url: str) -> Self:
        """``file:///absolute/path`` or ``file://relative/path`` (percent-encoded)."""
        cls._split_url(url)
        raw = unquote(url.split("://", 1)[1].split("?", 1)[0])
        if not raw:
            raise ProviderConfigError(
                "file:// needs a path to a key file, e.g. file://~/.veil/dev.key"
            )
        return cls(raw)

    @property
    def url(self) -> str:
        return "file://" + quote(str(self._path))

    def __repr__(self) -> str:
        return f"LocalKeyProvider({str(self._path)!r})"

    # --- the key file -------------------------------------------------------------

    def _load(self, *, create: bool) -> bytes:
        if self._key is not None:
            return self._key
        path = self._path
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            if not create:
                raise ProviderConfigError(
                    f"the key file {path} does not exist; restore it from your backup "
                    "(without it this stack's secrets cannot be read)"
                ) from None
            self._key = self._create_file()
            return self._key
        except OSError as exc:
            raise ProviderConfigError(f"cannot open the key file {path}: {exc.strerror}") from None
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise ProviderConfigError(f"the key file {path} is not a regular file")
            if os.name == "posix" and info.st_mode & 0o077:
                raise KeyFilePermissionError(
                    f"the key file {path} is open to other users (mode "
                    f"{stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
                )
            with os.fdopen(fd, "rb") as f:
                fd = -1
                data = f.read(4096)
        finally:
            if fd >= 0:
                os.close(fd)
        self._key = self._parse(data)
        return self._key

    def _parse(self, data: bytes) -> bytes:
        text = data.strip()
        if len(text) == 44:
            try:
                key = base64.b64decode(text, validate=True)
            except binascii.Error:
                key = b""
            if len(key) == KEY_SIZE:
                return key
        if len(data) == KEY_SIZE:
            return data
        raise ProviderConfigError(
            f"the key file {self._path} does not hold a 32-byte key (base64 on one line)"
        )

    def _create_file(self) -> bytes:
        """Create the key file whole or not at all, never replacing an existing one
        (a crash while writing must not leave a partial key behind)."""
        key = os.urandom(KEY_SIZE)
        path = self._path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            created = create_new(path, base64.b64encode(key) + b"\n", 0o600)
        except OSError as exc:
            raise ProviderConfigError(
                f"cannot create the key file {path}: {exc.strerror}"
            ) from None
        if not created:  # created meanwhile by another process: use that one
            return self._load(create=False)
        return key

    # --- wrapping -----------------------------------------------------------------

    def _aead(self, *, create: bool) -> AESGCM:
        key = self._load(create=create)
        if self._expected is not None and _fingerprint(key) != self._expected:
            raise KeyUnwrapError(
                f"the key in {self._path} (fingerprint {_fingerprint(key)}) is not the key "
                f"this stack was written with (fingerprint {self._expected})"
            )
        return AESGCM(HKDF(hashes.SHA256(), 32, None, b"veil/file/v1/wrap-key").derive(key))

    def wrap_key(self, data_key: bytes, context: Mapping[str, str]) -> bytes:
        """``version (1) || nonce (12) || AES-256-GCM(data key, aad = context)``."""
        aad = _AAD_PREFIX + context_bytes(context)
        nonce = os.urandom(12)
        return (
            bytes([_FORMAT]) + nonce + self._aead(create=self._create).encrypt(nonce, data_key, aad)
        )

    def unwrap_key(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        aad = _AAD_PREFIX + context_bytes(context)
        aead = self._aead(create=False)
        if not isinstance(wrapped, bytes) or len(wrapped) < 1 + 12 + 16 or wrapped[0] != _FORMAT:
            raise KeyUnwrapError("the wrapped data key is truncated or not from a file:// provider")
        try:
            return aead.decrypt(wrapped[1:13], wrapped[13:], aad)
        except InvalidTag:
            raise KeyUnwrapError(
                f"the wrapped data key does not open with {self._path}: another key, "
                "another stack, or altered bytes"
            ) from None
