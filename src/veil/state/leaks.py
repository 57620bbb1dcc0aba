"""The leak guard: plain values that would leak a secret, found before anything is written.

A plain string is suspect if it equals the plaintext of a secret of the same
document, contains one of at least 8 characters, or has the shape of a well-known
credential (:func:`credential_shape`). A save seals such a string anyway and warns,
or with ``VEIL_STRICT`` (:func:`strict_from_env`) refuses; paths listed in
``allow_plaintext`` stay plain. The config file uses the same shapes.
"""

from __future__ import annotations

import functools
import json
import os
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from itertools import accumulate, compress
from operator import add, itemgetter
from typing import Any, Final

from .._known import collect_strings as _collect_strings
from ._canonical import format_path

__all__ = [
    "PathLike",
    "credential_shape",
    "find_leaks",
    "leak_message",
    "normalise_allow",
    "strict_from_env",
]


_COMPACT: Final = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, sort_keys=True, separators=(",", ":"), check_circular=False
)
_STRICT_ENV: Final = "VEIL_STRICT"
_CONTAIN_MIN: Final = 8  # secrets shorter than this are matched by equality only


PathLike = str | Sequence[str | int]
"""A path for ``allow_plaintext``: ``"outputs.db.host"`` or ``("outputs", "db", "host")``."""


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
    return os.environ.get(_STRICT_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def normalise_allow(
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


def find_leaks(
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


@functools.lru_cache(maxsize=64)
def _window_slices(count: int, step: int) -> list[slice]:
    """Slices of the 8-character windows starting at 0, step, 2*step, ... < count."""
    return [slice(i, i + _CONTAIN_MIN) for i in range(0, max(count, 0), step)]


def leak_message(
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
