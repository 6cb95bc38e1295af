"""The healthy path over real HTTP: exact vectors in order, every dialect, usage totals, the openai SDK."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import openai
import pytest
from core_helpers import (
    MODES,
    assert_close_to_embedder,
    async_client,
    run_embed,
    server_vectors,
    server_vectors_base64,
    sync_client,
    texts_of,
)
from server_dialects import DIALECTS

from aiml_bge_integrations import (
    BGE_QUERY_INSTRUCTION,
    DEFAULT_MODEL,
    ModelNotFoundError,
    NotFoundError,
)

LAURA = "Laura is a DJ."


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("encoding_format", [None, "float"])
def test_float_vectors_are_exactly_the_servers_in_order(
    mode: str, encoding_format: str | None, local_server: Any
) -> None:
    texts = texts_of(300)
    out = run_embed(mode, local_server, texts, batch_size=16, encoding_format=encoding_format)
    assert out.vectors == server_vectors(texts)
    assert all(type(x) is float for v in out.vectors for x in v)  # type: ignore[union-attr]
    assert_close_to_embedder(out.vectors, texts)  # type: ignore[arg-type]
    assert local_server.stats.requests == 19


@pytest.mark.parametrize("mode", MODES)
def test_base64_vectors_are_the_servers_float32_values(mode: str, local_server: Any) -> None:
    texts = texts_of(40)
    out = run_embed(mode, local_server, texts, batch_size=16, encoding_format="base64")
    assert out.vectors == server_vectors_base64(texts)
    assert all(type(x) is float for v in out.vectors for x in v)  # type: ignore[union-attr]
    assert_close_to_embedder(out.vectors, texts)  # type: ignore[arg-type]


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_every_server_dialect_gives_the_same_vectors(dialect: str, serve: Any) -> None:
    server = serve(dialect=dialect)
    texts = texts_of(70)
    # 40 per request is over TEI's default client batch size of 32: split, then learned.
    with sync_client(server, batch_size=40) as client:
        assert client.embed_documents(texts) == server_vectors(texts)
        assert (
            client.embed_query("which passage is about music?")
            == server_vectors([BGE_QUERY_INSTRUCTION + "which passage is about music?"])[0]
        )


def test_embed_query_instruction_setting(serve: Any) -> None:
    server = serve(served_models=[DEFAULT_MODEL, "acme/custom-embedder"])
    with sync_client(server) as client:
        assert client.query_instruction == BGE_QUERY_INSTRUCTION
        assert client.embed_query(LAURA) == server_vectors([BGE_QUERY_INSTRUCTION + LAURA])[0]
    with sync_client(server, query_instruction=None) as client:
        assert client.embed_query(LAURA) == server_vectors([LAURA])[0]
    with sync_client(server, query_instruction="query: ") as client:
        assert client.embed_query(LAURA) == server_vectors(["query: " + LAURA])[0]
    with sync_client(server, model="acme/custom-embedder") as client:
        assert client.query_instruction is None  # not a BGE model: no instruction by default
        assert client.embed_query(LAURA) == server_vectors([LAURA])[0]


async def test_async_embed_query_and_stream(local_server: Any) -> None:
    texts = texts_of(50)
    async with async_client(local_server, batch_size=8) as client:
        assert await client.embed_query(LAURA) == server_vectors([BGE_QUERY_INSTRUCTION + LAURA])[0]
        streamed = [v async for v in client.iter_embeddings(t for t in texts)]
    assert streamed == server_vectors(texts)


def test_sync_stream_reads_a_generator_lazily(local_server: Any) -> None:
    texts = texts_of(50)
    read: list[int] = []

    def source() -> Any:
        for i, t in enumerate(texts):
            read.append(i)
            yield t

    with sync_client(local_server, batch_size=5, max_concurrency=2) as client:
        stream = client.iter_embeddings(source())
        first = next(stream)
        assert len(read) < len(texts)  # not drained up front
        rest = list(stream)
    assert [first, *rest] == server_vectors(texts)
    assert read == list(range(50))


@pytest.mark.parametrize("mode", MODES)
def test_usage_totals_match_the_server(mode: str, local_server: Any) -> None:
    texts = [LAURA, *texts_of(99)]
    out = run_embed(mode, local_server, texts, batch_size=25)
    stats = local_server.stats.snapshot()
    usage = out.usage
    assert usage.requests == stats["requests"] == 4
    assert usage.texts == 100
    assert usage.prompt_tokens == usage.total_tokens == stats["tokens"]
    assert usage.credits == stats["credits"]  # meta.usage.credits_used, one or more per request
    assert usage.usd == pytest.approx(stats["credits"] * 0.0000005)
    assert usage.retries == 0 and usage.splits == 0


def test_laura_is_seven_prompt_tokens_and_reset_usage(local_server: Any) -> None:
    with sync_client(local_server) as client:
        client.embed_documents([LAURA])
        before = client.reset_usage()
        assert (before.requests, before.prompt_tokens, before.credits) == (1, 7, 1.0)
        assert client.usage.requests == 0


def test_retired_model_404_says_what_to_do(local_server: Any) -> None:
    with (
        sync_client(local_server, model="BAAI/bge-large-en-v1.5") as client,
        pytest.raises(ModelNotFoundError) as info,
    ):
        client.embed_documents(["x"])
    text = str(info.value)
    assert "deprecated" in text and "model=" in text and "base_url" in text
    assert info.value.request_id
    assert local_server.stats.requests == 1


def test_wrong_base_url_404_points_at_base_url(local_server: Any) -> None:
    root = local_server.base_url.removesuffix("/v1")
    with (
        sync_client(local_server, base_url=root + "/nowhere") as client,
        pytest.raises(NotFoundError) as info,
    ):
        client.embed_documents(["x"])
    assert not isinstance(info.value, ModelNotFoundError)
    assert "base_url" in str(info.value)


# -- the official openai SDK against the same server --------------------------------------------


def test_openai_sdk_against_the_server(local_server: Any) -> None:
    sdk = openai.OpenAI(api_key=local_server.api_key, base_url=local_server.base_url, max_retries=0)
    reply = sdk.embeddings.create(input=LAURA, model=DEFAULT_MODEL)  # base64 by default
    assert len(reply.data) == 1 and len(reply.data[0].embedding) == 768
    assert reply.usage.prompt_tokens == 7
    floats = sdk.embeddings.create(
        input=[LAURA, "a second text"], model=DEFAULT_MODEL, encoding_format="float"
    )
    with sync_client(local_server, query_instruction=None) as client:
        ours_float = client.embed_documents([LAURA, "a second text"])
    with sync_client(local_server, encoding_format="base64") as client:
        ours_b64 = client.embed_documents([LAURA])
    assert reply.data[0].embedding == ours_b64[0]
    assert [d.embedding for d in floats.data] == ours_float
    np.testing.assert_allclose(reply.data[0].embedding, ours_float[0], rtol=1e-6, atol=1e-7)


async def test_async_openai_sdk_against_the_server(local_server: Any) -> None:
    sdk = openai.AsyncOpenAI(
        api_key=local_server.api_key, base_url=local_server.base_url, max_retries=0
    )
    reply = await sdk.embeddings.create(
        input=[LAURA, "x"], model=DEFAULT_MODEL, encoding_format="float"
    )
    assert [d.index for d in reply.data] == [0, 1]
    assert [d.embedding for d in reply.data] == server_vectors([LAURA, "x"])
    await sdk.close()
    await asyncio.sleep(0)
