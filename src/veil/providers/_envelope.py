"""The AES-256-GCM envelope that local providers wrap a data key in.

Format 1, shared by ``passphrase://`` and ``file://``::

    version (1 byte, 1) || nonce (12 bytes) || AES-256-GCM(data key), tag appended

with associated data ``label || context_bytes(context)``, so a wrapped key opens only
under its own provider's label and for its own stack. Changing any byte here breaks
every stored stack: ``tests/vectors`` pins it.

Private module with public names: each local provider builds a :class:`KeyWrap`
from the key it holds.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import KeyUnwrapError, SecretPickleError
from .base import context_bytes

__all__ = ["FORMAT", "KeyWrap"]

FORMAT: Final = 1
_NONCE_LEN: Final = 12
_TAG_LEN: Final = 16


class KeyWrap:
    """Wraps and unwraps data keys under one 32-byte key, with a provider label.

    ``what`` names the provider in errors (``"a passphrase provider"``); ``failure``
    is the message of :class:`veil.KeyUnwrapError` when the tag does not verify.
    """

    __slots__ = ("_aead", "_failure", "_label", "_what")

    def __init__(self, key: bytes, *, label: bytes, what: str, failure: str) -> None:
        self._aead = AESGCM(key)
        self._label = label
        self._what = what
        self._failure = failure

    # repr and pickling refused as in StackConfig and the other key holders: one each.
    def __repr__(self) -> str:
        return f"KeyWrap({self._what})"

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise SecretPickleError("a key wrap holds a key and cannot be pickled")

    def wrap(self, data_key: bytes, context: Mapping[str, str]) -> bytes:
        """The envelope of ``data_key`` bound to ``context``."""
        aad = self._label + context_bytes(context)
        nonce = os.urandom(_NONCE_LEN)
        return bytes([FORMAT]) + nonce + self._aead.encrypt(nonce, data_key, aad)

    def unwrap(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        """The data key; :class:`veil.KeyUnwrapError` if the envelope does not open."""
        aad = self._label + context_bytes(context)
        if (
            not isinstance(wrapped, bytes)
            or len(wrapped) < 1 + _NONCE_LEN + _TAG_LEN
            or wrapped[0] != FORMAT
        ):
            raise KeyUnwrapError(f"the wrapped data key is truncated or not from {self._what}")
        try:
            return self._aead.decrypt(wrapped[1 : 1 + _NONCE_LEN], wrapped[1 + _NONCE_LEN :], aad)
        except InvalidTag:  # carries nothing: no key, no plaintext
            raise KeyUnwrapError(self._failure) from None
