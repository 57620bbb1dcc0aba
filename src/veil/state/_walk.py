"""The walks over a state tree: sealing on the way out, opening on the way in.

:class:`Sealer` checks a tree for saving, collects its secret leaves (each with its
associated data) and its plain strings (for the leak guard), and copies only the
containers it must change. :class:`Opener` walks a parsed document, opening each
sealed leaf; :class:`Rebuilder` is the same walk over a tree this process wrote,
whose plaintexts it already knows. :func:`resolve` awaits the Outputs of a tree.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from json.encoder import encode_basestring_ascii as _enc_str
from math import isfinite as _isfinite
from typing import Any

from .._declared import fields_mapping, shape_of
from .._inputs import EPHEMERAL, Unknown
from .._secret import Secret, is_output
from ..crypto import ValueCipher
from ..errors import (
    DecryptionError,
    InvalidValueError,
    PendingOutputError,
    StateIntegrityError,
    UnknownValueError,
    VeilError,
)
from ._canonical import (
    ESCAPE_KEY,
    MARKERS,
    SECRET_KEY,
    aad_of,
    aad_prefix,
    canonical_plain,
    format_error,
    format_path,
    leaf_path,
    pws_path,
)

__all__ = ["Opener", "Rebuilder", "Sealer", "rebuild", "resolve"]


def _unknown_type_error(value: object, path: Sequence[str | int]) -> VeilError:
    if isinstance(value, Unknown):
        return UnknownValueError(
            f"the value at {format_path(path)} is unknown (a preview value); "
            "state can only be written once every value is known"
        )
    return InvalidValueError(
        f"the value at {format_path(path)} is a {type(value).__name__}, which state cannot "
        "hold; use str, int, float, bool, None, list, dict, a Secret or an Output of those"
    )


def _snapshot(value: Any, path: Sequence[str | int]) -> tuple[Any, int]:
    """(value, secret level) of a resolved, known Output, or a typed error naming the
    path. An ephemeral Output's value is not returned (it is never written)."""
    resolved, inner, known, secret, _resources = value._veil_snapshot_()
    if not resolved:
        raise PendingOutputError(
            f"the Output at {format_path(path)} is still pending; await it first, "
            "or save with veil.state.dumps_async"
        )
    if secret == EPHEMERAL:
        return None, EPHEMERAL
    if not known:
        raise UnknownValueError(
            f"the Output at {format_path(path)} is unknown (a preview value); "
            "state can only be written once every value is known"
        )
    return inner, secret


def _check_float(value: float, path: Sequence[str | int]) -> None:
    if not math.isfinite(value):
        raise InvalidValueError(
            f"the value at {format_path(path)} is NaN or infinite, which JSON cannot hold"
        )


