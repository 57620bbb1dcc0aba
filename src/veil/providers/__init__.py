"""Secrets providers: where the key that protects a stack comes from.

``provider_from_url("passphrase://")``, ``("file://~/.veil/dev.key")``,
``("age://age1...")``; or a subclass of :class:`SecretsProvider` of your own,
registered with :func:`register_provider` or the ``veil.secrets_providers``
entry-point group. See ``docs/providers.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import SecretsProvider, context_bytes
from .local import LocalKeyProvider
from .passphrase import PassphraseProvider
from .registry import (
    ENTRY_POINT_GROUP,
    known_schemes,
    provider_class,
    provider_from_description,
    provider_from_url,
    register_provider,
)

if TYPE_CHECKING:
    from .age import AgeProvider
    from .aws import AwsKmsProvider
    from .gcp import GcpKmsProvider
    from .vault import VaultTransitProvider

__all__ = [
    "ENTRY_POINT_GROUP",
    "AgeProvider",
    "AwsKmsProvider",
    "GcpKmsProvider",
    "LocalKeyProvider",
    "PassphraseProvider",
    "SecretsProvider",
    "VaultTransitProvider",
    "context_bytes",
    "known_schemes",
    "provider_class",
    "provider_from_description",
    "provider_from_url",
    "register_provider",
]


# Providers whose SDK is an optional extra: their module is imported on first use, and
# building one without the extra raises ProviderConfigError saying which to install.
_LAZY = {
    "AgeProvider": "age",
    "AwsKmsProvider": "aws",
    "GcpKmsProvider": "gcp",
    "VaultTransitProvider": "vault",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'veil.providers' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
