"""Counters: in-process, over HTTP for other processes, peak in-flight under concurrency."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiml_bge_integrations._settings import DEFAULT_MODEL
from aiml_bge_integrations.server import FaultConfig, LocalServer

MODEL = DEFAULT_MODEL


def embed_body(inputs: Any, **extra: Any) -> dict[str, Any]:
    """A request body for the default model."""
    return {"model": MODEL, "input": inputs, **extra}


Factory = Callable[..., LocalServer]


def test_counts_requests_items_tokens_and_statuses(aiml_server: LocalServer) -> None:
    with aiml_server.client() as client:
        client.post("/embeddings", json=embed_body(["Laura is a DJ.", "hi"]))
        client.post("/embeddings", json=embed_body("Laura is a DJ."))
        client.post("/embeddings", json=embed_body([]))
        client.post("/embeddings", json={"model": "nope", "input": "x"})
    with aiml_server.client(key=None) as client:
        client.post("/embeddings", json=embed_body("x"))
    stats = aiml_server.stats.snapshot()
    assert stats == {
        "requests": 5,
        "items": 3,
        "tokens": 7 + 3 + 7,
        "credits": 2,
        "ok": 2,
        "by_status": {"200": 2, "400": 1, "404": 1, "401": 1},
        "faults": {},
        "rate_limited": 0,
        "in_flight": 0,
        "peak_in_flight": 1,
        "serving": 0,
        "peak_serving": 1,
    }
    assert aiml_server.stats.requests == 5
    assert aiml_server.stats.ok == 2
    assert aiml_server.stats.by_status == stats["by_status"]


def test_faulted_200s_are_not_ok(aiml_server: LocalServer) -> None:
    aiml_server.config.faults = FaultConfig(script=["shuffle", "malformed-json", None])
    try:
        with aiml_server.client() as client:
            for _ in range(3):
                assert client.post("/embeddings", json=embed_body(["a", "b"])).status_code == 200
    finally:
        aiml_server.config.faults = None
    stats = aiml_server.stats.snapshot()
    assert stats["by_status"] == {"200": 3}
    assert stats["ok"] == 1
    assert stats["faults"] == {"shuffle": 1, "malformed-json": 1}


async def test_peak_in_flight_under_concurrent_requests(server_factory: Factory) -> None:
    server = server_factory(latency=0.4)
    async with server.async_client() as client:
        first = asyncio.gather(
            *(client.post("/embeddings", json=embed_body("x")) for _ in range(5))
        )
        await asyncio.sleep(0.2)
        assert server.stats.in_flight == 5  # counted during the latency
        responses = await first
    assert all(r.status_code == 200 for r in responses)
    assert server.stats.peak_in_flight == 5
    assert server.stats.in_flight == 0


def test_reset_keeps_nothing_but_what_is_in_flight(aiml_server: LocalServer) -> None:
    with aiml_server.client() as client:
        client.post("/embeddings", json=embed_body("x"))
    aiml_server.reset_stats()
    stats = aiml_server.stats.snapshot()
    assert stats["requests"] == 0 and stats["by_status"] == {} and stats["peak_in_flight"] == 0


def test_stats_over_http(aiml_server: LocalServer) -> None:
    with aiml_server.client() as client:
        client.post("/embeddings", json=embed_body(["a", "b", "c"]))
        remote = client.get(aiml_server.root_url + "/_stats").json()
        assert remote == aiml_server.stats.snapshot()
        assert remote["items"] == 3
        reset = client.post(aiml_server.root_url + "/_stats/reset")
        assert reset.status_code == 200 and reset.json()["requests"] == 0
    with aiml_server.client(key=None) as anonymous:
        assert anonymous.get(aiml_server.root_url + "/_stats").status_code == 200
        assert anonymous.post(aiml_server.root_url + "/_stats/reset").status_code == 401
    assert aiml_server.stats.requests == 0


def test_app_state_exposes_config_and_stats(aiml_server: LocalServer) -> None:
    assert aiml_server.app.state.stats is aiml_server.stats
    assert aiml_server.app.state.config is aiml_server.config
