"""``Pulumi.<stack>.yaml``: its ``config:`` values (``secure:`` ones decrypted on read)
and its ``encryptionsalt``, edited with comments and order kept."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..._ephemeral import ephemeral_refusal, find_ephemeral
from ..._files import write_atomic
from ..._secret import Secret, is_output, is_secret, reveal
from ...errors import (
    ConfigError,
    ConfigMissingError,
    DecryptionError,
    InvalidValueError,
    ProviderConfigError,
)
from ._crypter import PassphraseCrypter, passphrase_from_env

__all__ = ["PulumiStackConfig"]


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
            crypter.remember_ciphertext(secret, plaintext, ciphertext)
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
        Raises :class:`veil.ConfigError` for a key without a ``namespace:``,
        :class:`veil.InvalidValueError` for a value YAML config cannot hold and
        :class:`veil.EphemeralValueError` for an ephemeral value.
        """
        if not isinstance(key, str) or ":" not in key or key.startswith(":"):
            raise ConfigError(
                f"Pulumi config keys are '<namespace>:<name>' (e.g. 'myproject:password'), "
                f"not {key!r}"
            )
        found = find_ephemeral(value, (key,))
        if found:
            raise ephemeral_refusal([".".join(map(str, p)) for p in found], "Pulumi config")
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
        ciphertext = self.crypter.reused_ciphertext(source, plaintext) or self.crypter.encrypt(
            plaintext
        )
        return CommentedMap([("secure", ciphertext)])

    def _encode(self, value: Any, key: str) -> Any:
        if isinstance(value, Secret) or (is_output(value) and is_secret(value)):
            return self._secure(value)
        if is_output(value):
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
