"""Each dialect's 200 body and its real error shapes and statuses, over HTTP."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from server_dialects import DIALECTS

from aiml_bge_integrations._settings import DEFAULT_MODEL
from aiml_bge_integrations.server import FaultConfig, HashingEmbedder, LocalServer, dialect_names

MODEL = DEFAULT_MODEL


def embed_body(inputs: Any, **extra: Any) -> dict[str, Any]:
    """A request body for the default model."""
    return {"model": MODEL, "input": inputs, **extra}


KEY = "dialect-test-key"
TEXTS = ["alpha beta", "gamma delta"]


@pytest.fixture(scope="module")
def servers() -> Iterator[Callable[[str], LocalServer]]:
    """One server per dialect (key ``KEY``, 512-token cap), started on first use."""
    started: dict[str, LocalServer] = {}

    def get(dialect: str) -> LocalServer:
        if dialect not in started:
            started[dialect] = LocalServer(
                dialect=dialect, api_key=KEY, max_tokens_per_item=512
            ).start()
        server = started[dialect]
        server.config.faults = None
        server.reset_stats()
        return server

    yield get
    for server in started.values():
        server.stop()


def _post(
    server: LocalServer, body: Any = None, *, raw: bytes | None = None, **kw: Any
) -> httpx.Response:
    with server.client() as client:
        if raw is not None:
            headers = kw.pop("headers", {"Content-Type": "application/json"})
            return client.post("/embeddings", content=raw, headers=headers)
        return client.post("/embeddings", json=embed_body(TEXTS) if body is None else body, **kw)


def test_dialect_names() -> None:
    # The shipped one, then the test-only ones tests/conftest.py registered, in that order.
    assert DIALECTS == ("aiml", "openai", "tei", "vllm", "vllm-legacy", "infinity", "ollama")
    assert dialect_names()[: len(DIALECTS)] == DIALECTS


# ----------------------------------------------------------------------------- 200

TOP_KEYS = {
    "aiml": ["object", "data", "model", "usage", "id", "created", "meta"],
    "openai": ["object", "data", "model", "usage"],
    "tei": ["object", "data", "model", "usage"],
    "vllm": ["id", "object", "created", "model", "data", "usage"],
    "vllm-legacy": ["id", "object", "created", "model", "data", "usage"],
    "infinity": ["object", "data", "model", "usage", "id", "created"],
    "ollama": ["object", "data", "model", "usage"],
}
USAGE_KEYS = {
    "aiml": ["prompt_tokens", "total_tokens", "completion_tokens", "prompt_tokens_details"],
    "vllm": ["prompt_tokens", "total_tokens", "completion_tokens", "prompt_tokens_details"],
    "vllm-legacy": ["prompt_tokens", "total_tokens", "completion_tokens", "prompt_tokens_details"],
}


@pytest.mark.parametrize("dialect", DIALECTS)
@pytest.mark.parametrize("encoding", ["float", "base64"])
def test_200_body(servers: Callable[[str], LocalServer], dialect: str, encoding: str) -> None:
    server = servers(dialect)
    response = _post(server, embed_body(TEXTS, encoding_format=encoding))
    assert response.status_code == 200
    body = response.json()
    assert list(body) == TOP_KEYS[dialect]
    assert body["object"] == "list"
    assert body["model"] == MODEL
    assert list(body["usage"]) == USAGE_KEYS.get(dialect, ["prompt_tokens", "total_tokens"])
    assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] == 8
    expected = HashingEmbedder().embed(TEXTS).astype("<f4")
    for i, item in enumerate(body["data"]):
        assert set(item) == {"object", "index", "embedding"}
        assert item["object"] == "embedding" and item["index"] == i
        if encoding == "base64":
            vec = np.frombuffer(base64.b64decode(item["embedding"]), dtype="<f4")
        else:
            vec = np.array(item["embedding"], dtype="<f4")
        np.testing.assert_array_equal(vec, expected[i])
    has_credits = "x-aimlapi-credits-used" in response.headers
    assert has_credits == (dialect == "aiml")
    assert ("x-compute-tokens" in response.headers) == (dialect == "tei")
    assert response.headers["x-aiml-bge-backend"] == "hashing-stand-in"
    if dialect == "tei":
        assert response.headers["x-compute-tokens"] == "8"
    if dialect in ("vllm", "vllm-legacy", "aiml"):
        assert body["id"].startswith("embd-")
    if dialect == "infinity":
        assert body["id"].startswith("infinity-")


# ----------------------------------------------------------------------------- 401


def _wrong_key(server: LocalServer) -> httpx.Response:
    with server.client(key="not-the-key-123456") as client:
        return client.post("/embeddings", json=embed_body(TEXTS))


def test_401_shapes(servers: Callable[[str], LocalServer]) -> None:
    aiml = _wrong_key(servers("aiml"))
    assert aiml.status_code == 401 and aiml.json()["message"].startswith(
        "Unauthorized: invalid API key"
    )

    openai = _wrong_key(servers("openai")).json()["error"]
    assert openai["code"] == "invalid_api_key" and openai["type"] == "invalid_request_error"
    assert openai["message"].startswith("Incorrect API key provided: not")
    assert "not-the-key-123456" not in openai["message"]  # only a masked hint

    tei = _wrong_key(servers("tei"))
    assert tei.status_code == 401 and tei.content == b""

    for dialect in ("vllm", "vllm-legacy"):
        response = _wrong_key(servers(dialect))
        assert response.status_code == 401 and response.json() == {"error": "Unauthorized"}

    infinity = _wrong_key(servers("infinity"))
    assert infinity.json() == {"detail": "Unauthorized"}
    assert infinity.headers["www-authenticate"] == "Bearer"

    ollama = _wrong_key(servers("ollama"))
    assert ollama.json() == {
        "error": {"message": "unauthorized", "type": "api_error", "param": None, "code": None}
    }


# ----------------------------------------------------------------------------- validation

EMPTY_LIST: dict[str, tuple[int, Callable[[Any], bool]]] = {
    "aiml": (400, lambda b: b["message"].startswith("Body validation error!")),
    "openai": (400, lambda b: b["error"]["message"].startswith("'$.input' is invalid")),
    "tei": (400, lambda b: b == {"message": "`inputs` cannot be empty", "code": 400, "type": "Empty"}),
    "vllm": (400, lambda b: b["error"]["type"] == "Bad Request" and "at least 1 item" in b["error"]["message"]),
    "vllm-legacy": (400, lambda b: b["object"] == "error" and b["code"] == 400 and "at least 1 item" in b["message"]),
    "infinity": (422, lambda b: b["detail"][0]["type"] == "too_short"),
    "ollama": (400, lambda b: b["error"] == {"message": "invalid input", "type": "invalid_request_error", "param": None, "code": None}),
}  # fmt: skip


@pytest.mark.parametrize("dialect", DIALECTS)
def test_empty_list_is_refused_in_each_shape(
    servers: Callable[[str], LocalServer], dialect: str
) -> None:
    response = _post(servers(dialect), embed_body([]))
    status, check = EMPTY_LIST[dialect]
    assert response.status_code == status
    assert check(response.json()), response.text


@pytest.mark.parametrize(
    ("dialect", "accepted"),
    [
        ("aiml", False),
        ("openai", False),
        ("tei", False),
        ("vllm", True),
        ("infinity", True),
        ("ollama", True),
    ],
)
def test_empty_string(servers: Callable[[str], LocalServer], dialect: str, accepted: bool) -> None:
    response = _post(servers(dialect), embed_body(""))
    assert (response.status_code == 200) == accepted
    if dialect == "tei":
        assert response.json() == {
            "message": "Input validation error: `inputs` cannot be empty",
            "code": 400,
            "type": "Empty",
        }


def test_tei_axum_rejections_are_plain_text(servers: Callable[[str], LocalServer]) -> None:
    server = servers("tei")
    syntax = _post(server, raw=b"{nope")
    assert syntax.status_code == 400
    assert syntax.headers["content-type"].startswith("text/plain")
    assert syntax.text.startswith("Failed to parse the request body as JSON")
    missing = _post(server, raw=b'{"model": "x"}')
    assert missing.status_code == 422
    assert (
        missing.text
        == "Failed to deserialize the JSON body into the target type: missing field `input`"
    )
    media = _post(server, raw=b'{"input": "x"}', headers={"Content-Type": "text/plain"})
    assert media.status_code == 415
    assert media.text == "Expected request with `Content-Type: application/json`"


def test_openai_validation_messages(servers: Callable[[str], LocalServer]) -> None:
    server = servers("openai")
    missing = _post(server, {"model": MODEL}).json()["error"]
    assert missing == {
        "message": "Missing required parameter: 'input'.",
        "type": "invalid_request_error",
        "param": "input",
        "code": "missing_required_parameter",
    }
    no_model = _post(server, {"input": "x"}).json()["error"]
    assert no_model["message"] == "you must provide a model parameter"
    garbage = _post(server, raw=b"{{").json()["error"]
    assert garbage["message"].startswith("We could not parse the JSON body of your request.")


def test_infinity_fastapi_422(servers: Callable[[str], LocalServer]) -> None:
    server = servers("infinity")
    response = _post(server, embed_body(["ok", 7]))
    assert response.status_code == 422
    (entry,) = response.json()["detail"]
    assert entry["loc"] == ["body", "text", "input", "list[constrained-str]", 1]
    assert entry["msg"] == "Input should be a valid string"
    missing = _post(server, {"model": MODEL}).json()["detail"][0]
    assert missing["type"] == "missing" and missing["msg"] == "Field required"


def test_ollama_encoding_format(servers: Callable[[str], LocalServer]) -> None:
    server = servers("ollama")
    assert _post(server, embed_body(TEXTS, encoding_format="BASE64")).status_code == 200
    bad = _post(server, embed_body(TEXTS, encoding_format="int8"))
    assert bad.status_code == 400
    assert bad.json()["error"]["message"] == (
        "Invalid value for 'encoding_format' = int8. Supported values: ['float', 'base64']."
    )


# ----------------------------------------------------------------------------- models


def test_unknown_model_per_dialect(servers: Callable[[str], LocalServer]) -> None:
    def unknown(dialect: str) -> httpx.Response:
        return _post(servers(dialect), {"model": "no-such-model", "input": TEXTS})

    openai = unknown("openai")
    assert openai.status_code == 404
    assert openai.json()["error"]["code"] == "model_not_found"
    vllm = unknown("vllm")
    assert vllm.status_code == 404
    assert vllm.json()["error"] == {
        "message": "The model `no-such-model` does not exist.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }
    legacy = unknown("vllm-legacy").json()
    assert (
        legacy["object"] == "error" and legacy["type"] == "NotFoundError" and legacy["code"] == 404
    )
    ollama = unknown("ollama")
    assert ollama.status_code == 404
    assert (
        ollama.json()["error"]["message"] == 'model "no-such-model" not found, try pulling it first'
    )
    assert ollama.json()["error"]["type"] == "not_found_error"
    # TEI ignores the name; infinity with one model resolves any name to it.
    for dialect in ("tei", "infinity"):
        response = unknown(dialect)
        assert response.status_code == 200 and response.json()["model"] == MODEL


def test_model_may_be_omitted_where_the_real_server_allows(
    servers: Callable[[str], LocalServer],
) -> None:
    for dialect in ("tei", "vllm", "infinity"):
        response = _post(servers(dialect), {"input": TEXTS})
        assert response.status_code == 200 and response.json()["model"] == MODEL
    assert _post(servers("openai"), {"input": TEXTS}).status_code == 400


def test_ollama_latest_tag(server_factory: Callable[..., LocalServer]) -> None:
    server = server_factory(dialect="ollama", served_models=["bge-base-en-v1.5"])
    response = _post(server, {"model": "bge-base-en-v1.5:latest", "input": "x"})
    assert response.status_code == 200
    assert response.json()["model"] == "bge-base-en-v1.5:latest"


def test_infinity_with_several_models_refuses_unknown_names(
    server_factory: Callable[..., LocalServer],
) -> None:
    server = server_factory(dialect="infinity", served_models=[MODEL, "BAAI/bge-small-en-v1.5"])
    response = _post(server, {"model": "nope", "input": "x"})
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "Invalid model: Engine for model name `nope` not found. "
        "Available model names are ['BAAI/bge-base-en-v1.5', 'BAAI/bge-small-en-v1.5']",
        "type": None,
        "param": None,
        "code": 400,
    }


@pytest.mark.parametrize("dialect", DIALECTS)
def test_models_endpoint(servers: Callable[[str], LocalServer], dialect: str) -> None:
    server = servers(dialect)
    with server.client(key=None) as anonymous, server.client() as client:
        public = anonymous.get("/models")
        listed = client.get("/models")
    assert public.status_code == (200 if dialect == "aiml" else 401)
    assert listed.status_code == 200
    body = listed.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == [MODEL]
    assert all(m["object"] == "model" for m in body["data"])


# ----------------------------------------------------------------------------- limits and over-long inputs


def test_tei_client_batch_size(servers: Callable[[str], LocalServer]) -> None:
    server = servers("tei")
    with server.client() as client:
        info = client.get(server.root_url + "/info").json()
    assert info["max_client_batch_size"] == 32
    assert info["max_input_length"] == 512
    assert info["model_id"] == MODEL
    assert _post(server, embed_body(["t"] * 32)).status_code == 200
    response = _post(server, embed_body(["t"] * 40))
    assert response.status_code == 413
    assert response.json() == {
        "message": "batch size 40 > maximum allowed batch size 32",
        "code": 413,
        "type": "Validation",
    }


OVER_LONG = {
    "aiml": (400, "input[1] has 602 tokens; at most 512 are allowed"),
    "openai": (400, "This model's maximum context length is 512 tokens, however you requested 602 tokens"),
    "tei": (413, "Input validation error: `inputs` must have less than 512 tokens. Given: 602"),
    "vllm": (400, "This model's maximum context length is 512 tokens. However, you requested 602 tokens in the input for embedding generation."),
    "vllm-legacy": (400, "However, you requested 602 tokens in the input for embedding generation."),
}  # fmt: skip


@pytest.mark.parametrize("dialect", sorted(OVER_LONG))
def test_over_long_input_is_refused(servers: Callable[[str], LocalServer], dialect: str) -> None:
    response = _post(servers(dialect), embed_body(["short", "word " * 600]))
    status, needle = OVER_LONG[dialect]
    assert response.status_code == status
    assert needle in response.text


@pytest.mark.parametrize("dialect", ["infinity", "ollama"])
def test_over_long_input_is_truncated(servers: Callable[[str], LocalServer], dialect: str) -> None:
    response = _post(servers(dialect), embed_body(["short", "word " * 600]))
    assert response.status_code == 200
    assert response.json()["usage"]["prompt_tokens"] == 3 + 512


RATE_LIMITED: dict[str, Callable[[Any], bool]] = {
    "aiml": lambda b: b["message"] == "Too Many Requests" and b["statusCode"] == 429,
    "openai": lambda b: (
        b["error"]["code"] == "rate_limit_exceeded" and b["error"]["type"] == "requests"
    ),
    "tei": lambda b: b == {"message": "Model is overloaded", "code": 429, "type": "Overloaded"},
    "vllm": lambda b: b["error"]["code"] == 429,
    "vllm-legacy": lambda b: b["object"] == "error" and b["code"] == 429,
    "infinity": lambda b: b["error"]["code"] == 429 and "overloaded" in b["error"]["message"],
    "ollama": lambda b: (
        b["error"]["message"].startswith("server busy") and b["error"]["type"] == "api_error"
    ),
}


@pytest.mark.parametrize("dialect", DIALECTS)
def test_429_and_503_shapes(servers: Callable[[str], LocalServer], dialect: str) -> None:
    server = servers(dialect)
    server.config.faults = FaultConfig(script=["429", "503"])
    limited, unavailable = _post(server), _post(server)
    assert limited.status_code == 429
    assert RATE_LIMITED[dialect](limited.json()), limited.text
    assert "retry-after" not in limited.headers
    assert unavailable.status_code == 503
    body = unavailable.json()
    assert isinstance(body, dict) and body
    if dialect in ("openai", "vllm", "infinity", "ollama"):
        assert set(body["error"]) == {"message", "type", "param", "code"}
