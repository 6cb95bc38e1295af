"""Fixtures for the self-hosted server tests: one local server per dialect, clients for it.

Every test here talks HTTP to a ``LocalServer`` on 127.0.0.1 that answers in the wire dialect
of a real server (TEI, infinity, vLLM, Ollama, OpenAI, the AI/ML API). Nothing is mocked:
the statuses, headers and bodies the client reads are the ones the server sent.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from aiml_bge_integrations.client import AsyncEmbeddingsClient, EmbeddingsClient

# With --import-mode=importlib test directories are not on sys.path; this one is, so that the
# tests (and this file) can import selfhosted_support by name.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

from selfhosted_support import SERVER_KEY

_WAITS: dict[str, list[float]] = {}
"""Under ``no_sleep``: where the clients the factories below build record their waits."""


@pytest.fixture
def no_sleep() -> Iterator[list[float]]:
    """Retries happen at once; the delays the client asked for are recorded."""
    slept: list[float] = []
    _WAITS["slept"] = slept
    yield slept
    _WAITS.clear()


def _record_waits(client: Any) -> Any:
    # The clients' public seam: the waits between attempts are their retry policy's.
    slept = _WAITS.get("slept")
    if slept is not None:

        async def asleep(seconds: float) -> None:
            slept.append(seconds)

        client.retry_policy.sleep, client.retry_policy.asleep = slept.append, asleep
    return client


@pytest.fixture(scope="session")
def _dialect_servers() -> Iterator[dict[str, Any]]:
    """One running server per dialect for the whole session (started on first use)."""

    servers: dict[str, Any] = {}
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture
def serve(_dialect_servers: dict[str, Any]) -> Iterator[Callable[..., Any]]:
    """The server speaking ``dialect``, wanting ``SERVER_KEY``, configured for this test only.

    Servers are shared per dialect (starting one per test would dominate the run time): every
    call replaces the whole ``ServerConfig`` with a fresh one built from ``config`` (the server
    reads its config per request) and zeroes the counters, so no setting or count leaks from
    one test to the next.
    """
    from aiml_bge_integrations.server import LocalServer, ServerConfig

    def factory(dialect: str, **config: Any) -> Any:
        config.setdefault("api_key", SERVER_KEY)
        fresh = ServerConfig(dialect=dialect, **config)
        server = _dialect_servers.get(dialect)
        if server is None:
            server = LocalServer(dialect=dialect, api_key=SERVER_KEY).start()
            _dialect_servers[dialect] = server
        for name in fresh.__dataclass_fields__:
            setattr(server.config, name, getattr(fresh, name))
        server.reset_stats()
        return server

    yield factory


@pytest.fixture
def sync_client() -> Iterator[Callable[..., EmbeddingsClient]]:
    """Build ``EmbeddingsClient``s for a server (closed after the test)."""
    made: list[EmbeddingsClient] = []

    def factory(server: Any, **settings: Any) -> EmbeddingsClient:
        settings.setdefault("api_key", SERVER_KEY)
        client = _record_waits(EmbeddingsClient(base_url=server.base_url, **settings))
        made.append(client)
        return client

    yield factory
    for client in made:
        client.close()


@pytest.fixture
async def async_client() -> Any:
    """Build ``AsyncEmbeddingsClient``s for a server (closed after the test)."""
    made: list[AsyncEmbeddingsClient] = []

    def factory(server: Any, **settings: Any) -> AsyncEmbeddingsClient:
        settings.setdefault("api_key", SERVER_KEY)
        client = _record_waits(AsyncEmbeddingsClient(base_url=server.base_url, **settings))
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.aclose()
