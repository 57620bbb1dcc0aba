"""`file://PATH`: a data key wrapped under a 32-byte key kept in a local file.

The key file holds the key as one line of base64 (a file of exactly 32 raw bytes is
read too). It must be readable and writable by its owner only: a file open to group or
others is refused with :class:`veil.KeyFilePermissionError`. When a stack is created
and the file does not exist, it is created with mode 0600 (never overwriting a file).

The path is kept as written (``~/keys/dev.key`` keeps its ``~``; a relative path is
relative to the ``base_dir`` given, else the current folder), and resolved only when
the file is opened. ``VEIL_KEY_FILE``, when set, names the file to open instead of a
stored path. The file is opened without following a symbolic link and without
blocking, then checked through the same descriptor: a regular file of a key file's
size, private to its owner. Errors name only the key file's path as given.
"""

from __future__ import annotations

import base64
import binascii
import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, NamedTuple
from urllib.parse import quote, unquote

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .._files import create_new
from ..errors import KeyFilePermissionError, KeyUnwrapError, ProviderConfigError
from ._envelope import KeyWrap
from .base import SecretsProvider

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["LocalKeyProvider"]

ENV_KEY_FILE: Final = "VEIL_KEY_FILE"
KEY_SIZE: Final = 32
_AAD_PREFIX: Final = b"veil/file/v1/wrap\x00"
# 32 raw bytes, or 44 base64 characters with no, "\n" or "\r\n" line end.
_KEY_FILE_SIZES: Final = frozenset({KEY_SIZE, 44, 45, 46})
_B64_LEN: Final = 44
# Never follow a final symbolic link, never wait on a FIFO or a device, never make a
# terminal the controlling one, never leak the descriptor into a child process.
_OPEN_FLAGS: Final = (
    os.O_RDONLY
    | getattr(os, "O_NOFOLLOW", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_BINARY", 0)
)
# errno of open(O_NOFOLLOW) on a symbolic link: ELOOP (Linux, macOS), EMLINK (FreeBSD).
_LINK_ERRNOS: Final = frozenset({errno.ELOOP, errno.EMLINK})


class _Target(NamedTuple):
    path: str  # the path to open: "~" expanded, a relative path joined to base_dir
    given: str  # the path as written, the only one errors name
    where: str  # "the key file GIVEN", naming VEIL_KEY_FILE when that chose it


def _fingerprint(key: bytes) -> str:
    return HKDF(hashes.SHA256(), 8, None, b"veil/file/v1/fingerprint").derive(key).hex()


class LocalKeyProvider(SecretsProvider):
    """Protects a stack's data key with a key file (``file://PATH``).

    ``create=True`` (the default) creates a missing key file, mode 0600, the first time
    a key is wrapped; unwrapping never creates one. ``describe()`` stores the path as
    written and the key's fingerprint (an HKDF output, not the key). ``base_dir`` is
    the folder a relative path is relative to (default: the current folder).
    """

    scheme: ClassVar[str] = "file"
    url_options: ClassVar[frozenset[str]] = frozenset({"base_dir"})

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        create: bool = True,
        base_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self._given = os.fspath(path)
        if not isinstance(self._given, str) or not self._given:
            raise ProviderConfigError("a key file path must be a non-empty str")
        if "\x00" in self._given:
            raise ProviderConfigError("a key file path cannot hold a NUL character")
        self._base_dir = None if base_dir is None else os.fspath(base_dir)
        self._create = create
        self._from_description = False  # then VEIL_KEY_FILE overrides the stored path
        self._expected: str | None = None  # stored fingerprint, when opening a stack
        self._key: bytes | None = None

    @property
    def path(self) -> Path:
        """The key file's path as written (``~`` and relative paths unresolved)."""
        return Path(self._given)

    # --- settings -----------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """``{"path": ..., "fingerprint": ...}``; reads (or creates) the key file."""
        return {
            "path": self._given,
            "fingerprint": _fingerprint(self._load(create=self._create)),
        }

    @classmethod
    def from_description(
        cls,
        description: Mapping[str, Any],
        *,
        base_dir: str | os.PathLike[str] | None = None,
    ) -> Self:
        """The stored path (or ``VEIL_KEY_FILE``), checked against the stored fingerprint."""
        if not isinstance(description, Mapping) or not isinstance(description.get("path"), str):
            raise ProviderConfigError("a file:// provider description needs a 'path' string")
        provider = cls(description["path"], create=False, base_dir=base_dir)
        provider._from_description = True
        provider._expected = cls._check_fingerprint(description.get("fingerprint"))
        return provider

    def with_description(self, description: Mapping[str, Any]) -> LocalKeyProvider:
        """This instance's key file, checked against the stored fingerprint."""
        provider = type(self)(self._given, create=False, base_dir=self._base_dir)
        provider._from_description = self._from_description  # VEIL_KEY_FILE still applies
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
    def from_url(cls, url: str, *, base_dir: str | os.PathLike[str] | None = None) -> Self:
        """``file:///absolute/path``, ``file://~/path`` or ``file://relative/path``
        (percent-encoded); a relative path is relative to ``base_dir`` if given."""
        cls._split_url(url)
        raw = unquote(url.split("://", 1)[1].split("?", 1)[0])
        if not raw:
            raise ProviderConfigError(
                "file:// needs a path to a key file, e.g. file://~/.veil/dev.key"
            )
        return cls(raw, base_dir=base_dir)

    @property
    def url(self) -> str:
        return "file://" + quote(self._given)

    def __repr__(self) -> str:
        return f"LocalKeyProvider({self._given!r})"

    # --- the key file -------------------------------------------------------------

    def _target(self) -> _Target:
        if self._from_description:
            override = os.environ.get(ENV_KEY_FILE)
            if override:
                return _Target(
                    os.path.expanduser(override),
                    override,
                    f"the key file {override} (named by {ENV_KEY_FILE})",
                )
        path = os.path.expanduser(self._given)
        if self._base_dir is not None and not os.path.isabs(path):
            path = os.path.join(os.path.expanduser(self._base_dir), path)
        return _Target(path, self._given, f"the key file {self._given}")

    def _load(self, *, create: bool) -> bytes:
        if self._key is not None:
            return self._key
        target = self._target()
        path, where = target.path, target.where
        if "\x00" in path:
            raise ProviderConfigError("a key file path cannot hold a NUL character")
        failed: int | None = None
        try:
            fd = os.open(path, _OPEN_FLAGS)
        except OSError as exc:  # holds only the path and an errno
            failed = exc.errno or 0
        if failed is not None:
            if failed == errno.ENOENT:
                if create:
                    self._key = self._create_file(path, where)
                    return self._key
                raise ProviderConfigError(
                    f"{where} does not exist; restore it from your backup "
                    "(without it this stack's secrets cannot be read)"
                )
            if failed in _LINK_ERRNOS:
                raise ProviderConfigError(
                    f"{where} is a symbolic link; veil opens a key file only "
                    "through its own path: name the file itself"
                )
            if failed == errno.ENXIO:  # a socket
                raise ProviderConfigError(f"{where} is not a regular file")
            raise ProviderConfigError(f"cannot open {where}: {os.strerror(failed)}")
        self._key = self._parse(self._read(fd, target), where)
        return self._key

    @staticmethod
    def _read(fd: int, target: _Target) -> bytes:
        """The bytes of the open key file, checked through the same descriptor."""
        where = target.where
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):  # a FIFO, device, socket or folder
                raise ProviderConfigError(f"{where} is not a regular file")
            if os.name == "posix" and info.st_mode & 0o077:
                raise KeyFilePermissionError(
                    f"{where} is open to group or other users; run: chmod 600 {target.given}"
                )
            if info.st_size not in _KEY_FILE_SIZES:
                raise ProviderConfigError(
                    f"{where} does not hold a 32-byte key (base64 on one line)"
                )
            chunks: list[bytes] = []
            size = 0
            while size <= max(_KEY_FILE_SIZES):
                chunk = os.read(fd, max(_KEY_FILE_SIZES) + 1 - size)
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            return b"".join(chunks)
        finally:
            os.close(fd)

    @staticmethod
    def _parse(data: bytes, where: str) -> bytes:
        key = b""
        if len(data) == KEY_SIZE:
            key = data
        elif len(data) in _KEY_FILE_SIZES and data[_B64_LEN:] in (b"", b"\n", b"\r\n"):
            try:
                key = base64.b64decode(data[:_B64_LEN], validate=True)
            except binascii.Error:  # holds no key bytes
                key = b""
        if len(key) != KEY_SIZE:
            raise ProviderConfigError(f"{where} does not hold a 32-byte key (base64 on one line)")
        return key

    def _create_file(self, path: str, where: str) -> bytes:
        """Create the key file whole or not at all, never replacing an existing one
        (a crash while writing must not leave a partial key behind)."""
        key = os.urandom(KEY_SIZE)
        failed: str | None = None
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            created = create_new(Path(path), base64.b64encode(key) + b"\n", 0o600)
        except OSError as exc:
            failed = exc.strerror or type(exc).__name__
        if failed is not None:
            raise ProviderConfigError(f"cannot create {where}: {failed}")
        if not created:  # created meanwhile by another process: use that one
            return self._load(create=False)
        return key

    # --- wrapping -----------------------------------------------------------------

    def _wrap(self, *, create: bool) -> KeyWrap:
        key = self._load(create=create)
        where = self._target().where
        if self._expected is not None and _fingerprint(key) != self._expected:
            raise KeyUnwrapError(
                f"the key in {where} (fingerprint {_fingerprint(key)}) is not the key "
                f"this stack was written with (fingerprint {self._expected})"
            )
        return KeyWrap(
            HKDF(hashes.SHA256(), 32, None, b"veil/file/v1/wrap-key").derive(key),
            label=_AAD_PREFIX,
            what="a file:// provider",
            failure=(
                f"the wrapped data key does not open with {where}: another key, "
                "another stack, or altered bytes"
            ),
        )

    def wrap_key(self, data_key: bytes, context: Mapping[str, str]) -> bytes:
        """``version (1) || nonce (12) || AES-256-GCM(data key, aad = context)``."""
        return self._wrap(create=self._create).wrap(data_key, context)

    def unwrap_key(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        return self._wrap(create=False).unwrap(wrapped, context)
