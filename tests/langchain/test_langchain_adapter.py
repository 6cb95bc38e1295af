"""The LangChain adapter: settings, delegation to the core, query instruction, progress, usage."""

from __future__ import annotations

import ast
import asyncio
import inspect
import re
import textwrap
from collections.abc import Callable
from typing import Any

import pytest

from aiml_bge_integrations import (
    BGE_QUERY_INSTRUCTION,
    DEFAULT_BASE_URL,
    DEFAULT_MODEL,
    ConfigurationError,
    EmbeddingsClient,
    MissingAPIKeyError,
    RateLimiter,
)
from aiml_bge_integrations.langchain import AimlBgeEmbeddings
from aiml_bge_integrations.server import HashingEmbedder

Factory = Callable[..., AimlBgeEmbeddings]
KEY = "settings-test-key"


def approx(vector: list[float]) -> Any:
    return pytest.approx(vector, abs=1e-6)


# -- construction and settings ------------------------------------------------------------


@pytest.mark.parametrize("name", ["bogus", "batchsize", "embed_batch_size"])
def test_unknown_argument_is_rejected_by_name(name: str) -> None:
    with pytest.raises(ConfigurationError, match=rf"^{name} is not a setting") as info:
        AimlBgeEmbeddings(api_key=KEY, **{name: 1})
    assert type(info.value) is ConfigurationError
    if name == "batchsize":
        assert "did you mean batch_size?" in str(info.value)


@pytest.mark.parametrize(
    ("settings", "names"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"max_concurrency": 0}, "max_concurrency"),
        ({"max_retries": -1}, "max_retries"),
        ({"timeout": -1.0}, "timeout"),
        ({"deadline": 0.0}, "deadline"),
        ({"requests_per_minute": -5.0}, "requests_per_minute"),
        ({"base_url": "ftp://example.com/v1"}, "base_url"),
        ({"base_url": "http://example.com/v1"}, "plain http"),
    ],
)
def test_bad_setting_raises_the_core_configuration_error(
    settings: dict[str, Any], names: str
) -> None:
    with pytest.raises(ConfigurationError, match=names):
        AimlBgeEmbeddings(api_key=KEY, **settings)


def test_wrong_type_and_wrong_choice_are_the_core_configuration_error() -> None:
    for bad in ({"batch_size": "many"}, {"batch_size": "8"}, {"long_text": "chop"}):
        with pytest.raises(ConfigurationError, match=next(iter(bad))):
            AimlBgeEmbeddings(api_key=KEY, **bad)


def test_the_peers_names_are_accepted() -> None:
    emb = AimlBgeEmbeddings(api_key=KEY, chunk_size=16, request_timeout=5, show_progress_bar=False)
    assert (emb.batch_size, emb.timeout, emb.show_progress) == (16, 5.0, False)
    assert emb.client.batch_size == 16 and emb.client.timeout == 5.0
    with pytest.raises(ConfigurationError, match="chunk_size is another name for batch_size"):
        AimlBgeEmbeddings(api_key=KEY, chunk_size=16, batch_size=8)


def test_no_key_anywhere_raises_missing_api_key_error_at_construction() -> None:
    with pytest.raises(MissingAPIKeyError, match="AIMLAPI_API_KEY"):
        AimlBgeEmbeddings()
    with pytest.raises(MissingAPIKeyError):
        AimlBgeEmbeddings(api_key="   ")


def test_defaults_without_environment() -> None:
    emb = AimlBgeEmbeddings(api_key=KEY)
    assert emb.base_url == DEFAULT_BASE_URL
    assert emb.model == DEFAULT_MODEL
    assert emb.query_instruction == BGE_QUERY_INSTRUCTION


