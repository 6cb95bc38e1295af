"""TEI's per-request input limit: the client learns it from the first refusal and keeps it.

TEI refuses a batch over ``--max-client-batch-size`` (32 by default) with 413 "batch size N >
maximum allowed batch size 32". The user configures nothing: the client splits the refused
batch, remembers the limit, and sends no oversized request again. TEI also publishes the
limit (``GET /info``), which the client reads before its first batch; the tests of the
refusal path turn that off (``discover_limits=False``), so that the refusal is what teaches
the client (test_selfhosted_discovery.py has the published path).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from aiml_bge_integrations._settings import DEFAULT_BATCH_SIZE
from aiml_bge_integrations.server import HashingEmbedder

EMBEDDER = HashingEmbedder()


def corpus(n: int) -> list[str]:
    return [f"passage number {i} about topic {i % 7} and item {i * 13 % 101}" for i in range(n)]


def assert_vectors(got: list[list[float]], texts: list[str]) -> None:
    np.testing.assert_array_equal(
        np.asarray(got, dtype=np.float32), EMBEDDER.embed(texts).astype(np.float32)
    )


def test_tei_default_limit_is_learned_once_and_kept(serve: Any, sync_client: Any) -> None:
    server = serve("tei")  # --max-client-batch-size 32, like TEI's default
    client = sync_client(server, discover_limits=False)  # batch_size left at its default
    assert client.effective_batch_size == DEFAULT_BATCH_SIZE > 32
    texts = corpus(100)

    assert_vectors(client.embed_documents(texts), texts)

    first = server.stats["by_status"]
    assert first == {"413": 1, "200": 4}  # one refusal, then 32 + 32 + 32 + 4
    assert client.effective_batch_size == 32
    assert client.usage.splits >= 1

    server.reset_stats()
    more = corpus(150)
    assert_vectors(client.embed_documents(more), more)
    assert server.stats["by_status"] == {"200": 5}  # ceil(150 / 32), no oversized request
    assert client.effective_batch_size == 32


def test_a_smaller_configured_limit_is_learned_too(serve: Any, sync_client: Any) -> None:
    server = serve("tei", max_items_per_request=5)
    client = sync_client(server, max_concurrency=1, discover_limits=False)
    texts = corpus(23)

    assert_vectors(client.embed_documents(texts), texts)
    assert client.effective_batch_size == 5
    assert server.stats["by_status"] == {"413": 1, "200": 5}

    server.reset_stats()
    assert_vectors(client.embed_documents(texts[:11]), texts[:11])
    assert server.stats["by_status"] == {"200": 3}


def test_a_limit_above_the_batch_size_is_never_hit(serve: Any, sync_client: Any) -> None:
    server = serve("tei", max_items_per_request=256)
    client = sync_client(server)
    texts = corpus(200)

    assert_vectors(client.embed_documents(texts), texts)
    assert server.stats["by_status"] == {"200": 2}
    assert client.effective_batch_size == DEFAULT_BATCH_SIZE


async def test_async_concurrent_batches_learn_the_limit(serve: Any, async_client: Any) -> None:
    server = serve("tei")
    client = async_client(server, max_concurrency=4, discover_limits=False)
    texts = corpus(300)  # three default batches, all in flight before the first refusal

    assert_vectors(await client.embed_documents(texts), texts)

    refused = server.stats["by_status"].get("413", 0)
    assert 1 <= refused <= 3
    assert client.effective_batch_size == 32

    server.reset_stats()
    assert_vectors(await client.embed_documents(texts), texts)
    assert server.stats["by_status"] == {"200": 10}  # ceil(300 / 32)


def test_streaming_respects_the_learned_limit(serve: Any, sync_client: Any) -> None:
    server = serve("tei", max_items_per_request=10)
    client = sync_client(server, discover_limits=False)
    texts = corpus(45)

    assert_vectors(list(client.iter_embeddings(iter(texts))), texts)
    assert server.stats["by_status"]["413"] >= 1
    assert client.effective_batch_size == 10

    server.reset_stats()
    assert_vectors(list(client.iter_embeddings(iter(texts))), texts)
    assert server.stats["by_status"] == {"200": 5}


@pytest.mark.parametrize("dialect", ["vllm", "ollama", "infinity"])
def test_servers_without_a_request_cap_take_the_whole_batch(
    dialect: str, serve: Any, sync_client: Any
) -> None:
    server = serve(dialect)
    client = sync_client(server)
    texts = corpus(DEFAULT_BATCH_SIZE)

    assert_vectors(client.embed_documents(texts), texts)
    assert server.stats["by_status"] == {"200": 1}


@pytest.mark.parametrize("dialect", ["aiml", "tei"])
def test_a_batch_over_the_servers_default_body_limit_is_split_to_fit(
    serve: Any, sync_client: Any, dialect: str
) -> None:
    # 300 passages of about 8 KB, sent whole (long_text="none"): one request of them is about
    # 2.4 MB, past the server's default 2,000,000-byte body limit (TEI's --payload-limit).
    server = serve(dialect, max_items_per_request=300)
    # What TEI publishes would pack these batches within its token budget: not read here.
    client = sync_client(
        server, batch_size=300, max_concurrency=1, long_text="none", discover_limits=False
    )
    texts = [f"{i} " + "lorem ipsum dolor sit amet " * 300 for i in range(300)]

    assert_vectors(client.embed_documents(texts), texts)
    by_status = server.stats["by_status"]
    assert by_status["413"] >= 1  # the whole batch was refused by size, then split
    assert by_status["200"] >= 2
