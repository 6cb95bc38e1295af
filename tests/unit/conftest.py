"""Unit tests of the pure parts: no network at all, not even loopback.

Every test here runs with ``socket.socket`` replaced by pytest-socket's guard (Unix sockets
stay allowed, because an asyncio event loop needs a socketpair to start). Replies the local
server cannot give come from ``httpx.MockTransport``.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import pytest_socket


@pytest.fixture(autouse=True)
def _no_network() -> Iterator[None]:
    pytest_socket.disable_socket(allow_unix_socket=True)
    try:
        yield
    finally:
        pytest_socket.enable_socket()
