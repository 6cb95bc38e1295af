"""The server's own limits: latency, concurrency, requests per minute, body, items, characters, tokens."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import httpx

from aiml_bge_integrations._settings import DEFAULT_MODEL
from aiml_bge_integrations.server import LocalServer

MODEL = DEFAULT_MODEL


def embed_body(inputs: Any, **extra: Any) -> dict[str, Any]:
    """A request body for the default model."""
    return {"model": MODEL, "input": inputs, **extra}


Factory = Callable[..., LocalServer]


async def _burst(server: LocalServer, n: int) -> list[httpx.Response]:
    async with server.async_client() as client:
        return list(
            await asyncio.gather(
                *(client.post("/embeddings", json=embed_body(f"text {i}")) for i in range(n))
            )
        )


async def test_latency_is_per_request_and_requests_overlap(server_factory: Factory) -> None:
    server = server_factory(latency=0.5)
    started = time.perf_counter()
    responses = await _burst(server, 6)
    elapsed = time.perf_counter() - started
    assert [r.status_code for r in responses] == [200] * 6
    assert elapsed >= 0.5  # each waited the latency
    assert server.stats["peak_in_flight"] == 6  # all six waits overlapped
    assert server.stats["in_flight"] == 0


async def test_over_the_concurrency_limit_is_429_at_once_without_retry_after(
    server_factory: Factory,
) -> None:
    server = server_factory(latency=1.0, max_concurrent_requests=3)
    async with server.async_client() as client:

        async def post(i: int) -> tuple[httpx.Response, int]:
            response = await client.post("/embeddings", json=embed_body(f"text {i}"))
            return response, server.stats["in_flight"]

        replies = await asyncio.gather(*(post(i) for i in range(8)))
    statuses = sorted(r.status_code for r, _ in replies)
    assert statuses == [200] * 3 + [429] * 5
    for r, in_flight in replies:
        if r.status_code != 429:
            continue
        assert r.json()["message"] == "Too Many Requests"
        assert r.json()["statusCode"] == 429
        assert "retry-after" not in r.headers
        # Refused at once: the three admitted requests were still waiting their latency.
        assert in_flight == 3
    stats = server.stats.snapshot()
    assert stats["peak_in_flight"] == 3
    assert stats["rate_limited"] == 5
    assert stats["by_status"] == {"200": 3, "429": 5}


async def test_retry_after_on_limit_is_opt_in(server_factory: Factory) -> None:
    server = server_factory(latency=0.3, max_concurrent_requests=1, retry_after_on_limit=2)
    responses = await _burst(server, 2)
    (limited,) = [r for r in responses if r.status_code == 429]
    assert limited.headers["retry-after"] == "2"


def test_requests_per_minute(server_factory: Factory) -> None:
    server = server_factory(requests_per_minute=3)
    with server.client() as client:
        statuses = [client.post("/embeddings", json=embed_body("x")).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]
    assert server.stats["rate_limited"] == 2
    server.config.requests_per_minute = 10  # settings are live
    with server.client() as client:
        assert client.post("/embeddings", json=embed_body("x")).status_code == 200


def test_max_body_bytes(server_factory: Factory) -> None:
    server = server_factory(max_body_bytes=200)
    with server.client() as client:
        small = client.post("/embeddings", json=embed_body("short"))
        big = client.post("/embeddings", json=embed_body("x" * 500))
    assert small.status_code == 200
    assert big.status_code == 413
    assert "200 bytes" in big.json()["message"]


def test_max_items_per_request(server_factory: Factory) -> None:
    server = server_factory(max_items_per_request=32)
    with server.client() as client:
        ok = client.post("/embeddings", json=embed_body(["t"] * 32))
        big = client.post("/embeddings", json=embed_body(["t"] * 40))
    assert ok.status_code == 200
    assert big.status_code == 413
    assert big.json()["message"] == "too many inputs: 40 > maximum allowed batch size 32"
    assert server.stats["items"] == 32


def test_max_chars_per_item_names_the_input(server_factory: Factory) -> None:
    server = server_factory(max_chars_per_item=8192)
    texts = ["ok", "fine", "also fine", "y" * 9000, "z" * 9500]
    with server.client() as client:
        response = client.post("/embeddings", json=embed_body(texts))
    assert response.status_code == 400
    assert response.json()["message"] == "input[3] has 9000 characters; at most 8192 are allowed"


def test_max_tokens_per_item_names_the_input(server_factory: Factory) -> None:
    server = server_factory(max_tokens_per_item=512)
    with server.client() as client:
        ok = client.post("/embeddings", json=embed_body(["word " * 510]))
        long = client.post("/embeddings", json=embed_body(["short", "word " * 600]))
    assert ok.status_code == 200
    assert long.status_code == 400
    assert long.json()["message"] == "input[1] has 602 tokens; at most 512 are allowed"


def test_limits_are_checked_before_the_body_is_embedded(server_factory: Factory) -> None:
    server = server_factory(max_items_per_request=2, max_chars_per_item=10)
    with server.client() as client:
        client.post("/embeddings", json=embed_body(["a", "b", "c"]))
        client.post("/embeddings", json=embed_body(["a" * 11]))
    stats = server.stats.snapshot()
    assert stats["requests"] == 2
    assert stats["items"] == 0 and stats["ok"] == 0
    assert stats["by_status"] == {"413": 1, "400": 1}
