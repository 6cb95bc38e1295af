"""Concurrency: limits held, cancellation clean, event loops and threads handled, limiter shared."""

from __future__ import annotations

import asyncio
import gc
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from core_helpers import Sleeps, async_client, server_vectors, sync_client, texts_of

from aiml_bge_integrations import RateLimiter


async def _wait_for(predicate: Any, what: str) -> None:
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"timed out waiting for {what}")


async def _assert_full_concurrency(client: Any, serve: Any, max_concurrency: int) -> None:
    """The client still gets ``max_concurrency`` requests in flight at once, and promptly.

    A cancelled request that left its connection taken (encode/httpcore#1093) would shrink the
    client's pool, of 2 x ``max_concurrency`` connections, for good: a few such leaks and a call
    can no longer reach its concurrency, more and it waits for a connection until its timeout.
    (The peak may exceed the limit by a request the client gave up that reached the server late.)
    """
    # Long enough for every request of a round to be in flight, even on a loaded machine (at
    # 0.2 s, two test workers on two busy cores saw one of four start too late).
    server = serve(latency=0.5)
    texts = texts_of(4 * max_concurrency, "probe")  # batches of 2: two rounds of requests
    assert await client.embed_documents(texts) == server_vectors(texts)
    assert server.stats.peak_in_flight >= max_concurrency


# -- max_concurrency --------------------------------------------------------------------------


def test_sync_max_concurrency_is_the_peak_in_flight(serve: Any) -> None:
    server = serve(latency=0.05)
    texts = texts_of(48)
    with sync_client(server, batch_size=2, max_concurrency=3) as client:
        assert client.embed_documents(texts) == server_vectors(texts)
    assert server.stats.requests == 24
    assert server.stats.peak_in_flight == 3


async def test_async_max_concurrency_holds_across_concurrent_calls(serve: Any) -> None:
    server = serve(latency=0.05)
    first, second = texts_of(30, "first"), texts_of(30, "second")
    async with async_client(server, batch_size=2, max_concurrency=3) as client:
        a, b = await asyncio.gather(client.embed_documents(first), client.embed_documents(second))
    assert (a, b) == (server_vectors(first), server_vectors(second))
    assert server.stats.requests == 30
    assert server.stats.peak_in_flight == 3


def test_sync_max_concurrency_holds_across_threads(serve: Any) -> None:
    server = serve(latency=0.03)
    with (
        sync_client(server, batch_size=2, max_concurrency=2) as client,
        ThreadPoolExecutor(4) as pool,
    ):
        results = list(pool.map(client.embed_documents, [texts_of(10, f"t{k}") for k in range(4)]))
    assert results == [server_vectors(texts_of(10, f"t{k}")) for k in range(4)]
    assert server.stats.peak_in_flight == 2


# -- threads ----------------------------------------------------------------------------------


def test_one_sync_client_from_eight_threads(serve: Any) -> None:
    server = serve(latency=0.01)
    inputs = [texts_of(25, f"thread{k}") for k in range(8)]
    with (
        sync_client(server, batch_size=4, max_concurrency=4) as client,
        ThreadPoolExecutor(8) as pool,
    ):
        results = list(pool.map(client.embed_documents, inputs))
        queries = list(pool.map(client.embed_query, [f"question {k}" for k in range(8)]))
        usage = client.usage
    for texts, got in zip(inputs, results, strict=True):
        assert got == server_vectors(texts)
    instruction = client.query_instruction or ""
    assert queries == server_vectors(f"{instruction}question {k}" for k in range(8))
    assert usage.texts == 8 * 25 + 8
    assert usage.requests == server.stats.requests == 8 * 7 + 8


# -- async cancellation and event loops -------------------------------------------------------


async def test_cancelling_mid_way_leaves_nothing_running_and_the_client_usable(serve: Any) -> None:
    server = serve(latency=0.2)
    texts = texts_of(60)
    # A short timeout: a pool left without free connections fails the probe at once.
    async with async_client(server, batch_size=2, max_concurrency=4, timeout=5) as client:
        for _ in range(3):  # three rounds of 4 cancelled requests: more than the pool of 8
            server.stats.reset()
            task = asyncio.create_task(client.embed_documents(texts))
            await _wait_for(lambda: server.stats.in_flight == 4, "4 requests in flight")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert asyncio.all_tasks() == {asyncio.current_task()}, asyncio.all_tasks()
            assert server.stats.requests < 30  # it was stopped mid-way
            await _wait_for(lambda: server.stats.in_flight == 0, "the server done with them")
        await _assert_full_concurrency(client, serve, 4)
        serve(latency=0.0)
        assert await client.embed_documents(texts[:10]) == server_vectors(texts[:10])
        assert asyncio.all_tasks() == {asyncio.current_task()}, asyncio.all_tasks()


