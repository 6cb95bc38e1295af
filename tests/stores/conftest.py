"""Fixtures for the vector-store tests: a local server, fresh processes, reference vectors.

Stores are built in one child process and reloaded and queried in another (``store_child.py``),
so nothing survives in memory between persisting and querying. The reference vectors come
from the core client talking to the same server.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aiml_bge_integrations.client import EmbeddingsClient
from aiml_bge_integrations.demo_corpus import PASSAGES, QUERIES

# With --import-mode=importlib test directories are not on sys.path; this one is, so that the
# tests can import stores_support and stores_build by name.
if str(Path(__file__).parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="module")
def store_server() -> Iterator[Any]:
    """A local AI/ML-dialect server (with a generated key) for this module's processes."""
    from aiml_bge_integrations.server import LocalServer

    with LocalServer() as server:
        yield server


@pytest.fixture(scope="module")
def reference(store_server: Any) -> dict[str, Any]:
    """What the core client returns for the corpus and the queries, against the same server."""
    with EmbeddingsClient(base_url=store_server.base_url, api_key=store_server.api_key) as core:
        queries = [q for q, _ in QUERIES]
        return {
            "documents": dict(
                zip(
                    [pid for pid, _ in PASSAGES],
                    core.embed_documents([t for _, t in PASSAGES]),
                    strict=True,
                )
            ),
            # Each passage as if it were a query: what a wrongly prefixed document would be.
            "documents_as_queries": {pid: core.embed_query(text) for pid, text in PASSAGES[:5]},
            "queries": {q: core.embed_query(q) for q in queries},
            "bare_queries": dict(zip(queries, core.embed_documents(queries), strict=True)),
        }
