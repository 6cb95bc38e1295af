"""Fixtures for the LangChain adapter tests: the demo corpus and an adapter factory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from aiml_bge_integrations.demo_corpus import PASSAGES, QUERIES
from aiml_bge_integrations.langchain import AimlBgeEmbeddings


@pytest.fixture
def corpus() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The demo corpus: ``(id, passage)`` pairs and ``(query, id of the answering passage)`` pairs."""
    return list(PASSAGES), list(QUERIES)


@pytest.fixture
def make_embeddings(local_server: Any) -> Iterator[Callable[..., AimlBgeEmbeddings]]:
    """Build adapters pointed at the shared local server; each is closed after the test."""
    made: list[AimlBgeEmbeddings] = []

    def factory(**settings: Any) -> AimlBgeEmbeddings:
        settings.setdefault("api_key", local_server.api_key)
        settings.setdefault("base_url", local_server.base_url)
        emb = AimlBgeEmbeddings(**settings)
        made.append(emb)
        return emb

    yield factory
    for emb in made:
        emb.close()
