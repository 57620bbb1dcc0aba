"""Stack configuration: a human-editable JSON file per stack, with secure values sealed.

The file (``veil.<stack>.json`` in the project folder) is meant to be committed. Plain
values are stored as they are; secure values as ``{"secure": "<sealed value>"}``,
sealed under the stack's data key with the stack and the config key as associated
data, so a sealed value moved to another key or stack does not open. The wrapped data
key and each provider's settings sit in the same file, so the config can be read
without the state. See ``docs/format.md`` ("The config file").

A value stored secure is secret whichever getter reads it: ``get`` and ``require``
return secret Outputs for it too.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ._files import write_atomic
from ._known import collect_strings as _collect_strings
from ._secret import Secret, is_secret, reveal
from .crypto import ValueCipher
from .errors import (
    ConfigError,
    ConfigMissingError,
    DecryptionError,
    InvalidValueError,
    LeakWarning,
    PlaintextLeakError,
)
from .output import Output
from .state.document import credential_shape, strict_from_env

__all__ = ["CONFIG_FORMAT", "StackConfig", "config_path"]

CONFIG_FORMAT = "veil.config/1"
_SECURE = "secure"


def config_path(project_dir: str | Path, stack: str) -> Path:
    """Where the config file of ``stack`` lives in ``project_dir``."""
    return Path(project_dir) / f"veil.{stack}.json"


def _aad(stack: str, key: str) -> bytes:
    return json.dumps([CONFIG_FORMAT, stack, key], ensure_ascii=True).encode("ascii")


MAX_CONFIG_DEPTH = 64
"""How deeply a config value may nest lists and dicts. An explicit limit: the
interpreter's recursion limit differs between Python versions (3.13's JSON encoder
goes far deeper than 3.12's), and a config file must open the same everywhere."""


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen = 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)):
            if depth >= limit:
                return True
            seen += 1
            if seen > 1_000_000:  # a cycle: json.dumps names it below
                return False
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return False


def _check_json(value: Any, key: str) -> None:
    if _depth_exceeds(value, MAX_CONFIG_DEPTH):
        raise InvalidValueError(
            f"config value for {key!r} is nested too deeply (more than {MAX_CONFIG_DEPTH} "
            "levels of lists and dicts)"
        )
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        raise InvalidValueError(
            f"config value for {key!r} is not JSON data (str, finite number, bool, None, "
            "list, dict; not cyclic or nested too deeply)"
        ) from None


def _check_key(key: object) -> str:
    if not isinstance(key, str) or not key or key != key.strip():
        raise ConfigError(f"config keys are non-empty strings without surrounding spaces: {key!r}")
    return key


