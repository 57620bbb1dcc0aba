"""`age://RECIPIENT[,RECIPIENT...]`: a data key encrypted to age recipients.

Needs the optional extra ``veil[age]`` (``pyrage``). Recipients are X25519 (``age1...``)
or SSH public keys (``ssh-ed25519 ...``, ``ssh-rsa ...``). To unwrap, the identity
file is named by ``VEIL_AGE_IDENTITY`` (or given to the constructor): an age identity
file (``AGE-SECRET-KEY-1...`` lines, ``#`` comments) or an OpenSSH private key.

The wrapped key is a plain binary age file, so ``age -d -i key.txt`` decrypts it. Its
plaintext is JSON: ``{"v": 1, "k": base64(data key), "ctx": context}``. age has no
associated data, so the context is carried inside and compared on unwrap. As with any
public-key wrapping, anyone holding a recipient's public key can make a wrapped key:
age authenticates no sender.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, NoReturn
from urllib.parse import quote, unquote

from ..errors import KeyUnwrapError, ProviderConfigError
from .base import SecretsProvider

pyrage: Any
try:
    import pyrage
except ImportError:  # pragma: no cover - exercised only without the extra
    pyrage = None

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["AgeProvider"]

ENV_IDENTITY: Final = "VEIL_AGE_IDENTITY"
_FORMAT: Final = 1
_MISSING: Final = "the age:// provider needs pyrage: pip install 'veil[age]'"


def _require_pyrage() -> Any:
    if pyrage is None:
        raise ProviderConfigError(_MISSING)
    return pyrage


def _parse_recipient(text: str) -> Any:
    age = _require_pyrage()
    try:
        if text.startswith("age1"):
            return age.x25519.Recipient.from_str(text)
        if text.startswith(("ssh-", "ecdsa-")):
            return age.ssh.Recipient.from_str(text)
    except Exception:  # pyrage raises its own RecipientError or ValueError
        return _bad_recipient(text)
    return _bad_recipient(text)


def _bad_recipient(text: str) -> NoReturn:
    raise ProviderConfigError(
        f"not an age recipient: {text!r}; use an X25519 key 'age1...' or an SSH public key"
    )


def parse_identities(text: str, source: str) -> list[Any]:
    """The identities in an age identity file's text (or an OpenSSH private key)."""
    age = _require_pyrage()
    # Errors are raised after the suppressed exception: the one pyrage raises may
    # quote the key text, and a chained __context__ would keep it.
    if "-----BEGIN OPENSSH PRIVATE KEY-----" in text:
        with contextlib.suppress(Exception):
            return [age.ssh.Identity.from_buffer(text.encode())]
        raise ProviderConfigError(f"{source} is not a usable OpenSSH private key")
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        identity = None
        with contextlib.suppress(Exception):
            identity = age.x25519.Identity.from_str(line)
        if identity is None:
            raise ProviderConfigError(
                f"line {number} of {source} is not an age identity (AGE-SECRET-KEY-1...)"
            )
        found.append(identity)
    if not found:
        raise ProviderConfigError(f"{source} holds no age identity")
    return found


