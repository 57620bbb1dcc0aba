"""Stack configuration: a human-editable JSON file per stack, with secure values sealed.

The file (``veil.<stack>.json`` in the project folder) is meant to be committed. Plain
values are stored as they are; secure values as ``{"secure": "<sealed value>"}``,
sealed under the stack's data key with the stack and the config key as associated
data, so a sealed value moved to another key or stack does not open.

The file holds no key. Its ``protection`` member records, readably, what protects the
stack: the data key's id and the recipients (provider schemes and settings) the key is
wrapped for. The state vouches for the same things under its MAC, so a config file
and a state that disagree are refused (see ``docs/security.md``). See
``docs/format.md`` ("The config file").

A value stored secure is secret whichever getter reads it: ``get`` and ``require``
return secret Outputs for it too.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._ephemeral import ephemeral_refusal, find_ephemeral
from ._files import write_atomic
from ._secret import Secret, is_secret, reveal
from .crypto import ValueCipher
from .errors import (
    ConfigError,
    ConfigMissingError,
    DecryptionError,
    InvalidValueError,
    LeakWarning,
    PlaintextLeakError,
    SecretPickleError,
)
from .output import Output
from .state.leaks import credential_shape, strict_from_env

__all__ = [
    "CONFIG_FORMAT",
    "MAX_CONFIG_DEPTH",
    "ConfigFile",
    "Protection",
    "StackConfig",
    "config_path",
    "parse_path",
    "split_key_path",
    "value_digest",
]

CONFIG_FORMAT = "veil.config/2"
_OLD_FORMAT = "veil.config/1"  # held a copy of the wrapped data key; read, never written
_SECURE = "secure"
_MIN_CONTAINED = 8  # as the state's leak guard: shorter secrets are not searched inside


def config_path(project_dir: str | Path, stack: str) -> Path:
    """Where the config file of ``stack`` lives in ``project_dir``."""
    return Path(project_dir) / f"veil.{stack}.json"


# The associated data of a secure value names the first format: values sealed by any
# version of the file open in every later one.
_AAD_LABEL = "veil.config/1"


def _aad(stack: str, key: str, path: Sequence[str | int] = ()) -> bytes:
    # A leaf inside a value (set with a path) also binds its path below the key.
    parts: list[Any] = [_AAD_LABEL, stack, key]
    if path:
        parts.append(list(path))
    return json.dumps(parts, ensure_ascii=True).encode("ascii")


_PATH_TOKEN = re.compile(
    r"""\.?(?P<name>[A-Za-z_$][A-Za-z0-9_$:-]*)|\[(?P<index>\d+)\]|\[(?P<quoted>"(?:[^"\\]|\\.)*")\]"""
)


def parse_path(text: str) -> list[str | int]:
    """A Pulumi-style path (``hosts[0]``, ``db.password``, ``["a.b"].c``) as a list of
    keys and indexes; :class:`veil.ConfigError` quoting it if malformed."""
    if not isinstance(text, str) or not text:
        raise ConfigError(f"a config path is a non-empty string such as 'hosts[0]', not {text!r}")
    out: list[str | int] = []
    at = 0
    while at < len(text):
        m = _PATH_TOKEN.match(text, at)
        if m is None or (at == 0 and text.startswith(".")) or m.end() == at:
            raise ConfigError(
                f"malformed config path {text!r} at character {at + 1}: use names "
                "separated by '.', [N] for list items and [\"...\"] for other keys"
            )
        if m.group("name") is not None:
            out.append(m.group("name"))
        elif m.group("index") is not None:
            out.append(int(m.group("index")))
        else:
            out.append(json.loads(m.group("quoted")))
        at = m.end()
    return out


def split_key_path(text: str) -> tuple[str, list[str | int]]:
    """``app:db.hosts[0]`` -> (``app:db``, ``["hosts", 0]``): the config key is the
    first segment (it may hold ':'), the path the rest."""
    parts = parse_path(text)
    if not isinstance(parts[0], str):
        raise ConfigError(f"config path {text!r} must start with a config key")
    return parts[0], parts[1:]


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


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def _strings(value: Any, out: list[str], depth: int = 0) -> None:
    """The str leaves of a JSON value."""
    if isinstance(value, str):
        out.append(value)
    elif depth <= MAX_CONFIG_DEPTH and isinstance(value, dict):
        for v in value.values():
            _strings(v, out, depth + 1)
    elif depth <= MAX_CONFIG_DEPTH and isinstance(value, (list, tuple)):
        for v in value:
            _strings(v, out, depth + 1)


