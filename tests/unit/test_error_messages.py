"""Error messages say what is true of the server in use, as sentences (issue 13.5).

Replies from the vendor's own host cannot come from the local server, so these go through
``httpx.MockTransport``; the local server's own 404s are covered in tests/selfhosted.
"""

from __future__ import annotations

import re

import httpx
import pytest

from aiml_bge_integrations import EmbeddingsClient
from aiml_bge_integrations.errors import (
    AuthenticationError,
    ModelNotFoundError,
    NotFoundError,
)


def _client(base_url: str, status: int, body: bytes, **settings: object) -> EmbeddingsClient:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, content=body, headers={"content-type": "application/json"})

    return EmbeddingsClient(
        base_url=base_url,
        api_key="sk-test-0123456789",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
        max_retries=0,
        **settings,  # type: ignore[arg-type]
    )


VLLM_404 = b'{"object":"error","message":"The model `my-bge` does not exist.","type":"NotFoundError","param":null,"code":404}'


def test_self_hosted_404_for_the_model_does_not_blame_the_vendor() -> None:
    client = _client("http://localhost:8000/v1", 404, VLLM_404, model="my-bge")
    with pytest.raises(ModelNotFoundError) as info:
        client.embed_documents(["x"])
    text = str(info.value)
    assert "retired" not in text and "AI/ML" not in text
    assert not re.search(r"\w\.\.(\s|$)", text)  # no doubled full stop
    assert "http://localhost:8000/v1 does not serve 'my-bge'" in text
    assert "http://localhost:8000/v1/models" in text
    assert info.value.body["code"] == 404  # the parsed body travels with the error


def test_vendor_404_for_the_model_says_it_was_retired() -> None:
    body = b'{"message":"Model BAAI/bge-base-en-v1.5 is deprecated and no longer supported.","statusCode":404}'
    client = _client("https://api.aimlapi.com/v1", 404, body)
    with pytest.raises(ModelNotFoundError) as info:
        client.embed_documents(["x"])
    text = str(info.value)
    assert "retired the BGE models" in text and "base_url" in text
    assert not re.search(r"\w\.\.(\s|$)", text)  # no doubled full stop


def test_wrong_path_404_names_both_roots() -> None:
    client = _client("http://127.0.0.1:7997/v1", 404, b'{"detail":"Not Found"}')
    with pytest.raises(NotFoundError) as info:
        client.embed_documents(["x"])
    assert not isinstance(info.value, ModelNotFoundError)
    text = str(info.value)
    assert "http://127.0.0.1:7997/v1/embeddings" in text
    assert "ending in /v1" in text and "without /v1" in text


def test_a_short_key_is_scrubbed_without_garbling_the_message() -> None:
    body = b'{"error":{"message":"invalid key k: send a known key","type":"auth"}}'

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, content=body)

    client = EmbeddingsClient(
        base_url="http://127.0.0.1:1/v1",
        api_key="k",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    )
    with pytest.raises(AuthenticationError) as info:
        client.embed_documents(["x"])
    text = str(info.value)
    assert "invalid key ***: send a known key." in text
    assert "Check the API key" in text
