"""The custom provider shown in docs/providers.md passes the compliance suite."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path
from typing import Any

import pytest

from veil.providers import SecretsProvider
from veil.testing import ProviderComplianceSuite

DOC = Path(__file__).resolve().parent.parent / "docs" / "providers.md"
MARK = "# custom provider: envkey"


def load_doc_provider() -> type[SecretsProvider]:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    (source,) = [b for b in blocks if b.startswith(MARK)]
    namespace: dict[str, Any] = {"__name__": "providers_doc"}
    exec(compile(source, str(DOC), "exec"), namespace)  # noqa: S102 - our own documentation
    cls = namespace["EnvKeyProvider"]
    assert isinstance(cls, type)
    assert issubclass(cls, SecretsProvider)
    return cls


EnvKeyProvider: Any = load_doc_provider()


def test_doc_provider_fits_in_40_lines() -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    (source,) = [b for b in blocks if b.startswith(MARK)]
    class_body = source[source.index("class EnvKeyProvider") :]
    assert len(class_body.strip().splitlines()) <= 40


def _key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


class TestDocumentedCustomProvider(ProviderComplianceSuite):
    @pytest.fixture
    def provider(self, monkeypatch: pytest.MonkeyPatch) -> SecretsProvider:
        monkeypatch.setenv("DOC_KEY_A", _key())
        provider: SecretsProvider = EnvKeyProvider("DOC_KEY_A")
        return provider

    @pytest.fixture
    def other_provider(self, monkeypatch: pytest.MonkeyPatch) -> SecretsProvider:
        monkeypatch.setenv("DOC_KEY_B", _key())
        provider: SecretsProvider = EnvKeyProvider("DOC_KEY_B")
        return provider
