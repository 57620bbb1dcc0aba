"""Canonical encoding of state documents: markers, paths, the file's layout, the MAC input.

C(value) is JSON with sorted keys, no whitespace and ASCII escapes. A document's
tree is written one member a line near the top and C(value) below; removing the
layout gives C(tree), which is what the MAC covers. A secret leaf's associated data
is ``[stack, path]`` in the same compact JSON.
"""

from __future__ import annotations

import json
import json.encoder
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from json.encoder import encode_basestring_ascii as _enc_str
from typing import Any, Final

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


def make_canonical_encoder(default: Callable[[Any], Any]) -> Callable[[Any], str]:
    """C(value); ``default`` gives the stored form of objects JSON does not know."""
    return json.JSONEncoder(
        ensure_ascii=True,
        allow_nan=False,
        sort_keys=True,
        separators=(",", ":"),
        check_circular=False,
        default=default,
    ).encode


def canonical_json(value: Any) -> str:
    try:
        return _CANONICAL.encode(value)
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
    """``"key":`` + C(value) (or C(value)) of each member of a container, in order."""
    return [head + encode(x) for head, x in _members(v)]


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
