"""``embed_batch_size`` (LlamaIndex's chunks) against ``batch_size`` (the core's requests).

The rule: LlamaIndex hands the adapter chunks of ``embed_batch_size`` texts; the core sends each
chunk in requests of at most ``batch_size``. A request never carries more than either, and
never mixes two chunks. Request sizes are read off the wire with httpx event hooks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from llama_index.core.callbacks import CallbackManager, CBEventType, LlamaDebugHandler

from aiml_bge_integrations.llama_index import AimlBgeEmbedding

TEXTS = [f"text {i}" for i in range(25)]


def _inputs(request: httpx.Request) -> int:
    return len(json.loads(request.content)["input"])


class _Sizes:
    """httpx clients that note how many inputs each request carries."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def sync_client(self) -> httpx.Client:
        return httpx.Client(event_hooks={"request": [lambda r: self.sizes.append(_inputs(r))]})

    def async_client(self) -> httpx.AsyncClient:
        async def hook(request: httpx.Request) -> None:
            self.sizes.append(_inputs(request))

        return httpx.AsyncClient(event_hooks={"request": [hook]})


def test_default_embed_batch_size_fills_every_concurrency_slot() -> None:
    assert AimlBgeEmbedding(api_key="k").embed_batch_size == 2048  # 4 * 128 * 4
    assert AimlBgeEmbedding(api_key="k", batch_size=8, max_concurrency=3).embed_batch_size == 96
    # LlamaIndex caps its own setting at 2048.
    assert AimlBgeEmbedding(api_key="k", batch_size=1000).embed_batch_size == 2048
    assert AimlBgeEmbedding(api_key="k", batch_size=8, embed_batch_size=5).embed_batch_size == 5
    with pytest.raises(ValueError, match="embed_batch_size"):
        AimlBgeEmbedding(api_key="k", embed_batch_size=4096)


@pytest.mark.parametrize(
    ("embed_batch_size", "batch_size", "expected"),
    [
        # Chunks of 10 (10, 10, 5), each sent in requests of at most 4.
        (10, 4, [4, 4, 2, 4, 4, 2, 4, 1]),
        # Chunks of 4: each chunk is one request; batch_size 10 is never reached.
        (4, 10, [4, 4, 4, 4, 4, 4, 1]),
        # Equal: one request per chunk.
        (8, 8, [8, 8, 8, 1]),
    ],
)
def test_sync_requests_carry_the_smaller_of_the_two(
    local_server: Any,
    make_embed: Callable[..., AimlBgeEmbedding],
    embed_batch_size: int,
    batch_size: int,
    expected: list[int],
) -> None:
    wire = _Sizes()
    embed = make_embed(
        local_server,
        embed_batch_size=embed_batch_size,
        batch_size=batch_size,
        max_concurrency=1,  # one request at a time, so the wire order is the plan's order
        http_client=wire.sync_client(),
    )
    debug = LlamaDebugHandler()
    embed.callback_manager = CallbackManager([debug])
    vectors = embed.get_text_embedding_batch(TEXTS)
    assert len(vectors) == len(TEXTS)
    assert wire.sizes == expected
    assert local_server.stats.requests == len(expected)
    assert local_server.stats.items == len(TEXTS)
    # One LlamaIndex callback event per chunk, whatever the number of requests behind it.
    chunks = -(-len(TEXTS) // embed_batch_size)
    assert len(debug.get_event_pairs(CBEventType.EMBEDDING)) == chunks


@pytest.mark.parametrize(
    ("embed_batch_size", "batch_size", "expected"),
    [(10, 4, [4, 4, 2, 4, 4, 2, 4, 1]), (4, 10, [4, 4, 4, 4, 4, 4, 1])],
)
async def test_async_requests_carry_the_smaller_of_the_two(
    local_server: Any,
    make_embed: Callable[..., AimlBgeEmbedding],
    embed_batch_size: int,
    batch_size: int,
    expected: list[int],
) -> None:
    wire = _Sizes()
    embed = make_embed(
        local_server,
        embed_batch_size=embed_batch_size,
        batch_size=batch_size,
        http_async_client=wire.async_client(),
    )
    vectors = await embed.aget_text_embedding_batch(TEXTS)
    assert len(vectors) == len(TEXTS)
    # Chunks are gathered at once, so only the multiset of sizes is fixed.
    assert sorted(wire.sizes) == sorted(expected)
    assert local_server.stats.requests == len(expected)


def test_sync_path_overlaps_requests_within_a_chunk(
    make_server: Callable[..., Any], make_embed: Callable[..., AimlBgeEmbedding]
) -> None:
    # LlamaIndex's sync path awaits one chunk before it sends the next: chunks of one request
    # each run one at a time. The default embed_batch_size gives each chunk enough requests
    # to run side by side, up to max_concurrency.
    server = make_server(latency=0.05)
    small_chunks = make_embed(server, batch_size=2, max_concurrency=4, embed_batch_size=2)
    vectors = small_chunks.get_text_embedding_batch(TEXTS[:16])
    assert vectors == small_chunks.client.embed_documents(TEXTS[:16])
    assert server.stats.requests == 8 + 8
    assert server.stats.peak_in_flight <= 4

    server.reset_stats()
    default = make_embed(server, batch_size=2, max_concurrency=4)
    assert default.embed_batch_size == 32
    default.get_text_embedding_batch(TEXTS[:16])
    assert server.stats.requests == 8
    assert 1 < server.stats.peak_in_flight <= 4


def test_llama_index_rate_limiter_keeps_its_chunk_by_chunk_path(
    make_server: Callable[..., Any], make_embed: Callable[..., AimlBgeEmbedding]
) -> None:
    # A LlamaIndex rate limiter is acquired once per chunk, before the chunk is sent: that is
    # LlamaIndex's own path, one chunk at a time.
    from llama_index.core.rate_limiter import TokenBucketRateLimiter

    server = make_server(latency=0.05)
    limiter = TokenBucketRateLimiter(requests_per_minute=6000)
    embed = make_embed(
        server, batch_size=2, max_concurrency=4, embed_batch_size=2, rate_limiter=limiter
    )
    assert len(embed.get_text_embedding_batch(TEXTS[:8])) == 8
    assert server.stats.requests == 4
    assert server.stats.peak_in_flight == 1
