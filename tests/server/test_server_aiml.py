"""The AI/ML dialect over real HTTP: 200 shape and headers, validation, auth, models."""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import numpy as np
import openai
import pytest

from aiml_bge_integrations._settings import DEFAULT_MODEL
from aiml_bge_integrations.server import HashingEmbedder, LocalServer

MODEL = DEFAULT_MODEL


def embed_body(inputs: Any, **extra: Any) -> dict[str, Any]:
    """A request body for the default model."""
    return {"model": MODEL, "input": inputs, **extra}


Factory = Callable[..., LocalServer]

LAURA = "Laura is a DJ."


def _assert_aiml_error(response: httpx.Response, status: int, path: str = "/v1/embeddings") -> str:
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"message", "path", "requestId", "statusCode", "timestamp"}
    assert body["statusCode"] == status
    assert body["path"] == path
    uuid.UUID(body["requestId"])
    datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00"))
    assert response.headers["x-aiml-bge-backend"] == "hashing-stand-in"
    return str(body["message"])


def test_200_body_is_shaped_like_the_real_one(aiml_server: LocalServer) -> None:
    with aiml_server.client() as client:
        response = client.post("/embeddings", json=embed_body(LAURA))
    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["object", "data", "model", "usage", "id", "created", "meta"]
    assert body["object"] == "list"
    assert body["model"] == MODEL
    assert body["usage"] == {
        "prompt_tokens": 7,
        "total_tokens": 7,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
    }
    assert re.fullmatch(r"embd-[0-9a-f]{32}", body["id"])
    assert isinstance(body["created"], int) and body["created"] > 1_700_000_000
    assert body["meta"] == {"usage": {"credits_used": 1}}
    (item,) = body["data"]
    assert list(item) == ["object", "index", "embedding"]
    assert item["object"] == "embedding" and item["index"] == 0
    vec = np.array(item["embedding"])
    assert vec.shape == (768,)
    assert np.linalg.norm(vec) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(vec, HashingEmbedder().embed_one(LAURA), atol=1e-6)


def test_200_headers(aiml_server: LocalServer) -> None:
    with aiml_server.client() as client:
        response = client.post(
            "/embeddings",
            json=embed_body(LAURA),
            headers={"X-Client-Request-Id": "job-1.part:2_a-b"},
        )
    headers = response.headers
    uuid.UUID(headers["x-inference-id"])
    assert headers["x-aimlapi-credits-used"] == "1"
    assert float(headers["x-aimlapi-usd-spent"]) > 0
    assert headers["x-client-request-id"] == "job-1.part:2_a-b"
    assert headers["x-aiml-bge-backend"] == "hashing-stand-in"
    assert headers["content-type"] == "application/json"


@pytest.mark.parametrize("bad_id", ["", "has space", "x" * 129, "semi;colon"])
def test_invalid_client_request_id_is_dropped(aiml_server: LocalServer, bad_id: str) -> None:
    with aiml_server.client() as client:
        response = client.post(
            "/embeddings", json=embed_body("hi"), headers={"X-Client-Request-Id": bad_id}
        )
    assert response.status_code == 200
    assert "x-client-request-id" not in response.headers


def test_list_input_gives_one_item_per_input_in_order(aiml_server: LocalServer) -> None:
    texts = ["first text", "second one", "   ", "the fourth"]
    with aiml_server.client() as client:
        body = client.post("/embeddings", json=embed_body(texts)).json()
    assert [d["index"] for d in body["data"]] == [0, 1, 2, 3]
    expected = HashingEmbedder().embed(texts)
    got = np.array([d["embedding"] for d in body["data"]])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert body["usage"]["prompt_tokens"] == 4 + 4 + 2 + 4


