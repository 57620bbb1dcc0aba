"""`SecretsProvider`: the one interface every key source implements.

A provider protects a stack's data key and nothing else: it wraps the key when a stack
is written and unwraps it when the stack is read, once per stack, however many secrets
the stack holds. It knows no document and no stack, only a *context* mapping
(``{"stack": name}``) that it must bind to the wrapped key, so that a wrapped key copied
to another stack does not unwrap.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NoReturn
from urllib.parse import parse_qsl, urlsplit

from ..errors import ProviderConfigError, SecretPickleError

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["SecretsProvider", "context_bytes"]


def context_bytes(context: Mapping[str, str]) -> bytes:
    """A canonical byte encoding of a context mapping, for use as associated data.

    Equal mappings give equal bytes whatever their order; providers may rely on it.
    """
    try:
        return json.dumps(
            dict(context), sort_keys=True, separators=(",", ":"), ensure_ascii=True
        ).encode("ascii")
    except (TypeError, ValueError):
        raise ProviderConfigError("a key context must map str to str") from None


class SecretsProvider(abc.ABC):
    """A source of the key that protects a stack's data key.

    Subclasses set :attr:`scheme` and implement the four abstract methods. A user's
    provider passes :class:`veil.testing.ProviderComplianceSuite`, and is found by
    :func:`veil.providers.provider_from_url` once registered (with
    :func:`~veil.providers.register_provider` or the ``veil.secrets_providers``
    entry-point group).

    Contract:

    - ``unwrap_key(wrap_key(k, ctx), ctx) == k``.
    - ``unwrap_key`` with another context, another key or altered bytes raises
      :class:`veil.KeyUnwrapError` (or a subclass), never returns a wrong key.
    - :meth:`describe` returns JSON-able settings without secrets; it is stored in
      the state document, and :meth:`from_description` rebuilds an equivalent provider
      from it, taking credentials from the environment.
    - A provider holds credentials or keys: it refuses pickling
      (:class:`veil.SecretPickleError`); ``copy.copy`` and ``copy.deepcopy`` give a
      shallow copy that shares them, in the same process.
    """

    scheme: ClassVar[str]
    """The URL scheme this provider answers to, e.g. ``"passphrase"``."""

    url_options: ClassVar[frozenset[str]] = frozenset()
    """Keyword options that this class's ``from_url`` and ``from_description`` accept
    besides the URL or description (``"base_dir"`` for ``file://``,
    ``"insecure_weak_kdf"`` for ``passphrase://``). The registry's
    :func:`~veil.providers.provider_from_url` passes on only these."""

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise SecretPickleError(
            f"a {type(self).__name__} can hold credentials or keys and cannot be pickled; "
            "pickle its URL or describe() instead"
        )

    def __copy__(self) -> Self:
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        for klass in type(self).__mro__:  # a subclass may add __slots__
            names = getattr(klass, "__slots__", ())
            for name in (names,) if isinstance(names, str) else names:
                if name not in ("__dict__", "__weakref__") and hasattr(self, name):
                    object.__setattr__(new, name, getattr(self, name))
        return new

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        # Keys and credentials are not copied: a deep copy shares them, as __copy__ does.
        return self.__copy__()

    @abc.abstractmethod
    def wrap_key(self, data_key: bytes, context: Mapping[str, str]) -> bytes:
        """Encrypt ``data_key`` bound to ``context``; return opaque bytes."""

    @abc.abstractmethod
    def unwrap_key(self, wrapped: bytes, context: Mapping[str, str]) -> bytes:
        """Recover the data key; raise :class:`veil.KeyUnwrapError` if it cannot."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able, non-secret settings that :meth:`from_description` accepts."""

    @classmethod
    @abc.abstractmethod
    def from_description(cls, description: Mapping[str, Any]) -> Self:
        """Rebuild a provider from :meth:`describe`'s output; credentials come from
        the environment. Raise :class:`veil.ProviderConfigError` if it is invalid."""

    def with_description(self, description: Mapping[str, Any]) -> SecretsProvider:
        """This instance's credentials combined with stored settings (salt, KDF
        parameters, key ids). The default is ``type(self).from_description(description)``.
        """
        return type(self).from_description(description)

    @classmethod
    def from_url(cls, url: str) -> Self:
        """Build a provider from ``scheme://...``.

        The default accepts ``scheme://`` with optional query parameters, and passes
        the parameters as a description to :meth:`from_description`. Providers with a
        path (a key name, a file) override it.
        """
        parts = cls._split_url(url)
        if parts.netloc or parts.path:
            raise ProviderConfigError(
                f"{cls.scheme}:// takes no path; use '{cls.scheme}://' "
                "with optional ?name=value settings"
            )
        return cls.from_description(dict(parse_qsl(parts.query)))

    @classmethod
    def _split_url(cls, url: str) -> Any:
        """Split a URL after checking that its scheme is this provider's."""
        if not isinstance(url, str) or "://" not in url:
            raise ProviderConfigError(
                f"a secrets provider URL looks like '{cls.scheme}://...', got {url!r}"
            )
        scheme = url.split("://", 1)[0].lower()
        if scheme != cls.scheme:
            raise ProviderConfigError(
                f"{cls.__name__} takes '{cls.scheme}://' URLs, not '{scheme}://'"
            )
        return urlsplit(url)

    @property
    def url(self) -> str:
        """A URL that :meth:`from_url` accepts (non-secret). Default ``scheme://``."""
        return f"{self.scheme}://"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
