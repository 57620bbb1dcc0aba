"""Find a provider class by URL scheme.

Three sources, in this order of precedence:

1. classes registered in this process with :func:`register_provider`;
2. veil's built-in providers (imported only when first used, so an optional
   dependency such as ``pyrage`` is needed only by those who use ``age://``);
3. the ``veil.secrets_providers`` entry-point group of installed distributions
   (entry name = scheme, value = ``"module:Class"``), loaded only when a scheme is not
   found above. An entry point cannot replace a built-in scheme.
"""

from __future__ import annotations

import importlib
import os
import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..errors import ProviderConfigError, UnknownProviderError
from .base import SecretsProvider

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = [
    "ENTRY_POINT_GROUP",
    "known_schemes",
    "provider_class",
    "provider_from_description",
    "provider_from_url",
    "register_provider",
]

ENTRY_POINT_GROUP = "veil.secrets_providers"

_BUILTIN: dict[str, str] = {
    "passphrase": "veil.providers.passphrase:PassphraseProvider",
    "file": "veil.providers.local:LocalKeyProvider",
    "age": "veil.providers.age:AgeProvider",
    "awskms": "veil.providers.aws:AwsKmsProvider",
    "hashivault": "veil.providers.vault:VaultTransitProvider",
    "gcpkms": "veil.providers.gcp:GcpKmsProvider",
}

_SCHEME_RE = re.compile(r"[a-z][a-z0-9+.-]*\Z")
_registered: dict[str, type[SecretsProvider]] = {}
_lock = threading.Lock()


def _check_class(cls: object, where: str) -> type[SecretsProvider]:
    if not (isinstance(cls, type) and issubclass(cls, SecretsProvider)):
        raise ProviderConfigError(f"{where} is not a SecretsProvider subclass")
    scheme = getattr(cls, "scheme", None)
    if not isinstance(scheme, str) or not _SCHEME_RE.match(scheme):
        raise ProviderConfigError(
            f"{where} needs a class attribute 'scheme': a lower-case URL scheme such as 'mykms'"
        )
    return cls


def register_provider(
    cls: type[SecretsProvider], *, replace: bool = False
) -> type[SecretsProvider]:
    """Make ``cls`` the provider for ``cls.scheme``; usable as a class decorator.

    Registering another class for a scheme already taken (built-in or registered)
    raises :class:`veil.ProviderConfigError` unless ``replace=True``.
    """
    _check_class(cls, repr(cls))
    with _lock:
        current = _registered.get(cls.scheme)
        taken = current is not None and current is not cls
        if not taken and current is None and cls.scheme in _BUILTIN:
            taken = _BUILTIN[cls.scheme] != f"{cls.__module__}:{cls.__qualname__}"
        if taken and not replace:
            raise ProviderConfigError(
                f"the scheme '{cls.scheme}://' already has a provider; "
                "pass replace=True to register_provider to replace it"
            )
        _registered[cls.scheme] = cls
    return cls


def _load(target: str, where: str) -> type[SecretsProvider]:
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    obj: Any = module
    for part in attr.split("."):
        obj = getattr(obj, part)
    return _check_class(obj, where)


def _entry_points() -> dict[str, EntryPoint]:
    # Imported here: importlib.metadata costs more at import time than the rest of
    # the registry, and only third-party schemes need it.
    from importlib import metadata

    found: dict[str, EntryPoint] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name.lower(), ep)
    return found


def provider_class(scheme: str) -> type[SecretsProvider]:
    """The provider class for ``scheme`` (without ``://``).

    Raises :class:`veil.UnknownProviderError` listing the known schemes.
    """
    scheme = scheme.lower()
    with _lock:
        cls = _registered.get(scheme)
    if cls is not None:
        return cls
    if scheme in _BUILTIN:
        cls = _load(_BUILTIN[scheme], f"the built-in provider for '{scheme}://'")
        with _lock:
            _registered.setdefault(scheme, cls)
        return cls
    ep = _entry_points().get(scheme)
    if ep is None:
        raise UnknownProviderError(
            f"no secrets provider for '{scheme}://'; known schemes: "
            + ", ".join(f"{s}://" for s in known_schemes())
            + f". Third-party providers register under the entry-point group "
            f"'{ENTRY_POINT_GROUP}', or call veil.providers.register_provider(cls)."
        )
    where = f"entry point '{ep.name} = {ep.value}' (group {ENTRY_POINT_GROUP})"
    try:
        cls = _check_class(ep.load(), where)
    except ProviderConfigError:
        raise
    except Exception as exc:
        raise ProviderConfigError(f"cannot load {where}: {type(exc).__name__}: {exc}") from exc
    if cls.scheme != scheme:
        raise ProviderConfigError(
            f"{where} names scheme '{scheme}' but its class says '{cls.scheme}'"
        )
    with _lock:
        _registered.setdefault(scheme, cls)
    return cls


def known_schemes() -> list[str]:
    """Every scheme that :func:`provider_from_url` accepts, sorted."""
    with _lock:
        names = set(_registered)
    names.update(_BUILTIN)
    names.update(_entry_points())
    return sorted(names)


def _options(
    cls: type[SecretsProvider],
    base_dir: str | os.PathLike[str] | None,
    insecure_weak_kdf: bool,
) -> dict[str, Any]:
    """The caller's options that ``cls`` declares in ``url_options``."""
    given: dict[str, Any] = {}
    if base_dir is not None:
        given["base_dir"] = base_dir
    if insecure_weak_kdf:
        given["insecure_weak_kdf"] = True
    return {name: value for name, value in given.items() if name in cls.url_options}


def provider_from_url(
    url: str,
    *,
    base_dir: str | os.PathLike[str] | None = None,
    insecure_weak_kdf: bool = False,
) -> SecretsProvider:
    """Build the provider a URL names, e.g. ``passphrase://`` or ``file:///k.key``.

    ``base_dir``: the folder a relative key file path is relative to (``file://``).
    ``insecure_weak_kdf``: allow passphrase KDF settings below OWASP's minimums, for
    tests only (``passphrase://``). Each is passed to providers that accept it.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ProviderConfigError(
            f"a secrets provider URL looks like 'scheme://...' (known schemes: "
            f"{', '.join(known_schemes())}), got {url!r}"
        )
    cls = provider_class(url.split("://", 1)[0])
    return cls.from_url(url, **_options(cls, base_dir, insecure_weak_kdf))


def provider_from_description(
    scheme: str,
    description: Mapping[str, Any],
    *,
    base_dir: str | os.PathLike[str] | None = None,
    insecure_weak_kdf: bool = False,
) -> SecretsProvider:
    """Rebuild a provider from a stored scheme and :meth:`SecretsProvider.describe`.

    The options are those of :func:`provider_from_url`; they come from the caller,
    never from the description.
    """
    if not isinstance(description, Mapping):
        raise ProviderConfigError("a stored provider description must be a JSON object")
    cls = provider_class(scheme)
    return cls.from_description(description, **_options(cls, base_dir, insecure_weak_kdf))
