"""The state document: a readable JSON file where each secret leaf is sealed on its own.

:func:`dumps` walks a tree of plain values, :class:`~veil.Secret` values and Outputs,
seals every secret leaf with the stack's data key (bound to the stack and the leaf's
path), wraps the data key with each provider, and adds a keyed MAC over the whole
document. :func:`loads` checks, in this order, the JSON, the structure and version,
unwraps the data key (one provider call), verifies the MAC, then opens the values.

:func:`dump_document` and :func:`load_document` return a :class:`Document` that a later
save takes as ``previous``: the data key is reused (no provider call) and every secret
that did not change keeps its ciphertext byte for byte, so diffs show only real changes.

The format is specified in ``docs/format.md`` ("The state document").
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import gc
import hmac
import json
import json.encoder
import math
import os
import re
import warnings
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import accumulate, compress
from json.encoder import encode_basestring_ascii as _enc_str
from math import isfinite as _isfinite
from operator import add, itemgetter
from typing import TYPE_CHECKING, Any, Final, NamedTuple, NoReturn

from .._known import collect_strings as _collect_strings
from .._secret import Secret
from ..crypto import DATA_KEY_SIZE, ValueCipher, generate_data_key, key_id
from ..errors import (
    DecryptionError,
    InvalidStackNameError,
    InvalidValueError,
    KeyUnwrapError,
    LeakWarning,
    PendingOutputError,
    PlaintextLeakError,
    ProviderConfigError,
    ProviderError,
    StateFormatError,
    StateIntegrityError,
    UnknownValueError,
    UsageError,
    VeilError,
)
from .store import validate_stack_name

if TYPE_CHECKING:
    from ..providers import SecretsProvider

__all__ = [
    "ESCAPE_KEY",
    "FORMAT_VERSION",
    "SECRET_KEY",
    "Document",
    "DocumentHeader",
    "PathLike",
    "ProviderEntry",
    "dump_document",
    "dump_document_async",
    "dumps",
    "dumps_async",
    "format_path",
    "load_document",
    "load_with_stored_providers",
    "loads",
    "provider_entries_from_json",
    "read_header",
    "unwrap_data_key",
]

FORMAT_VERSION: Final = 1
"""The state document format this version writes and reads."""

SECRET_KEY: Final = "$secret"  # noqa: S105  (a marker, not a password)
"""A dict whose only key is this holds one sealed value: ``{"$secret": "veil:v1:..."}``."""

ESCAPE_KEY: Final = "$escape"
"""A user dict whose only key is ``$secret`` or ``$escape`` is written inside this."""

_MARKERS: Final = frozenset({SECRET_KEY, ESCAPE_KEY})
_TOP_KEYS: Final = ("veil_state", "stack", "serial", "key_id", "providers", "tree", "mac")
_ENTRY_KEYS: Final = frozenset({"scheme", "description", "wrapped_key"})
_MAC_DOMAIN: Final = b"veil/v1/state-mac\x00"
_HEX: Final = frozenset("0123456789abcdef")
_CANONICAL: Final = json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, sort_keys=True, separators=(",", ":"), check_circular=False
)
_COMPACT: Final = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"), check_circular=False
)
_STRICT_ENV: Final = "VEIL_STRICT"
_CONTAIN_MIN: Final = 8  # secrets shorter than this are matched by equality only

PathLike = str | Sequence[str | int]
"""A path for ``allow_plaintext``: ``"outputs.db.host"`` or ``("outputs", "db", "host")``."""


# --- paths -------------------------------------------------------------------------------

_PLAIN_KEY = re.compile(r"[A-Za-z_$][A-Za-z0-9_$-]*")


def format_path(path: Sequence[str | int]) -> str:
    """A readable path: ``outputs.db.host``, ``resources[0].password``, ``a["x.y"]``.

    The root is ``<root>``. Paths name where a value is; they never show a value.
    """
    if not path:
        return "<root>"
    parts: list[str] = []
    for i, element in enumerate(path):
        if isinstance(element, int):
            parts.append(f"[{element}]")
        elif _PLAIN_KEY.fullmatch(element):
            parts.append(element if i == 0 else "." + element)
        else:
            parts.append(f"[{_enc_str(element)}]")
    return "".join(parts)


def _aad_prefix(stack: str) -> str:
    # A leaf's associated data is json.dumps([stack, path], separators=(",", ":")),
    # built incrementally: this prefix, then each path element and a comma.
    return "[" + _enc_str(stack) + ",["


def _aad_of(stack: str, path: Sequence[str | int]) -> str:
    return json.dumps([stack, list(path)], separators=(",", ":"))


# --- values --------------------------------------------------------------------------------


def _canonical_plain(value: Any) -> bytes:
    """Equal bytes for equal JSON values, types kept apart (1, 1.0, true, "1")."""
    if type(value) is str:
        return b"s" + value.encode("utf-8", "surrogatepass")
    return b"j" + _CANONICAL.encode(value).encode("ascii")


def _is_output(value: object) -> bool:
    return hasattr(type(value), "_veil_snapshot_")


def _unknown_type_error(value: object, path: Sequence[str | int]) -> VeilError:
    from ..output import Unknown  # only for the error: state works without outputs

    if isinstance(value, Unknown):
        return UnknownValueError(
            f"the value at {format_path(path)} is unknown (a preview value); "
            "state can only be written once every value is known"
        )
    return InvalidValueError(
        f"the value at {format_path(path)} is a {type(value).__name__}, which state cannot "
        "hold; use str, int, float, bool, None, list, dict, a Secret or an Output of those"
    )


def _snapshot(value: Any, path: Sequence[str | int]) -> tuple[Any, bool]:
    """(value, secret) of a resolved, known Output, or a typed error naming the path."""
    resolved, inner, known, secret, _resources = value._veil_snapshot_()
    if not resolved:
        raise PendingOutputError(
            f"the Output at {format_path(path)} is still pending; await it first, "
            "or save with veil.state.dumps_async"
        )
    if not known:
        raise UnknownValueError(
            f"the Output at {format_path(path)} is unknown (a preview value); "
            "state can only be written once every value is known"
        )
    return inner, bool(secret)


def _check_float(value: float, path: Sequence[str | int]) -> None:
    if not math.isfinite(value):
        raise InvalidValueError(
            f"the value at {format_path(path)} is NaN or infinite, which JSON cannot hold"
        )


def _plain(value: Any, path: tuple[str | int, ...]) -> Any:
    """The pure JSON form of a secret leaf's value (nested Secrets and Outputs opened)."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return value
    if t is float:
        _check_float(value, path)
        return value
    if t is dict or (isinstance(value, Mapping) and not _is_output(value)):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _key_error(k, path)
            out[k] = _plain(v, (*path, k))
        return out
    if t is list or t is tuple or isinstance(value, (list, tuple)):
        return [_plain(v, (*path, i)) for i, v in enumerate(value)]
    if t is Secret:
        return _plain(value.reveal(), path)
    if _is_output(value):
        return _plain(_snapshot(value, path)[0], path)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, float):
        return _plain(float(value), path)
    if isinstance(value, Secret):
        return _plain(value.reveal(), path)
    raise _unknown_type_error(value, path)


def _key_error(key: object, path: Sequence[str | int]) -> InvalidValueError:
    return InvalidValueError(
        f"a dict at {format_path(path)} has a key of type {type(key).__name__}; "
        "state keys must be str"
    )


# --- the leak guard --------------------------------------------------------------------------