async def test_a_failing_progress_callback_leaves_nothing_running_however_often(
    serve: Any,
) -> None:
    # Each failure cancels the call's requests in flight. httpcore's pool can lose a
    # connection slot for good when a task is cancelled while a reply is being closed
    # (encode/httpcore#1093); before the client ran each request in a task of its own, this
    # loop left a slot taken within a few rounds.
    server = serve(latency=0.05)
    texts = texts_of(40)

    def progress(done: int) -> None:
        raise RuntimeError("the progress bar broke")

    async with async_client(server, batch_size=2, max_concurrency=4, timeout=5) as client:
        for _ in range(30):
            with pytest.raises(RuntimeError, match="progress bar"):
                await client.embed_documents(texts, progress=progress)
            assert asyncio.all_tasks() == {asyncio.current_task()}, asyncio.all_tasks()
        await _assert_full_concurrency(client, serve, 4)
        assert await client.embed_documents(texts) == server_vectors(texts)


async def test_closing_a_stream_early_cancels_its_batches(serve: Any) -> None:
    server = serve(latency=0.05)
    async with async_client(server, batch_size=2, max_concurrency=2, timeout=5) as client:
        for _ in range(3):  # each closing abandons up to 2 requests: more than the pool of 4
            server.stats.reset()
            stream = client.iter_embeddings(texts_of(100))
            got = [await stream.__anext__() for _ in range(3)]
            await stream.aclose()  # type: ignore[attr-defined]
            assert got == server_vectors(texts_of(100)[:3])
            assert asyncio.all_tasks() == {asyncio.current_task()}, asyncio.all_tasks()
            assert server.stats.requests < 50
        await _assert_full_concurrency(client, serve, 2)


def test_async_client_from_successive_event_loops(serve: Any) -> None:
    server = serve()
    client = async_client(server, batch_size=3, max_concurrency=2)
    # Earlier tests' garbage is collected first: a client another test dropped unclosed (whose
    # sockets sit in a reference cycle) warns when the collector frees it, and the check below
    # counts only what this test's loops leave behind.
    gc.collect()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for k in range(3):
            texts = texts_of(7, f"loop{k}")
            assert asyncio.run(client.embed_documents(texts)) == server_vectors(texts)
            assert (
                asyncio.run(client.embed_query("q"))
                == server_vectors([f"{client.query_instruction}q"])[0]
            )
        asyncio.run(client.aclose())
        gc.collect()
    # No "Event loop is closed", and no connection of a finished loop left open.
    leaked = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaked == []
    assert client.is_closed
    # Every loop's pool was closed with its loop (or by aclose): none is left open.
    assert [
        c for c in gc.get_objects() if isinstance(c, httpx.AsyncClient) and not c.is_closed
    ] == []


# -- the client-side limiter ------------------------------------------------------------------


class FrozenClock:
    """A clock that never moves: every reservation queues behind the previous one."""

    def __call__(self) -> float:
        return 100.0


def test_rate_limiter_is_shared_by_sync_and_async_clients(serve: Any, sleeps: Sleeps) -> None:
    server = serve()
    limiter = RateLimiter(requests_per_minute=60, clock=FrozenClock())
    with sync_client(server, batch_size=2, max_concurrency=1, rate_limiter=limiter) as sync:
        sync.embed_documents(texts_of(6, "sync"))  # 3 requests: waits 0, 1, 2

    async def run() -> None:
        async with async_client(
            server, batch_size=2, max_concurrency=1, rate_limiter=limiter
        ) as client:
            await client.embed_documents(texts_of(6, "async"))  # 3 more: waits 3, 4, 5

    asyncio.run(run())
    assert sleeps.delays == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert server.stats.requests == 6


def test_requests_per_minute_setting_paces_every_call_of_a_client(
    serve: Any, sleeps: Sleeps
) -> None:
    server = serve()
    with sync_client(server, batch_size=1, max_concurrency=1, requests_per_minute=120) as client:
        assert client.rate_limiter is not None
        client.embed_documents(texts_of(3))
        client.embed_query("and a query")
    # Evenly spaced at 0.5 s; nothing really slept, so request k waits about k * 0.5 s.
    assert len(sleeps.delays) == 3
    for k, delay in enumerate(sleeps.delays, start=1):
        assert k * 0.5 - 0.4 < delay <= k * 0.5
    assert server.stats.requests == 4
