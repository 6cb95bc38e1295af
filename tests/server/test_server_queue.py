"""The one-worker queue mode: one inference at a time, the others wait in arrival order."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from aiml_bge_integrations._settings import DEFAULT_MODEL
from aiml_bge_integrations.server import LocalServer

Factory = Callable[..., LocalServer]


async def _burst(server: LocalServer, n: int) -> list[httpx.Response]:
    async with server.async_client(timeout=30) as client:
        return list(
            await asyncio.gather(
                *(
                    client.post("/embeddings", json={"model": DEFAULT_MODEL, "input": f"t {i}"})
                    for i in range(n)
                )
            )
        )


async def test_one_worker_serves_one_request_at_a_time_and_queues_the_rest(
    server_factory: Factory,
) -> None:
    server = server_factory(workers=1, latency=0.2)
    responses = await _burst(server, 6)
    assert [r.status_code for r in responses] == [200] * 6  # queued, not refused
    stats = server.stats.snapshot()
    assert stats["peak_serving"] == 1
    assert stats["peak_in_flight"] > 1  # the others waited in the queue
    assert stats["rate_limited"] == 0
    assert stats["serving"] == 0 and stats["in_flight"] == 0


async def test_without_a_queue_every_admitted_request_is_served_at_once(
    server_factory: Factory,
) -> None:
    server = server_factory(latency=0.3)
    await _burst(server, 4)
    assert server.stats["peak_serving"] == 4


async def test_two_workers_serve_two_at_a_time(server_factory: Factory) -> None:
    server = server_factory(workers=2, latency=0.05)
    responses = await _burst(server, 8)
    assert all(r.status_code == 200 for r in responses)
    assert server.stats["peak_serving"] == 2
