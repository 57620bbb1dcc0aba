"""One cache of passphrase-derived keys for the whole process.

Passphrase KDFs are slow on purpose (Argon2id, PBKDF2), and a program may open the
same stack many times. :class:`DerivationCache` runs each derivation at most once:

- it is keyed by ``(HMAC(process key, passphrase), salt, settings)``, so it never
  holds a passphrase, nor a fast unkeyed hash of one;
- it is a bounded LRU, so a long-running process does not collect keys forever;
- each key has its own lock: two threads asking for the same derivation run it once,
  and two different derivations run side by side.

Private module with public names: every passphrase KDF in veil goes through
:data:`KEYS` (``passphrase://`` does; Pulumi's passphrase format is meant to).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import NoReturn

from ..errors import SecretPickleError

__all__ = ["KEYS", "DerivationCache"]

_DEFAULT_SIZE = 32


class _Slot:
    """The lock of one key being derived, and how many threads wait on it."""

    __slots__ = ("lock", "users")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.users = 0


class DerivationCache:
    """A bounded LRU of derived keys with a lock per key being derived."""

    def __init__(self, maxsize: int = _DEFAULT_SIZE) -> None:
        if maxsize < 1:
            raise ValueError("a derivation cache holds at least one key")
        self._maxsize = maxsize
        self._process_key = os.urandom(32)
        self._entries: OrderedDict[tuple[bytes, bytes, Hashable], bytes] = OrderedDict()
        # Per-key locks, removed when no thread uses them.
        self._pending: dict[tuple[bytes, bytes, Hashable], _Slot] = {}
        self._lock = threading.Lock()
        self._derivations = 0

    def __repr__(self) -> str:
        return f"DerivationCache(maxsize={self._maxsize}, held={len(self._entries)})"

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise SecretPickleError("a derivation cache holds keys and cannot be pickled")

    @property
    def derivations(self) -> int:
        """How many derivations this cache has run (not served from the cache)."""
        return self._derivations

    def clear(self) -> None:
        """Forget every key held."""
        with self._lock:
            self._entries.clear()

    def derive(
        self,
        passphrase: bytes,
        salt: bytes,
        settings: Hashable,
        derive: Callable[[], bytes],
    ) -> bytes:
        """The key for ``(passphrase, salt, settings)``: cached, or ``derive()``'s result.

        ``settings`` names the KDF and its parameters (a tuple); ``derive`` runs the
        KDF on the same passphrase and salt. An exception from ``derive`` caches
        nothing and reaches the caller.
        """
        digest = hmac.digest(self._process_key, passphrase, hashlib.sha256)
        key = (digest, bytes(salt), settings)
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
                return hit
            slot = self._pending.get(key)
            if slot is None:
                slot = self._pending[key] = _Slot()
            slot.users += 1
        try:
            with slot.lock:
                with self._lock:
                    hit = self._entries.get(key)
                if hit is not None:  # derived by the thread that held the lock
                    return hit
                value = derive()
                with self._lock:
                    self._derivations += 1
                    self._entries[key] = value
                    self._entries.move_to_end(key)
                    while len(self._entries) > self._maxsize:
                        self._entries.popitem(last=False)
                return value
        finally:
            with self._lock:
                slot.users -= 1
                if slot.users == 0:
                    del self._pending[key]


KEYS = DerivationCache()
"""The process-wide cache every passphrase KDF in veil goes through."""
