"""The client's decisions over ``httpx.MockTransport``: status -> error class, messages, settings, secrets.

No sockets: every reply comes from a handler in this file, and the handler records what was
sent, so a test can assert that nothing was.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from aiml_bge_integrations import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AsyncEmbeddingsClient,
    AuthenticationError,
    BadRequestError,
    ConfigurationError,
    EmbeddingsClient,
    InsufficientCreditsError,
    InternalServerError,
    ItemRejectedError,
    MissingAPIKeyError,
    ModelNotFoundError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RequestTooLargeError,
    ResponseValidationError,
    UnprocessableEntityError,
)
from aiml_bge_integrations._retry import MAX_VALIDATION_RETRIES
from aiml_bge_integrations.errors import AimlBgeError, status_error_class

KEY = "sk-unit-test-SECRET-0123456789"
BASE = "https://api.example.test/v1"


class Recorder:
    """A MockTransport handler that answers from a list of replies and records every request."""

    def __init__(
        self, *replies: httpx.Response | Callable[[httpx.Request], httpx.Response]
    ) -> None:
        self.replies = list(replies)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        return reply(request) if callable(reply) else reply


def ok(request: httpx.Request) -> httpx.Response:
    texts = orjson.loads(request.content)["input"]
    data = [
        {"object": "embedding", "index": i, "embedding": [float(i), 0.5]} for i in range(len(texts))
    ]
    return httpx.Response(200, json={"object": "list", "data": data, "model": "m"})


def aiml_error(status: int, message: str, request_id: str = "req-1") -> httpx.Response:
    body = {
        "message": message,
        "path": "/v1/embeddings",
        "requestId": request_id,
        "statusCode": status,
    }
    return httpx.Response(status, json=body)


def make(recorder: Recorder, **settings: Any) -> EmbeddingsClient:
    settings.setdefault("api_key", KEY)
    settings.setdefault("base_url", BASE)
    settings.setdefault("model", "test-model")
    # The recorder answers every request: these tests count the embeddings requests only.
    settings.setdefault("discover_limits", False)
    client = EmbeddingsClient(
        http_client=httpx.Client(transport=httpx.MockTransport(recorder)), **settings
    )
    client.retry_policy.sleep = SLEPT.append  # waits are recorded, never slept
    return client


SLEPT: list[float] = []


@pytest.fixture(autouse=True)
def _no_sleep() -> list[float]:
    SLEPT.clear()
    return SLEPT


# -- status -> class --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (413, RequestTooLargeError),
        (422, UnprocessableEntityError),
        (429, RateLimitError),
        (500, InternalServerError),
        (502, InternalServerError),
        (503, InternalServerError),
        (504, InternalServerError),
        (418, APIStatusError),
    ],
)
def test_status_error_class_table(status: int, cls: type[APIStatusError]) -> None:
    assert status_error_class(status) is cls


@pytest.mark.parametrize(
    ("status", "message", "cls", "hint"),
    [
        (
            400,
            "Body validation error! Expected string, Received number",
            BadRequestError,
            "Body validation",
        ),
        (401, "Unauthorized: Invalid API key", AuthenticationError, "AIMLAPI_API_KEY"),
        (403, "Forbidden", PermissionDeniedError, "Forbidden"),
        (403, "You are out of credits", InsufficientCreditsError, "top it up"),
        (404, "Cannot POST /v1/v1/embeddings", NotFoundError, "base_url"),
        (422, "unprocessable", UnprocessableEntityError, "unprocessable"),
    ],
)
def test_non_retryable_status_maps_to_its_class_after_one_request(
    status: int, message: str, cls: type[APIStatusError], hint: str
) -> None:
    recorder = Recorder(aiml_error(status, message, "req-42"))
    with make(recorder) as client, pytest.raises(cls) as info:
        client.embed_documents(["a", "b"])
    err = info.value
    assert len(recorder.requests) == 1
    assert type(err) is cls
    assert err.status_code == status
    assert err.request_id == "req-42"
    assert message in err.message and hint in str(err)
    assert client.usage.retries == 0


def test_retired_model_404_says_what_to_do() -> None:
    model = "BAAI/bge-base-en-v1.5"
    recorder = Recorder(
        aiml_error(404, f"Model {model} is deprecated and no longer supported, you cannot call it")
    )
    with make(recorder, model=model) as client, pytest.raises(ModelNotFoundError) as info:
        client.embed_documents(["a"])
    text = str(info.value)
    # One embeddings request, not retried; then the deprecation feed, read without the key.
    assert [r.method for r in recorder.requests] == ["POST", "GET"]
    assert recorder.requests[1].url.path == "/v1/models/deprecations"
    assert "authorization" not in recorder.requests[1].headers
    assert "deprecated" in text  # the server's own words
    assert "model=" in text and "base_url" in text  # and how to get out of it
    assert isinstance(info.value, NotFoundError)


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_retryable_status_is_retried_then_raises_its_class(
    status: int, _no_sleep: list[float]
) -> None:
    recorder = Recorder(aiml_error(status, "try later"))
    with make(recorder, max_retries=3) as client, pytest.raises(status_error_class(status)) as info:
        client.embed_documents(["a"])
    assert len(recorder.requests) == 4
    assert info.value.status_code == status
    assert "gave up after 3 retries" in str(info.value)
    assert len(_no_sleep) == 3
    assert client.usage.retries_by_cause == {str(status): 3}


def test_retryable_status_then_success() -> None:
    recorder = Recorder(aiml_error(429, "Too Many Requests"), aiml_error(503, "maintenance"), ok)
    with make(recorder) as client:
        assert client.embed_documents(["a", "b"]) == [[0.0, 0.5], [1.0, 0.5]]
        usage = client.usage
    assert len(recorder.requests) == 3
    assert (usage.requests, usage.retries, usage.retries_by_cause) == (3, 2, {"429": 1, "503": 1})


def test_retry_after_ms_header_is_honoured(_no_sleep: list[float]) -> None:
    recorder = Recorder(
        httpx.Response(429, headers={"retry-after-ms": "250"}, json={"message": "slow down"}), ok
    )
    with make(recorder) as client:
        client.embed_documents(["a"])
    assert _no_sleep == [0.25]


def test_validation_failure_retried_a_bounded_number_of_times() -> None:
    bad = httpx.Response(200, json={"object": "list", "data": []})
    recorder = Recorder(bad)
    with make(recorder, max_retries=6) as client, pytest.raises(ResponseValidationError) as info:
        client.embed_documents(["a", "b"])
    assert len(recorder.requests) == 1 + MAX_VALIDATION_RETRIES
    assert "0 embeddings for 2 inputs" in str(info.value)
    assert client.usage.retries_by_cause == {"validation": MAX_VALIDATION_RETRIES}


def test_item_named_in_a_400_raises_item_rejected_with_the_callers_index() -> None:
    def reject(request: httpx.Request) -> httpx.Response:
        texts = orjson.loads(request.content)["input"]
        for i, t in enumerate(texts):
            if len(t) > 10:
                return aiml_error(
                    400, f"input[{i}] has {len(t)} characters; at most 10 are allowed"
                )
        return ok(request)

    recorder = Recorder(reject)
    texts = ["short"] * 5 + ["x" * 50] + ["short"] * 4
    with (
        make(recorder, batch_size=4, max_concurrency=1) as client,
        pytest.raises(ItemRejectedError) as info,
    ):
        client.embed_documents(texts)
    assert info.value.index == 5
    assert info.value.status_code == 400
    assert "index 5" in str(info.value)
    # Refused at once: the batch holding it was not split and re-sent piece by piece.
    assert len(recorder.requests) == 2
    assert client.usage.splits == 0


def test_too_large_batch_is_split_and_the_stated_limit_remembered() -> None:
    def limit3(request: httpx.Request) -> httpx.Response:
        n = len(orjson.loads(request.content)["input"])
        if n > 3:
            return aiml_error(413, f"too many inputs: {n} > maximum allowed batch size 3")
        return ok(request)

    recorder = Recorder(limit3)
    with make(recorder, batch_size=8, max_concurrency=1) as client:
        vectors = client.embed_documents([f"t{i}" for i in range(8)])
        assert [v[0] for v in vectors] == [0.0, 1.0, 2.0, 0.0, 1.0, 2.0, 0.0, 1.0]
        assert client.effective_batch_size == 3
        sizes = [len(orjson.loads(r.content)["input"]) for r in recorder.requests]
        assert sizes == [8, 3, 3, 2]
        recorder.requests.clear()
        client.embed_documents([f"t{i}" for i in range(7)])
        sizes = [len(orjson.loads(r.content)["input"]) for r in recorder.requests]
        assert sizes == [3, 3, 1]  # the next call starts at the learned size


def test_a_character_or_byte_limit_is_not_taken_for_a_batch_limit() -> None:
    def limited(request: httpx.Request) -> httpx.Response:
        n = len(orjson.loads(request.content)["input"])
        if n > 2:
            return aiml_error(413, f"request body too large: {n * 10} bytes > maximum 2 bytes")
        return ok(request)

    recorder = Recorder(limited)
    with make(recorder, batch_size=8, max_concurrency=1) as client:
        assert len(client.embed_documents([f"t{i}" for i in range(8)])) == 8
        assert client.effective_batch_size == 8
        assert client.usage.splits == 3  # 8 -> 4+4 -> each 4 -> 2+2


def test_connection_error_is_retried_then_typed() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    recorder = Recorder(refuse)
    with make(recorder, max_retries=2) as client, pytest.raises(APIConnectionError) as info:
        client.embed_documents(["a"])
    assert type(info.value) is APIConnectionError
    assert len(recorder.requests) == 3
    assert client.usage.retries_by_cause == {"connection": 2}


def test_timeout_is_retried_then_typed() -> None:
    def slow(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    recorder = Recorder(slow, ok)
    with make(recorder, max_retries=2) as client:
        assert client.embed_documents(["a"]) == [[0.0, 0.5]]
        assert client.usage.retries_by_cause == {"timeout": 1}
    recorder = Recorder(slow)
    with make(recorder, max_retries=1) as client, pytest.raises(APITimeoutError):
        client.embed_documents(["a"])
    assert len(recorder.requests) == 2


# -- settings ---------------------------------------------------------------------------------


def test_missing_key_fails_at_construction() -> None:
    for key in (None, "", "   "):
        with pytest.raises(MissingAPIKeyError, match="AIMLAPI_API_KEY"):
            EmbeddingsClient(api_key=key)
        with pytest.raises(MissingAPIKeyError):
            AsyncEmbeddingsClient(api_key=key)
    assert issubclass(MissingAPIKeyError, ConfigurationError)


def test_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMLAPI_API_KEY", KEY)
    recorder = Recorder(ok)
    with EmbeddingsClient(
        base_url=BASE, model="m", http_client=httpx.Client(transport=httpx.MockTransport(recorder))
    ) as client:
        client.embed_documents(["a"])
    assert recorder.requests[0].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize(
    "settings",
    [
        {"batch_size": 0},
        {"batch_size": True},
        {"max_concurrency": 0},
        {"max_retries": -1},
        {"timeout": 0},
        {"deadline": -1},
        {"encoding_format": "binary"},
        {"long_text": "drop"},
        {"base_url": "ftp://example.test/v1"},
        {"requests_per_minute": -1},
    ],
)
def test_bad_settings_fail_at_construction(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        EmbeddingsClient(**{"api_key": KEY, "base_url": BASE, **settings})


def test_request_shape_and_headers() -> None:
    recorder = Recorder(ok)
    with make(recorder, default_headers={"X-Team": "search"}) as client:
        client.embed_documents(["Laura is a DJ.", "  spaced  "])
    request = recorder.requests[0]
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/embeddings"
    assert orjson.loads(request.content) == {
        "model": "test-model",
        "input": ["Laura is a DJ.", "  spaced  "],
    }
    assert request.headers["authorization"] == f"Bearer {KEY}"
    assert request.headers["x-team"] == "search"
    assert request.headers["content-type"] == "application/json"


@pytest.mark.parametrize("name", ["Authorization", "proxy-authorization"])
def test_credentials_in_default_headers_are_refused(name: str) -> None:
    # Headers are settings that get printed and pickled: a credential there would leak.
    recorder = Recorder(ok)
    with pytest.raises(ConfigurationError, match="api_key"):
        make(recorder, default_headers={name: "Bearer other"})
    assert recorder.requests == []


# -- secrets ----------------------------------------------------------------------------------


def test_key_absent_from_repr_str_and_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    client = EmbeddingsClient(api_key=KEY, base_url=BASE)
    try:
        assert KEY not in repr(client) and KEY not in str(client)
        data = pickle.dumps(client)
        assert KEY.encode() not in data
        monkeypatch.setenv("AIMLAPI_API_KEY", "sk-other-key")
        copy = pickle.loads(data)
        assert copy.base_url == client.base_url and copy.model == client.model
        copy.close()
    finally:
        client.close()


def test_key_echoed_by_the_server_is_scrubbed_from_errors() -> None:
    recorder = Recorder(
        httpx.Response(
            401,
            json={"message": f"Invalid API key {KEY}", "echo": {"authorization": f"Bearer {KEY}"}},
        )
    )
    with make(recorder) as client, pytest.raises(AuthenticationError) as info:
        client.embed_documents(["a"])
    err = info.value
    for text in (str(err), repr(err), err.message, repr(err.body), repr(err.args)):
        assert KEY not in text
    assert KEY.encode() not in pickle.dumps(err)


def test_key_echoed_in_a_non_json_body_is_scrubbed() -> None:
    recorder = Recorder(httpx.Response(403, content=f"<html>key {KEY} forbidden</html>".encode()))
    with make(recorder) as client, pytest.raises(PermissionDeniedError) as info:
        client.embed_documents(["a"])
    assert KEY not in str(info.value) and KEY not in repr(info.value.body)


def test_errors_survive_pickling() -> None:
    errors: list[AimlBgeError] = [
        ItemRejectedError("refused", index=3, status_code=400, request_id="r"),
        RateLimitError("slow", status_code=429),
        ResponseValidationError("bad", request_id="q"),
    ]
    from aiml_bge_integrations import InputTypeError, InvalidInputError, TextTooLongError

    errors += [
        TextTooLongError("long", {4: 600}),
        InputTypeError("type", 2),
        InvalidInputError("empty", [1]),
    ]
    for err in errors:
        copy = pickle.loads(pickle.dumps(err))
        assert type(copy) is type(err)
        assert str(copy) == str(err)
        assert vars(copy) == vars(err)


def test_plain_http_to_a_remote_host_is_refused_before_any_request() -> None:
    recorder = Recorder(ok)
    transport = httpx.MockTransport(recorder)
    for url in (
        "http://api.example.test/v1",
        "http://10.0.0.5:8080/v1",
        "http://127evil.example/v1",
        "http://127.0.0.1.nip.io/v1",  # a remote name that merely starts like a loopback address
        "http://127.attacker.example:8000/v1",
        "http://localhost.attacker.example/v1",
    ):
        with pytest.raises(ConfigurationError, match="allow_insecure_http"):
            EmbeddingsClient(
                api_key=KEY, base_url=url, http_client=httpx.Client(transport=transport)
            )
        with pytest.raises(ConfigurationError, match="allow_insecure_http"):
            AsyncEmbeddingsClient(
                api_key=KEY, base_url=url, http_client=httpx.AsyncClient(transport=transport)
            )
    assert recorder.requests == []
    with EmbeddingsClient(
        api_key=KEY,
        base_url="http://api.example.test/v1",
        model="m",
        allow_insecure_http=True,
        discover_limits=False,
        http_client=httpx.Client(transport=transport),
    ) as client:
        client.embed_documents(["a"])
    assert len(recorder.requests) == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/v1",
        "http://127.8.9.10:9/v1",
        "http://localhost:9/v1",
        "http://[::1]:9/v1",
        "https://x.test/v1",
    ],
)
def test_loopback_http_and_https_are_allowed(url: str) -> None:
    EmbeddingsClient(api_key=KEY, base_url=url).close()


def test_usage_credits_from_the_body_or_else_the_header() -> None:
    def body_credits(request: httpx.Request) -> httpx.Response:
        reply = ok(request)
        doc = orjson.loads(reply.content)
        doc["usage"] = {"prompt_tokens": 5, "total_tokens": 5}
        doc["meta"] = {"usage": {"credits_used": 2}}
        return httpx.Response(
            200, content=orjson.dumps(doc), headers={"x-aimlapi-credits-used": "99"}
        )

    def header_credits(request: httpx.Request) -> httpx.Response:
        reply = ok(request)
        doc = orjson.loads(reply.content)
        doc["usage"] = {"prompt_tokens": 4}
        headers = {"x-aimlapi-credits-used": "3", "x-aimlapi-usd-spent": "0.0000015"}
        return httpx.Response(200, content=orjson.dumps(doc), headers=headers)

    with make(Recorder(body_credits, header_credits), max_concurrency=1, batch_size=1) as client:
        client.embed_documents(["a", "b"])
        usage = client.usage
    assert usage.credits == 2 + 3  # the body wins over its header; the header alone counts
    assert (usage.prompt_tokens, usage.total_tokens) == (9, 9)
    assert usage.usd == pytest.approx(0.0000015)
    assert (usage.requests, usage.texts) == (2, 2)


def test_a_400_refusing_the_whole_body_is_not_bisected_or_blamed_on_an_input() -> None:
    message = (
        "Body validation error! input must not be empty. Expected string (minLength 1) | "
        "array<string> (minItems 1), Received []"
    )
    recorder = Recorder(aiml_error(400, message))
    with make(recorder) as client, pytest.raises(BadRequestError) as info:
        client.embed_documents(["a", "b", "c", "d"])
    assert type(info.value) is BadRequestError
    assert len(recorder.requests) == 1
    assert client.usage.splits == 0
