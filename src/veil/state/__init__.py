"""State: the encrypted document format and the stores that keep documents.

``dumps``/``loads`` turn a tree of plain values, Secrets and Outputs into a readable
JSON document where each secret leaf is sealed on its own (see ``docs/format.md``);
a :class:`StateStore` keeps the bytes per stack, atomically and under a lock.
"""

from __future__ import annotations

from .document import (
    ESCAPE_KEY,
    FORMAT_VERSION,
    SECRET_KEY,
    Document,
    DocumentHeader,
    PathLike,
    ProviderEntry,
    dump_document,
    dump_document_async,
    dumps,
    dumps_async,
    format_path,
    load_document,
    load_with_stored_providers,
    loads,
    provider_entries_from_json,
    read_header,
    unwrap_data_key,
)
from .store import (
    DEFAULT_HISTORY_SIZE,
    DEFAULT_STATE_URL,
    FileStore,
    HistoryEntry,
    LockInfo,
    StackLock,
    StateStore,
    register_store_scheme,
    store_from_url,
    validate_stack_name,
)

__all__ = [
    "DEFAULT_HISTORY_SIZE",
    "DEFAULT_STATE_URL",
    "ESCAPE_KEY",
    "FORMAT_VERSION",
    "SECRET_KEY",
    "Document",
    "DocumentHeader",
    "FileStore",
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
    "format_path",
    "load_document",
    "load_with_stored_providers",
    "loads",
    "provider_entries_from_json",
    "read_header",
    "register_store_scheme",
    "store_from_url",
    "unwrap_data_key",
    "validate_stack_name",
]