class StackConfig:
    """The configuration of one stack.

    Getters return Outputs (``get``/``get_secret`` return ``None`` for a missing key;
    ``require``/``require_secret`` raise :class:`veil.ConfigMissingError`). A secure
    value is returned as a secret Output by every getter. Changes are kept in memory
    until :meth:`save` (``Stack.save`` saves the config too).
    """

    def __init__(
        self,
        *,
        stack: str,
        path: Path,
        cipher: ValueCipher,
        keyring: Mapping[str, Any],
        values: Mapping[str, Any] | None = None,
    ) -> None:
        self._stack = stack
        self._path = path
        self._cipher = cipher
        # The clear header fields (providers, key id): written back as they were read.
        self._keyring = dict(keyring)
        # key -> plain JSON value, or _Sealed for secure values.
        self._values: dict[str, Any] = {}
        self._dirty = False
        for key, raw in (values or {}).items():
            self._values[key] = self._parse_value(key, raw)

    # --- file format ---------------------------------------------------------------

    @staticmethod
    def read_file(path: Path) -> dict[str, Any]:
        """The parsed file, checked for shape; :class:`veil.ConfigError` if bad."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ConfigError(
                f"no config file at {path}; create the stack with 'veil stack init' or "
                "Stack.create()"
            ) from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        try:
            doc = json.loads(data)
        except RecursionError:
            raise ConfigError(f"config file {path} is nested too deeply") from None
        except (ValueError, UnicodeDecodeError) as exc:
            line = getattr(exc, "lineno", None)
            where = f" (line {line})" if line else ""
            raise ConfigError(f"config file {path} is not valid JSON{where}") from None
        if not isinstance(doc, dict) or doc.get("format") != CONFIG_FORMAT:
            raise ConfigError(
                f"{path} is not a veil config file of format {CONFIG_FORMAT!r}; "
                "it may come from a newer veil or another tool"
            )
        if not isinstance(doc.get("stack"), str) or not isinstance(doc.get("config", {}), dict):
            raise ConfigError(f"config file {path} has a bad 'stack' or 'config' field")
        if not isinstance(doc.get("keyring"), dict):
            raise ConfigError(f"config file {path} has no 'keyring' (its wrapped data key)")
        return doc

    def _parse_value(self, key: str, raw: Any) -> Any:
        if isinstance(raw, dict) and set(raw) == {_SECURE}:
            token = raw[_SECURE]
            if not isinstance(token, str):
                raise ConfigError(f"config key {key!r}: 'secure' must hold a sealed string")
            return _Sealed(token)
        return raw

    def render(self) -> bytes:
        """The file's bytes: stable, one member per line, diff-friendly."""
        values: dict[str, Any] = {}
        for key, value in self._values.items():
            values[key] = {_SECURE: value.token} if isinstance(value, _Sealed) else value
        doc = {
            "format": CONFIG_FORMAT,
            "stack": self._stack,
            "config": values,
            "keyring": self._keyring,
        }
        return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")

    def save(self) -> None:
        """Write the file atomically (only if something changed)."""
        if not self._dirty and self._path.exists():
            return
        try:
            write_atomic(self._path, self.render(), mode=0o644)
        except OSError as exc:
            raise ConfigError(
                f"cannot write config file {self._path}: {exc.strerror or type(exc).__name__}"
            ) from None
        self._dirty = False

    # --- reading ----------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The config file's path."""
        return self._path

    def keys(self) -> list[str]:
        """The configured keys, in file order."""
        return list(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._values))

    def __len__(self) -> int:
        return len(self._values)

    def is_secure(self, key: str) -> bool:
        """Whether ``key`` is stored secure (sealed)."""
        return isinstance(self._values.get(key), _Sealed)

    def _open(self, key: str, sealed: _Sealed) -> Any:
        try:
            return self._cipher.open(sealed.token, _aad(self._stack, key))
        except DecryptionError:
            raise DecryptionError(
                f"config key {key!r} of stack {self._stack!r} does not open: it was edited, "
                "copied from another key or stack, or sealed under another key. Set it "
                f"again with 'veil config set {key} --secret'."
            ) from None

    def value(self, key: str) -> Any:
        """The stored value of ``key``: plain, or a :class:`veil.Secret` if secure."""
        if key not in self._values:
            raise ConfigMissingError(self._missing(key))
        stored = self._values[key]
        if isinstance(stored, _Sealed):
            return Secret(self._open(key, stored))
        return stored

    def _missing(self, key: str) -> str:
        return (
            f"missing required configuration key {key!r} for stack {self._stack!r}; set it "
            f"with 'veil config set {key} VALUE' (add --secret for a secret)"
        )

    def get(self, key: str, default: Any = None) -> Output[Any] | None:
        """An Output of the value (secret if stored secure), or of ``default``; None if
        missing without a default."""
        if key not in self._values:
            return None if default is None else Output.from_input(default)
        return Output.from_input(self.value(key))

    def require(self, key: str) -> Output[Any]:
        """Like :meth:`get`, but :class:`veil.ConfigMissingError` if missing."""
        return Output.from_input(self.value(key))

    def get_secret(self, key: str, default: Any = None) -> Output[Any] | None:
        """A secret Output of the value, whether or not it was stored secure."""
        out = self.get(key, default)
        return None if out is None else Output.secret(out)

    def require_secret(self, key: str) -> Output[Any]:
        """Like :meth:`get_secret`, but :class:`veil.ConfigMissingError` if missing."""
        return Output.secret(self.require(key))

    # --- writing --------------------------------------------------------------------

    def set(self, key: str, value: Any, *, secret: bool = False) -> None:
        """Set ``key``. Stored secure if ``secret`` or if ``value`` is itself secret (a
        :class:`veil.Secret` or a resolved secret Output)."""
        _check_key(key)
        if isinstance(value, Secret) or (isinstance(value, Output) and is_secret(value)):
            secret = True
        plain = reveal(value)
        _check_json(plain, key)  # NaN and infinities included: JSON has none
        if secret:
            current = self._values.get(key)
            # Unchanged secure values keep their ciphertext: no churn in the committed file.
            if isinstance(current, _Sealed) and self._holds(key, current, plain):
                return
            self._values[key] = _Sealed(self._cipher.seal(plain, _aad(self._stack, key)))
        else:
            self._guard(key, plain)
            if key in self._values and self._values[key] == plain:
                return
            self._values[key] = plain
        self._dirty = True

    def _holds(self, key: str, sealed: _Sealed, plain: Any) -> bool:
        """Whether ``sealed`` opens to ``plain``; a value that does not open does not
        (setting it again is how a damaged secure value is repaired)."""
        try:
            current = self._open(key, sealed)
        except DecryptionError:
            return False
        return Secret(current) == Secret(plain)

    def _resealed(self, cipher: ValueCipher) -> dict[str, Any]:
        """Every secure value sealed afresh under ``cipher``, without changing this
        config; :class:`veil.DecryptionError` if one does not open."""
        return {
            key: _Sealed(cipher.seal(self._open(key, value), _aad(self._stack, key)))
            for key, value in self._values.items()
            if isinstance(value, _Sealed)
        }

    def _guard(self, key: str, plain: Any) -> None:
        """Refuse (strict) or warn about a plain value shaped like a credential: the
        file is committed, so it would be published."""
        strings: list[str] = []
        _collect_strings(plain, strings)
        for text in strings:
            shape = credential_shape(text)
            if shape is None:
                continue
            message = (
                f"config value for {key!r} {shape}; the config file is meant to be committed. "
                f"Set it with secret=True ('veil config set {key} --secret') to encrypt it"
            )
            if strict_from_env():
                raise PlaintextLeakError(message + "; nothing was written")
            warnings.warn(message, LeakWarning, stacklevel=3)
            return

    def _adopt(
        self, cipher: ValueCipher, keyring: Mapping[str, Any], resealed: Mapping[str, Any]
    ) -> None:
        """Take the stack's key after a save: its cipher, its keyring and the secure
        values :meth:`_resealed` made for it (none when the key did not change)."""
        self._cipher = cipher
        if resealed:
            self._values.update(resealed)
            self._dirty = True
        if dict(keyring) != self._keyring:
            self._keyring = dict(keyring)
            self._dirty = True

    def remove(self, key: str) -> None:
        """Remove ``key``; :class:`veil.ConfigMissingError` if it is not set."""
        if key not in self._values:
            raise ConfigMissingError(
                f"configuration key {key!r} is not set in stack {self._stack!r}"
            )
        del self._values[key]
        self._dirty = True

    def __repr__(self) -> str:
        return f"<StackConfig {self._stack!r}: {len(self._values)} keys>"


class _Sealed:
    __slots__ = ("token",)

    def __init__(self, token: str) -> None:
        self.token = token

    def __repr__(self) -> str:
        return "<sealed>"
