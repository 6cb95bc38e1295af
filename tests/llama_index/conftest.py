"""Fixtures for the LlamaIndex adapter's tests: adapters on the local server, clean Settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from llama_index.core import Settings

from aiml_bge_integrations.llama_index import AimlBgeEmbedding


@pytest.fixture
def li_settings() -> Iterator[Any]:
    """LlamaIndex's global ``Settings``, put back as they were after the test."""
    saved = {
        name: getattr(Settings, name)
        for name in (
            "_embed_model",
            "_llm",
            "_callback_manager",
            "_node_parser",
            "_transformations",
        )
    }
    try:
        yield Settings
    finally:
        for name, value in saved.items():
            setattr(Settings, name, value)


@pytest.fixture
def make_embed() -> Iterator[Callable[..., AimlBgeEmbedding]]:
    """Build adapters pointed at a server (``server=``); they are closed after the test."""
    made: list[AimlBgeEmbedding] = []

    def factory(server: Any, **settings: Any) -> AimlBgeEmbedding:
        embed = AimlBgeEmbedding(base_url=server.base_url, api_key=server.api_key, **settings)
        made.append(embed)
        return embed

    yield factory
    for embed in made:
        embed.close()


@pytest.fixture
def embed(local_server: Any, make_embed: Callable[..., AimlBgeEmbedding]) -> AimlBgeEmbedding:
    """An adapter with default settings on the shared local server."""
    return make_embed(local_server)
