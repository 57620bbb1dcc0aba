"""Read and write Pulumi's passphrase secrets formats.

Pulumi's ``passphrase`` secrets provider protects a stack with a key derived from a
passphrase. This package speaks that format exactly, so a veil program can open a
Pulumi stack's config and state, and Pulumi can open what veil writes:

- :class:`PassphraseCrypter` holds the key of one stack and encrypts and decrypts
  Pulumi ``v1:`` values (``_crypter``).
- :func:`load_checkpoint` / :func:`dump_checkpoint` read and write Pulumi checkpoint
  (and ``pulumi stack export``) JSON, turning Pulumi's secret objects into
  :class:`veil.Secret` leaves and back (``_checkpoint``).
- :class:`PulumiStackConfig` reads and edits ``Pulumi.<stack>.yaml`` (its
  ``encryptionsalt`` and ``secure:`` values), keeping comments and order. It needs the
  ``veil[pulumi]`` extra (ruamel.yaml), imported only when a config is read
  (``_stack_config``).

Pulumi's format binds a ciphertext to nothing but the key: unlike veil's own state, a
Pulumi ciphertext can be moved between properties or stacks sharing a passphrase and
salt without detection. Use veil's own format where that matters.
"""

from __future__ import annotations

from ._checkpoint import (
    SECRET_SIG,
    SIG_KEY,
    crypter_from_checkpoint,
    dump_checkpoint,
    load_checkpoint,
)
from ._crypter import CHECK_PLAINTEXT, KDF_ITERATIONS, PassphraseCrypter, passphrase_from_env
from ._stack_config import PulumiStackConfig

# The format warning above is also in _crypter's docstring on purpose: users read this.
__all__ = [
    "CHECK_PLAINTEXT",
    "KDF_ITERATIONS",
    "SECRET_SIG",
    "SIG_KEY",
    "PassphraseCrypter",
    "PulumiStackConfig",
    "crypter_from_checkpoint",
    "dump_checkpoint",
    "load_checkpoint",
    "passphrase_from_env",
]
