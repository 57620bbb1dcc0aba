"""Read and write Pulumi's passphrase secrets formats.

Pulumi's ``passphrase`` secrets provider protects a stack with a key derived from a
passphrase. This package speaks that format exactly, so a veil program can open a
Pulumi stack's config and state, and Pulumi can open what veil writes.
"""

from __future__ import annotations

from ._crypter import (
    CHECK_PLAINTEXT,
    KDF_ITERATIONS,
    SECRET_SIG,
    SIG_KEY,
    PassphraseCrypter,
    PulumiStackConfig,
    crypter_from_checkpoint,
    dump_checkpoint,
    load_checkpoint,
    passphrase_from_env,
)

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
