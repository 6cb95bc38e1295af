"""The adapter itself: settings, the six hooks, the query instruction, usage, copies, errors."""

from __future__ import annotations

import copy
import inspect
import pickle
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import ValidationError

from aiml_bge_integrations import (
    BGE_QUERY_INSTRUCTION,
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    AsyncEmbeddingsClient,
    AuthenticationError,
    ConfigurationError,
    EmbeddingsClient,
    InvalidInputError,
    MissingAPIKeyError,
    RateLimiter,
)
from aiml_bge_integrations.llama_index import AimlBgeEmbedding
from aiml_bge_integrations.server import FaultConfig, HashingEmbedder

_HASHER = HashingEmbedder()


def assert_vector_of(vector: list[float], text: str) -> None:
    """``vector`` is the server's vector for exactly ``text`` (up to JSON float rounding)."""
    assert len(vector) == 768
    assert all(type(x) is float for x in vector)
    np.testing.assert_allclose(vector, _HASHER.embed_one(text), atol=1e-6)


def assert_not_vector_of(vector: list[float], text: str) -> None:
    assert not np.allclose(vector, _HASHER.embed_one(text), atol=1e-6)


# -- identity and settings ----------------------------------------------------------------


def test_is_a_llama_index_embedding_with_its_own_class_name(embed: AimlBgeEmbedding) -> None:
    assert isinstance(embed, BaseEmbedding)
    assert AimlBgeEmbedding.class_name() == "AimlBgeEmbedding"
    assert embed.to_dict()["class_name"] == "AimlBgeEmbedding"


def test_settings_are_the_core_settings_each_described() -> None:
    core = set(inspect.signature(EmbeddingsClient.__init__).parameters) - {"self"}
    fields = AimlBgeEmbedding.model_fields
    assert core <= set(fields), core - set(fields)
    for name in core | {"model_name", "http_client", "http_async_client"}:
        assert fields[name].description, name


def test_defaults_match_the_core(local_server: Any) -> None:
    embed = AimlBgeEmbedding(api_key="k")
    core = AsyncEmbeddingsClient(api_key="k")
    assert embed.model == embed.model_name == core.model == DEFAULT_MODEL
    assert embed.base_url == core.base_url == DEFAULT_BASE_URL
    for name in ("batch_size", "max_concurrency", "max_retries", "timeout", "deadline"):
        assert getattr(embed, name) == getattr(core, name), name
    assert embed.query_instruction == core.query_instruction == BGE_QUERY_INSTRUCTION
    assert embed.long_text == core.long_text
    assert embed.encoding_format == core.encoding_format


def test_model_name_reflects_model() -> None:
    assert AimlBgeEmbedding(api_key="k", model="BAAI/bge-small-en-v1.5").model_name == (
        "BAAI/bge-small-en-v1.5"
    )
    # LlamaIndex users often say model_name: it sets the model.
    by_name = AimlBgeEmbedding(api_key="k", model_name="text-embedding-3-small")
    assert by_name.model == by_name.model_name == "text-embedding-3-small"
    assert by_name.query_instruction is None  # not a BGE model: no instruction by default
    with pytest.raises(ConfigurationError, match="disagree"):
        AimlBgeEmbedding(api_key="k", model="a", model_name="b")


