"""LangChain's own conformance suites (``langchain-tests``), run unmodified.

- ``EmbeddingsUnitTests``: construction from arguments and from environment variables (with
  real values, so ``test_init_from_env`` asserts rather than skips). No network at all: the
  adapter builds its clients without opening a connection.
- ``EmbeddingsIntegrationTests``: ``embed_query``, ``embed_documents`` and their async twins
  against the local server over real HTTP on 127.0.0.1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import pytest_socket
from langchain_tests.integration_tests import EmbeddingsIntegrationTests
from langchain_tests.unit_tests import EmbeddingsUnitTests

from aiml_bge_integrations.langchain import AimlBgeEmbeddings

ENV_KEY = "unit-test-key-7f3a"
ENV_URL = "http://127.0.0.1:9/v1"
ENV_MODEL = "BAAI/bge-small-en-v1.5"


class TestAimlBgeEmbeddingsUnit(EmbeddingsUnitTests):
    """The unit suite, with sockets disabled (as LangChain partner packages run it)."""

    @pytest.fixture(autouse=True)
    def _no_network(self) -> Iterator[None]:
        # Unix sockets stay allowed: an asyncio event loop needs a socketpair to start.
        pytest_socket.disable_socket(allow_unix_socket=True)
        try:
            yield
        finally:
            pytest_socket.enable_socket()

    @property
    def embeddings_class(self) -> type[AimlBgeEmbeddings]:
        return AimlBgeEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"api_key": "unit-test-key", "base_url": "http://127.0.0.1:9/v1", "batch_size": 16}

    @property
    def init_from_env_params(self) -> tuple[dict[str, str], dict[str, Any], dict[str, Any]]:
        return (
            {
                "AIMLAPI_API_KEY": ENV_KEY,
                "AIMLAPI_BASE_URL": ENV_URL,
                "AIMLAPI_EMBEDDING_MODEL": ENV_MODEL,
            },
            {"batch_size": 8},
            {"api_key": ENV_KEY, "base_url": ENV_URL, "model": ENV_MODEL, "batch_size": 8},
        )


class TestAimlBgeEmbeddingsIntegration(EmbeddingsIntegrationTests):
    """The integration suite against the shared local server."""

    @pytest.fixture(autouse=True)
    def _server(self, local_server: Any) -> None:
        self.server = local_server

    @property
    def embeddings_class(self) -> type[AimlBgeEmbeddings]:
        return AimlBgeEmbeddings

    @property
    def embedding_model_params(self) -> dict[str, Any]:
        return {"api_key": self.server.api_key, "base_url": self.server.base_url, "batch_size": 2}
