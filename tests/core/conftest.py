"""Fixtures of the core tests, which talk to the local server over real HTTP on 127.0.0.1.

The server comes from tests/conftest.py (``local_server``, ``make_server``); the helpers live
in core_helpers.py.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

# With --import-mode=importlib, test directories are not put on sys.path: this one is, so
# that the test modules can import core_helpers.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))

import core_helpers
from core_helpers import Sleeps

from aiml_bge_integrations.server import ServerConfig


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    """Clients made by core_helpers record their waits here (``retry_policy.sleep``/``asleep``)."""
    recorder = Sleeps()
    monkeypatch.setattr(core_helpers, "SLEEPS", recorder)
    return recorder


@pytest.fixture(scope="session")
def _core_server() -> Iterator[Any]:
    from aiml_bge_integrations.server import LocalServer

    with LocalServer() as server:
        yield server


@pytest.fixture
def serve(_core_server: Any) -> Iterator[Callable[..., Any]]:
    """Configure the core tests' shared server for this test: ``server = serve(faults=...)``.

    Starting a dedicated server costs about half a second, so the core tests share one and
    change its live configuration (``ServerConfig`` fields); every field is restored and the
    counters are reset after the test.
    """
    config = _core_server.config
    saved = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}

    def configure(**changes: Any) -> Any:
        ServerConfig(**{**saved, **changes})  # validates the combination
        for name, value in changes.items():
            setattr(config, name, value)
        _core_server.reset_stats()
        return _core_server

    _core_server.reset_stats()
    yield configure
    for name, value in saved.items():
        setattr(config, name, value)
