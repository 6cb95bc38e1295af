"""What the package's discovery reads from the local server's imitations of TEI, vLLM and
infinity: the real servers' shapes on one side, the parser on the other, over real HTTP."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest
from selfhosted_support import SERVER_KEY

from aiml_bge_integrations._discovery import discover
from aiml_bge_integrations._settings import DEFAULT_MODEL


def _get(url: str) -> tuple[int, bytes] | None:
    headers = {"Authorization": f"Bearer {SERVER_KEY}"}
    try:
        reply = httpx.get(url, headers=headers, timeout=5)
    except httpx.HTTPError:  # pragma: no cover - the server is local
        return None
    return reply.status_code, reply.content


def test_tei_publishes_its_limits(serve: Any) -> None:
    server = serve("tei", max_items_per_request=7, max_tokens_per_item=256, max_batch_tokens=900)
    limits = discover(server.base_url, _get, DEFAULT_MODEL)
    assert limits.server == "tei"
    assert limits.models == (DEFAULT_MODEL,)
    assert (limits.max_batch_size, limits.max_input_tokens, limits.max_batch_tokens) == (
        7,
        256,
        900,
    )


def test_vllm_and_infinity_publish_their_model_cards(serve: Any) -> None:
    vllm = discover(serve("vllm").base_url, _get, DEFAULT_MODEL)
    assert (vllm.server, vllm.models, vllm.max_input_tokens) == ("vllm", (DEFAULT_MODEL,), 512)
    assert vllm.max_batch_size is None  # vLLM has no /info: nothing mistaken for TEI's
    infinity = discover(serve("infinity").base_url, _get, DEFAULT_MODEL)
    assert (infinity.server, infinity.engine_batch_size) == ("infinity", 32)


def test_the_ai_ml_dialect_publishes_no_tei_facts(serve: Any) -> None:
    limits = discover(serve("aiml").base_url, _get, DEFAULT_MODEL)
    assert limits.server is None and limits.max_batch_size is None
    assert limits.models == (DEFAULT_MODEL,)


# -- what the clients make of it ------------------------------------------------------------


def _corpus(n: int) -> list[str]:
    return [f"passage number {i} about topic {i % 7}" for i in range(n)]


def test_teis_published_batch_limit_holds_from_the_first_request(
    serve: Any, sync_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    server = serve("tei", max_items_per_request=7)
    client = sync_client(server)  # batch_size left at its default, 128
    with caplog.at_level(logging.DEBUG, logger="aiml_bge_integrations"):
        assert len(client.embed_documents(_corpus(100))) == 100
    assert server.stats["by_status"] == {"200": 15}  # ceil(100 / 7), none refused
    assert client.effective_batch_size == 7 and client.usage.splits == 0
    logged = caplog.text
    assert "max_batch_size=7" in logged and "/info" in logged
    assert "at most 7 inputs per request (batch_size 128)" in logged


def test_without_discovery_the_same_server_refuses_first(serve: Any, sync_client: Any) -> None:
    server = serve("tei", max_items_per_request=7)
    client = sync_client(server, discover_limits=False)
    assert len(client.embed_documents(_corpus(100))) == 100
    assert server.stats["by_status"].get("413", 0) >= 1


async def test_the_async_client_reads_the_published_limit_too(
    serve: Any, async_client: Any
) -> None:
    server = serve("tei", max_items_per_request=7)
    client = async_client(server, max_concurrency=4)
    assert len(await client.embed_documents(_corpus(100))) == 100
    assert server.stats["by_status"] == {"200": 15}
    assert client.effective_batch_size == 7


@pytest.mark.parametrize("streamed", [False, True])
def test_a_published_token_budget_packs_the_batches(
    serve: Any, sync_client: Any, streamed: bool
) -> None:
    # Each text is 8 words: 10 tokens with [CLS] and [SEP], counted exactly (BGE's vocabulary).
    server = serve("tei", max_batch_tokens=20)
    client = sync_client(server)
    texts = [f"word {i} " + "word " * 6 for i in range(6)]
    got = list(client.iter_embeddings(iter(texts))) if streamed else client.embed_documents(texts)
    assert len(got) == 6
    assert server.stats["by_status"] == {"200": 3}  # two texts, 20 tokens, per request
    assert client.usage.splits == 0


def test_without_discovery_a_token_budget_is_found_by_refusals(
    serve: Any, sync_client: Any
) -> None:
    server = serve("tei", max_batch_tokens=20)
    client = sync_client(server, discover_limits=False, max_concurrency=1)
    texts = [f"word {i} " + "word " * 6 for i in range(6)]
    assert len(client.embed_documents(texts)) == 6
    assert server.stats["by_status"].get("413", 0) >= 1


def test_a_model_without_a_shipped_tokenizer_is_packed_by_the_estimate(
    serve: Any, sync_client: Any
) -> None:
    # The estimate (UTF-8 bytes / 3 + 2) says 15 tokens for each 40-byte text, which holds 10:
    # two texts per request of 40 tokens, where three would fit.
    server = serve("tei", max_batch_tokens=40, served_models=["acme/house-embedder"])
    client = sync_client(server, model="acme/house-embedder")
    texts = [f"word {i} " + "word " * 6 for i in range(6)]
    assert len(client.embed_documents(texts)) == 6
    assert server.stats["by_status"] == {"200": 3}