class AgeProvider(SecretsProvider):
    """Protects a stack's data key with age (``age://age1...``).

    ``recipients``: who can unwrap (one or more public keys). ``identity_file``: the
    identity to unwrap with (default: ``$VEIL_AGE_IDENTITY``, read when needed);
    ``identities``: identity strings instead of a file.
    """

    scheme: ClassVar[str] = "age"

    def __init__(
        self,
        recipients: str | Sequence[str],
        *,
        identity_file: str | os.PathLike[str] | None = None,
        identities: Sequence[str] | None = None,
    ) -> None:
        _require_pyrage()
        if isinstance(recipients, str):
            recipients = [r for r in recipients.split(",")]
        self._recipients = [r.strip() for r in recipients if r.strip()]
        if not self._recipients:
            raise ProviderConfigError("age:// needs at least one recipient, e.g. age://age1...")
        self._parsed = [_parse_recipient(r) for r in self._recipients]
        self._identity_file = None if identity_file is None else Path(identity_file).expanduser()
        self._identities: list[Any] | None = (
            None
            if identities is None
            else parse_identities("\n".join(identities), "the identities given")
        )

    @property
    def recipients(self) -> list[str]:
        """The recipients a wrapped key is encrypted to."""
        return list(self._recipients)

    def describe(self) -> dict[str, Any]:
        return {"recipients": list(self._recipients)}

    @classmethod
    def from_description(cls, description: Mapping[str, Any]) -> Self:
        recipients = description.get("recipients") if isinstance(description, Mapping) else None
        if not isinstance(recipients, list) or not all(isinstance(r, str) for r in recipients):
            raise ProviderConfigError("an age:// provider description needs a 'recipients' list")
        return cls(recipients)

    def with_description(self, description: Mapping[str, Any]) -> AgeProvider:
        """This instance's identity with the stored recipients."""
        provider = type(self).from_description(description)
        provider._identity_file = self._identity_file
        provider._identities = self._identities
        return provider

    @classmethod
    def from_url(cls, url: str) -> Self:
        """``age://RECIPIENT[,RECIPIENT...]`` (SSH keys percent-encoded)."""
        cls._split_url(url)
        return cls(unquote(url.split("://", 1)[1]))

    @property
    def url(self) -> str:
        return "age://" + ",".join(quote(r, safe="") for r in self._recipients)

    def __repr__(self) -> str:
        return f"AgeProvider(recipients={self._recipients!r})"

    def _load_identities(self) -> list[Any]:
        if self._identities is not None:
            return self._identities
        path = self._identity_file
        if path is None:
            env = os.environ.get(ENV_IDENTITY)
            if not env:
                raise ProviderConfigError(
                    f"the age:// provider needs an identity to unwrap: set {ENV_IDENTITY} to "
                    "the path of an age identity file (age-keygen -o key.txt)"
                )
            path = Path(env).expanduser()
        problem = None
        try:
            raw = path.read_bytes()
        except OSError as exc:  # holds the path and an errno, nothing read
            problem = type(exc).__name__
        if problem is not None:
            raise ProviderConfigError(f"cannot read the age identity file {path}: {problem}")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:  # its .object is the key file's bytes
            problem = "it is not UTF-8 text"
        del raw
        if problem is not None:  # raised outside the except block: no __context__
            raise ProviderConfigError(f"cannot read the age identity file {path}: {problem}")
        self._identities = parse_identities(text, f"the age identity file {path}")
        return self._identities

    def wrap_key(self, data_key: bytes, context: Mapping[str, str]) -> bytes:
        payload = json.dumps(
            {"v": _FORMAT, "k": base64.b64encode(data_key).decode(), "ctx": dict(context)},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        problem = None
        try:
            return bytes(_require_pyrage().encrypt(payload, self._parsed))
        except Exception as exc:  # may hold the payload, which holds the data key
            problem = type(exc).__name__
        raise ProviderConfigError(f"age could not encrypt: {problem}")

    def unwrap_key(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        identities = self._load_identities()
        if not isinstance(wrapped, bytes) or not wrapped:
            raise KeyUnwrapError("the wrapped data key is empty or not bytes")
        payload = None
        with contextlib.suppress(Exception):  # raised below, unchained
            payload = _require_pyrage().decrypt(wrapped, identities)
        if payload is None:
            raise KeyUnwrapError(
                "age could not decrypt the wrapped data key: no identity matches a recipient, "
                "or the bytes were altered"
            )
        try:
            doc = json.loads(payload)
            key = base64.b64decode(doc["k"], validate=True)
            ctx = doc["ctx"]
            ok = doc["v"] == _FORMAT and isinstance(ctx, dict)
        except (ValueError, KeyError, TypeError):
            ok = False
        if not ok:
            raise KeyUnwrapError("the age payload is not a veil wrapped key")
        if ctx != dict(context):
            raise KeyUnwrapError("the wrapped data key belongs to another stack")
        return key
