"""A sealed path stays sealed: plain values at paths the previous document sealed.

When a schema loses a field or a refactor drops ``secret()``, the next save would
write in clear a value that was sealed until then. :func:`keep_sealed` finds those
values in a save's stored tree and seals them anyway; the caller warns (or, strict,
refuses). Its cost is in the number of such paths, not in the size of the tree: only
the paths sealed before and not sealed now are looked up.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from .._secret import Secret
from ._canonical import ESCAPE_KEY, SECRET_KEY, aad_of, canonical_plain, format_path

__all__ = ["Leaf", "keep_sealed", "sticky_message"]

Leaf = tuple[Any, "str | bytes", str, dict[str, str]]
"""(plain value, key for re-save, aad, marker) of a secret leaf, as the save keeps them."""

Path = tuple["str | int", ...]


def keep_sealed(
    stored: Any,
    leaves: list[Leaf],
    sealed_before: Iterable[str],
    *,
    stack: str,
    in_place: dict[int, dict[str, str]],
    allowed: Callable[[Path], bool],
) -> tuple[Any, list[Leaf], list[Path]]:
    """``stored`` with every plain value at a path in ``sealed_before`` (the associated
    data of the previous document's sealed leaves) sealed, unless ``allowed``; the
    leaves updated; and the paths sealed so, in order.

    A container found at such a path is sealed whole, the secret leaves inside it
    becoming part of it. ``in_place`` maps the id of each Secret the walk left in the
    stored tree to its marker. Copies what it changes.
    """
    current = {leaf[2] for leaf in leaves}
    missing = [aad for aad in sealed_before if aad not in current]
    if not missing:
        return stored, leaves, []
    by_marker = {id(leaf[3]): leaf for leaf in leaves}
    dropped: set[int] = set()
    added: list[Leaf] = []
    reported: list[Path] = []

    def plain(node: Any) -> Any:
        """The plain value of a stored subtree; the leaves inside it are dropped."""
        t = type(node)
        if t is dict:
            if len(node) == 1:
                ((k, x),) = node.items()
                if k == SECRET_KEY:
                    dropped.add(id(node))
                    return by_marker[id(node)][0]
                if k == ESCAPE_KEY:
                    return {kk: plain(v) for kk, v in x.items()}
            return {k: plain(v) for k, v in node.items()}
        if t is list or t is tuple:
            return [plain(v) for v in node]
        if isinstance(node, Secret):
            marker = in_place[id(node)]
            dropped.add(id(marker))
            return by_marker[id(marker)][0]
        return node

    def member(node: dict[str, Any], step: str | int, path: Path, i: int) -> Any:
        if type(step) is not str or step not in node:
            return node
        child = node[step]
        r = seal(child, path, i + 1)
        if r is child:
            return node
        out = dict(node)
        out[step] = r
        return out

    def seal(node: Any, path: Path, i: int) -> Any:
        if i == len(path):
            if isinstance(node, Secret) or (
                type(node) is dict and len(node) == 1 and SECRET_KEY in node
            ):
                return node  # sealed already
            value = plain(node)
            marker = {SECRET_KEY: ""}
            key = value if type(value) is str else canonical_plain(value)
            added.append((value, key, aad_of(stack, path), marker))
            reported.append(path)
            return marker
        t = type(node)
        step = path[i]
        if t is dict:
            if len(node) == 1:
                ((k, x),) = node.items()
                if k == SECRET_KEY:
                    return node  # a container sealed whole
                if k == ESCAPE_KEY:  # a user dict whose only key is a marker's
                    r = member(x, step, path, i)
                    return node if r is x else {ESCAPE_KEY: r}
            return member(node, step, path, i)
        if t is list or t is tuple:
            if type(step) is not int or not 0 <= step < len(node):
                return node
            child = node[step]
            r = seal(child, path, i + 1)
            if r is child:
                return node
            items = list(node)
            items[step] = r
            return items
        return node  # a scalar or a Secret on the way: nothing at that path now

    for aad in missing:
        path: Path = tuple(json.loads(aad)[1])
        if path and not allowed(path):
            stored = seal(stored, path, 0)
    if not reported:
        return stored, leaves, []
    kept = [leaf for leaf in leaves if id(leaf[3]) not in dropped] if dropped else leaves
    kept.extend(added)
    return stored, kept, reported


def sticky_message(paths: list[Path], *, strict: bool, hint: str) -> str:
    """The warning (or, strict, the error) for plain values at sealed paths."""
    shown = ", ".join(format_path(p) for p in paths[:20])
    more = f" and {len(paths) - 20} more" if len(paths) > 20 else ""
    what = f"the value at {shown}" if len(paths) == 1 else f"the values at {shown}{more}"
    were = "was" if len(paths) == 1 else "were"
    cause = (
        f"{what} {were} sealed in the previous save and {'is' if were == 'was' else 'are'} "
        "plain now (a type lost a secret field, or secret() was dropped)"
    )
    advice = (
        "A sealed path stays sealed: mark it secret where it is made, or list the path "
        f"in {hint} if it really is public now"
    )
    if strict:
        return f"{cause}; nothing was written. {advice}"
    return f"{cause}; sealed anyway. {advice}"
