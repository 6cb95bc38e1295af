"""Requests in flight never exceed ``max_concurrency``, measured at the server.

LlamaIndex's ``aget_text_embedding_batch`` gathers every chunk at once unless
``num_workers > 1``; the core's async client bounds requests per client across concurrent
calls, so the server never sees more than ``max_concurrency`` at a time. The server holds every
request for ``latency`` seconds so that requests that could overlap do.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import pytest

from aiml_bge_integrations.llama_index import AimlBgeEmbedding

LATENCY = 0.05
TEXTS = [f"passage number {i} about topic {i % 7}" for i in range(48)]


@pytest.fixture
def slow_server(make_server: Callable[..., Any]) -> Any:
    return make_server(latency=LATENCY)


@pytest.mark.parametrize("num_workers", [None, 1, 4, 16])
@pytest.mark.parametrize("max_concurrency", [1, 3])
async def test_async_batch_path_stays_within_max_concurrency(
    slow_server: Any,
    make_embed: Callable[..., AimlBgeEmbedding],
    num_workers: int | None,
    max_concurrency: int,
) -> None:
    # 12 chunks of 4 texts, 2 requests each: 24 requests that LlamaIndex would like to send
    # all at once (num_workers unset) or 4 and 16 chunks at a time.
    embed = make_embed(
        slow_server,
        batch_size=2,
        embed_batch_size=4,
        max_concurrency=max_concurrency,
        num_workers=num_workers,
    )
    vectors = await embed.aget_text_embedding_batch(TEXTS)
    assert len(vectors) == len(TEXTS)
    stats = slow_server.stats.snapshot()
    assert stats["requests"] == 24
    assert stats["peak_in_flight"] <= max_concurrency
    assert embed.usage.requests == 24


async def test_concurrent_calls_share_one_bound(
    slow_server: Any, make_embed: Callable[..., AimlBgeEmbedding]
) -> None:
    embed = make_embed(slow_server, batch_size=2, embed_batch_size=4, max_concurrency=2)
    results = await asyncio.gather(
        embed.aget_text_embedding_batch(TEXTS[:24]),
        embed.aget_text_embedding_batch(TEXTS[24:]),
        *(embed.aget_query_embedding(f"question {i}") for i in range(6)),
    )
    assert [len(r) for r in results[:2]] == [24, 24]
    assert slow_server.stats.requests == 24 + 6
    assert slow_server.stats.peak_in_flight <= 2


def test_sync_batch_path_stays_within_max_concurrency(
    slow_server: Any, make_embed: Callable[..., AimlBgeEmbedding]
) -> None:
    embed = make_embed(slow_server, batch_size=2, embed_batch_size=8, max_concurrency=3)
    results: list[int] = []

    def work(part: list[str]) -> None:
        results.append(len(embed.get_text_embedding_batch(part)))

    threads = [threading.Thread(target=work, args=(TEXTS[i::3],)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [16, 16, 16]
    assert slow_server.stats.requests == 24
    assert slow_server.stats.peak_in_flight <= 3


async def test_the_server_does_see_overlap_when_it_is_allowed(
    slow_server: Any, make_embed: Callable[..., AimlBgeEmbedding]
) -> None:
    # The measurement can fail: with a larger bound the same workload overlaps at the server.
    # (With latency holding every request, 24 requests gathered at once overlap well beyond 1.)
    embed = make_embed(slow_server, batch_size=2, embed_batch_size=4, max_concurrency=8)
    await embed.aget_text_embedding_batch(TEXTS)
    assert 1 < slow_server.stats.peak_in_flight <= 8


async def test_control_llama_index_openai_embedding_fans_out_unbounded(
    make_server: Callable[..., Any],
) -> None:
    # The same 24-request workload through LlamaIndex's own OpenAIEmbedding (pointed at the
    # local server): every chunk is in flight at once. This is what the bound above prevents.
    openai_embedding = pytest.importorskip("llama_index.embeddings.openai")
    server = make_server(latency=LATENCY, served_models=["text-embedding-3-small"])
    peer = openai_embedding.OpenAIEmbedding(
        model_name="text-embedding-3-small",
        api_base=server.base_url,
        api_key=server.api_key,
        embed_batch_size=2,
        max_retries=0,
    )
    assert len(await peer.aget_text_embedding_batch(TEXTS)) == len(TEXTS)
    assert server.stats.requests == 24
    assert server.stats.peak_in_flight > 3