def test_usage_counts_the_whole_text_without_truncation(aiml_server: LocalServer) -> None:
    long_text = "word " * 700
    with aiml_server.client() as client:
        body = client.post("/embeddings", json=embed_body([long_text, LAURA])).json()
    assert body["usage"]["prompt_tokens"] == 702 + 7
    assert body["meta"]["usage"]["credits_used"] == 1
    with aiml_server.client() as client:
        body = client.post("/embeddings", json=embed_body(["word " * 1500])).json()
    assert body["meta"]["usage"]["credits_used"] == 2  # ceil(1502 / 1000)


def test_base64_and_float_agree(aiml_server: LocalServer) -> None:
    texts = [LAURA, "another text"]
    with aiml_server.client() as client:
        floats = client.post("/embeddings", json=embed_body(texts, encoding_format="float")).json()
        b64 = client.post("/embeddings", json=embed_body(texts, encoding_format="base64")).json()
        default = client.post("/embeddings", json=embed_body(texts, encoding_format=None)).json()
    for f_item, b_item, d_item in zip(floats["data"], b64["data"], default["data"], strict=True):
        assert isinstance(b_item["embedding"], str)
        decoded = np.frombuffer(base64.b64decode(b_item["embedding"]), dtype="<f4")
        assert decoded.shape == (768,)
        np.testing.assert_array_equal(decoded, np.array(f_item["embedding"], dtype="<f4"))
        assert d_item["embedding"] == f_item["embedding"]


def test_official_openai_sdk(aiml_server: LocalServer) -> None:
    client = openai.OpenAI(
        base_url=aiml_server.base_url, api_key=aiml_server.api_key, max_retries=0
    )
    result = client.embeddings.create(input=LAURA, model=MODEL)
    (item,) = result.data
    assert len(item.embedding) == 768
    assert result.usage.prompt_tokens == 7
    np.testing.assert_allclose(item.embedding, HashingEmbedder().embed_one(LAURA), atol=1e-6)
    # The SDK asked for base64 (its default) and decoded it.
    assert aiml_server.stats["requests"] == 1


def test_unknown_fields_and_whitespace_inputs_are_accepted(aiml_server: LocalServer) -> None:
    with aiml_server.client() as client:
        response = client.post(
            "/embeddings", json=embed_body(["  ", "\n\t"], user="me", dimensions=None)
        )
    assert response.status_code == 200
    assert len(response.json()["data"]) == 2


VALIDATION_CASES = [
    pytest.param(b"{not json", "not valid JSON", id="not-json"),
    pytest.param(b'["a list"]', "must be a JSON object", id="not-object"),
    pytest.param(b'{"input": "x"}', "'model' is required", id="no-model"),
    pytest.param(b'{"model": 3, "input": "x"}', "'model' must be a string", id="model-number"),
    pytest.param(b'{"model": "BAAI/bge-base-en-v1.5"}', "'input' is required", id="no-input"),
    pytest.param(
        b'{"model": "BAAI/bge-base-en-v1.5", "input": null}', "'input' is required", id="null-input"
    ),
    pytest.param(
        b'{"model": "BAAI/bge-base-en-v1.5", "input": ""}', "empty string", id="empty-string"
    ),
    pytest.param(
        b'{"model": "BAAI/bge-base-en-v1.5", "input": []}', "empty array", id="empty-list"
    ),
    pytest.param(
        b'{"model": "BAAI/bge-base-en-v1.5", "input": ["a", ""]}', "input[1]", id="empty-item"
    ),
    pytest.param(
        b'{"model": "BAAI/bge-base-en-v1.5", "input": [101, 6874]}',
        "'input' must be a string or array of strings",
        id="token-ids",
    ),
    pytest.param(
        b'{"model": "BAAI/bge-base-en-v1.5", "input": ["a", {"b": 1}]}',
        "input[1]",
        id="object-item",
    ),
    pytest.param(
        b'{"model": "BAAI/bge-base-en-v1.5", "input": 42}',
        "string or array of strings",
        id="number",
    ),
    pytest.param(
        b'{"model": "BAAI/bge-base-en-v1.5", "input": "x", "encoding_format": "int8"}',
        "encoding_format",
        id="bad-encoding",
    ),
]


