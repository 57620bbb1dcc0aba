"""The async forms of :func:`~veil.state.dump_document` and :func:`~veil.state.dumps`:
every pending Output in the tree is awaited first, then the tree is written as the
synchronous forms write it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ..errors import PendingOutputError
from ._walk import resolve
from .document import Document, PathLike, dump_document

if TYPE_CHECKING:
    from ..providers import SecretsProvider

__all__ = ["dump_document_async", "dumps_async"]


async def dump_document_async(
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
    """:func:`dump_document` that first awaits every pending Output in ``tree``."""
    drop_recipients = tuple(drop_recipients)  # read by both attempts below
    try:
        return dump_document(
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
            drop_recipients=drop_recipients,
            data_key=data_key,
            stacklevel=stacklevel,
            leak_hint=leak_hint,
        )
    except PendingOutputError:
        pass
    resolved = await resolve(tree, ())
    return dump_document(
        resolved,
        provider=provider,
        stack=stack,
        previous=previous,
        additional_providers=additional_providers,
        serial=serial,
        rotate_key=rotate_key,
        strict=strict,
        allow_plaintext=allow_plaintext,
        replace_recipients=replace_recipients,
        drop_recipients=drop_recipients,
        data_key=data_key,
        stacklevel=stacklevel,
        leak_hint=leak_hint,
    )


async def dumps_async(
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
) -> bytes:
    """:func:`dumps` that first awaits every pending Output in ``tree``."""
    document = await dump_document_async(
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
        drop_recipients=drop_recipients,
        data_key=data_key,
        stacklevel=stacklevel,
        leak_hint=leak_hint,
    )
    return document[0]


# --- loading -----------------------------------------------------------------------------------