class Protection:
    """What protects a stack, as recorded in its config file and its state: the data
    key's id and the recipients (scheme and non-secret settings of each provider the
    key is wrapped for). Two are equal when they record the same key and recipients,
    whatever the order."""

    __slots__ = ("key_id", "recipients")

    key_id: str
    recipients: tuple[tuple[str, Mapping[str, Any]], ...]

    def __init__(self, key_id: str, recipients: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
        self.key_id = key_id
        self.recipients = tuple(
            sorted(((s, dict(d)) for s, d in recipients), key=lambda r: (r[0], _canonical(r[1])))
        )

    def same_recipients(self, other: Protection) -> bool:
        return _canonical(self.to_json()["recipients"]) == _canonical(other.to_json()["recipients"])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Protection):
            return NotImplemented
        return self.key_id == other.key_id and self.same_recipients(other)

    def __hash__(self) -> int:
        return hash(_canonical(self.to_json()))

    def to_json(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "recipients": [
                {"scheme": scheme, "settings": _sorted(settings)}
                for scheme, settings in self.recipients
            ],
        }

    def describe_recipients(self) -> str:
        return ", ".join(
            f"{scheme}:// {_canonical(settings)}" for scheme, settings in self.recipients
        )

    def __repr__(self) -> str:
        return f"Protection(key_id={self.key_id!r}, recipients={self.describe_recipients()!r})"

    @classmethod
    def from_json(cls, raw: Any, where: str) -> Protection:
        bad = ConfigError(
            f"{where} has a malformed 'protection' member; restore it from version control"
        )
        if not isinstance(raw, dict) or set(raw) != {"key_id", "recipients"}:
            raise bad
        key_id, recipients = raw["key_id"], raw["recipients"]
        if not isinstance(key_id, str) or not isinstance(recipients, list) or not recipients:
            raise bad
        out = []
        for r in recipients:
            if (
                not isinstance(r, dict)
                or set(r) != {"scheme", "settings"}
                or not isinstance(r["scheme"], str)
                or not isinstance(r["settings"], dict)
            ):
                raise bad
            out.append((r["scheme"], r["settings"]))
        return cls(key_id, out)

    @classmethod
    def from_old_keyring(cls, raw: Any, where: str) -> Protection:
        """The protection a ``veil.config/1`` keyring recorded (its wrapped keys are
        ignored: a config file never supplies a key)."""
        bad = ConfigError(f"config file {where} has a malformed 'keyring'")
        if not isinstance(raw, dict) or not isinstance(raw.get("key_id"), str):
            raise bad
        providers = raw.get("providers")
        if not isinstance(providers, list) or not providers:
            raise bad
        out = []
        for p in providers:
            if (
                not isinstance(p, dict)
                or not isinstance(p.get("scheme"), str)
                or not isinstance(p.get("description"), dict)
            ):
                raise bad
            out.append((p["scheme"], p["description"]))
        return cls(raw["key_id"], out)


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [_sorted(v) for v in value]
    return value


class ConfigFile:
    """A parsed config file: what :meth:`StackConfig.read_file` returns."""

    __slots__ = ("path", "protection", "stack", "values", "version")

    def __init__(
        self,
        *,
        path: Path,
        stack: str,
        values: Mapping[str, Any],
        protection: Protection,
        version: str,
    ) -> None:
        self.path = path
        self.stack = stack
        self.values = values
        self.protection = protection
        self.version = version