def test_environment_supplies_key_base_url_and_model(
    server_env: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AIMLAPI_EMBEDDING_MODEL", "BAAI/bge-base-en-v1.5")
    embed = AimlBgeEmbedding()
    assert embed.base_url == server_env.base_url
    assert embed.api_key is not None
    assert embed.api_key.get_secret_value() == server_env.api_key
    assert_vector_of(embed.get_text_embedding("Laura is a DJ."), "Laura is a DJ.")


def test_no_key_anywhere_is_a_clear_error_at_construction() -> None:
    with pytest.raises(MissingAPIKeyError, match="AIMLAPI_API_KEY"):
        AimlBgeEmbedding()


@pytest.mark.parametrize(
    ("settings", "named", "error"),
    [
        ({"batch_size": 0}, "batch_size", ConfigurationError),
        ({"batch_size": True}, "batch_size", ConfigurationError),
        ({"batch_size": "8"}, "batch_size", ConfigurationError),
        ({"max_concurrency": 0}, "max_concurrency", ConfigurationError),
        ({"max_retries": -1}, "max_retries", ConfigurationError),
        ({"timeout": 0}, "timeout", ConfigurationError),
        ({"deadline": -1}, "deadline", ConfigurationError),
        ({"long_text": "drop"}, "long_text", ConfigurationError),
        ({"encoding_format": "int8"}, "encoding_format", ConfigurationError),
        ({"requests_per_minute": 0}, "requests_per_minute", ConfigurationError),
        # LlamaIndex's own field, and a misspelled name: the same error class, naming it.
        ({"embed_batch_size": 0}, "embed_batch_size", ConfigurationError),
        ({"max_concurency": 2}, "did you mean max_concurrency?", ConfigurationError),
        ({"http_client": 5}, "http_client", ConfigurationError),
    ],
)
def test_bad_settings_are_refused_naming_the_setting(
    settings: dict[str, Any], named: str, error: type[Exception]
) -> None:
    with pytest.raises(error) as info:
        AimlBgeEmbedding(api_key="sk-never-shown", **settings)
    assert type(info.value) is error
    assert named in str(info.value)
    assert "sk-never-shown" not in str(info.value)


def test_the_core_checks_what_pydantic_cannot() -> None:
    with pytest.raises(ConfigurationError, match="plain http"):
        AimlBgeEmbedding(api_key="k", base_url="http://example.com/v1")
    embed = AimlBgeEmbedding(
        api_key="k", base_url="http://example.com/v1", allow_insecure_http=True
    )
    assert embed.base_url == "http://example.com/v1"
    with pytest.raises(ConfigurationError, match="base_url"):
        AimlBgeEmbedding(api_key="k", base_url="ftp://example.com")


def test_core_settings_are_fixed_after_construction(embed: AimlBgeEmbedding) -> None:
    for name, value in (("batch_size", 3), ("model", "x"), ("model_name", "x"), ("api_key", "x")):
        with pytest.raises(ValidationError, match="frozen"):
            setattr(embed, name, value)
    # LlamaIndex's own knobs stay assignable (Settings assigns callback_manager).
    embed.embed_batch_size = 7
    assert embed.embed_batch_size == 7


def test_clients_get_every_setting(local_server: Any, make_embed: Callable[..., Any]) -> None:
    embed = make_embed(
        local_server,
        batch_size=7,
        max_concurrency=3,
        max_retries=2,
        timeout=9.0,
        deadline=30.0,
        query_instruction="Q: ",
        default_headers={"X-Team": "search"},
        encoding_format="float",
        long_text="error",
        requests_per_minute=6000,
        tokens_per_minute=1_000_000,
    )
    sync_client, async_client = embed.client, embed.async_client
    assert isinstance(sync_client, EmbeddingsClient)
    assert isinstance(async_client, AsyncEmbeddingsClient)
    for core in (sync_client, async_client):
        assert core.base_url == local_server.base_url
        assert core.model == embed.model
        assert (core.batch_size, core.max_concurrency, core.max_retries) == (7, 3, 2)
        assert (core.timeout, core.deadline) == (9.0, 30.0)
        assert core.query_instruction == "Q: "
        assert core.default_headers == {"X-Team": "search"}
        assert (core.encoding_format, core.long_text) == ("float", "error")
        assert isinstance(core.rate_limiter, RateLimiter)
        assert core.rate_limiter.requests_per_minute == 6000
    # One limiter paces both paths.
    assert sync_client.rate_limiter is async_client.rate_limiter
    # One client of each kind, built once.
    assert embed.client is sync_client
    assert embed.async_client is async_client


# -- the six hooks and the query instruction ----------------------------------------------


QUERY = "Why does the planet Mars look red?"
TEXT = "The planet Mars looks red because of iron oxide."


def test_sync_queries_get_the_instruction_texts_never(embed: AimlBgeEmbedding) -> None:
    assert_vector_of(embed.get_query_embedding(QUERY), BGE_QUERY_INSTRUCTION + QUERY)
    assert_vector_of(embed.get_text_embedding(TEXT), TEXT)
    assert_not_vector_of(embed.get_text_embedding(TEXT), BGE_QUERY_INSTRUCTION + TEXT)
    for vector, text in zip(
        embed.get_text_embedding_batch([TEXT, QUERY]), [TEXT, QUERY], strict=True
    ):
        assert_vector_of(vector, text)


async def test_async_queries_get_the_instruction_texts_never(embed: AimlBgeEmbedding) -> None:
    assert_vector_of(await embed.aget_query_embedding(QUERY), BGE_QUERY_INSTRUCTION + QUERY)
    assert_vector_of(await embed.aget_text_embedding(TEXT), TEXT)
    vectors = await embed.aget_text_embedding_batch([TEXT, QUERY])
    for vector, text in zip(vectors, [TEXT, QUERY], strict=True):
        assert_vector_of(vector, text)


def test_query_instruction_none_disables_it_and_a_custom_one_is_used(
    local_server: Any, make_embed: Callable[..., Any]
) -> None:
    plain = make_embed(local_server, query_instruction=None)
    assert_vector_of(plain.get_query_embedding(QUERY), QUERY)
    custom = make_embed(local_server, query_instruction="query: ")
    assert_vector_of(custom.get_query_embedding(QUERY), "query: " + QUERY)
    assert_vector_of(custom.get_text_embedding(TEXT), TEXT)


@pytest.mark.parametrize(
    ("hook", "args", "path"),
    [
        ("_get_query_embedding", (QUERY,), "sync"),
        ("_get_text_embedding", (TEXT,), "sync"),
        ("_get_text_embeddings", ([TEXT, QUERY, "third"],), "sync"),
        ("_aget_query_embedding", (QUERY,), "async"),
        ("_aget_text_embedding", (TEXT,), "async"),
        ("_aget_text_embeddings", ([TEXT, QUERY, "third"],), "async"),
    ],
)
async def test_each_hook_is_one_request_on_its_own_core_client(
    embed: AimlBgeEmbedding, local_server: Any, hook: str, args: tuple[Any, ...], path: str
) -> None:
    # Every hook is overridden here, none falls back to BaseEmbedding's defaults.
    assert hook in AimlBgeEmbedding.__dict__
    result = getattr(embed, hook)(*args)
    if inspect.isawaitable(result):
        result = await result
    assert local_server.stats.requests == 1
    texts = args[0] if isinstance(args[0], list) else [args[0]]
    assert local_server.stats.items == len(texts)
    used = embed.client if path == "sync" else embed.async_client
    other = embed.async_client if path == "sync" else embed.client
    assert used.usage.requests == 1
    assert other.usage.requests == 0


def test_usage_adds_the_sync_and_async_paths(embed: AimlBgeEmbedding) -> None:
    import asyncio

    embed.get_text_embedding_batch(["one", "two", "three"])
    asyncio.run(embed.aget_text_embedding_batch(["four", "five"]))
    embed.get_query_embedding("six")
    usage = embed.usage
    assert usage.requests == 3
    assert usage.texts == 6
    sync_usage, async_usage = embed.client.usage, embed.async_client.usage
    assert usage.prompt_tokens == sync_usage.prompt_tokens + async_usage.prompt_tokens > 0
    assert usage.credits == sync_usage.credits + async_usage.credits > 0
    assert embed.reset_usage().requests == 3
    assert embed.usage.requests == 0


def test_empty_input_and_blank_text(embed: AimlBgeEmbedding, local_server: Any) -> None:
    assert embed.get_text_embedding_batch([]) == []
    with pytest.raises(InvalidInputError, match="index 1"):
        embed.get_text_embedding_batch(["fine", "   "])
    assert local_server.stats.requests == 0


def test_no_retry_layer_of_its_own(make_server: Callable[..., Any], make_embed: Any) -> None:
    server = make_server(faults=FaultConfig(script=["503", "503", "503", "503"]))
    embed = make_embed(server, max_retries=2)
    embed.client.retry_policy.sleep = lambda seconds: None  # the core's public seam
    with pytest.raises(Exception, match="gave up after 2 retries"):
        embed.get_text_embedding("hello")
    # One attempt plus the core's two retries: nothing multiplies them.
    assert server.stats.requests == 3


def test_a_wrong_key_is_refused_once(local_server: Any) -> None:
    embed = AimlBgeEmbedding(base_url=local_server.base_url, api_key="wrong-key")
    with pytest.raises(AuthenticationError) as info:
        embed.get_query_embedding("hello")
    assert "wrong-key" not in str(info.value)
    assert local_server.stats.requests == 1


# -- copies, pickling and lifecycle -------------------------------------------------------


def test_copies_start_with_their_own_clients(embed: AimlBgeEmbedding, local_server: Any) -> None:
    embed.get_text_embedding("hello")
    for clone in (copy.copy(embed), copy.deepcopy(embed), embed.model_copy()):
        assert clone.usage.requests == 0
        assert clone.client is not embed.client
        assert_vector_of(clone.get_text_embedding("hello"), "hello")
    assert embed.usage.requests == 1
    smaller = embed.model_copy(update={"batch_size": 1})
    smaller.get_text_embedding_batch(["a", "b", "c"])
    assert smaller.client.batch_size == 1
    assert smaller.usage.requests == 3


def test_pickle_round_trip_keeps_the_key(server_env: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    embed = AimlBgeEmbedding(batch_size=5, query_instruction=None)
    embed.get_text_embedding("warm up")
    data = pickle.dumps(embed)
    clone = pickle.loads(data)
    assert (clone.batch_size, clone.query_instruction, clone.model) == (5, None, embed.model)
    assert clone.usage.requests == 0
    assert_vector_of(clone.get_query_embedding(QUERY), QUERY)
    # The original lost nothing to pickling.
    assert embed.api_key is not None
    assert_vector_of(embed.get_text_embedding("after"), "after")

    # The key this process already knows is found again without the environment.
    monkeypatch.delenv("AIMLAPI_API_KEY")
    assert_vector_of(pickle.loads(data).get_text_embedding("hello"), "hello")


def test_serialised_settings_round_trip(embed: AimlBgeEmbedding) -> None:
    data = embed.to_dict()
    clone = AimlBgeEmbedding.from_dict(data, api_key="k")
    assert clone.to_dict() == data
    disabled = AimlBgeEmbedding(api_key="k", query_instruction=None)
    assert AimlBgeEmbedding.from_json(disabled.to_json(), api_key="k").query_instruction is None


async def test_close_and_aclose(embed: AimlBgeEmbedding) -> None:
    embed.get_text_embedding("a")
    await embed.aget_text_embedding("b")
    await embed.aclose()  # closes this loop's pool and the sync client
    assert embed.client.is_closed and embed.async_client.is_closed


def test_a_core_rate_limiter_paces_requests_and_is_shared(
    local_server: Any, make_embed: Callable[..., Any]
) -> None:
    limiter = RateLimiter(requests_per_minute=60_000)
    first = make_embed(local_server, rate_limiter=limiter)
    second = make_embed(local_server, rate_limiter=limiter)
    # LlamaIndex's own field stays empty (it would call acquire() on whatever is in it).
    assert first.rate_limiter is None
    for embed in (first, second, copy.copy(first), copy.deepcopy(first)):
        assert embed.client.rate_limiter is limiter
        assert embed.async_client.rate_limiter is limiter
    assert len(first.get_text_embedding_batch(["a", "b"])) == 2
    assert "rate_limiter" not in first.to_dict()


def test_a_llama_index_rate_limiter_keeps_llama_index_meaning(
    local_server: Any, make_embed: Callable[..., Any]
) -> None:
    from llama_index.core.rate_limiter import TokenBucketRateLimiter

    class Counting(TokenBucketRateLimiter):
        calls: int = 0

        def acquire(self, num_tokens: int = 0) -> None:
            self.calls += 1
            super().acquire(num_tokens)

    limiter = Counting(requests_per_minute=60_000)
    embed = make_embed(local_server, rate_limiter=limiter, batch_size=2, embed_batch_size=4)
    embed.get_text_embedding_batch([f"t{i}" for i in range(8)])
    assert embed.rate_limiter is limiter
    assert embed.client.rate_limiter is None
    assert limiter.calls == 2  # one per LlamaIndex chunk
    assert local_server.stats.requests == 4  # two requests per chunk


def test_the_peers_names_are_accepted() -> None:
    embed = AimlBgeEmbedding(api_key="k", api_base="http://127.0.0.1:9/v1", embed_batch_size=64)
    assert embed.base_url == embed.client.base_url == "http://127.0.0.1:9/v1"
    assert embed.embed_batch_size == 64  # LlamaIndex's own: texts per call, so at most per request
    with pytest.raises(ConfigurationError, match="api_base is another name for base_url"):
        AimlBgeEmbedding(api_key="k", api_base="http://127.0.0.1:9/v1", base_url="http://x/v1")
