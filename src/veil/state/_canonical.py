"""Canonical encoding of state documents: markers, paths, the file's layout, the MAC input.

C(value) is JSON with sorted keys, no whitespace and ASCII escapes. A document's
tree is written one member a line near the top and C(value) below; removing the
layout gives C(tree), which is what the MAC covers. A secret leaf's associated data
is ``[stack, path]`` in the same compact JSON.
"""

from __future__ import annotations

import json
import json.encoder
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from json.encoder import encode_basestring_ascii as _enc_str
from operator import add
from typing import Any, Final, NoReturn

from ..errors import StateFormatError

__all__ = [
    "ESCAPE_KEY",
    "MARKERS",
    "SECRET_KEY",
    "aad_of",
    "aad_prefix",
    "canonical_json",
    "canonical_plain",
    "canonical_tree",
    "format_error",
    "format_path",
    "header_prefix",
    "leaf_path",
    "mac_input",
    "make_canonical_encoder",
    "pws_path",
    "render_tree",
]


SECRET_KEY: Final = "$secret"  # noqa: S105  (a marker, not a password)
"""A dict whose only key is this holds one sealed value: ``{"$secret": "veil:v1:..."}``."""

ESCAPE_KEY: Final = "$escape"
"""A user dict whose only key is ``$secret`` or ``$escape`` is written inside this."""

MARKERS: Final = frozenset({SECRET_KEY, ESCAPE_KEY})


_MAC_DOMAIN: Final = b"veil/v1/state-mac\x00"
_CANONICAL: Final = json.JSONEncoder(
    ensure_ascii=True, allow_nan=False, sort_keys=True, separators=(",", ":"), check_circular=False
)


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


def aad_prefix(stack: str) -> str:
    # A leaf's associated data is json.dumps([stack, path], separators=(",", ":")),
    # built incrementally: this prefix, then each path element and a comma.
    return "[" + _enc_str(stack) + ",["


def aad_of(stack: str, path: Sequence[str | int]) -> str:
    return json.dumps([stack, list(path)], separators=(",", ":"))


def pws_path(pws: str) -> tuple[str | int, ...]:
    """The path of the container whose members' AAD starts with ``pws`` (for errors)."""
    return tuple(json.loads(pws[:-1] + "]]" if pws.endswith(",") else pws + "]]")[1])


def leaf_path(aad: str) -> tuple[str | int, ...]:
    """The path of the leaf sealed with the associated data ``aad`` (for errors)."""
    return tuple(json.loads(aad)[1])


def canonical_plain(value: Any) -> bytes:
    """Equal bytes for equal JSON values, types kept apart (1, 1.0, true, "1")."""
    if type(value) is str:
        return b"s" + value.encode("utf-8", "surrogatepass")
    return b"j" + _CANONICAL.encode(value).encode("ascii")


def format_error(what: str) -> StateFormatError:
    return StateFormatError(f"not a valid veil state document: {what}")


_EXPAND_DEPTH: Final = 2  # values at this depth of the tree, and deeper, are one line


def _no_default(value: object) -> NoReturn:
    raise TypeError(f"{type(value).__name__} is not JSON")


_make_encoder: Final[Callable[..., Any] | None] = getattr(json.encoder, "c_make_encoder", None)


def make_canonical_encoder(default: Callable[[Any], Any]) -> Callable[[Any], str]:
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


_encode_canonical: Final = make_canonical_encoder(_no_default)


def canonical_json(value: Any) -> str:
    try:
        return _encode_canonical(value)
    except (TypeError, ValueError, RecursionError):
        raise StateFormatError("the document holds values JSON cannot encode") from None


def mac_input(header: Mapping[str, Any], tree_text: str) -> bytes:
    """What the MAC covers: every field but the MAC, canonically encoded.

    ``C(header) 0x00 C(tree)``, after a domain string, where C is JSON with sorted
    keys, no whitespace and ASCII escapes, and the header holds the other fields.
    """
    return (
        _MAC_DOMAIN + canonical_json(header).encode("ascii") + b"\x00" + tree_text.encode("ascii")
    )


def header_prefix(header: Mapping[str, Any]) -> str:
    """The file's text before the tree, layout removed."""
    return (
        '{"veil_state":'
        + canonical_json(header["veil_state"])
        + ',"stack":'
        + canonical_json(header["stack"])
        + ',"serial":'
        + canonical_json(header["serial"])
        + ',"key_id":'
        + canonical_json(header["key_id"])
        + ',"providers":'
        + canonical_json(header["providers"])
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


def render_tree(stored: Any, encode: Callable[[Any], str]) -> tuple[str, str]:
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


def canonical_tree(text: str, header: Mapping[str, Any], raw: Mapping[str, Any]) -> str:
    """The canonical text of the tree: cut from the file when veil wrote it (removing the
    layout gives canonical JSON), else encoded afresh from the parsed tree.

    The cut is sound: JSON text holds raw newlines only as whitespace, so the text
    without its layout parses to the same document, and the cut is exactly the value
    between the expected header and the expected MAC member.
    """
    # Removes every newline and the spaces after it (the regex "\n *", faster).
    lines = text.split("\n")
    stripped = lines[0] + "".join([line.lstrip(" ") for line in lines[1:]])
    prefix = header_prefix(header)
    suffix = ',"mac":"' + raw["mac"] + '"}'
    if (
        stripped.startswith(prefix)
        and stripped.endswith(suffix)
        and len(stripped) > len(prefix) + len(suffix)
        and stripped.isascii()
    ):
        return stripped[len(prefix) : -len(suffix)]
    return canonical_json(raw["tree"])