class StackConfig:
    """The configuration of one stack.

    Getters return Outputs (``get``/``get_secret`` return ``None`` for a missing key;
    ``require``/``require_secret`` raise :class:`veil.ConfigMissingError`). A secure
    value is returned as a secret Output by every getter. Changes are kept in memory
    until :meth:`save` (``Stack.save`` saves the config too).

    A ``StackConfig`` is made by :class:`veil.Stack`, which checks the file against
    the state before any value is opened.
    """

    def __init__(
        self,
        *,
        stack: str,
        path: Path,
        cipher: ValueCipher,
        protection: Protection,
        values: Mapping[str, Any] | None = None,
        dirty: bool = False,
    ) -> None:
        self._stack = stack
        self._path = path
        self._cipher = cipher
        self._protection = protection
        # key -> plain JSON value, or _Sealed for secure values.
        self._values: dict[str, Any] = {}
        self._dirty = dirty
        for key, raw in (values or {}).items():
            self._values[key] = self._parse_value(key, raw)

    # --- file format ---------------------------------------------------------------

    @staticmethod
    def read_file(path: Path) -> ConfigFile:
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
        if not isinstance(doc, dict) or doc.get("format") not in (CONFIG_FORMAT, _OLD_FORMAT):
            raise ConfigError(
                f"{path} is not a veil config file of format {CONFIG_FORMAT!r}; "
                "it may come from a newer veil or another tool"
            )
        if not isinstance(doc.get("stack"), str) or not isinstance(doc.get("config", {}), dict):
            raise ConfigError(f"config file {path} has a bad 'stack' or 'config' field")
        if doc["format"] == _OLD_FORMAT:
            if not isinstance(doc.get("keyring"), dict):
                raise ConfigError(f"config file {path} has no 'keyring'")
            protection = Protection.from_old_keyring(doc["keyring"], str(path))
        else:
            if "protection" not in doc:
                raise ConfigError(
                    f"config file {path} has no 'protection' member (what protects the "
                    "stack); restore it from version control"
                )
            protection = Protection.from_json(doc["protection"], f"config file {path}")
        return ConfigFile(
            path=path,
            stack=doc["stack"],
            values=doc.get("config", {}),
            protection=protection,
            version=doc["format"],
        )

    def _parse_value(self, key: str, raw: Any, path: tuple[str | int, ...] = ()) -> Any:
        """The stored value with each ``{"secure": ...}`` leaf, at any depth, as _Sealed."""
        if isinstance(raw, dict):
            if set(raw) == {_SECURE}:
                token = raw[_SECURE]
                if not isinstance(token, str):
                    raise ConfigError(f"config key {key!r}: 'secure' must hold a sealed string")
                return _Sealed(token, path)
            return {k: self._parse_value(key, v, (*path, k)) for k, v in raw.items()}
        if isinstance(raw, list):
            return [self._parse_value(key, v, (*path, i)) for i, v in enumerate(raw)]
        return raw

    def render(self) -> bytes:
        """The file's bytes: stable, one member per line, diff-friendly."""
        values = {
            key: _map_sealed(value, lambda sealed: {_SECURE: sealed.token})
            for key, value in self._values.items()
        }
        doc = {
            "format": CONFIG_FORMAT,
            "stack": self._stack,
            "config": values,
            "protection": self._protection.to_json(),
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

    @property
    def protection(self) -> Protection:
        """What the file records as protecting the stack (key id and recipients)."""
        return self._protection

    @property
    def dirty(self) -> bool:
        """Whether there are changes not yet written."""
        return self._dirty

    def keys(self) -> list[str]:
        """The configured keys, in file order."""
        return list(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._values))

    def __len__(self) -> int:
        return len(self._values)

    def is_secret(self, key: str) -> bool:
        """Whether ``key`` is stored secure (sealed), whole or in part (a leaf set with a
        path), as Pulumi's ``is_secret``."""
        return any(True for _ in _sealed_leaves(self._values.get(key)))

    def is_secure(self, key: str) -> bool:
        """Deprecated alias of :meth:`is_secret`."""
        return self.is_secret(key)

    def _open(self, key: str, sealed: _Sealed) -> Any:
        try:
            return self._cipher.open(sealed.token, _aad(self._stack, key, sealed.path))
        except DecryptionError:
            pass
        where = key + (format_config_path(sealed.path) if sealed.path else "")
        flag = " --path" if sealed.path else ""
        raise DecryptionError(
            f"config key {where!r} of stack {self._stack!r} does not open: it was edited, "
            "copied from another key or stack, or sealed under another key. Set it "
            f"again with 'veil config set{flag} {where} --secret'."
        )

    def value(self, key: str) -> Any:
        """The stored value of ``key``: plain, or a :class:`veil.Secret` if secure; a
        value with secure leaves (set with a path) has a Secret at each of them."""
        if key not in self._values:
            raise ConfigMissingError(self._missing(key))
        return _map_sealed(self._values[key], lambda sealed: Secret(self._open(key, sealed)))

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

    def set(
        self,
        key: str,
        value: Any,
        *,
        secret: bool = False,
        path: str | Sequence[str | int] | None = None,
    ) -> None:
        """Set ``key``. Stored secure if ``secret`` or if ``value`` is itself secret (a
        :class:`veil.Secret` or a resolved secret Output).

        With ``path`` (Pulumi's ``--path``: ``"hosts[0]"``, ``"db.password"``, below
        the key), only that place inside the key's value is set, creating dicts and
        lists as needed; with ``secret`` that leaf alone is sealed and the rest of the
        value stays readable.

        A plain value that equals or contains the plaintext of a secure value, or looks
        like a credential, is stored secure anyway with a :class:`veil.LeakWarning`
        (``VEIL_STRICT``: :class:`veil.PlaintextLeakError`, nothing changed): the file
        is committed. An ephemeral value (``veil.ephemeral``) is refused with
        :class:`veil.EphemeralValueError`, nothing changed: config is written down."""
        _check_key(key)
        if find_ephemeral(value):
            raise ephemeral_refusal([key], "config")
        if isinstance(value, Secret) or (isinstance(value, Output) and is_secret(value)):
            secret = True
        plain = reveal(value)
        _check_json(plain, key)  # NaN and infinities included: JSON has none
        steps = parse_path(path) if isinstance(path, str) else list(path or ())
        if not secret:
            secret = self._guard(key, plain)
        if steps:
            self._set_at(key, steps, plain, secret)
            return
        if secret:
            current = self._values.get(key)
            # Unchanged secure values keep their ciphertext: no churn in the committed file.
            if isinstance(current, _Sealed) and self._holds(key, current, plain):
                return
            self._values[key] = _Sealed(self._cipher.seal(plain, _aad(self._stack, key)), ())
        else:
            if key in self._values and self._values[key] == plain:
                return
            self._values[key] = plain
        self._dirty = True

    def _set_at(self, key: str, steps: list[str | int], plain: Any, secret: bool) -> None:
        where = key + format_config_path(steps)
        current = self._values.get(key)
        if isinstance(current, _Sealed):
            raise ConfigError(
                f"config key {key!r} is stored secure as a whole; set it again without a "
                f"path, or remove it first, to set {where!r}"
            )
        root: Any = _copy_containers(current) if key in self._values else None
        holder: Any = None
        node = root
        for i, step in enumerate(steps):
            if node is None:
                node = [] if isinstance(step, int) else {}
                if holder is None:
                    root = node
                else:
                    holder[0][holder[1]] = node
            if isinstance(step, int):
                if not isinstance(node, list):
                    raise ConfigError(
                        f"{where!r}: {key + format_config_path(steps[:i])} is not a list"
                    )
                if step > len(node):
                    raise ConfigError(
                        f"{where!r}: index {step} is past the end of a list of {len(node)}"
                    )
                if step == len(node):
                    node.append(None)
            elif not isinstance(node, dict):
                above = key + format_config_path(steps[:i])
                raise ConfigError(f"{where!r}: {above} is not a dict")
            elif step not in node:
                node[step] = None
            holder = (node, step)
            if isinstance(node[step], _Sealed) and i < len(steps) - 1:
                raise ConfigError(
                    f"{where!r}: {key + format_config_path(steps[: i + 1])} is secure"
                )
            node = node[step]
        container, last = holder
        leaf_path = tuple(steps)
        before = container[last]
        if secret:
            if isinstance(before, _Sealed) and self._holds(key, before, plain):
                return
            container[last] = _Sealed(
                self._cipher.seal(plain, _aad(self._stack, key, leaf_path)), leaf_path
            )
        else:
            if before == plain and not isinstance(before, _Sealed):
                return
            container[last] = plain
        _check_json(_map_sealed(root, lambda _s: None), key)
        self._values[key] = root
        self._dirty = True

    def _holds(self, key: str, sealed: _Sealed, plain: Any) -> bool:
        """Whether ``sealed`` opens to ``plain``; a value that does not open does not
        (setting it again is how a damaged secure value is repaired)."""
        try:
            current = self._open(key, sealed)
        except DecryptionError:
            return False
        return Secret(current) == Secret(plain)

    def _secure_plaintexts(self) -> list[str]:
        found: list[str] = []
        for key, value in self._values.items():
            for _path, sealed in _sealed_leaves(value):
                try:
                    _strings(self._open(key, sealed), found)
                except DecryptionError:
                    continue
        return found

    def _guard(self, key: str, plain: Any) -> bool:
        """Whether a plain value must be sealed anyway: it holds a secure value's
        plaintext, or looks like a credential. Warns, or refuses under strict mode."""
        strings: list[str] = []
        _strings(plain, strings)
        if not strings:
            return False
        reason = None
        secrets = self._secure_plaintexts()
        for text in strings:
            for s in secrets:
                if text == s:
                    reason = "equals the plaintext of a secure value"
                elif len(s) >= _MIN_CONTAINED and s in text:
                    reason = "contains the plaintext of a secure value"
                if reason:
                    break
            if reason is None:
                reason = credential_shape(text)
            if reason:
                break
        if reason is None:
            return False
        message = (
            f"config value for {key!r} {reason}; the config file is meant to be committed, "
            f"so it is stored secure. Set it with secret=True ('veil config set {key} "
            "--secret') to say so"
        )
        if strict_from_env():
            raise PlaintextLeakError(
                f"config value for {key!r} {reason}; the config file is meant to be "
                f"committed. Set it with secret=True ('veil config set {key} --secret'); "
                "nothing was written"
            )
        warnings.warn(message, LeakWarning, stacklevel=4)
        return True

    def remove(self, key: str, *, path: str | Sequence[str | int] | None = None) -> None:
        """Remove ``key`` (or, with ``path``, one place inside its value);
        :class:`veil.ConfigMissingError` if it is not set."""
        if key not in self._values:
            raise ConfigMissingError(
                f"configuration key {key!r} is not set in stack {self._stack!r}"
            )
        steps = parse_path(path) if isinstance(path, str) else list(path or ())
        if not steps:
            del self._values[key]
            self._dirty = True
            return
        root = _copy_containers(self._values[key])
        node: Any = root
        for step in steps[:-1]:
            try:
                node = node[step]
            except (KeyError, IndexError, TypeError):
                node = None
                break
        if not _delete_member(node, steps[-1]):
            raise ConfigMissingError(
                f"configuration key {key + format_config_path(steps)!r} is not set in "
                f"stack {self._stack!r}"
            )
        # A leaf's associated data holds its path: leaves after a removed list item
        # moved, so they are sealed again at their new places.
        self._values[key] = self._resealed_in_place(key, root)
        self._dirty = True

    def _resealed_in_place(self, key: str, value: Any, path: tuple[str | int, ...] = ()) -> Any:
        if isinstance(value, _Sealed):
            if value.path == path:
                return value
            plain = self._open(key, value)
            return _Sealed(self._cipher.seal(plain, _aad(self._stack, key, path)), path)
        if isinstance(value, dict):
            return {k: self._resealed_in_place(key, v, (*path, k)) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resealed_in_place(key, v, (*path, i)) for i, v in enumerate(value)]
        return value

    # --- what the stack needs ---------------------------------------------------------

    def secure_keys(self) -> list[str]:
        """The keys stored secure, whole or in part."""
        return [k for k in self._values if self.is_secret(k)]

    def digests(self, cipher: ValueCipher, *, strict: bool = True) -> dict[str, str]:
        """For each key holding secure values, a keyed digest of its whole value with
        the secure leaves opened, under ``cipher``: what the state records so that an
        older value copied into the file is recognised. A value that does not open
        raises :class:`veil.DecryptionError`, or with ``strict=False`` is left out."""
        out: dict[str, str] = {}
        for key in self.secure_keys():
            try:
                plain = self._opened(key)
            except DecryptionError:
                if strict:
                    raise
                continue
            out[key] = value_digest(cipher, self._stack, key, plain)
        return out

    def _opened(self, key: str) -> Any:
        """The value of ``key`` with its secure leaves opened (plain JSON)."""

        def open_leaf(sealed: _Sealed) -> Any:
            return self._open(key, sealed)

        return _map_sealed(self._values[key], open_leaf)

    def _sealed_under(self, cipher: ValueCipher, key: str) -> Any:
        """The value of ``key`` with every secure leaf sealed afresh under ``cipher``."""

        def reseal(sealed: _Sealed) -> _Sealed:
            plain = self._open(key, sealed)
            return _Sealed(cipher.seal(plain, _aad(self._stack, key, sealed.path)), sealed.path)

        return _map_sealed(self._values[key], reseal)

    def rekey(self, cipher: ValueCipher, protection: Protection) -> None:
        """Seal every secure value afresh under ``cipher`` and record ``protection``.
        All or nothing: :class:`veil.DecryptionError` with nothing changed if a secure
        value does not open. Values already under ``cipher`` keep their ciphertext."""
        if cipher.key_id != self._cipher.key_id:
            resealed = {key: self._sealed_under(cipher, key) for key in self.secure_keys()}
            self._values.update(resealed)
            self._cipher = cipher
            self._dirty = True
        if protection.to_json() != self._protection.to_json():
            self._protection = protection
            self._dirty = True

    def __repr__(self) -> str:
        return f"<StackConfig {self._stack!r}: {len(self._values)} keys>"

    def __reduce_ex__(self, protocol: object) -> Any:
        raise SecretPickleError("a StackConfig holds the stack's data key; it cannot be pickled")


