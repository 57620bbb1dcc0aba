"""A compliance suite that every secrets provider must pass, built-in or your own.

Subclass :class:`ProviderComplianceSuite` in a test module (the class name must start
with ``Test`` for pytest to collect it) and define two fixtures::

    import pytest
    from veil.testing import ProviderComplianceSuite

    class TestMyProvider(ProviderComplianceSuite):
        @pytest.fixture
        def provider(self):
            return MyProvider(key=b"k" * 32)

        @pytest.fixture
        def other_provider(self):  # same kind, another key
            return MyProvider(key=b"o" * 32)

Optionally override ``restore``: a fixture returning a function that rebuilds a provider
from a stored description as a fresh process would (for example after setting the
environment variable your provider reads its credentials from). The default calls
``type(provider).from_description``.

This module imports pytest; it is meant for test code only (``pip install 'veil[test]'``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from .crypto import generate_data_key
from .errors import KeyUnwrapError, VeilError
from .providers.base import SecretsProvider

__all__ = ["ProviderComplianceSuite", "Restore"]

Restore = Callable[[Mapping[str, Any]], SecretsProvider]
"""Rebuild a provider from a stored description, as a new process would."""

CONTEXT: Mapping[str, str] = {"stack": "dev"}


def _through_json(description: Mapping[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(description))
    return loaded


def _corruptions(wrapped: bytes) -> list[tuple[str, bytes]]:
    cases = [(f"bit 0 of byte {i} flipped", _flip(wrapped, i, 0x01)) for i in range(len(wrapped))]
    cases += [(f"byte {i} inverted", _flip(wrapped, i, 0xFF)) for i in range(len(wrapped))]
    for n in sorted({0, 1, len(wrapped) // 2, len(wrapped) - 1}):
        cases.append((f"truncated to {n} bytes", wrapped[:n]))
    cases.append(("one byte appended", wrapped + b"\x00"))
    return cases


def _flip(data: bytes, index: int, mask: int) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


class ProviderComplianceSuite:
    """The checks every :class:`~veil.providers.SecretsProvider` must pass.

    Fixtures to define: ``provider`` and ``other_provider`` (same kind, different key;
    both ready to use, e.g. with their key files or credentials in place).
    Optional: ``restore`` (see the module docstring).
    """

    @pytest.fixture
    def restore(self, provider: SecretsProvider) -> Restore:
        """Default: ``type(provider).from_description``."""
        return type(provider).from_description

    # --- shape ----------------------------------------------------------------------

    def test_is_a_secrets_provider_with_a_scheme(self, provider: SecretsProvider) -> None:
        assert isinstance(provider, SecretsProvider)
        assert isinstance(type(provider).scheme, str)
        assert type(provider).scheme

    def test_url_names_the_scheme_and_builds_the_same_kind(self, provider: SecretsProvider) -> None:
        assert provider.url.startswith(type(provider).scheme + "://")
        assert isinstance(type(provider).from_url(provider.url), type(provider))

    # --- round trips ----------------------------------------------------------------
    # Each check makes its own key and wrapped key: it reads alone as one behaviour.

    def test_round_trip(self, provider: SecretsProvider) -> None:
        key = generate_data_key()
        wrapped = provider.wrap_key(key, CONTEXT)
        assert isinstance(wrapped, bytes)
        assert provider.unwrap_key(wrapped, CONTEXT) == key

    def test_wrapped_key_does_not_hold_the_data_key_in_the_clear(
        self, provider: SecretsProvider
    ) -> None:
        key = generate_data_key()
        wrapped = provider.wrap_key(key, CONTEXT)
        assert key not in wrapped
        assert key.hex().encode() not in wrapped.lower()

    def test_context_order_does_not_matter(self, provider: SecretsProvider) -> None:
        key = generate_data_key()
        wrapped = provider.wrap_key(key, {"stack": "dev", "project": "web"})
        assert provider.unwrap_key(wrapped, {"project": "web", "stack": "dev"}) == key

    def test_description_survives_json_into_a_fresh_instance(
        self, provider: SecretsProvider, restore: Restore
    ) -> None:
        key = generate_data_key()
        wrapped = provider.wrap_key(key, CONTEXT)
        description = _through_json(provider.describe())
        fresh = restore(description)
        assert fresh is not provider
        assert type(fresh) is type(provider)
        assert fresh.unwrap_key(wrapped, CONTEXT) == key

    def test_with_description_keeps_credentials_and_unwraps(
        self, provider: SecretsProvider
    ) -> None:
        key = generate_data_key()
        wrapped = provider.wrap_key(key, CONTEXT)
        again = provider.with_description(_through_json(provider.describe()))
        assert isinstance(again, SecretsProvider)
        assert again.unwrap_key(wrapped, CONTEXT) == key

    def test_describe_is_json_and_stable(self, provider: SecretsProvider) -> None:
        provider.wrap_key(generate_data_key(), CONTEXT)
        first = provider.describe()
        assert _through_json(first) == first
        assert provider.describe() == first

    # --- failing closed -------------------------------------------------------------

    def test_wrong_context_fails(self, provider: SecretsProvider) -> None:
        wrapped = provider.wrap_key(generate_data_key(), CONTEXT)
        with pytest.raises(KeyUnwrapError):
            provider.unwrap_key(wrapped, {"stack": "prod"})

    def test_extra_context_entry_fails(self, provider: SecretsProvider) -> None:
        wrapped = provider.wrap_key(generate_data_key(), CONTEXT)
        with pytest.raises(KeyUnwrapError):
            provider.unwrap_key(wrapped, {**CONTEXT, "project": "web"})

    def test_other_key_fails(
        self, provider: SecretsProvider, other_provider: SecretsProvider
    ) -> None:
        wrapped = provider.wrap_key(generate_data_key(), CONTEXT)
        with pytest.raises(KeyUnwrapError):
            other_provider.unwrap_key(wrapped, CONTEXT)

    def test_corrupted_wrapped_key_fails_every_way(self, provider: SecretsProvider) -> None:
        wrapped = provider.wrap_key(generate_data_key(), CONTEXT)
        accepted = []
        for name, bad in _corruptions(wrapped):
            try:
                provider.unwrap_key(bad, CONTEXT)
            except KeyUnwrapError:
                continue
            except VeilError as exc:
                accepted.append(f"{name}: {type(exc).__name__} is not a KeyUnwrapError")
                continue
            accepted.append(f"{name}: unwrapped without error")
        assert not accepted, "; ".join(accepted[:5])

    def test_empty_wrapped_key_fails(self, provider: SecretsProvider) -> None:
        provider.wrap_key(generate_data_key(), CONTEXT)  # a provider in use
        with pytest.raises(KeyUnwrapError):
            provider.unwrap_key(b"", CONTEXT)

    def test_repr_does_not_show_a_wrapped_or_data_key(self, provider: SecretsProvider) -> None:
        key = generate_data_key()
        wrapped = provider.wrap_key(key, CONTEXT)
        shown = repr(provider)
        for what, material in (("data key", key), ("wrapped key", wrapped)):
            for form in (material.hex(), base64.b64encode(material).decode(), repr(material)):
                assert form not in shown, f"repr shows the {what}"