def test_environment_supplies_key_url_and_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIMLAPI_API_KEY", "key-from-env")
    monkeypatch.setenv("AIMLAPI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.setenv("AIMLAPI_EMBEDDING_MODEL", "text-embedding-3-small")
    emb = AimlBgeEmbeddings()
    assert emb.api_key is not None and emb.api_key.get_secret_value() == "key-from-env"
    assert (emb.base_url, emb.model) == ("http://127.0.0.1:9/v1", "text-embedding-3-small")
    assert emb.query_instruction is None  # not a BGE model: no default instruction
    explicit = AimlBgeEmbeddings(api_key="given", base_url="https://example.org/v1", model="m")
    assert explicit.api_key is not None and explicit.api_key.get_secret_value() == "given"
    assert (explicit.base_url, explicit.model) == ("https://example.org/v1", "m")


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, BGE_QUERY_INSTRUCTION),
        ({"model": "BAAI/bge-large-en-v1.5"}, BGE_QUERY_INSTRUCTION),
        ({"model": "text-embedding-3-small"}, None),
        ({"query_instruction": None}, None),
        ({"query_instruction": "query: "}, "query: "),
        ({"model": "text-embedding-3-small", "query_instruction": "q: "}, "q: "),
    ],
)
def test_query_instruction_default_follows_the_model(
    settings: dict[str, Any], expected: str | None
) -> None:
    emb = AimlBgeEmbeddings(api_key=KEY, **settings)
    assert emb.query_instruction == expected
    assert emb.client.query_instruction == expected
    assert emb.async_client.query_instruction == expected


def test_every_setting_reaches_both_core_clients() -> None:
    settings: dict[str, Any] = {
        "base_url": "https://example.org/v1",
        "model": "BAAI/bge-small-en-v1.5",
        "batch_size": 7,
        "max_concurrency": 3,
        "max_retries": 2,
        "timeout": 12.5,
        "deadline": 30.0,
        "query_instruction": "find: ",
        "default_headers": {"X-Team": "search"},
        "encoding_format": "base64",
        "long_text": "error",
        "allow_insecure_http": True,
        "requests_per_minute": 600.0,
        "tokens_per_minute": 100_000.0,
    }
    emb = AimlBgeEmbeddings(api_key=KEY, **settings)
    for core in (emb.client, emb.async_client):
        for name, value in settings.items():
            if name not in ("requests_per_minute", "tokens_per_minute"):
                assert getattr(core, name) == value, name
        assert core.rate_limiter is not None
        assert core.rate_limiter.requests_per_minute == 600.0
        assert core.rate_limiter.tokens_per_minute == 100_000.0
    # One limiter for both clients: sync and async calls share the pace.
    assert emb.client.rate_limiter is emb.async_client.rate_limiter


def test_json_schema_lists_the_settings_but_not_injected_objects() -> None:
    properties = AimlBgeEmbeddings.model_json_schema()["properties"]
    assert {"api_key", "base_url", "model", "batch_size", "query_instruction"} <= set(properties)
    assert not {"http_client", "http_async_client", "rate_limiter"} & set(properties)
    assert properties["api_key"]["anyOf"][0]["writeOnly"] is True
    for name, field in AimlBgeEmbeddings.model_fields.items():
        assert field.description, f"{name} has no one-line docstring"


def test_one_client_of_each_kind_built_once() -> None:
    emb = AimlBgeEmbeddings(api_key=KEY)
    assert emb.client is emb.client
    assert emb.async_client is emb.async_client
    assert isinstance(emb.client, EmbeddingsClient)
    assert emb.client.rate_limiter is None  # no pace asked for


def test_a_given_rate_limiter_is_shared() -> None:
    limiter = RateLimiter(requests_per_minute=60)
    emb = AimlBgeEmbeddings(api_key=KEY, rate_limiter=limiter)
    assert emb.client.rate_limiter is limiter
    assert emb.async_client.rate_limiter is limiter


def test_model_copy_with_changes_builds_new_clients() -> None:
    emb = AimlBgeEmbeddings(api_key=KEY, batch_size=16)
    assert emb.client.batch_size == 16
    changed = emb.model_copy(update={"batch_size": 4})
    assert changed.client.batch_size == 4
    assert changed.async_client.batch_size == 4
    assert emb.client.batch_size == 16


def test_show_progress_false_by_default_and_http_clients_injectable(local_server: Any) -> None:
    import httpx

    with httpx.Client() as sync_http:
        emb = AimlBgeEmbeddings(
            api_key=local_server.api_key, base_url=local_server.base_url, http_client=sync_http
        )
        assert emb.show_progress is False
        assert len(emb.embed_query("injected transport")) == 768
        emb.close()
        assert not sync_http.is_closed  # the caller's client stays the caller's to close


# -- behaviour against the local server ---------------------------------------------------