# Shapes of well-known credentials; a plain string matching one is sealed anyway.
_CREDENTIALS: Final = re.compile(
    "|".join(
        [
            r"(?P<aws_access_key_id>\b(?:AKIA|ASIA)[0-9A-Z]{16}\b)",
            r"(?P<private_key>-----BEGIN[A-Z0-9 ]* PRIVATE KEY(?: BLOCK)?-----)",
            r"(?P<github_token>\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,}))",
            r"(?P<slack_token>\bxox[baprs]-[A-Za-z0-9-]{10,})",
            r"(?P<stripe_key>\b[rs]k_live_[A-Za-z0-9]{16,})",
            r"(?P<google_api_key>\bAIza[0-9A-Za-z_-]{35})",
            r"(?P<openai_key>\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,})",
            r"(?P<jwt>\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,})",
            r"(?P<url_password>\b[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*:(?!\[secret\]@)[^\s/@]+@)",
        ]
    )
)
_CREDENTIAL_MIN: Final = 8
# Literal text every credential shape above contains: only strings holding one are
# matched against the full pattern.
_ANCHORS: Final = (
    "AKIA",
    "ASIA",
    "PRIVATE KEY",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",
    "k_live_",
    "AIza",
    "sk-",
    "eyJ",
    "://",
)
_REASONS: Final = {
    "equal": "equals the plaintext of a secret",
    "contains": "contains the plaintext of a secret",
    "aws_access_key_id": "looks like an AWS access key id",
    "private_key": "holds a PEM private key",
    "github_token": "looks like a GitHub token",
    "slack_token": "looks like a Slack token",
    "stripe_key": "looks like a Stripe live key",
    "google_api_key": "looks like a Google API key",
    "openai_key": "looks like an OpenAI API key",
    "jwt": "looks like a JSON Web Token",
    "url_password": "is a URL with a password",
}


def credential_shape(text: str) -> str | None:
    """How ``text`` looks like a well-known credential ("looks like a GitHub token",
    "is a URL with a password", ...), or None. The leak guard's shapes, for callers
    that store plain text elsewhere (the config file)."""
    if len(text) < _CREDENTIAL_MIN or not any(a in text for a in _ANCHORS):
        return None
    m = _CREDENTIALS.search(text)
    if m is None or m.lastgroup is None:
        return None
    return _REASONS[m.lastgroup]


def strict_from_env() -> bool:
    """Whether ``VEIL_STRICT`` asks for leaks to be errors instead of warnings."""
    return _strict_from_env()


def _strict_from_env() -> bool:
    return os.environ.get(_STRICT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _normalise_allow(
    allow: Iterable[PathLike],
) -> tuple[frozenset[str], frozenset[tuple[Any, ...]]]:
    names: set[str] = set()
    paths: set[tuple[Any, ...]] = set()
    if isinstance(allow, str):
        allow = [allow]
    for entry in allow:
        if isinstance(entry, str):
            names.add(entry)
        else:
            paths.add(tuple(entry))
    return frozenset(names), frozenset(paths)


# --- documents -----------------------------------------------------------------------------


class ProviderEntry(NamedTuple):
    """One provider's copy of the data key, as stored in a document."""

    scheme: str
    description: Mapping[str, Any]
    wrapped_key: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "scheme": self.scheme,
            "description": dict(self.description),
            "wrapped_key": base64.b64encode(self.wrapped_key).decode("ascii"),
        }

    def __repr__(self) -> str:
        return f"ProviderEntry(scheme={self.scheme!r}, description={self.description!r})"


class DocumentHeader(NamedTuple):
    """The clear fields of a state document, read without any key (:func:`read_header`)."""

    stack: str
    serial: int
    key_id: str
    providers: tuple[ProviderEntry, ...]


