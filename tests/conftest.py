"""Shared fixtures: the local server over real HTTP on 127.0.0.1, and a clean environment.

Network access other than loopback is refused for the whole suite (pytest-socket's
``--allow-hosts`` in pyproject.toml). The local server's test-only dialects (TEI, vLLM,
infinity, Ollama, OpenAI: ``support/server_dialects.py``) are registered here, once, so any
test can select them by name.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiml_bge_integrations._settings import API_KEY_ENV, BASE_URL_ENV, MODEL_ENV

# With --import-mode=importlib test directories are not on sys.path; support/ is put there so
# that any test can import server_dialects by name.
if str(Path(__file__).parent / "support") not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent / "support"))

from server_dialects import register_test_dialects

register_test_dialects()


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees a real key, base URL or model from the machine it runs on."""
    for name in (API_KEY_ENV, BASE_URL_ENV, MODEL_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def _session_server() -> Iterator[Any]:
    from aiml_bge_integrations.server import LocalServer

    with LocalServer() as server:
        yield server


@pytest.fixture
def local_server(_session_server: Any) -> Iterator[Any]:
    """The shared healthy local server, its counters reset for this test."""
    _session_server.reset_stats()
    yield _session_server


@pytest.fixture
def server_env(local_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The local server, with AIMLAPI_API_KEY and AIMLAPI_BASE_URL pointing at it."""
    monkeypatch.setenv(API_KEY_ENV, local_server.api_key)
    monkeypatch.setenv(BASE_URL_ENV, local_server.base_url)
    return local_server


@pytest.fixture
def make_server() -> Iterator[Any]:
    """Factory for a dedicated server with its own settings (faults, limits, dialect)."""
    from aiml_bge_integrations.server import LocalServer

    started: list[Any] = []

    def factory(**config: Any) -> Any:
        server = LocalServer(**config)
        server.start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.stop()


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
