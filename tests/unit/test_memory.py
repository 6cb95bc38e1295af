"""100,000 texts: every vector comes back in order, and memory stays bounded.

Measured with tracemalloc, never with timings. The replies come from ``httpx.MockTransport``
so that only the client's own allocations are traced (the local server would run in this
process and be traced too). They are built before tracing starts, and the vectors are 4-d,
so the output is small enough to hold and the test quick.
"""

from __future__ import annotations

import gc
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from typing import TypeVar

import httpx
import orjson
import pytest

from aiml_bge_integrations import AsyncEmbeddingsClient, EmbeddingsClient

# One xdist worker runs every test here: the module-scoped replies are built once.
pytestmark = pytest.mark.xdist_group("memory")

N = 100_000
BATCH = 1000
T = TypeVar("T")


DIM = 4


def vector(i: int) -> list[float]:
    return [float(i)] + [1.0 / k for k in range(2, DIM + 1)]


# One vector held by the caller: the list and its float objects.
VECTOR_BYTES = sys.getsizeof(vector(0)) + DIM * sys.getsizeof(0.5)
OUTPUT_BYTES = N * VECTOR_BYTES


def all_texts() -> Iterator[str]:
    return (f"t{i}" for i in range(N))


@pytest.fixture(scope="module")
def replies() -> dict[str, bytes]:
    """Reply bodies by the first text of each batch, built once, outside any trace."""
    out: dict[str, bytes] = {}
    for start in range(0, N, BATCH):
        data = [
            {"object": "embedding", "index": k, "embedding": vector(start + k)}
            for k in range(BATCH)
        ]
        out[f"t{start}"] = orjson.dumps({"object": "list", "data": data, "model": "tiny"})
    return out


@pytest.fixture
def client(replies: dict[str, bytes]) -> Iterator[EmbeddingsClient]:
    def handler(request: httpx.Request) -> httpx.Response:
        texts = orjson.loads(request.content)["input"]
        return httpx.Response(200, content=replies[texts[0]])

    http = httpx.Client(transport=httpx.MockTransport(handler))
    with EmbeddingsClient(
        api_key="k",
        base_url="https://mock.test/v1",
        model="tiny",
        batch_size=BATCH,
        max_concurrency=4,
        adaptive_concurrency=False,  # a fixed number in flight: the peaks compare like for like
        http_client=http,
    ) as c:
        c.embed_documents([f"t{i}" for i in range(BATCH)])  # warm up: threads, pool, caches
        yield c


def traced(fn: Callable[[], T]) -> tuple[T, int, int]:
    """Run ``fn``; return its result, the memory it kept and its peak, both above the start.

    The peak would count garbage not yet collected; what is kept is measured after a
    collection.
    """
    gc.collect()
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
        gc.collect()
        current = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return result, current - start, peak - start


def test_100000_texts_in_order_with_peak_memory_close_to_the_output(
    client: EmbeddingsClient,
) -> None:
    inputs = list(all_texts())
    vectors, kept, peak = traced(lambda: client.embed_documents(inputs))
    assert len(vectors) == N
    assert all(v == vector(i) for i, v in enumerate(vectors))
    # What the call keeps is the output. At its peak it held little more: the batches in
    # flight and a copy of the input list's pointers, not a second copy of the vectors.
    # What the call keeps is the output (and its list of 100,000 pointers). At its peak it
    # held less than that again: the batches in flight, the input list's copy and garbage
    # awaiting the collector, never a second copy of the output.
    assert OUTPUT_BYTES < kept < 1.1 * OUTPUT_BYTES
    assert peak < 2 * kept


def test_100000_texts_streamed_from_a_generator_hold_only_the_batches_in_flight(
    client: EmbeddingsClient,
) -> None:
    def consume(n: int) -> int:
        count = 0
        for vector_ in client.iter_embeddings(f"t{i}" for i in range(n)):
            assert vector_[0] == float(count)
            count += 1
        return count

    count, kept, peak = traced(lambda: consume(N))
    assert count == N
    small_count, _, small_peak = traced(lambda: consume(N // 5))
    assert small_count == N // 5
    # At most 2 * max_concurrency batches of 1,000 are in flight, however long the input:
    # five times the texts, about the same peak (no finished response waits for the cycle
    # collector), and well below what holding the output would take. Growth with the input
    # would show as up to 5x; the margin covers where a peak lands among the batches in flight,
    # which varies with the interpreter (3.12 runs at 1.21-1.23x) and the machine's load.
    assert peak < 1.5 * small_peak, (peak, small_peak)
    assert peak < 0.75 * OUTPUT_BYTES
    assert kept < 0.01 * OUTPUT_BYTES


def _live_responses() -> int:
    return sum(1 for obj in gc.get_objects() if isinstance(obj, httpx.Response))


def _small_handler(request: httpx.Request) -> httpx.Response:
    texts = orjson.loads(request.content)["input"]
    data = [{"index": i, "embedding": vector(i)} for i in range(len(texts))]
    return httpx.Response(200, content=orjson.dumps({"data": data}))


async def test_finished_responses_are_freed_without_the_cycle_collector() -> None:
    # httpx's responses refer to their streams and back; the client cuts that cycle once a
    # body is read, so a long run does not pile up responses (and request bodies) for the
    # collector. With the collector off, none may be left alive after the calls.
    texts = [f"t{i}" for i in range(200)]
    settings = {"api_key": "k", "base_url": "https://mock.test/v1", "model": "tiny"}
    http = httpx.Client(transport=httpx.MockTransport(_small_handler))
    ahttp = httpx.AsyncClient(transport=httpx.MockTransport(_small_handler))
    with EmbeddingsClient(batch_size=10, http_client=http, **settings) as client:
        aclient = AsyncEmbeddingsClient(batch_size=10, http_client=ahttp, **settings)
        gc.collect()
        gc.disable()
        try:
            before = _live_responses()
            assert len(client.embed_documents(texts)) == 200
            assert len(await aclient.embed_documents(texts)) == 200
            assert sum(1 for _ in client.iter_embeddings(iter(texts))) == 200
            left = _live_responses() - before
        finally:
            gc.enable()
    await ahttp.aclose()
    assert left == 0