def test_query_instruction_goes_on_queries_only(
    make_embeddings: Factory, local_server: Any
) -> None:
    emb = make_embeddings()
    hashing = HashingEmbedder()
    query, passage = "Where is the coral reef?", "The reef lies off Australia."

    q = emb.embed_query(query)
    (d,) = emb.embed_documents([passage])

    assert q == approx(hashing.embed_one(BGE_QUERY_INSTRUCTION + query))
    assert q != approx(hashing.embed_one(query))
    assert d == approx(hashing.embed_one(passage))
    assert d != approx(hashing.embed_one(BGE_QUERY_INSTRUCTION + passage))
    with EmbeddingsClient(api_key=local_server.api_key, base_url=local_server.base_url) as core:
        assert q == approx(core.embed_query(query))
        assert [d] == [approx(v) for v in core.embed_documents([passage])]


async def test_async_query_instruction_goes_on_queries_only(make_embeddings: Factory) -> None:
    emb = make_embeddings()
    hashing = HashingEmbedder()
    q = await emb.aembed_query("espresso")
    (d,) = await emb.aembed_documents(["espresso"])
    assert q == approx(hashing.embed_one(BGE_QUERY_INSTRUCTION + "espresso"))
    assert d == approx(hashing.embed_one("espresso"))


def test_query_instruction_none_sends_the_query_as_is(make_embeddings: Factory) -> None:
    emb = make_embeddings(query_instruction=None)
    assert emb.embed_query("espresso") == approx(HashingEmbedder().embed_one("espresso"))


def test_documents_come_back_in_order_in_batches(
    make_embeddings: Factory, local_server: Any
) -> None:
    emb = make_embeddings(batch_size=3)
    texts = [f"passage number {i} about topic {i % 4}" for i in range(10)]
    vectors = emb.embed_documents(texts)
    hashing = HashingEmbedder()
    assert vectors == [approx(hashing.embed_one(t)) for t in texts]
    assert emb.usage.requests == 4  # ceil(10 / 3): the core's batching, not LangChain's
    assert emb.embed_documents([]) == []


