"""The core client against every server dialect over real HTTP: vectors, and errors as typed errors.

For each dialect a dedicated local server answers the way the real server does (see
``aiml_bge_integrations.server.dialects`` and the README, "Self-hosting BGE"). The client is used with
its defaults plus ``base_url`` and ``api_key``: nothing dialect-specific is configured.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
import numpy as np
import orjson
import pytest
from selfhosted_support import DIALECTS, BodyRewritingTransport

from aiml_bge_integrations._settings import BGE_QUERY_INSTRUCTION
from aiml_bge_integrations.errors import (
    AuthenticationError,
    BadRequestError,
    InternalServerError,
    ItemRejectedError,
    ModelNotFoundError,
    RateLimitError,
    UnprocessableEntityError,
)
from aiml_bge_integrations.server import HashingEmbedder
from aiml_bge_integrations.server.faults import FaultConfig

EMBEDDER = HashingEmbedder()
TEXTS = [
    "The Moon takes about 27 days to orbit the Earth.",
    "Bread rises because yeast eats sugar in the dough.",
    "Café crème, naïve résumé and 東京 are fine too.",
    "An octopus has three hearts and blue blood.",
    "Honey bees dance to tell the hive where flowers are.",
]
QUERY = "why does bread rise?"


def stand_in(texts: list[str]) -> np.ndarray[Any, Any]:
    """What the server computes for ``texts``, as the float32 it sends."""
    return EMBEDDER.embed(texts).astype(np.float32)


def as32(vectors: Any) -> np.ndarray[Any, Any]:
    return np.asarray(vectors, dtype=np.float32)


# ----------------------------------------------------------------------------- vectors


@pytest.mark.parametrize("encoding_format", [None, "base64"])
@pytest.mark.parametrize("dialect", DIALECTS)
def test_sync_client_returns_the_servers_vectors(
    dialect: str, encoding_format: str | None, serve: Any, sync_client: Any
) -> None:
    server = serve(dialect)
    client = sync_client(server, encoding_format=encoding_format)

    docs = client.embed_documents(TEXTS)
    query = client.embed_query(QUERY)

    np.testing.assert_array_equal(as32(docs), stand_in(TEXTS))
    # bge-base-en-v1.5: the instruction goes in front of the query, and only the query.
    np.testing.assert_array_equal(as32(query), stand_in([BGE_QUERY_INSTRUCTION + QUERY])[0])
    assert client.usage.requests == 2
    assert client.usage.retries == 0
    assert server.stats["by_status"] == {"200": 2}


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_async_client_returns_the_servers_vectors(
    dialect: str, serve: Any, async_client: Any
) -> None:
    server = serve(dialect)
    texts = [f"{text} (copy {i})" for i in range(12) for text in TEXTS]  # 60 texts
    client = async_client(server, batch_size=16, max_concurrency=3)

    docs = await client.embed_documents(texts)
    query = await client.embed_query(QUERY)
    streamed = [v async for v in client.iter_embeddings(iter(texts[:20]))]

    np.testing.assert_array_equal(as32(docs), stand_in(texts))
    np.testing.assert_array_equal(as32(query), stand_in([BGE_QUERY_INSTRUCTION + QUERY])[0])
    np.testing.assert_array_equal(as32(streamed), stand_in(texts[:20]))
    assert server.stats["by_status"] == {"200": 4 + 1 + 2}


LARGE = HashingEmbedder(1024)  # bge-large-en-v1.5 vectors have 1024 dimensions


def test_ollama_tag_names_work_with_an_explicit_instruction(serve: Any, sync_client: Any) -> None:
    # Ollama serves BAAI/bge-large-en-v1.5 as "bge-large" (the README, "Self-hosting BGE").
    server = serve("ollama", served_models=["bge-large"], dim=1024)
    client = sync_client(server, model="bge-large", query_instruction=BGE_QUERY_INSTRUCTION)

    docs = client.embed_documents(TEXTS)
    query = client.embed_query(QUERY)

    np.testing.assert_array_equal(as32(docs), LARGE.embed(TEXTS).astype(np.float32))
    np.testing.assert_array_equal(
        as32(query), LARGE.embed([BGE_QUERY_INSTRUCTION + QUERY]).astype(np.float32)[0]
    )


def test_ollama_bge_large_tag_gets_the_bge_defaults(serve: Any, sync_client: Any) -> None:
    server = serve("ollama", served_models=["bge-large"], dim=1024)
    client = sync_client(server, model="bge-large:latest")

    assert client.query_instruction == BGE_QUERY_INSTRUCTION
    np.testing.assert_array_equal(
        as32(client.embed_query(QUERY)),
        LARGE.embed([BGE_QUERY_INSTRUCTION + QUERY]).astype(np.float32)[0],
    )


# ----------------------------------------------------------------------------- 401

AUTH_MESSAGES = {
    "aiml": "Unauthorized: invalid API key",
    "openai": "Incorrect API key provided",
    "tei": None,  # TEI's auth middleware answers 401 with an empty body
    "vllm": "Unauthorized",
    "vllm-legacy": "Unauthorized",
    "infinity": "Unauthorized",
    "ollama": "unauthorized",
}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_wrong_key_is_an_authentication_error(dialect: str, serve: Any, sync_client: Any) -> None:
    server = serve(dialect)
    wrong = "sk-not-the-right-key-0123456789"
    client = sync_client(server, api_key=wrong)

    with pytest.raises(AuthenticationError) as caught:
        client.embed_documents(TEXTS)

    err = caught.value
    assert err.status_code == 401
    expected = AUTH_MESSAGES[dialect]
    if expected is None:
        assert err.body is None
        assert "empty error body" in err.message
    else:
        assert expected in err.message
    assert "Check the API key" in err.message
    assert wrong not in str(err) and wrong not in repr(err.body)
    assert server.stats["requests"] == 1  # 401 is never retried


# ----------------------------------------------------------------------------- unknown models

MODEL_MESSAGES = {
    "aiml": "Model no-such-model not found",
    "openai": "The model `no-such-model` does not exist or you do not have access to it.",
    "vllm": "The model `no-such-model` does not exist.",
    "vllm-legacy": "The model `no-such-model` does not exist.",
    "ollama": 'model "no-such-model" not found, try pulling it first',
}


@pytest.mark.parametrize("dialect", sorted(MODEL_MESSAGES))
def test_unknown_model_is_model_not_found(dialect: str, serve: Any, sync_client: Any) -> None:
    server = serve(dialect)
    client = sync_client(server, model="no-such-model")

    with pytest.raises(ModelNotFoundError) as caught:
        client.embed_documents(TEXTS)

    err = caught.value
    assert err.status_code == 404
    assert MODEL_MESSAGES[dialect] in err.message
    # Says what to do, and what is true of this server (not the vendor's retirement note).
    assert "does not serve 'no-such-model'" in err.message and "model=..." in err.message
    assert "retired" not in err.message
    assert not re.search(r"\w\.\.(\s|$)", err.message)  # no doubled full stop
    assert server.stats["requests"] == 1


@pytest.mark.parametrize("dialect", ["aiml", "openai"])
def test_retired_model_is_model_not_found(dialect: str, serve: Any, sync_client: Any) -> None:
    server = serve(dialect)
    client = sync_client(server, model="BAAI/bge-large-en-v1.5")

    with pytest.raises(ModelNotFoundError) as caught:
        client.embed_query(QUERY)

    assert "deprecated" in caught.value.message


@pytest.mark.parametrize("dialect", ["tei", "infinity"])
def test_servers_that_ignore_the_model_name_answer_anyway(
    dialect: str, serve: Any, sync_client: Any
) -> None:
    # TEI never reads `model`; infinity resolves any name when it serves one model.
    server = serve(dialect)
    client = sync_client(server, model="BAAI/bge-base-en-v1.5-typo")

    np.testing.assert_array_equal(as32(client.embed_documents(TEXTS)), stand_in(TEXTS))


def test_infinity_with_several_models_refuses_an_unknown_name_with_400(
    serve: Any, sync_client: Any
) -> None:
    server = serve("infinity", served_models=["BAAI/bge-base-en-v1.5", "BAAI/bge-small-en-v1.5"])
    client = sync_client(server, model="no-such-model")

    with pytest.raises(BadRequestError) as caught:
        client.embed_documents(TEXTS)

    err = caught.value
    assert err.status_code == 400
    assert not isinstance(err, ItemRejectedError)
    assert "Invalid model: Engine for model name `no-such-model` not found" in err.message
    assert server.stats["requests"] == 1
    assert client.usage.splits == 0


# ----------------------------------------------------------------------------- validation

EMPTY_INPUT_REPLIES: dict[str, tuple[type[Exception], int, str]] = {
    "aiml": (BadRequestError, 400, "Body validation error!"),
    "openai": (BadRequestError, 400, "'$.input' is invalid"),
    "tei": (BadRequestError, 400, "`inputs` cannot be empty"),
    "vllm": (BadRequestError, 400, "List should have at least 1 item after validation"),
    "vllm-legacy": (BadRequestError, 400, "List should have at least 1 item after validation"),
    "infinity": (
        UnprocessableEntityError,
        422,
        "List should have at least 1 item after validation",
    ),
    "ollama": (BadRequestError, 400, "invalid input"),
}


def _empty_input(body: bytes) -> bytes:
    doc = orjson.loads(body)
    doc["input"] = []
    return orjson.dumps(doc)


VALIDATION_DIALECTS = list(DIALECTS)


@pytest.mark.parametrize("dialect", VALIDATION_DIALECTS)
def test_validation_errors_are_typed_and_not_blamed_on_an_input(
    dialect: str, serve: Any, sync_client: Any
) -> None:
    server = serve(dialect)
    http = httpx.Client(transport=BodyRewritingTransport(_empty_input))
    client = sync_client(server, http_client=http)
    cls, status, message = EMPTY_INPUT_REPLIES[dialect]

    try:
        with pytest.raises(cls) as caught:
            client.embed_documents(TEXTS)
    finally:
        http.close()

    err = caught.value
    assert type(err) is cls  # not ItemRejectedError: the request as a whole was refused
    assert err.status_code == status
    assert message in err.message
    assert client.usage.splits == 0
    assert server.stats["requests"] == 1  # neither retried nor bisected


def test_tei_plain_text_rejection_is_unprocessable_entity(serve: Any, sync_client: Any) -> None:
    def number_input(body: bytes) -> bytes:
        doc = orjson.loads(body)
        doc["input"] = 5
        return orjson.dumps(doc)

    server = serve("tei")
    http = httpx.Client(transport=BodyRewritingTransport(number_input))
    client = sync_client(server, http_client=http)
    try:
        with pytest.raises(UnprocessableEntityError) as caught:
            client.embed_documents(TEXTS)
    finally:
        http.close()

    assert caught.value.status_code == 422
    assert caught.value.message.startswith(
        "Failed to deserialize the JSON body into the target type"
    )
    assert server.stats["requests"] == 1


# ----------------------------------------------------------------------------- 429 and 5xx

RATE_LIMIT_MESSAGES = {
    "aiml": "Too Many Requests",
    "openai": "Rate limit reached for requests",
    "tei": "Model is overloaded",
    "vllm": "Too Many Requests",
    "vllm-legacy": "Too Many Requests",
    "infinity": "model is currently overloaded",
    "ollama": "server busy",
}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_persistent_429_is_a_rate_limit_error_after_the_retries(
    dialect: str, serve: Any, sync_client: Any, no_sleep: list[float]
) -> None:
    server = serve(dialect, faults=FaultConfig(script=["429", "429", "429"]))
    client = sync_client(server, max_retries=2)

    with pytest.raises(RateLimitError) as caught:
        client.embed_documents(TEXTS)

    err = caught.value
    assert err.status_code == 429
    assert RATE_LIMIT_MESSAGES[dialect] in err.message
    assert "gave up after 2 retries" in err.message
    assert client.usage.retries_by_cause == {"429": 2}
    assert server.stats["by_status"] == {"429": 3}
    assert len(no_sleep) == 2


SERVER_ERROR_MESSAGES = {
    ("aiml", 503): "Service Unavailable: the model is under maintenance",
    ("openai", 503): "The engine is currently overloaded",
    ("tei", 503): "unhealthy",
    ("tei", 500): "Backend error: Internal Server Error",
    ("vllm", 503): "Service Unavailable",
    ("vllm-legacy", 500): "Internal Server Error",
    ("infinity", 500): "InternalServerError: Internal Server Error",
    ("ollama", 503): "service unavailable",
    ("ollama", 502): "bad gateway",
}


@pytest.mark.parametrize(("dialect", "status"), sorted(SERVER_ERROR_MESSAGES))
def test_persistent_5xx_is_an_internal_server_error(
    dialect: str, status: int, serve: Any, sync_client: Any, no_sleep: list[float]
) -> None:
    server = serve(dialect, faults=FaultConfig(script=[str(status)] * 2))
    client = sync_client(server, max_retries=1)

    with pytest.raises(InternalServerError) as caught:
        client.embed_documents(TEXTS)

    assert caught.value.status_code == status
    assert SERVER_ERROR_MESSAGES[(dialect, status)] in caught.value.message
    assert server.stats["by_status"] == {str(status): 2}


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_transient_errors_are_retried_to_the_right_vectors(
    dialect: str, serve: Any, async_client: Any, no_sleep: list[float]
) -> None:
    server = serve(dialect, faults=FaultConfig(script=["503", "429", None, "500"]))
    client = async_client(server, batch_size=2, max_concurrency=1)

    docs = await client.embed_documents(TEXTS)  # 3 batches, 3 failures on the way

    np.testing.assert_array_equal(as32(docs), stand_in(TEXTS))
    assert client.usage.retries_by_cause == {"503": 1, "429": 1, "500": 1}
    assert server.stats["ok"] == 3