def value_digest(cipher: ValueCipher, stack: str, key: str, plain: Any) -> str:
    """A keyed digest of a config value: equal for equal values of the same key and
    stack under the same data key; reveals nothing without the key."""
    data = b"veil/config-value\0" + _canonical([stack, key, plain]).encode("ascii")
    return cipher.mac(data).hex()[:32]


class _Sealed:
    __slots__ = ("path", "token")

    def __init__(self, token: str, path: tuple[str | int, ...] = ()) -> None:
        self.token = token
        self.path = path  # below the config key; () for a value sealed whole

    def __repr__(self) -> str:
        return "<sealed>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Sealed) and other.token == self.token

    def __hash__(self) -> int:
        return hash(self.token)


def _sealed_leaves(
    value: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], _Sealed]]:
    if isinstance(value, _Sealed):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _sealed_leaves(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _sealed_leaves(v, (*path, i))


def _map_sealed(value: Any, fn: Callable[[_Sealed], Any]) -> Any:
    """``value`` with ``fn(leaf)`` in place of each sealed leaf (containers copied)."""
    if isinstance(value, _Sealed):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map_sealed(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [_map_sealed(v, fn) for v in value]
    return value


def _delete_member(container: Any, key: str | int) -> bool:
    """Delete ``container[key]`` if it is there; whether it was."""
    if isinstance(container, dict) and key in container:
        del container[key]
        return True
    if isinstance(container, list) and isinstance(key, int) and 0 <= key < len(container):
        del container[key]
        return True
    return False


def _copy_containers(value: Any) -> Any:
    return _map_sealed(value, lambda sealed: sealed)


def format_config_path(steps: Sequence[str | int]) -> str:
    """``["hosts", 0]`` -> ``.hosts[0]``: a path below a key, as ``--path`` takes it."""
    out = []
    for step in steps:
        if isinstance(step, int):
            out.append(f"[{step}]")
        elif re.fullmatch(r"[A-Za-z_$][A-Za-z0-9_$:-]*", step):
            out.append("." + step)
        else:
            out.append(f"[{json.dumps(step)}]")
    return "".join(out)
