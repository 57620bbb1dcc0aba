"""Test-wide safety: no test reaches an address outside the loopback range.

Cloud SDKs probe metadata servers on link-local addresses (AWS IMDS, GCE metadata,
Azure managed identity) when they look for credentials. Every such probe is switched
off through the SDKs' own settings, and as a net under those settings every socket
connection this process makes to a non-loopback address fails at once.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from typing import Any

# The SDKs' own switches for their metadata probes; set before any SDK is imported.
_NO_PROBES = {
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_METADATA_SERVICE_NUM_ATTEMPTS": "0",
    "AWS_METADATA_SERVICE_TIMEOUT": "0",
    "NO_GCE_CHECK": "true",
    "GCE_METADATA_HOST": "127.0.0.1:9",
    "GCE_METADATA_IP": "127.0.0.1:9",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST": "http://127.0.0.1:9",
    "IDENTITY_ENDPOINT": "",
    "MSI_ENDPOINT": "",
}
for _name, _value in _NO_PROBES.items():
    os.environ[_name] = _value
for _name in ("IDENTITY_ENDPOINT", "MSI_ENDPOINT"):
    os.environ.pop(_name, None)


class NonLoopbackConnectionError(OSError):
    """A test tried to reach an address outside 127.0.0.0/8 (or ::1)."""


def _is_loopback(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX
        return True
    if not isinstance(address, tuple) or not address:
        return True
    host = address[0]
    if isinstance(host, bytes):
        host = host.decode()
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        # A host name reaching connect() unresolved: refuse, it could be anywhere.
        return False


_connect = socket.socket.connect
_connect_ex = socket.socket.connect_ex


def _guarded_connect(self: socket.socket, address: Any) -> None:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        raise NonLoopbackConnectionError(f"tests may only reach 127.0.0.0/8; refused {address!r}")
    _connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> int:
    if self.family in (socket.AF_INET, socket.AF_INET6) and not _is_loopback(address):
        raise NonLoopbackConnectionError(f"tests may only reach 127.0.0.0/8; refused {address!r}")
    return _connect_ex(self, address)


socket.socket.connect = _guarded_connect  # type: ignore[method-assign, assignment]
socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign, assignment]


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _own_veil_home(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each test gets its own veil home (the per-folder records that refuse rollbacks),
    never the user's, and so do the processes it starts."""
    monkeypatch.setenv("VEIL_HOME", str(tmp_path_factory.mktemp("veil-home")))