def _plain(value: Any, path: tuple[str | int, ...], ephemeral: list[tuple[str | int, ...]]) -> Any:
    """The pure JSON form of a secret leaf's value (nested Secrets and Outputs opened);
    the path of each ephemeral Output in it is added to ``ephemeral``."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return value
    if t is float:
        _check_float(value, path)
        return value
    if t is dict or (isinstance(value, Mapping) and not is_output(value)):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if type(k) is not str:
                raise _key_error(k, path)
            out[k] = _plain(v, (*path, k), ephemeral)
        return out
    if t is list or t is tuple or (isinstance(value, (list, tuple)) and shape_of(t) is None):
        return [_plain(v, (*path, i), ephemeral) for i, v in enumerate(value)]
    if t is Secret:
        return _plain(value.reveal(), path, ephemeral)
    if is_output(value):
        inner, level = _snapshot(value, path)
        if level == EPHEMERAL:
            ephemeral.append(path)
            return None
        return _plain(inner, path, ephemeral)
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, float):
        return _plain(float(value), path, ephemeral)
    if isinstance(value, Secret):
        return _plain(value.reveal(), path, ephemeral)
    shape = shape_of(t)
    if shape is not None:  # a dataclass, attrs class, NamedTuple: a mapping of its fields
        return _plain(fields_mapping(value, shape), path, ephemeral)
    raise _unknown_type_error(value, path)


def _key_error(key: object, path: Sequence[str | int]) -> InvalidValueError:
    return InvalidValueError(
        f"a dict at {format_path(path)} has a key of type {type(key).__name__}; "
        "state keys must be str"
    )


class Sealer:
    """One save's walk: checks the tree, finds secret leaves and plain strings.

    The walk copies nothing it does not change: a container is copied only if a
    member must be stored differently (an escape, an Output, a repeated Secret, ...).
    A :class:`~veil.Secret` left in place is written by the encoder's ``default``
    hook, which finds its marker by the object's id.
    """

    def __init__(self, stack: str) -> None:
        self.stack = stack
        self.prefix = aad_prefix(stack)
        self.strings: list[str] = []
        self.strings_append = self.strings.append
        # (value, aad, marker) of each secret leaf, in walk order; the marker dict
        # gets its sealed value once every leaf is known.
        self.leaves: list[tuple[Any, str, dict[str, str]]] = []
        # id of a Secret left in the tree -> its marker (the tree keeps it alive)
        self.markers: dict[int, dict[str, str]] = {}
        # Paths of ephemeral values: the caller refuses the save if there is any.
        self.ephemeral: list[tuple[str | int, ...]] = []

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
            _check_float(v, leaf_path(aad))
            return v
        if t is dict:
            return self.mapping(v, pws)
        if t is list or t is tuple:
            return self.sequence(v, pws)
        if isinstance(v, Secret):
            return self.secret(v, aad)
        if is_output(v):
            inner, secret = _snapshot(v, leaf_path(aad))
            if secret == EPHEMERAL:
                self.ephemeral.append(leaf_path(aad))
                return None
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
        shape = shape_of(t)
        if shape is not None:
            # A typed instance is a mapping of its fields, declared ones marked secret.
            return self.mapping(fields_mapping(v, shape), pws)
        if isinstance(v, (list, tuple)):
            return self.sequence(list(v), pws)
        raise _unknown_type_error(v, leaf_path(aad))

    def mapping(self, d: Mapping[Any, Any], pws: str) -> Any:
        out: dict[str, Any] | None = None
        strings_append = self.strings_append
        for k, v in d.items():
            if type(k) is not str:
                raise _key_error(k, pws_path(pws))
            t = type(v)
            if t is str:
                strings_append(v)
                continue
            if t is int or t is bool or v is None:
                continue
            if t is float:
                if not _isfinite(v):
                    _check_float(v, (*pws_path(pws), k))
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
        if len(stored) == 1 and next(iter(stored)) in MARKERS:
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
                    _check_float(v, (*pws_path(pws), i))
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
                value = _plain(value, leaf_path(aad), self.ephemeral)
            out.append((value, canonical_plain(value), aad, marker))
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
                self.leaves.append((v, aad_of(stack, path), marker))
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


async def resolve(value: Any, path: tuple[str | int, ...]) -> Any:
    """``value`` with every Output awaited: secret ones become Secrets; ephemeral ones
    stay (now resolved) Outputs, for the sealing walk to refuse with their paths."""
    t = type(value)
    if t is str or t is int or t is float or t is bool or value is None:
        return value
    if t is dict or (isinstance(value, Mapping) and not is_output(value)):
        return {k: await resolve(v, (*path, k)) for k, v in value.items()}
    if t is list or t is tuple:
        return [await resolve(v, (*path, i)) for i, v in enumerate(value)]
    if isinstance(value, Secret):
        inner = value.reveal()
        if type(inner) in (str, int, float, bool) or inner is None:
            return value
        return Secret(await resolve(inner, path))
    if is_output(value):
        inner, known, secret, _resources = await value._veil_resolve_()
        if secret == EPHEMERAL:
            return value
        if not known:
            raise UnknownValueError(
                f"the Output at {format_path(path)} is unknown (a preview value); "
                "state can only be written once every value is known"
            )
        resolved = await resolve(inner, path)
        if secret:
            return Secret(resolved) if not isinstance(resolved, Secret) else resolved
        return resolved
    shape = shape_of(t)
    if shape is not None:
        return await resolve(fields_mapping(value, shape), path)
    return value


class Opener:
    """One load: walks the stored tree, opens sealed leaves, records plaintexts.

    The walk changes the parsed tree in place (it is ours alone) and keeps only the
    AAD prefix of each container; paths are rebuilt from it for error messages.
    """

    def __init__(self, cipher: ValueCipher | None) -> None:
        self.cipher = cipher
        self.sealed: dict[str, tuple[str | bytes, str]] = {}

    def open(self, token: Any, aad: str) -> Secret[Any]:
        if type(token) is not str:
            raise format_error(f"the sealed value at {format_path(leaf_path(aad))} is not a string")
        assert self.cipher is not None
        try:
            value = self.cipher.open(token, aad.encode("ascii"))
        except DecryptionError:
            raise StateIntegrityError(
                f"the sealed value at {format_path(leaf_path(aad))} does not open: the "
                "document was changed or assembled from pieces of other documents"
            ) from None
        self.sealed[aad] = (value if type(value) is str else canonical_plain(value), token)
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
                    if type(x) is not dict or len(x) != 1 or next(iter(x)) not in MARKERS:
                        raise format_error(f"a bad escape at {format_path(pws_path(pws))}")
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


class Rebuilder(Opener):
    """The walk of :class:`Opener` over a tree this process wrote: the plaintexts are
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


def rebuild(text: str, sealed: Mapping[str, tuple[str | bytes, str]], stack: str) -> Any:
    """The user-facing tree from the canonical stored text and the known plaintexts."""
    return Rebuilder(sealed).walk(json.loads(text), aad_prefix(stack))
