"""Fixtures for the local server's own tests: real HTTP on 127.0.0.1, nothing mocked."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aiml_bge_integrations.server import LocalServer


@pytest.fixture(scope="module")
def shared_server() -> Iterator[LocalServer]:
    """One healthy AIML-dialect server per test module."""
    with LocalServer() as server:
        yield server


@pytest.fixture
def aiml_server(shared_server: LocalServer) -> LocalServer:
    """The module's healthy server, counters zeroed."""
    shared_server.reset_stats()
    return shared_server


@pytest.fixture
def server_factory() -> Iterator[Callable[..., LocalServer]]:
    """Start a dedicated server with its own settings; all are stopped after the test."""
    started: list[LocalServer] = []

    def factory(**config: Any) -> LocalServer:
        server = LocalServer(**config).start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()