@pytest.mark.parametrize(("raw", "needle"), VALIDATION_CASES)
def test_validation_errors_in_the_aiml_shape(
    aiml_server: LocalServer, raw: bytes, needle: str
) -> None:
    with aiml_server.client() as client:
        response = client.post(
            "/embeddings", content=raw, headers={"Content-Type": "application/json"}
        )
    message = _assert_aiml_error(response, 400)
    assert message.startswith("Body validation error!")
    assert "Expected" in message and "Received" in message
    assert needle in message
    assert "x-inference-id" in response.headers


def test_missing_key_is_401(aiml_server: LocalServer) -> None:
    with aiml_server.client(key=None) as client:
        response = client.post("/embeddings", json=embed_body("hi"))
    assert "no API key" in _assert_aiml_error(response, 401)


@pytest.mark.parametrize("header", ["Bearer wrong-key", "Basic abc", "Bearer", "Token local-x"])
def test_wrong_key_is_401(aiml_server: LocalServer, header: str) -> None:
    with httpx.Client(base_url=aiml_server.base_url, verify=False) as client:
        response = client.post(
            "/embeddings", json=embed_body("hi"), headers={"Authorization": header}
        )
    _assert_aiml_error(response, 401)
    assert aiml_server.stats["ok"] == 0


def test_open_mode_takes_any_bearer_but_not_none(server_factory: Factory) -> None:
    server = server_factory(api_key=None)
    assert server.api_key is None
    with server.client(key="anything-at-all") as client:
        assert client.post("/embeddings", json=embed_body("hi")).status_code == 200
        info = client.get(server.root_url + "/_info").json()
    assert info["auth"] == "open"
    with server.client(key=None) as client:
        assert client.post("/embeddings", json=embed_body("hi")).status_code == 401


def test_retired_and_unknown_models_are_different_404s(aiml_server: LocalServer) -> None:
    with aiml_server.client() as client:
        retired = client.post("/embeddings", json={"model": "BAAI/bge-large-en-v1.5", "input": "x"})
        m2 = client.post(
            "/embeddings",
            json={"model": "togethercomputer/m2-bert-80M-32k-retrieval", "input": "x"},
        )
        unknown = client.post("/embeddings", json={"model": "no/such-model", "input": "x"})
    assert (
        _assert_aiml_error(retired, 404)
        == "Model BAAI/bge-large-en-v1.5 is deprecated and no longer supported, you cannot call it"
    )
    assert "deprecated" in _assert_aiml_error(m2, 404)
    assert _assert_aiml_error(unknown, 404) == "Model no/such-model not found"


def test_served_and_retired_models_are_settings(server_factory: Factory) -> None:
    server = server_factory(served_models=["my/model"], retired_models=[MODEL])
    with server.client() as client:
        assert (
            client.post("/embeddings", json={"model": "my/model", "input": "x"}).status_code == 200
        )
        gone = client.post("/embeddings", json=embed_body("x"))
    assert "deprecated" in _assert_aiml_error(gone, 404)


def test_models_list(aiml_server: LocalServer) -> None:
    with aiml_server.client(key=None) as client:  # public in the AI/ML dialect
        response = client.get("/models")
    assert response.status_code == 200
    assert response.json() == {
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "type": "embedding"}],
    }


def test_info_health_and_unknown_route(aiml_server: LocalServer) -> None:
    with aiml_server.client() as client:
        info = client.get(aiml_server.root_url + "/_info").json()
        health = client.get(aiml_server.root_url + "/health")
        missing = client.post("/nothing-here", json={})
    assert info["model_id"] == MODEL
    assert info["max_input_length"] == 512
    assert info["max_client_batch_size"] == 2048
    assert info["backend"] == "hashing-stand-in"
    assert "not the real model" in info["stand_in"]
    assert health.status_code == 200 and health.json()["status"] == "ok"
    assert (
        _assert_aiml_error(missing, 404, path="/v1/nothing-here") == "Cannot POST /v1/nothing-here"
    )
