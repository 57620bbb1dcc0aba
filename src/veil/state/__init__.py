"""State: the encrypted document format and the stores that keep documents.

``dumps``/``loads`` turn a tree of plain values, Secrets and Outputs into a readable
JSON document where each secret leaf is sealed on its own (see ``docs/format.md``);
``dump_document``/``load_document`` give the :class:`Document` a later save takes as
``previous``. A :class:`StateStore` keeps the bytes per stack, atomically and under a
lock. The public names are listed in ``docs/api.md``.
"""

from __future__ import annotations

from ._async import dump_document_async, dumps_async
from .document import (
    Document,
    DocumentHeader,
    PathLike,
    ProviderEntry,
    dump_document,
    dumps,
    load_document,
    loads,
    read_header,
)
from .store import (
    DEFAULT_HISTORY_SIZE,
    DEFAULT_STATE_URL,
    STORE_ENTRY_POINT_GROUP,
    FileStore,
    HeldLock,
    HistoryEntry,
    LockInfo,
    StackLock,
    StateStore,
    known_store_schemes,
    register_store_scheme,
    store_from_url,
    validate_stack_name,
)

__all__ = [
    "DEFAULT_HISTORY_SIZE",
    "DEFAULT_STATE_URL",
    "STORE_ENTRY_POINT_GROUP",
    "Document",
    "DocumentHeader",
    "FileStore",
    "HeldLock",
    "HistoryEntry",
    "LockInfo",
    "PathLike",
    "ProviderEntry",
    "StackLock",
    "StateStore",
    "dump_document",
    "dump_document_async",
    "dumps",
    "dumps_async",
    "known_store_schemes",
    "load_document",
    "loads",
    "read_header",
    "register_store_scheme",
    "store_from_url",
    "validate_stack_name",
]