class Document:
    """A state document in memory: what :func:`load_document` read or
    :func:`dump_document` wrote.

    - ``tree``: the values, with every sealed leaf as a :class:`~veil.Secret`
      (equal to ``loads`` of the bytes).
    - ``stack``, ``serial``, ``key_id``, ``providers``: the document's clear fields.
    - ``cipher``: the :class:`~veil.crypto.ValueCipher` of the data key.
    - ``guarded``: the paths of plain values the leak guard sealed in this save.

    Pass it as ``previous`` to the next save of the stack: the data key is reused
    (no provider call) and unchanged secrets keep their ciphertexts. It holds the data
    key and plaintexts in memory; its ``repr`` shows neither, it cannot be pickled, and
    it is immutable.
    """

    __slots__ = (
        "_cipher",
        "_data_key",
        "_opened_by",
        "_sealed",
        "_tree_box",
        "_tree_text",
        "guarded",
        "key_id",
        "providers",
        "serial",
        "stack",
    )

    stack: str
    serial: int
    key_id: str
    providers: tuple[ProviderEntry, ...]
    _data_key: bytes
    _cipher: ValueCipher
    # aad -> (plaintext: the string itself, or the canonical bytes of another value;
    # sealed value): what lets a re-save keep ciphertexts.
    _sealed: Mapping[str, tuple[str | bytes, str]]
    # The canonical text of the stored tree (markers in place of secrets), from which
    # the tree is built on first use; None when the tree is already built.
    _tree_text: str | None
    # Providers this document was opened or written with, and the entry each used.
    _opened_by: tuple[tuple[object, ProviderEntry], ...]
    _tree_box: list[Any]
    guarded: tuple[tuple[str | int, ...], ...]

    def __init__(
        self,
        *,
        stack: str,
        serial: int,
        key_id: str,
        providers: tuple[ProviderEntry, ...],
        data_key: bytes,
        cipher: ValueCipher,
        sealed: Mapping[str, tuple[str | bytes, str]],
        tree_text: str | None,
        opened_by: tuple[tuple[object, ProviderEntry], ...],
        tree_box: list[Any] | None = None,
        guarded: tuple[tuple[str | int, ...], ...] = (),
    ) -> None:
        init = object.__setattr__
        init(self, "stack", stack)
        init(self, "serial", serial)
        init(self, "key_id", key_id)
        init(self, "providers", providers)
        init(self, "_data_key", data_key)
        init(self, "_cipher", cipher)
        init(self, "_sealed", sealed)
        init(self, "_tree_text", tree_text)
        init(self, "_opened_by", opened_by)
        init(self, "_tree_box", [] if tree_box is None else tree_box)
        init(self, "guarded", guarded)

    def __setattr__(self, name: str, value: object) -> NoReturn:
        raise AttributeError("a Document is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("a Document is immutable")

    def __repr__(self) -> str:
        return (
            f"Document(stack={self.stack!r}, serial={self.serial!r}, "
            f"key_id={self.key_id!r}, providers={self.providers!r})"
        )

    @property
    def tree(self) -> Any:
        """The values, sealed leaves as :class:`~veil.Secret` (built once, on first use)."""
        if not self._tree_box:
            assert self._tree_text is not None
            self._tree_box.append(_rebuild(self._tree_text, self._sealed, self.stack))
        return self._tree_box[0]

    @property
    def cipher(self) -> ValueCipher:
        """The cipher of the document's data key: key material.

        It opens and seals values of this stack (for example a config file's secure
        values). Its ``repr`` shows only the key id, and it cannot be pickled.
        """
        return self._cipher

    @property
    def data_key(self) -> bytes:
        """The document's data key: key material, for the stack that owns it (to keep
        the previous key while a rotation completes). Never write it anywhere."""
        return self._data_key

    @property
    def secret_count(self) -> int:
        """How many sealed values the document holds."""
        return len(self._sealed)

    def __reduce_ex__(self, protocol: object) -> Any:
        from ..errors import SecretPickleError

        raise SecretPickleError("a Document holds a data key and plaintexts; it cannot be pickled")


def _same(a: str | bytes, b: str | bytes) -> bool:
    """Whether two plaintext keys are equal, compared in constant time."""
    if type(a) is str:
        if type(b) is not str:
            return False
        return hmac.compare_digest(
            a.encode("utf-8", "surrogatepass"), b.encode("utf-8", "surrogatepass")
        )
    return isinstance(a, bytes) and isinstance(b, bytes) and hmac.compare_digest(a, b)


def _rebuild(text: str, sealed: Mapping[str, tuple[str | bytes, str]], stack: str) -> Any:
    """The user-facing tree from the canonical stored text and the known plaintexts."""
    return _Rebuilder(sealed).walk(json.loads(text), _aad_prefix(stack))


def _pws_path(pws: str) -> tuple[str | int, ...]:
    """The path of the container whose members' AAD starts with ``pws`` (for errors)."""
    return tuple(json.loads(pws[:-1] + "]]" if pws.endswith(",") else pws + "]]")[1])


def _leaf_path(aad: str) -> tuple[str | int, ...]:
    """The path of the leaf sealed with the associated data ``aad`` (for errors)."""
    return tuple(json.loads(aad)[1])


# --- dumping -----------------------------------------------------------------------------------


class _Sealer:
    """One save's walk: checks the tree, finds secret leaves and plain strings.

    The walk copies nothing it does not change: a container is copied only if a
    member must be stored differently (an escape, an Output, a repeated Secret, ...).
    A :class:`~veil.Secret` left in place is written by the encoder's ``default``
    hook, which finds its marker by the object's id.
    """

    def __init__(self, stack: str) -> None:
        self.stack = stack
        self.prefix = _aad_prefix(stack)
        self.strings: list[str] = []
        self.strings_append = self.strings.append
        # (value, aad, marker) of each secret leaf, in walk order; the marker dict
        # gets its sealed value once every leaf is known.
        self.leaves: list[tuple[Any, str, dict[str, str]]] = []
        # id of a Secret left in the tree -> its marker (the tree keeps it alive)
        self.markers: dict[int, dict[str, str]] = {}

    def root(self, tree: Any) -> Any:
        return self.slow(tree, self.prefix, self.prefix + "]]")

    def secret(self, v: Secret[Any], aad: str) -> Any:
        marker = {SECRET_KEY: ""}
        self.leaves.append((v.reveal(), aad, marker))
        if type(v) is Secret and self.markers.setdefault(id(v), marker) is marker:
            return v
        return marker  # a Secret met again, at another path: its own marker

    def slow(self, v: Any, pws: str, aad: str) -> Any:
        """The stored form of ``v`` (its members' AAD prefix ``pws``, its own ``aad``):
        every type state accepts, the uncommon ones too."""
        t = type(v)
        if t is str:
            self.strings_append(v)
            return v
        if t is int or t is bool or v is None:
            return v
        if t is float:
            _check_float(v, _leaf_path(aad))
            return v
        if t is dict:
            return self.mapping(v, pws)
        if t is list or t is tuple:
            return self.sequence(v, pws)
        if isinstance(v, Secret):
            return self.secret(v, aad)
        if _is_output(v):
            inner, secret = _snapshot(v, _leaf_path(aad))
            if secret:
                marker = {SECRET_KEY: ""}
                self.leaves.append((inner, aad, marker))
                return marker
            stored = self.slow(inner, pws, aad)
            return stored if stored is not v else inner
        if isinstance(v, str):
            return self.slow(str.__str__(v), pws, aad)
        if isinstance(v, bool):
            return bool(v)
        if isinstance(v, int):
            return int.__index__(v)
        if isinstance(v, float):
            return self.slow(float(v), pws, aad)
        if isinstance(v, Mapping):
            return self.mapping(dict(v), pws)
        if isinstance(v, (list, tuple)):
            return self.sequence(list(v), pws)
        raise _unknown_type_error(v, _leaf_path(aad))

    def mapping(self, d: Mapping[Any, Any], pws: str) -> Any:
        out: dict[str, Any] | None = None
        strings_append = self.strings_append
        for k, v in d.items():
            if type(k) is not str:
                raise _key_error(k, _pws_path(pws))
            t = type(v)
            if t is str:
                strings_append(v)
                continue
            if t is int or t is bool or v is None:
                continue
            if t is float:
                if not _isfinite(v):
                    _check_float(v, (*_pws_path(pws), k))
                continue
            if t is dict:
                r = self.mapping(v, pws + _enc_str(k) + ",")
            elif t is Secret:
                r = self.secret(v, pws + _enc_str(k) + "]]")
            elif t is list:
                r = self.sequence(v, pws + _enc_str(k) + ",")
            else:
                ek = _enc_str(k)
                r = self.slow(v, pws + ek + ",", pws + ek + "]]")
            if r is not v:
                if out is None:
                    out = dict(d)
                out[k] = r
        stored = d if out is None else out
        if len(stored) == 1 and next(iter(stored)) in _MARKERS:
            return {ESCAPE_KEY: stored}
        return stored

    def sequence(self, s: Sequence[Any], pws: str) -> Any:
        # The loop of `mapping`, written out again on purpose: these two loops are the
        # walk every save makes over every member, and a shared helper call per
        # member would cost more than the rest of the loop.
        out: list[Any] | None = None
        strings_append = self.strings_append
        for i, v in enumerate(s):
            t = type(v)
            if t is str:
                strings_append(v)
                continue
            if t is int or t is bool or v is None:
                continue
            if t is float:
                if not _isfinite(v):
                    _check_float(v, (*_pws_path(pws), i))
                continue
            if t is dict:
                r = self.mapping(v, pws + str(i) + ",")
            elif t is Secret:
                r = self.secret(v, pws + str(i) + "]]")
            elif t is list:
                r = self.sequence(v, pws + str(i) + ",")
            else:
                r = self.slow(v, pws + str(i) + ",", pws + str(i) + "]]")
            if r is not v:
                if out is None:
                    out = list(s)
                out[i] = r
        return s if out is None else out

    def plaintexts(self) -> list[tuple[Any, str | bytes, str, dict[str, str]]]:
        """(plain value, key for re-save, aad, marker) of each leaf, values checked."""
        out = []
        for value, aad, marker in self.leaves:
            t = type(value)
            if t is str:
                out.append((value, value, aad, marker))
                continue
            if not (t is int or t is bool or value is None):
                value = _plain(value, _leaf_path(aad))
            out.append((value, _canonical_plain(value), aad, marker))
        return out

    def replace_leaks(
        self,
        stored: Any,
        leaks: Mapping[str, str],
        allowed: Callable[[tuple[str | int, ...]], bool],
    ) -> tuple[Any, list[tuple[tuple[str | int, ...], str]]]:
        """``stored`` with each leaking string (not allowed) replaced by a new secret
        leaf, and the (path, reason) of each, in walk order. Copies what it changes."""
        reported: list[tuple[tuple[str | int, ...], str]] = []
        stack = self.stack

        def members(d: dict[str, Any], path: tuple[str | int, ...]) -> dict[str, Any]:
            out = None
            for k, x in d.items():
                r = walk(x, (*path, k))
                if r is not x:
                    if out is None:
                        out = dict(d)
                    out[k] = r
            return d if out is None else out

        def walk(v: Any, path: tuple[str | int, ...]) -> Any:
            t = type(v)
            if t is str:
                reason = leaks.get(v)
                if reason is None or allowed(path):
                    return v
                reported.append((path, reason))
                marker = {SECRET_KEY: ""}
                self.leaves.append((v, _aad_of(stack, path), marker))
                return marker
            if t is dict:
                if len(v) == 1:
                    ((k, x),) = v.items()
                    if k == SECRET_KEY:
                        return v  # a marker: user dicts like it are escaped
                    if k == ESCAPE_KEY:
                        r = members(x, path)
                        return v if r is x else {ESCAPE_KEY: r}
                return members(v, path)
            if t is list or t is tuple:
                out = None
                for i, x in enumerate(v):
                    r = walk(x, (*path, i))
                    if r is not x:
                        if out is None:
                            out = list(v)
                        out[i] = r
                return v if out is None else out
            return v

        return walk(stored, ()), reported


def _find_leaks(
    strings: list[str], secret_strings: list[str], secret_others: list[Any]
) -> dict[str, str]:
    """Each plain string of ``strings`` that must not stay plain -> the reason.

    Near-linear in the size of the text: each distinct string is checked once;
    equality is one set intersection; the strings of at least 8 characters are
    joined into one text that is sampled for 8-character windows of secrets, and
    every string is searched for credential anchors with ``str.find``.
    """
    equal: set[str] = {s for s in secret_strings if s}
    contained: list[str] = [s for s in secret_strings if len(s) >= _CONTAIN_MIN]
    for other in secret_others:
        if type(other) is bool or other is None:
            continue  # "true" or "null" is no secret worth matching
        equal.add(_COMPACT.encode(other))
        inner: list[str] = []
        _collect_strings(other, inner, min_len=_CONTAIN_MIN)
        equal.update(inner)
        contained.extend(inner)
    contained = list(dict.fromkeys(contained))
    unique = set(strings)
    suspects: dict[str, str] = {}
    if equal:
        for s in unique.intersection(equal):
            suspects[s] = "equal"
    if not unique:
        return suspects
    texts = list(unique)
    # One text for all strings; a match across a "\x00" is confirmed in its own
    # string, so it cannot report a wrong one.
    joined = "\x00".join(texts)
    ends = list(map(add, accumulate(map(len, texts)), range(len(texts))))

    def owner(position: int) -> int:
        return bisect_left(ends, position)

    if contained:
        _find_contained(joined, owner, texts, contained, suspects)
    search = _CREDENTIALS.search
    for anchor in _ANCHORS:
        at = joined.find(anchor)
        while at != -1:
            s = texts[owner(at)]
            if s not in suspects:
                m = search(s)
                if m is not None and m.lastgroup is not None:
                    suspects[s] = m.lastgroup
            at = joined.find(anchor, at + 1)
    return suspects


def _find_contained(
    joined: str,
    owner: Callable[[int], int],
    texts: list[str],
    contained: list[str],
    suspects: dict[str, str],
) -> None:
    # Secrets are indexed by their 8-character windows at offsets 0..step-1; the
    # text is sampled every `step` characters. An occurrence of a secret of length
    # m >= 7 + step always covers a sampled window starting within its first
    # `step` characters, so no match is missed.
    w = _CONTAIN_MIN
    step = max(1, min(8, min(map(len, contained)) - w + 1))
    heads: set[str] = set()
    for off in range(step):
        heads.update(map(itemgetter(slice(off, off + w)), contained))
    chunk = 1 << 16
    matched: list[tuple[int, list[str], set[str]]] = []
    for base in range(0, len(joined), chunk):
        piece = joined[base : base + chunk + w - 1]
        windows = list(map(piece.__getitem__, _window_slices(min(chunk, len(piece) - w + 1), step)))
        hits = heads.intersection(windows)
        if hits:
            matched.append((base, windows, hits))
    if not matched:  # the common case
        return
    index = _window_index(contained, step, set().union(*(m[2] for m in matched)))
    for base, windows, hits in matched:
        # Confirm at each sampled position that matched, in the string it lies in:
        # linear in the number of matching windows, whatever the strings hold.
        for j in compress(range(len(windows)), map(hits.__contains__, windows)):
            s = texts[owner(base + j * step)]
            if s not in suspects and any(x in s for x in index[windows[j]]):
                suspects[s] = "contains"


def _window_index(contained: list[str], step: int, wanted: set[str]) -> dict[str, list[str]]:
    """Each wanted 8-character window at offsets 0..step-1 of the secrets -> those
    secrets."""
    index: dict[str, list[str]] = {}
    for off in range(step):
        get = itemgetter(slice(off, off + _CONTAIN_MIN))
        for window, secret in zip(map(get, contained), contained, strict=True):
            if window in wanted:
                index.setdefault(window, []).append(secret)
    return index


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a document is built or read.

    Such a tree makes many objects and no cycles; without this, collections that
    scan every live object run again and again and make large saves superlinear.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


@functools.lru_cache(maxsize=64)
def _window_slices(count: int, step: int) -> list[slice]:
    """Slices of the 8-character windows starting at 0, step, 2*step, ... < count."""
    return [slice(i, i + _CONTAIN_MIN) for i in range(0, max(count, 0), step)]


def _check_provider(provider: object) -> None:
    from ..providers.base import SecretsProvider  # below state; imported when first used

    if not isinstance(provider, SecretsProvider):
        raise ProviderConfigError(
            f"a provider is a veil.providers.SecretsProvider (for example "
            f"veil.providers.provider_from_url('passphrase://')), not {type(provider).__name__}"
        )


def _wrap(provider: SecretsProvider, data_key: bytes, stack: str) -> ProviderEntry:
    context = {"stack": stack}
    try:
        wrapped = provider.wrap_key(data_key, context)
        description = provider.describe()
    except VeilError:
        raise
    except Exception as exc:  # a user provider's bug: typed, without its message
        raise ProviderError(
            f"the {provider.scheme!r} provider failed to wrap the data key "
            f"({type(exc).__name__}); check its configuration"
        ) from exc
    if not isinstance(wrapped, bytes) or not wrapped:
        raise ProviderError(f"the {provider.scheme!r} provider's wrap_key did not return bytes")
    try:
        json.dumps(description, allow_nan=False)
    except (TypeError, ValueError):
        raise ProviderError(
            f"the {provider.scheme!r} provider's describe() is not JSON data"
        ) from None
    return ProviderEntry(scheme=provider.scheme, description=description, wrapped_key=wrapped)


def _entries_for(
    providers: Sequence[SecretsProvider],
    data_key: bytes,
    stack: str,
    previous: Document | None,
    keep: bool,
    drop: tuple[str, ...] = (),
) -> tuple[tuple[ProviderEntry, ...], tuple[tuple[object, ProviderEntry], ...]]:
    """The provider entries of a new document, and which provider made each.

    With ``keep`` (and a previous document under the same key), every entry of the
    previous document stays: the recipients a stack was last written for change only
    through an explicit operation. A provider given here reuses the entry it opened or
    one whose settings are unchanged, and otherwise replaces the entry of its scheme
    (one entry per scheme) or adds one.
    """
    entries: list[ProviderEntry] = (
        [e for e in previous.providers if e.scheme not in drop] if (keep and previous) else []
    )
    if not entries and not providers:
        raise ProviderConfigError("a stack needs at least one recipient; none would be left")
    opened: list[tuple[object, ProviderEntry]] = []
    for p in providers:
        entry = None
        if previous is not None:
            for obj, e in previous._opened_by:
                if obj is p and e in previous.providers:
                    entry = e
                    break
            if entry is None:
                description = p.describe()
                for e in previous.providers:
                    if e.scheme == p.scheme and e.description == description:
                        entry = e
                        break
        if entry is None:
            entry = _wrap(p, data_key, stack)
        same_scheme = [e for e in entries if e.scheme == entry.scheme and e != entry]
        if any(e.scheme == entry.scheme and e != entry for _p, e in opened):
            raise ProviderConfigError(
                f"two {entry.scheme}:// providers were given; a stack has one recipient per "
                "scheme (age takes several recipients in one URL)"
            )
        entries = [e for e in entries if e not in same_scheme]
        if entry not in entries:
            entries.append(entry)
        opened.append((p, entry))
    return tuple(entries), tuple(opened)


_EXPAND_DEPTH: Final = 2  # values at this depth of the tree, and deeper, are one line


def _no_default(value: object) -> NoReturn:
    raise TypeError(f"{type(value).__name__} is not JSON")


_make_encoder: Final[Callable[..., Any] | None] = getattr(json.encoder, "c_make_encoder", None)


def _make_canonical_encoder(default: Callable[[Any], Any]) -> Callable[[Any], str]:
    """C(value) by the C encoder, built once (``JSONEncoder.encode`` builds one per
    call, which costs more than encoding a small value), checked against
    ``_CANONICAL``; ``default`` gives the stored form of other objects."""
    fallback = json.JSONEncoder(
        ensure_ascii=True,
        allow_nan=False,
        sort_keys=True,
        separators=(",", ":"),
        check_circular=False,
        default=default,
    ).encode
    if _make_encoder is None:
        return fallback
    try:
        encoder = _make_encoder(None, default, _enc_str, None, ":", ",", True, False, False)
        sample = {"b": [1, 2.5, None, True, "\u00e9\n", (3,)], "a": {"z": -0.0, "y": 10**20}}
        if "".join(encoder(sample, 0)) != _CANONICAL.encode(sample):
            return fallback
    except (TypeError, ValueError):  # another signature in this Python
        return fallback

    def encode(value: Any) -> str:
        return "".join(encoder(value, 0))

    return encode


_encode_canonical: Final = _make_canonical_encoder(_no_default)


def _canonical_json(value: Any) -> str:
    try:
        return _encode_canonical(value)
    except (TypeError, ValueError, RecursionError):
        raise StateFormatError("the document holds values JSON cannot encode") from None


def _mac_input(header: Mapping[str, Any], tree_text: str) -> bytes:
    """What the MAC covers: every field but the MAC, canonically encoded.

    ``C(header) 0x00 C(tree)``, after a domain string, where C is JSON with sorted
    keys, no whitespace and ASCII escapes, and the header holds the other fields.
    """
    return (
        _MAC_DOMAIN + _canonical_json(header).encode("ascii") + b"\x00" + tree_text.encode("ascii")
    )


def _header_prefix(header: Mapping[str, Any]) -> str:
    """The file's text before the tree, layout removed."""
    return (
        '{"veil_state":'
        + _canonical_json(header["veil_state"])
        + ',"stack":'
        + _canonical_json(header["stack"])
        + ',"serial":'
        + _canonical_json(header["serial"])
        + ',"key_id":'
        + _canonical_json(header["key_id"])
        + ',"providers":'
        + _canonical_json(header["providers"])
        + ',"tree":'
    )


def _expands(v: Any) -> bool:
    """Whether a container is written one member a line (above _EXPAND_DEPTH)."""
    t = type(v)
    if t is dict:
        return bool(v) and not (len(v) == 1 and SECRET_KEY in v)
    return (t is list or t is tuple) and bool(v)


def _members(v: Any) -> Iterator[tuple[str, Any]]:
    """(``"key":`` or nothing, value) of each member of a container, keys sorted."""
    if type(v) is dict:
        return ((_enc_str(k) + ":", v[k]) for k in sorted(v))
    return (("", x) for x in v)


def _encode_members(v: Any, encode: Callable[[Any], str]) -> list[str]:
    """``"key":`` + C(value) (or C(value)) of each member of a container, in order.

    Many members are encoded by one C encoder call over a list that interleaves them
    with a random separator string, then split on its encoding (a per-call encoder is
    the larger cost). The separator can only appear as a JSON string token equal to a
    fresh 128-bit random value; a split that does not give one piece per member falls
    back to one call per member.
    """
    if type(v) is dict:
        keys = sorted(v)
        heads = [_enc_str(k) + ":" for k in keys]
        values = [v[k] for k in keys]
    else:
        heads = None
        values = list(v)
    n = len(values)
    pieces: list[str] | None = None
    if n >= 16:
        separator = "\x00veil-member:" + os.urandom(16).hex()
        interleaved: list[Any] = [separator] * (2 * n - 1)
        interleaved[0::2] = values
        text = encode(interleaved)
        pieces = text[1:-1].split("," + encode(separator) + ",")
        if len(pieces) != n:
            pieces = None
    if pieces is None:
        pieces = [encode(x) for x in values]
    if heads is None:
        return pieces
    return list(map(add, heads, pieces))


def _render_tree(stored: Any, encode: Callable[[Any], str]) -> tuple[str, str]:
    """(the tree as written in the file, C(tree)).

    Members of the tree and of its containers are one a line; deeper values one C
    encoder call each. The layout is only newlines and indentation between members,
    so removing it gives C(tree) (a reader's fast path for the MAC).
    """
    if not _expands(stored):
        text = encode(stored)
        return text, text
    # Pieces joined once at the end: the members can add up to many megabytes, and
    # each `+` of a large string would copy it again.
    written: list[str] = []
    canonical: list[str] = []
    o, c = ("{", "}") if type(stored) is dict else ("[", "]")
    written.append(o)
    canonical.append(o)
    first = True
    for head, v in _members(stored):
        if not first:
            written.append(",")
            canonical.append(",")
        first = False
        written.append("\n    ")
        written.append(head)
        canonical.append(head)
        if _expands(v):
            inner = _encode_members(v, encode)
            vo, vc = ("{", "}") if type(v) is dict else ("[", "]")
            written.extend((vo, "\n      ", ",\n      ".join(inner), "\n    ", vc))
            canonical.extend((vo, ",".join(inner), vc))
        else:
            text = encode(v)
            written.append(text)
            canonical.append(text)
    written.append("\n  " + c)
    canonical.append(c)
    return "".join(written), "".join(canonical)


def dump_document(
    tree: Any,
    *,
    provider: SecretsProvider,
    stack: str,
    previous: Document | bytes | None = None,
    additional_providers: Sequence[SecretsProvider] = (),
    serial: int | None = None,
    rotate_key: bool = False,
    strict: bool | None = None,
    allow_plaintext: Iterable[PathLike] = (),
    replace_recipients: bool = False,
    drop_recipients: Iterable[str] = (),
    data_key: bytes | None = None,
    stacklevel: int = 1,
    leak_hint: str = "allow_plaintext",
) -> tuple[bytes, Document]:
    """Serialise ``tree`` for ``stack``; return the bytes and the new :class:`Document`.

    - Every :class:`~veil.Secret` and every resolved secret Output is sealed as one
      leaf; everything else stays readable. A pending Output raises
      :class:`~veil.PendingOutputError`, an unknown one :class:`~veil.UnknownValueError`,
      a non-JSON value or a non-str key :class:`~veil.InvalidValueError` (each names
      the path).
    - ``previous`` (a Document, or the bytes of one): its data key is reused and each
      secret that did not change keeps its sealed value; the serial grows by one.
      Without it a new data key is made and ``serial`` (default 1) is used.
    - The data key is wrapped for ``provider`` and each of ``additional_providers``
      (any of them can open the document); an entry of ``previous`` is reused for a
      provider it was opened with or whose ``describe()`` is unchanged. Every other
      entry of ``previous`` is kept (the recipients a stack was last written for change
      only explicitly), unless ``replace_recipients``: then exactly the given providers
      can open the new document. ``drop_recipients`` names schemes whose entries are
      left out (and providers of those schemes are ignored). ``previous`` must be a
      document of ``stack`` (:class:`~veil.UsageError` otherwise: another stack's data
      key is never shared).
    - ``rotate_key``: a new data key (``data_key`` if given), every value sealed afresh;
      the providers given must cover every recipient (``replace_recipients`` is implied).
    - The leak guard: a plain string that equals a secret of this document, contains one
      of at least 8 characters, or looks like a well-known credential is sealed anyway
      with a :class:`~veil.LeakWarning` naming its path; with ``strict`` (default: the
      ``VEIL_STRICT`` environment variable) :class:`~veil.PlaintextLeakError` instead.
      Paths in ``allow_plaintext`` stay plain. The warning points at the caller's line
      (``stacklevel`` as for :func:`warnings.warn`; raise it when calling from a
      wrapper) and names ``leak_hint`` as the way to allow a path.
    """
    return _dump(
        tree,
        provider=provider,
        stack=stack,
        previous=previous,
        additional_providers=additional_providers,
        serial=serial,
        rotate_key=rotate_key,
        strict=strict,
        allow_plaintext=allow_plaintext,
        replace_recipients=replace_recipients,
        drop_recipients=tuple(drop_recipients),
        data_key=data_key,
        leak_hint=leak_hint,
        stacklevel=2 + stacklevel,
    )


def _dump(
    tree: Any,
    *,
    provider: SecretsProvider,
    stack: str,
    previous: Document | bytes | None = None,
    additional_providers: Sequence[SecretsProvider] = (),
    serial: int | None = None,
    rotate_key: bool = False,
    strict: bool | None = None,
    allow_plaintext: Iterable[PathLike] = (),
    replace_recipients: bool = False,
    drop_recipients: tuple[str, ...] = (),
    data_key: bytes | None = None,
    leak_hint: str = "allow_plaintext",
    stacklevel: int,
) -> tuple[bytes, Document]:
    validate_stack_name(stack)
    for p in (provider, *additional_providers):
        _check_provider(p)
    if isinstance(previous, (bytes, bytearray, memoryview)):
        previous = load_document(bytes(previous), provider=provider)
    if previous is not None and not isinstance(previous, Document):
        raise InvalidValueError(
            f"previous must be a Document or bytes, not {type(previous).__name__}"
        )
    if previous is not None and previous.stack != stack:
        raise UsageError(
            f"previous is a document of stack {previous.stack!r}, not {stack!r}: a stack "
            "never reuses another stack's data key"
        )
    if strict is None:
        strict = _strict_from_env()

    if previous is not None and not rotate_key:
        if data_key is not None:
            raise UsageError("data_key is for a new stack or a rotation (rotate_key=True)")
        data_key = previous._data_key
        cipher = previous._cipher
        reuse = previous._sealed
        new_serial = previous.serial + 1 if serial is None else serial
    else:
        data_key = generate_data_key() if data_key is None else data_key
        cipher = ValueCipher(data_key)
        reuse = {}
        new_serial = (
            (previous.serial + 1 if previous is not None else 1) if serial is None else serial
        )
    if isinstance(new_serial, bool) or not isinstance(new_serial, int) or new_serial < 0:
        raise InvalidValueError(f"serial must be an int >= 0, not {new_serial!r}")

    with _gc_paused():
        return _dump_paused(
            tree,
            sealer=_Sealer(stack),
            provider=provider,
            stack=stack,
            previous=previous,
            additional_providers=additional_providers,
            rotate_key=rotate_key,
            strict=strict,
            allow_plaintext=allow_plaintext,
            keep_recipients=not (replace_recipients or rotate_key),
            drop_recipients=drop_recipients,
            leak_hint=leak_hint,
            stacklevel=stacklevel + 1,
            data_key=data_key,
            cipher=cipher,
            serial=new_serial,
            reuse=reuse,
        )


def _dump_paused(
    tree: Any,
    *,
    sealer: _Sealer,
    provider: SecretsProvider,
    stack: str,
    previous: Document | None,
    additional_providers: Sequence[SecretsProvider],
    rotate_key: bool,
    strict: bool,
    allow_plaintext: Iterable[PathLike],
    keep_recipients: bool,
    drop_recipients: tuple[str, ...],
    leak_hint: str,
    stacklevel: int,
    data_key: bytes,
    cipher: ValueCipher,
    serial: int,
    reuse: Mapping[str, tuple[str | bytes, str]],
) -> tuple[bytes, Document]:
    try:
        stored = sealer.root(tree)
        leaves = sealer.plaintexts()  # walks the values of secret leaves
    except RecursionError:
        raise InvalidValueError(
            "the tree is nested too deeply or refers to itself; state must be a tree"
        ) from None

    leaks = _find_leaks(
        sealer.strings,
        [p for p, k, _a, _m in leaves if type(p) is str],
        [p for p, k, _a, _m in leaves if type(p) is not str],
    )
    guarded: tuple[tuple[str | int, ...], ...] = ()
    if leaks:
        names, paths = _normalise_allow(allow_plaintext)

        def allowed(full: tuple[str | int, ...]) -> bool:
            return full in paths or format_path(full) in names or ".".join(map(str, full)) in names

        count = len(sealer.leaves)
        replaced, reported = sealer.replace_leaks(stored, leaks, allowed)
        if reported and strict:
            raise PlaintextLeakError(_leak_message(reported, strict=True, hint=leak_hint))
        if reported:
            warnings.warn(
                _leak_message(reported, strict=False, hint=leak_hint),
                LeakWarning,
                stacklevel=stacklevel,
            )
            stored = replaced
            leaves.extend((v, v, aad, m) for v, aad, m in sealer.leaves[count:])
            guarded = tuple(p for p, _reason in reported)

    sealed: dict[str, tuple[str | bytes, str]] = {}
    fresh: list[tuple[Any, str | bytes, str, dict[str, str]]] = []
    if reuse:
        for leaf in leaves:
            before = reuse.get(leaf[2])
            if before is not None and _same(before[0], leaf[1]):
                leaf[3][SECRET_KEY] = before[1]
                sealed[leaf[2]] = (leaf[1], before[1])
            else:
                fresh.append(leaf)
    else:
        fresh = leaves
    tokens = cipher._seal_many([f[0] for f in fresh], [f[2].encode("ascii") for f in fresh])
    for (_value, key, aad, marker), token in zip(fresh, tokens, strict=True):
        marker[SECRET_KEY] = token
        sealed[aad] = (key, token)

    providers = (provider, *additional_providers)
    entries, opened = _entries_for(
        [p for p in providers if p.scheme not in drop_recipients],
        data_key,
        stack,
        previous if not rotate_key else None,
        keep_recipients,
        drop_recipients,
    )
    header: dict[str, Any] = {
        "veil_state": FORMAT_VERSION,
        "stack": stack,
        "serial": serial,
        "key_id": cipher.key_id,
        "providers": [e.to_json() for e in entries],
    }
    markers = sealer.markers

    def default(value: object) -> dict[str, str]:
        # Only Secrets the walk left in place reach this.
        marker = markers.get(id(value))
        if marker is None or not isinstance(value, Secret):
            raise InvalidValueError(f"a {type(value).__name__} cannot be written to state")
        return marker

    written, tree_text = _render_tree(stored, _make_canonical_encoder(default))
    mac = cipher.mac(_mac_input(header, tree_text)).hex()
    head = ["{\n"]
    for key in ("veil_state", "stack", "serial", "key_id"):
        head.append(f'  "{key}":{_canonical_json(header[key])},\n')
    head.append('  "providers":[\n    ')
    head.append(",\n    ".join(_canonical_json(p) for p in header["providers"]))
    head.append('\n  ],\n  "tree":')
    data = "".join([*head, written, f',\n  "mac":"{mac}"\n}}\n']).encode("ascii")
    document = Document(
        stack=stack,
        serial=serial,
        key_id=cipher.key_id,
        providers=entries,
        data_key=data_key,
        cipher=cipher,
        sealed=sealed,
        tree_text=tree_text,
        opened_by=opened,
        guarded=guarded,
    )
    return data, document


def _leak_message(
    reported: list[tuple[tuple[str | int, ...], str]], *, strict: bool, hint: str
) -> str:
    shown = [
        f"{format_path(p)} ({_REASONS.get(r, 'looks like a credential')})" for p, r in reported[:20]
    ]
    more = f" and {len(reported) - 20} more" if len(reported) > 20 else ""
    listing = "; ".join(shown) + more
    if strict:
        return (
            f"plain values would leak a secret: {listing}. Nothing was written. Mark them "
            f"secret where they are made (veil.secret / Output.secret), or list their paths "
            f"in {hint} if they are really public"
        )
    return (
        f"plain values held secret material and were encrypted anyway: {listing}. Mark "
        "them secret where they are made (veil.secret / Output.secret), or list their "
        f"paths in {hint} if they are really public"
    )


def dumps(
    tree: Any,
    *,
    provider: SecretsProvider,
    stack: str,
    previous: Document | bytes | None = None,
    **options: Any,
) -> bytes:
    """The bytes of a state document for ``tree``; see :func:`dump_document`."""
    return _dump(tree, provider=provider, stack=stack, previous=previous, stacklevel=3, **options)[
        0
    ]


async def _resolve(value: Any, path: tuple[str | int, ...]) -> Any:
    """``value`` with every Output awaited: secret ones become Secrets."""
    t = type(value)
    if t is str or t is int or t is float or t is bool or value is None:
        return value
    if t is dict or (isinstance(value, Mapping) and not _is_output(value)):
        return {k: await _resolve(v, (*path, k)) for k, v in value.items()}
    if t is list or t is tuple:
        return [await _resolve(v, (*path, i)) for i, v in enumerate(value)]
    if isinstance(value, Secret):
        inner = value.reveal()
        if type(inner) in (str, int, float, bool) or inner is None:
            return value
        return Secret(await _resolve(inner, path))
    if _is_output(value):
        inner, known, secret, _resources = await value._veil_resolve_()
        if not known:
            raise UnknownValueError(
                f"the Output at {format_path(path)} is unknown (a preview value); "
                "state can only be written once every value is known"
            )
        resolved = await _resolve(inner, path)
        if secret:
            return Secret(resolved) if not isinstance(resolved, Secret) else resolved
        return resolved
    return value


async def dump_document_async(
    tree: Any, *, provider: SecretsProvider, stack: str, **options: Any
) -> tuple[bytes, Document]:
    """:func:`dump_document` that first awaits every pending Output in ``tree``."""
    try:
        return dump_document(tree, provider=provider, stack=stack, **options)
    except PendingOutputError:
        pass
    resolved = await _resolve(tree, ())
    return dump_document(resolved, provider=provider, stack=stack, **options)


async def dumps_async(tree: Any, *, provider: SecretsProvider, stack: str, **options: Any) -> bytes:
    """:func:`dumps` that first awaits every pending Output in ``tree``."""
    return (await dump_document_async(tree, provider=provider, stack=stack, **options))[0]


# --- loading -----------------------------------------------------------------------------------


def _format_error(what: str) -> StateFormatError:
    return StateFormatError(f"not a valid veil state document: {what}")


def _parse(data: bytes) -> tuple[dict[str, Any], str, tuple[ProviderEntry, ...]]:
    """The parsed document, its text and its provider entries, structure checked."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise StateFormatError(f"a state document is bytes, not {type(data).__name__}")
    try:
        text = bytes(data).decode("utf-8")
    except UnicodeDecodeError:
        raise _format_error("it is not UTF-8 text (truncated or binary?)") from None
    try:
        raw = json.loads(text)
    except RecursionError:
        raise _format_error("it is nested too deeply") from None
    except ValueError as exc:
        where = f" at line {exc.lineno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise _format_error(f"it is not JSON{where} (truncated or edited by hand?)") from None
    if not isinstance(raw, dict):
        raise _format_error("the top level is not a JSON object")
    if "veil_state" not in raw:
        raise _format_error("it has no 'veil_state' field (another kind of file?)")
    version = raw["veil_state"]
    if type(version) is not int:
        raise _format_error("'veil_state' is not a whole number")
    if version != FORMAT_VERSION:
        if version > FORMAT_VERSION:
            raise StateFormatError(
                f"the state document has format version {version}; this veil reads "
                f"version {FORMAT_VERSION}. Upgrade veil to read it."
            )
        raise StateFormatError(f"unknown state document format version {version}")
    keys = set(raw)
    if keys != set(_TOP_KEYS):
        missing = sorted(set(_TOP_KEYS) - keys)
        extra = sorted(keys - set(_TOP_KEYS))
        raise _format_error(
            f"fields missing: {missing}, unexpected: {extra}"
            if missing
            else f"unexpected fields: {extra}"
        )
    stack = raw["stack"]
    try:
        validate_stack_name(stack)
    except InvalidStackNameError:
        raise _format_error("'stack' is not a valid stack name") from None
    serial = raw["serial"]
    if type(serial) is not int or serial < 0:
        raise _format_error("'serial' is not a whole number >= 0")
    kid = raw["key_id"]
    if type(kid) is not str or len(kid) != 16 or not set(kid) <= _HEX:
        raise _format_error("'key_id' is not 16 lower-case hex digits")
    mac = raw["mac"]
    if type(mac) is not str or len(mac) != 64 or not set(mac) <= _HEX:
        raise _format_error("'mac' is not 64 lower-case hex digits")
    return raw, text, provider_entries_from_json(raw["providers"])


def _tree_text(text: str, header: Mapping[str, Any], raw: Mapping[str, Any]) -> str:
    """The canonical text of the tree: cut from the file when veil wrote it (removing the
    layout gives canonical JSON), else encoded afresh from the parsed tree.

    The cut is sound: JSON text holds raw newlines only as whitespace, so the text
    without its layout parses to the same document, and the cut is exactly the value
    between the expected header and the expected MAC member.
    """
    # Removes every newline and the spaces after it (the regex "\n *", faster).
    lines = text.split("\n")
    stripped = lines[0] + "".join([line.lstrip(" ") for line in lines[1:]])
    prefix = _header_prefix(header)
    suffix = ',"mac":"' + raw["mac"] + '"}'
    if (
        stripped.startswith(prefix)
        and stripped.endswith(suffix)
        and len(stripped) > len(prefix) + len(suffix)
        and stripped.isascii()
    ):
        return stripped[len(prefix) : -len(suffix)]
    return _canonical_json(raw["tree"])


def provider_entries_from_json(entries: Any) -> tuple[ProviderEntry, ...]:
    """The provider entries of a document's (or a keyring's) ``providers`` JSON list.

    Each entry is an object with exactly ``scheme`` (str), ``description`` (object)
    and ``wrapped_key`` (standard base64); anything else raises
    :class:`~veil.StateFormatError`, as does an empty list.
    """
    if type(entries) is not list or not entries:
        raise _format_error("'providers' is not a non-empty list")
    out: list[ProviderEntry] = []
    for entry in entries:
        if type(entry) is not dict or set(entry) != _ENTRY_KEYS:
            raise _format_error(
                "a 'providers' entry needs exactly scheme, description, wrapped_key"
            )
        if type(entry["scheme"]) is not str or type(entry["description"]) is not dict:
            raise _format_error("a 'providers' entry has a bad scheme or description")
        if type(entry["wrapped_key"]) is not str:
            raise _format_error("a 'providers' entry has a bad wrapped_key")
        try:
            wrapped = base64.b64decode(entry["wrapped_key"].encode("ascii"), validate=True)
        except (binascii.Error, UnicodeError, ValueError):
            raise _format_error("a 'wrapped_key' is not base64") from None
        if any(e.scheme == entry["scheme"] for e in out):
            # One entry per scheme: opening never costs more than one derivation or
            # service call per kind of provider, whatever the file lists.
            raise _format_error(f"it has two {entry['scheme']!r} provider entries")
        out.append(
            ProviderEntry(
                scheme=entry["scheme"], description=entry["description"], wrapped_key=wrapped
            )
        )
    return tuple(out)


def read_header(data: bytes) -> DocumentHeader:
    """The clear fields of a state document, without any key or provider call.

    Checks the JSON, the structure and the format version like :func:`load_document`
    (:class:`~veil.StateFormatError`); the MAC is not checked (it needs the key), so
    the fields are only as trustworthy as the file until the document is loaded.
    """
    raw, _text, entries = _parse(data)
    return DocumentHeader(
        stack=raw["stack"], serial=raw["serial"], key_id=raw["key_id"], providers=entries
    )


def unwrap_data_key(
    provider: SecretsProvider, entries: Sequence[ProviderEntry], *, stack: str, key_id: str
) -> bytes:
    """The data key of ``stack``, unwrapped by ``provider`` from one of ``entries``.

    Each entry of the provider's scheme is tried with its stored description
    (``provider.with_description``) and the context ``{"stack": stack}``; the key
    must have the id ``key_id``. Raises :class:`~veil.KeyUnwrapError` (no entry of
    that scheme, or none gave that key), the provider's own errors (for example
    :class:`~veil.IncorrectPassphraseError`), or :class:`~veil.ProviderError` for a
    provider that fails with anything else.
    """
    return _unwrap(provider, entries, stack, key_id)[0]


def _unwrap(
    provider: SecretsProvider, entries: Sequence[ProviderEntry], stack: str, kid: str
) -> tuple[bytes, ProviderEntry]:
    scheme = getattr(provider, "scheme", None)
    candidates = [e for e in entries if e.scheme == scheme]
    if not candidates:
        known = ", ".join(sorted({e.scheme for e in entries}))
        raise KeyUnwrapError(
            f"stack {stack!r} cannot be opened with a {scheme!r} provider; it was "
            f"written for: {known}. Use one of those providers."
        )
    failure: VeilError | None = None
    context = {"stack": stack}
    for entry in candidates:
        try:
            opener = provider.with_description(entry.description)
            data_key = opener.unwrap_key(entry.wrapped_key, context)
        except VeilError as exc:
            failure = failure or exc
            continue
        except Exception as exc:  # a user provider's bug: typed, without its message
            raise ProviderError(
                f"the {scheme!r} provider failed to unwrap the data key "
                f"({type(exc).__name__}); check its configuration"
            ) from exc
        if not isinstance(data_key, bytes) or len(data_key) != DATA_KEY_SIZE:
            failure = failure or KeyUnwrapError(
                f"the {scheme!r} provider returned no valid data key for stack {stack!r}"
            )
            continue
        if key_id(data_key) != kid:
            failure = failure or KeyUnwrapError(
                f"the {scheme!r} provider unwrapped another key than the one stack "
                f"{stack!r} was written with (key id {kid})"
            )
            continue
        return data_key, entry
    assert failure is not None
    raise failure


class _Opener:
    """One load: walks the stored tree, opens sealed leaves, records plaintexts.

    The walk changes the parsed tree in place (it is ours alone) and keeps only the
    AAD prefix of each container; paths are rebuilt from it for error messages.
    """

    def __init__(self, cipher: ValueCipher | None) -> None:
        self.cipher = cipher
        self.sealed: dict[str, tuple[str | bytes, str]] = {}

    def open(self, token: Any, aad: str) -> Secret[Any]:
        if type(token) is not str:
            raise _format_error(
                f"the sealed value at {format_path(_leaf_path(aad))} is not a string"
            )
        assert self.cipher is not None
        try:
            value = self.cipher.open(token, aad.encode("ascii"))
        except DecryptionError:
            raise StateIntegrityError(
                f"the sealed value at {format_path(_leaf_path(aad))} does not open: the "
                "document was changed or assembled from pieces of other documents"
            ) from None
        self.sealed[aad] = (value if type(value) is str else _canonical_plain(value), token)
        return Secret(value)

    def walk(self, v: Any, pws: str) -> Any:
        """The user-facing form of the stored value ``v`` (members' AAD prefix ``pws``)."""
        if type(v) is dict:
            if len(v) == 1:
                if SECRET_KEY in v:
                    return self.open(
                        v[SECRET_KEY], pws[:-1] + "]]" if pws[-1] == "," else pws + "]]"
                    )
                if ESCAPE_KEY in v:
                    x = v[ESCAPE_KEY]
                    if type(x) is not dict or len(x) != 1 or next(iter(x)) not in _MARKERS:
                        raise _format_error(f"a bad escape at {format_path(_pws_path(pws))}")
                    return self.mapping(x, pws)
            return self.mapping(v, pws)
        if type(v) is list:
            return self.sequence(v, pws)
        return v

    def mapping(self, d: dict[str, Any], pws: str) -> dict[str, Any]:
        for k, x in d.items():
            tx = type(x)
            if tx is dict:
                if len(x) == 1 and SECRET_KEY in x:
                    d[k] = self.open(x[SECRET_KEY], pws + _enc_str(k) + "]]")
                else:
                    d[k] = self.walk(x, pws + _enc_str(k) + ",")
            elif tx is list:
                self.sequence(x, pws + _enc_str(k) + ",")
        return d

    def sequence(self, s: list[Any], pws: str) -> list[Any]:
        for i, x in enumerate(s):
            tx = type(x)
            if tx is dict:
                if len(x) == 1 and SECRET_KEY in x:
                    s[i] = self.open(x[SECRET_KEY], pws + str(i) + "]]")
                else:
                    s[i] = self.walk(x, pws + str(i) + ",")
            elif tx is list:
                self.sequence(x, pws + str(i) + ",")
        return s


class _Rebuilder(_Opener):
    """The walk of :class:`_Opener` over a tree this process wrote: the plaintexts are
    known, nothing is decrypted."""

    def __init__(self, sealed: Mapping[str, tuple[str | bytes, str]]) -> None:
        super().__init__(None)
        self.known = sealed

    def open(self, token: Any, aad: str) -> Secret[Any]:
        key = self.known[aad][0]
        if type(key) is str:
            return Secret(key)
        assert type(key) is bytes
        return Secret(json.loads(key[1:]))


def load_document(data: bytes, *, provider: SecretsProvider) -> Document:
    """Read a state document; the returned :class:`Document` holds the tree.

    Checks, in order: JSON (:class:`~veil.StateFormatError`), structure and format
    version (``StateFormatError``), the data key through ``provider`` (its errors:
    :class:`~veil.IncorrectPassphraseError`, :class:`~veil.KeyUnwrapError`, ...), the
    MAC (:class:`~veil.StateIntegrityError`), then each sealed value
    (``StateIntegrityError``). ``provider`` supplies credentials; its stored settings
    come from the document (``provider.with_description``).
    """
    with _gc_paused():
        return _load_paused(data, provider)


def _load_paused(data: bytes, provider: SecretsProvider) -> Document:
    _check_provider(provider)
    raw, text, entries = _parse(data)
    data_key, entry = _unwrap(provider, entries, raw["stack"], raw["key_id"])
    return _open_parsed(raw, text, entries, provider, data_key, entry)


def load_with_stored_providers(
    data: bytes, build: Callable[[ProviderEntry], SecretsProvider]
) -> tuple[SecretsProvider, Document]:
    """:func:`load_document` with a provider rebuilt from the document's own entries.

    ``build`` makes a provider from an entry (its scheme and stored description, with
    credentials from the environment); the entries are tried in order and the first
    that unwraps the data key is used, so the document is parsed once. If none does,
    raises the first entry's error; with several entries, its message names what went
    wrong with each.
    """
    with _gc_paused():
        raw, text, entries = _parse(data)
        failures: list[tuple[str, VeilError]] = []
        for candidate in entries:
            try:
                provider = build(candidate)
                _check_provider(provider)
                data_key, entry = _unwrap(provider, entries, raw["stack"], raw["key_id"])
            except VeilError as exc:
                failures.append((candidate.scheme, exc))
                continue
            return provider, _open_parsed(raw, text, entries, provider, data_key, entry)
        first = failures[0][1]  # entries is never empty
        if len(failures) == 1:
            raise first
        listing = "; ".join(f"{scheme}://: {exc}" for scheme, exc in failures)
        combined = type(first)(
            f"none of the recipients of stack {raw['stack']!r} could open it: {listing}"
        )
        raise combined from None


def _open_parsed(
    raw: dict[str, Any],
    text: str,
    entries: tuple[ProviderEntry, ...],
    provider: SecretsProvider,
    data_key: bytes,
    entry: ProviderEntry,
) -> Document:
    """The Document of a parsed file whose data key is unwrapped: MAC, then values."""
    stack: str = raw["stack"]
    cipher = ValueCipher(data_key)
    header = {k: raw[k] for k in _TOP_KEYS if k not in ("tree", "mac")}
    if not cipher.verify_mac(
        _mac_input(header, _tree_text(text, header, raw)), bytes.fromhex(raw["mac"])
    ):
        raise StateIntegrityError(
            f"the MAC of stack {stack!r} does not match: the document was edited, "
            "reordered or assembled from pieces of other documents. Restore a good copy "
            "(the store keeps history)."
        )
    opener = _Opener(cipher)
    try:
        # The walk replaces markers in place: the parsed tree is ours alone.
        tree = opener.walk(raw["tree"], _aad_prefix(stack))
    except RecursionError:
        raise _format_error("it is nested too deeply") from None
    return Document(
        stack=stack,
        serial=raw["serial"],
        key_id=raw["key_id"],
        providers=entries,
        data_key=data_key,
        cipher=cipher,
        sealed=opener.sealed,
        tree_text=None,  # only needed to build the tree, which is already here
        opened_by=((provider, entry),),
        tree_box=[tree],
    )


def loads(data: bytes, *, provider: SecretsProvider) -> Any:
    """The tree of a state document, each sealed leaf as a :class:`~veil.Secret`.

    See :func:`load_document` for the checks and errors.
    """
    return load_document(data, provider=provider).tree