async def test_async_methods_are_native_not_threads(
    make_embeddings: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    import langchain_core.embeddings.embeddings as lc_embeddings

    def no_threads(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the async path ran the sync one in a thread")

    monkeypatch.setattr(lc_embeddings, "run_in_executor", no_threads)
    emb = make_embeddings(batch_size=2)
    vectors = await emb.aembed_documents(["a cat", "a dog", "a bird"])
    query = await emb.aembed_query("which animal?")
    assert len(vectors) == 3 and len(query) == 768
    # Everything went through the async client: the sync one, built now, has sent nothing.
    assert emb.usage.requests == 3 == emb.async_client.usage.requests
    assert emb.client.usage.requests == 0


async def test_concurrent_async_calls_share_one_client(make_embeddings: Factory) -> None:
    emb = make_embeddings(max_concurrency=2)
    results = await asyncio.gather(*(emb.aembed_query(f"query {i}") for i in range(8)))
    assert len({tuple(r) for r in results}) == 8
    assert emb.usage.requests == 8


def test_usage_adds_the_sync_and_async_clients(make_embeddings: Factory) -> None:
    emb = make_embeddings(batch_size=2)
    emb.embed_documents(["one", "two", "three"])
    asyncio.run(emb.aembed_query("four"))
    sync_usage = emb.client.usage
    async_usage = emb.async_client.usage
    assert (sync_usage.requests, async_usage.requests) == (2, 1)
    total = emb.usage
    assert (total.requests, total.texts) == (3, 4)
    assert total.prompt_tokens == sync_usage.prompt_tokens + async_usage.prompt_tokens > 0
    assert emb.reset_usage().requests == 3
    assert emb.usage.requests == 0


def test_server_errors_surface_as_the_core_errors(make_server: Any) -> None:
    from aiml_bge_integrations import AuthenticationError

    server = make_server()
    emb = AimlBgeEmbeddings(api_key="not-the-right-key", base_url=server.base_url, max_retries=0)
    with pytest.raises(AuthenticationError):
        emb.embed_query("hello")


# -- progress bar -------------------------------------------------------------------------


class _RecordingBars:
    """Stands in for ``tqdm.auto.tqdm`` and records each bar's position after every update."""

    def __init__(self) -> None:
        import tqdm.auto

        self.positions: list[list[int]] = []
        self.totals: list[int | None] = []
        recorder = self

        class Bar(tqdm.auto.tqdm):  # type: ignore[misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                recorder.totals.append(self.total)
                recorder.positions.append([])
                self._mine = recorder.positions[-1]

            def update(self, n: float | None = 1) -> bool | None:
                shown: bool | None = super().update(n)
                self._mine.append(self.n)
                return shown

        self.bar = Bar


@pytest.fixture
def bars(monkeypatch: pytest.MonkeyPatch) -> _RecordingBars:
    import tqdm.auto

    recording = _RecordingBars()
    monkeypatch.setattr(tqdm.auto, "tqdm", recording.bar)
    return recording


def test_progress_bar_advances_per_batch(
    make_embeddings: Factory, bars: _RecordingBars, capsys: pytest.CaptureFixture[str]
) -> None:
    emb = make_embeddings(batch_size=2, max_concurrency=1, show_progress=True)
    vectors = emb.embed_documents([f"text {i}" for i in range(5)])
    assert len(vectors) == 5
    assert bars.totals == [5]
    assert bars.positions == [[2, 4, 5]]
    assert "5/5" in capsys.readouterr().err


async def test_async_progress_bar_advances_per_batch(
    make_embeddings: Factory, bars: _RecordingBars
) -> None:
    emb = make_embeddings(batch_size=3, show_progress=True)
    await emb.aembed_documents([f"text {i}" for i in range(7)])
    assert bars.totals == [7]
    assert bars.positions == [[3, 6, 7]]


def test_show_progress_without_tqdm_fails_at_construction(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "tqdm.auto", None)  # makes "import tqdm.auto" fail
    with pytest.raises(ImportError, match="pip install tqdm"):
        AimlBgeEmbeddings(api_key=KEY, show_progress=True)
    assert AimlBgeEmbeddings(api_key=KEY).show_progress is False


def test_no_progress_bar_unless_asked(make_embeddings: Factory, bars: _RecordingBars) -> None:
    make_embeddings(batch_size=2).embed_documents(["a", "b", "c"])
    assert bars.positions == []


# -- lifecycle ----------------------------------------------------------------------------


def test_context_manager_closes_the_sync_pool(local_server: Any) -> None:
    with AimlBgeEmbeddings(api_key=local_server.api_key, base_url=local_server.base_url) as emb:
        emb.embed_query("hello")
        assert not emb.client.is_closed
    assert emb.client.is_closed


async def test_async_context_manager_closes_both(local_server: Any) -> None:
    emb = AimlBgeEmbeddings(api_key=local_server.api_key, base_url=local_server.base_url)
    async with emb:
        await emb.aembed_query("hello")
        emb.embed_query("hello")
        assert not emb.async_client.is_closed and not emb.client.is_closed
    assert emb.async_client.is_closed
    assert emb.client.is_closed


# -- the class docstring's examples run ------------------------------------------------


def _docstring_sections() -> dict[str, list[str]]:
    doc = inspect.getdoc(AimlBgeEmbeddings) or ""
    sections: dict[str, list[str]] = {}
    current = ""
    for header, body in re.findall(r"^(\S[^\n]*):\n((?:(?:    .*)?\n)+)", doc + "\n", re.M):
        current = header
        sections[current] = re.findall(r"```python\n(.*?)```", textwrap.dedent(body), re.S)
    return sections


def test_docstring_has_the_langchain_sections() -> None:
    sections = _docstring_sections()
    for name in ("Instantiate", "Embed single text", "Embed multiple texts", "Async"):
        assert sections.get(name), f"docstring section {name!r} has no python example"
    doc = inspect.getdoc(AimlBgeEmbeddings) or ""
    for name in ("Setup:", "Key init args — embedding params:", "Key init args — client params:"):
        assert name in doc


async def test_docstring_examples_run_and_print_what_they_show(
    server_env: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    namespace: dict[str, Any] = {}
    ran = []
    for name, blocks in _docstring_sections().items():
        if not blocks:
            continue
        code, expected = blocks[0], (blocks[1] if len(blocks) > 1 else "")
        compiled = compile(
            code, f"<docstring: {name}>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
        )
        result = eval(compiled, namespace)
        if inspect.iscoroutine(result):
            await result
        assert capsys.readouterr().out.strip() == expected.strip(), name
        ran.append(name)
    assert ran == [
        "Instantiate",
        "Embed single text",
        "Embed multiple texts",
        "Async",
        "Usage and cost",
    ]
    assert server_env.stats.requests == 4
    namespace["embeddings"].close()
